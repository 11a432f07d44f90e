"""Output sizes of MV-DiT-17B: upstream's 512-area aspect buckets (``ASPECT_RATIO_512`` of ``infer_17b.py``).

Keys are height / width ratios, values (height, width) in pixels, all multiples of 32 with about 512^2
pixels. Upstream picks the bucket whose ratio is nearest to the reference image's height / width (the
first one on an exact tie) and resizes the reference to it without cropping.
"""

from __future__ import annotations

ASPECT_RATIO_512: dict[str, tuple[int, int]] = {
    "0.25": (256, 1024), "0.26": (256, 992), "0.27": (256, 960), "0.28": (256, 928),
    "0.32": (288, 896), "0.33": (288, 864), "0.35": (288, 832), "0.4": (320, 800),
    "0.42": (320, 768), "0.48": (352, 736), "0.5": (352, 704), "0.52": (352, 672),
    "0.57": (384, 672), "0.6": (384, 640), "0.68": (416, 608), "0.72": (416, 576),
    "0.78": (448, 576), "0.82": (448, 544), "0.88": (480, 544), "0.94": (480, 512),
    "1.0": (512, 512), "1.07": (512, 480), "1.13": (544, 480), "1.21": (544, 448),
    "1.29": (576, 448), "1.38": (576, 416), "1.46": (608, 416), "1.67": (640, 384),
    "1.75": (672, 384), "2.0": (704, 352), "2.09": (736, 352), "2.4": (768, 320),
    "2.5": (800, 320), "2.89": (832, 288), "3.0": (864, 288), "3.11": (896, 288),
    "3.62": (928, 256), "3.75": (960, 256), "3.88": (992, 256), "4.0": (1024, 256),
}


def nearest_bucket_512(height: int, width: int) -> tuple[int, int]:
    """(height, width) of the bucket nearest to ``height / width`` (first bucket on a tie)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    aspect = height / width
    best_key = min(ASPECT_RATIO_512, key=lambda k: abs(float(k) - aspect))  # min keeps the first of equals
    return ASPECT_RATIO_512[best_key]
