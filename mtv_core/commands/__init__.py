"""Sub-commands of ``python -m mtv_core``."""
