"""The reference image both DiT variants animate: any image -> (height, width, 3) float32 in 0..1 at the output size.

Layouts: ``image`` (H, W), (H, W, 1|3|4) or (1, H, W, C), numpy or torch, 8/16-bit integers or floats in 0..1.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..limits import MAX_IMAGE_PIXELS, check_limit

logger = logging.getLogger(__name__)

MIN_REFERENCE_SIDE = 64
# full-scale value of each integer pixel type (16-bit images keep their range instead of clipping to white)
_PIXEL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.bool_): 1.0}


def image_array(image: Any) -> np.ndarray | torch.Tensor:
    """(H, W), (H, W, 1|3|4) or (1, H, W, C) image -> (H, W, C) in its own dtype (first image of a batch)."""
    array = image if isinstance(image, (torch.Tensor, np.ndarray)) else np.asarray(image)
    if array.ndim == 4:
        if array.shape[0] != 1:
            logger.warning("reference batch has %d images; using the first", array.shape[0])
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(f"reference image must be (H, W, 3) RGB, got shape {tuple(array.shape)}")
    return array


def _to_unit_float(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(h, w, C) pixels -> (h, w, 3) float32 in 0..1: integers scaled by their type's full range (8 or 16 bit),
    floats taken as 0..1; alpha dropped, grey expanded. NaN / inf pixels are an error (they make black videos)."""
    tensor = pixels if isinstance(pixels, torch.Tensor) else None
    if tensor is None:
        dtype = pixels.dtype
        if dtype.kind == "f":
            tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        elif dtype in _PIXEL_SCALE:
            tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32) / _PIXEL_SCALE[dtype])
        else:
            raise InputError(f"reference image pixels must be 8- or 16-bit integers or floats, got {dtype}")
    elif tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif tensor.dtype == torch.bool:
        tensor = tensor.float()
    elif not tensor.is_floating_point():
        raise InputError(f"reference image pixels must be uint8 or floating point, got {tensor.dtype}")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise InputError("reference image contains NaN or infinite pixel values")
    if tensor.shape[-1] == 1:
        tensor = tensor.expand(-1, -1, 3)
    return tensor[..., :3].clamp(0.0, 1.0)


def prepare_reference(image: Any, width: int, height: int) -> torch.Tensor:
    """Cover-resize and centre-crop a reference image to (height, width, 3) float32 in 0..1.

    The image is scaled (aspect kept, bilinear with antialiasing as upstream's torchvision resize) until it
    covers the target, then the centre is cut out, so nothing is distorted; a reference whose aspect differs
    from the target loses its edges. The centre region is cut from the source *first* (to the nearest source
    pixel) and only it is converted and resized, so the cost never exceeds the source plus the output (a thin
    64 x 100000 image does not become a 512 x 800000 one). (Upstream instead resized the reference to the
    driving video's aspect, distorting it when the two differ.)
    Raises InputError for images smaller than 64 px on a side, over ``MAX_IMAGE_PIXELS``, or with NaN pixels.
    """
    ref = image_array(image)
    src_h, src_w = int(ref.shape[0]), int(ref.shape[1])
    if min(src_h, src_w) < MIN_REFERENCE_SIDE:
        raise InputError(
            f"reference image is {src_w}x{src_h} pixels; it must be at least {MIN_REFERENCE_SIDE} px on each side"
        )
    check_limit(src_h * src_w, MAX_IMAGE_PIXELS, "the number of reference image pixels", "reference image")
    scale = max(width / src_w, height / src_h)
    crop_w = min(src_w, max(1, round(width / scale)))
    crop_h = min(src_h, max(1, round(height / scale)))
    if scale > 4:
        logger.warning("reference image %dx%d is upscaled %.1fx to cover %dx%d", src_w, src_h, scale, width, height)
    kept = (crop_w * crop_h) / (src_w * src_h)
    if kept < 0.5:
        logger.warning("reference aspect differs from %dx%d: centre crop keeps %.0f%% of the image", width, height,
                       100 * kept)
    top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
    chw = _to_unit_float(ref[top : top + crop_h, left : left + crop_w]).permute(2, 0, 1)[None]
    if (crop_h, crop_w) != (height, width):
        chw = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return chw[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous()
