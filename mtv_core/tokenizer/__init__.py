"""4DMoT: the motion VQ-VAE that turns joint sequences into motion tokens.

``load_tokenizer`` reads a checkpoint, ``encode_windows`` makes the DiTs' ``MotionTokens``,
``decode_motion`` / ``decode_to_mm`` go back to millimetres, ``mpjpe`` measures the round trip.
Training lives in ``mtv_core.tokenizer.train`` (``python -m mtv_core.tokenizer.train``).
"""

from .config import TokenizerConfig
from .encode import decode_motion, decode_to_mm, encode_joints, encode_windows, mpjpe, reconstruct
from .loading import load_tokenizer, save_tokenizer
from .model import MotionVQVAE
from .tokens import MotionTokens, TokenWindow

__all__ = [
    "MotionTokens", "MotionVQVAE", "TokenWindow", "TokenizerConfig", "decode_motion", "decode_to_mm",
    "encode_joints", "encode_windows", "load_tokenizer", "mpjpe", "reconstruct", "save_tokenizer",
]
