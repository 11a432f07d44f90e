"""Reference image handling of the 7B pipeline: size rounding, cover-resize + centre crop, unscaled latents."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.dit.pipeline import snap_size
from mtv_pack.mtv_core.dit.pipeline_7b import encode_reference, prepare_reference
from mtv_pack.mtv_core.dit.vae import load_vae, write_tiny_vae
from mtv_pack.mtv_core.dit.video_vae import frames_to_pixels, pixels_to_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_snap_size(caplog):
    assert snap_size(512, 512) == (512, 512)
    with caplog.at_level(logging.WARNING):
        assert snap_size(500, 300) == (496, 304)
    assert "not a multiple of 16" in caplog.text
    for bad in ((32, 512), (512, 10000)):
        with pytest.raises(ValueError, match="between 64"):
            snap_size(*bad)


def _stripes(width: int, height: int) -> np.ndarray:
    """Column index encoded in red, row index in green (uint8)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = (np.arange(width)[None, :] * 255 // (width - 1)).astype(np.uint8)
    img[..., 1] = (np.arange(height)[:, None] * 255 // (height - 1)).astype(np.uint8)
    return img


def test_cover_resize_and_centre_crop_keeps_aspect():
    wide = _stripes(400, 100)  # 4:1 -> square target: the middle quarter survives
    ref = prepare_reference(wide, 64, 64)
    assert ref.shape == (64, 64, 3) and ref.dtype == torch.float32
    red = ref[..., 0].mean(0)
    assert abs(red[0].item() - 0.375) < 0.03 and abs(red[-1].item() - 0.625) < 0.03  # central columns only
    green = ref[..., 1].mean(1)
    assert green[0] < 0.05 and green[-1] > 0.95  # all rows kept
    tall = prepare_reference(_stripes(100, 400), 128, 64)  # 1:4 into a 2:1 target
    assert tall.shape == (64, 128, 3)
    assert abs(tall[..., 1].mean().item() - 0.5) < 0.03 and abs(tall[..., 1][0].mean().item() - 0.44) < 0.03


def test_reference_input_forms():
    img = _stripes(96, 80)
    as_float = prepare_reference(img.astype(np.float32) / 255, 64, 64)
    as_uint8 = prepare_reference(img, 64, 64)
    batched = prepare_reference(torch.from_numpy(img.astype(np.float32) / 255)[None], 64, 64)
    rgba = prepare_reference(np.concatenate([img, np.full((80, 96, 1), 7, np.uint8)], -1), 64, 64)
    assert torch.allclose(as_float, as_uint8, atol=1e-6)
    assert torch.equal(as_uint8, batched.clamp(0, 1)) or torch.allclose(as_uint8, batched, atol=1e-6)
    assert torch.allclose(as_uint8, rgba)
    gray = prepare_reference(img[..., 0], 64, 64)
    assert torch.allclose(gray[..., 0], gray[..., 2])


def test_reference_too_small_or_wrong_shape():
    with pytest.raises(ValueError, match="at least 64 px"):
        prepare_reference(np.zeros((40, 300, 3), np.uint8), 64, 64)
    with pytest.raises(ValueError, match="RGB"):
        prepare_reference(np.zeros((100, 100, 5), np.uint8), 64, 64)


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    return load_vae(write_tiny_vae(tmp_path_factory.mktemp("vae") / "vae.safetensors"), dtype=torch.float32)


def test_reference_latents_are_not_scaled(vae):
    ref = prepare_reference(_stripes(80, 80), 64, 64)
    latents = encode_reference(vae, ref, 9, torch.Generator().manual_seed(5))
    pixels = frames_to_pixels(ref[None].expand(9, -1, -1, -1))
    assert pixels.shape == (1, 3, 9, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    with torch.no_grad():
        raw = vae.vae.encode(pixels).latent_dist.sample(generator=torch.Generator().manual_seed(5))
    assert torch.equal(latents, raw.permute(0, 2, 1, 3, 4))  # no factor 0.7 applied


def test_decode_divides_by_scaling_factor(vae):
    latents = torch.randn(1, 3, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    frames = vae.decode_frames(latents)
    with torch.no_grad():
        raw = vae.vae.decode((latents / 0.7).permute(0, 2, 1, 3, 4)).sample
    assert frames.shape == (9, 64, 64, 3)
    assert torch.allclose(frames, pixels_to_frames(raw))
    assert frames.min() >= 0 and frames.max() <= 1
