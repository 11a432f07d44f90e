"""4DMoT: the motion VQ-VAE that turns joint sequences into motion tokens."""

from .tokens import MotionTokens, TokenWindow

__all__ = ["MotionTokens", "TokenWindow"]
