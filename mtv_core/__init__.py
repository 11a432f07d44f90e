"""MTVCrafter core: motion, 4DMoT tokenizer, NLF extraction and MV-DiT models.

This package never imports ComfyUI; the node layer in ``nodes/`` wraps it.
"""

__version__ = "0.1.0"
