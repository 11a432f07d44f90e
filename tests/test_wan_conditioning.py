"""MV-DiT-17B conditioning (y, clip_fea, seq_len), aspect buckets and the flow-match schedule vs upstream."""

import json

import pytest
import torch
from _wan_reference import WAN_DIR, cases, find_manifest, load_case, max_abs, write_release_file
from safetensors import safe_open

from mtv_pack.mtv_core.wan.buckets import ASPECT_RATIO_512, nearest_bucket_512
from mtv_pack.mtv_core.wan.conditioning import (
    first_window_conditioning,
    latent_mask,
    next_window_conditioning,
    reference_pixel_mask,
    seq_len_17b,
)
from mtv_pack.mtv_core.wan.image_encoder import load_clip_vision, write_tiny_clip_vision
from mtv_pack.mtv_core.wan.scheduler import flowmatch_scheduler_17b, flowmatch_timesteps_17b
from mtv_pack.mtv_core.wan.vae import latent_frames, load_wan_vae, write_tiny_wan_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")
COND_DIR = WAN_DIR / "cond17b"
CASES = cases("cond17b")


def test_reference_cases_present():
    assert CASES, f"no case_cond17b_*.safetensors in {COND_DIR}"


_MODELS: dict[tuple[str, str], tuple] = {}


def _models(weights: str, tmp_path_factory):
    """The VAE and CLIP tower of the manifests a case names (``weights`` metadata), loaded once."""
    names = tuple(sorted(n.strip() for n in weights.split(",")))
    if names not in _MODELS:
        vae_name = next(n for n in names if "wanvae" in n)
        clip_name = next(n for n in names if "clipvis" in n)
        folder = tmp_path_factory.mktemp("cond17b_weights")
        vae_manifest, clip_manifest = find_manifest(vae_name), find_manifest(clip_name)
        vae = load_wan_vae(write_release_file(vae_manifest, folder / "Wan2.1_VAE.pth"), torch.float32)
        clip = load_clip_vision(write_release_file(clip_manifest, folder / "clip.pth"),
                                num_heads=clip_manifest["config"]["num_heads"])
        _MODELS[names] = (vae, clip)
    return _MODELS[names]


@pytest.mark.parametrize("case_path", CASES, ids=[c.name for c in CASES])
def test_conditioning_matches_upstream(case_path, tmp_path_factory):
    case, meta = load_case(case_path)
    vae, clip = _models(meta["weights"], tmp_path_factory)
    num_frames = int(meta["num_frames"])
    if "previous_sample" in case:
        cond = next_window_conditioning(vae, clip, case["previous_sample"], num_frames)
        assert int(meta["overlap"]) == case["previous_sample"].shape[2]
        assert max_abs(cond.vae_input, case["overlap_video_encoded"]) == 0
        assert cond.clip_image_uint8 is None
    else:
        cond = first_window_conditioning(vae, clip, case["ref_image"], num_frames)
        assert torch.equal(cond.clip_image_uint8, case["clip_image_uint8"])  # truncating conversion, exact
        assert max_abs(cond.vae_input, case["masked_video_encoded"]) == 0
        assert max_abs(cond.vae_input.permute(0, 2, 1, 3, 4), case["mask_video"]) == 0
    assert torch.equal(cond.pixel_mask, case["mask"])
    assert max_abs(cond.clip_input, case["clip_input"]) < 1e-6
    assert torch.equal(cond.y[:, :4], case["y"][:, :4])  # mask channels exact
    assert cond.y.shape == case["y"].shape
    assert max_abs(cond.y, case["y"]) < 1e-4
    assert max_abs(cond.clip_fea, case["clip_fea"]) < 1e-4
    assert cond.seq_len == int(case["seq_len"].item())
    if "latents_init" in case:
        assert case["latents_init"].shape[2:] == cond.y.shape[2:]


def test_ref_image_uint8_matches_the_reference_pixels():
    """The cases' reference pixels are uint8 / 255 mapped to [-1, 1] (what the CLIP truncation acts on)."""
    for case_path in CASES:
        case, _ = load_case(case_path)
        ref = case["ref_image_uint8"].permute(2, 0, 1).float() / 255 * 2 - 1
        assert max_abs(ref, case["ref_image"][0, 0]) < 1e-5


def test_latent_mask_for_other_overlaps():
    """Mask channels: 1 on latent frame 0 for the reference; on (overlap - 1) // 4 + 1 frames for a window."""
    mask = latent_mask(reference_pixel_mask(13, 16, 16), (4, 2, 2))
    assert mask.shape == (1, 4, 4, 2, 2)
    assert mask[:, :, 0].eq(1).all() and mask[:, :, 1:].eq(0).all()


def test_next_window_marks_overlap_latent_frames(tmp_path):
    vae = load_wan_vae(write_tiny_wan_vae(tmp_path / "v.safetensors"), torch.float32)
    clip = load_clip_vision(write_tiny_clip_vision(tmp_path / "c.safetensors"))
    for overlap in (1, 2, 9):
        prev = torch.rand(1, 3, overlap, 16, 16)
        cond = next_window_conditioning(vae, clip, prev, 13)
        given = (overlap - 1) // 4 + 1
        assert cond.y[:, :4, :given].eq(1).all() and cond.y[:, :4, given:].eq(0).all()
        torch.testing.assert_close(cond.clip_input[:, 0], prev[0, :, -1] * 2 - 1)
        assert cond.clip_fea.shape == (1, 17, 128)
    with pytest.raises(ValueError, match="4k"):
        next_window_conditioning(vae, clip, torch.rand(1, 3, 5, 16, 16), 12)
    with pytest.raises(ValueError, match="overlap"):
        next_window_conditioning(vae, clip, torch.rand(1, 3, 14, 16, 16), 13)
    with pytest.raises(ValueError, match="reference"):
        first_window_conditioning(vae, clip, torch.rand(2, 3, 16, 16), 13)


def test_aspect_buckets_match_upstream():
    data = json.loads((COND_DIR / "aspect_buckets_512.json").read_text())
    table = {k: tuple(int(x) for x in v) for k, v in data["ASPECT_RATIO_512"].items()}
    assert list(ASPECT_RATIO_512.items()) == list(table.items())  # same buckets, same order (ties)
    assert data["cases"]
    for item in data["cases"]:
        bucket = nearest_bucket_512(item["input_h"], item["input_w"])
        assert bucket == (item["bucket_h"], item["bucket_w"]), item
        assert latent_frames(49) == item["latent_frames_49"]
        assert seq_len_17b(49, *bucket) == item["seq_len_49"]


def test_bucket_ties_go_to_the_first_key():
    # 3:4 = 0.75 lies exactly between "0.72" and "0.78" in float arithmetic; 5:4 between "1.21" and "1.29"
    assert abs(0.72 - 3 / 4) == abs(0.78 - 3 / 4) and abs(1.21 - 5 / 4) == abs(1.29 - 5 / 4)
    assert nearest_bucket_512(3 * 160, 4 * 160) == ASPECT_RATIO_512["0.72"]
    assert nearest_bucket_512(5 * 100, 4 * 100) == ASPECT_RATIO_512["1.21"]
    assert nearest_bucket_512(512, 512) == (512, 512)
    assert nearest_bucket_512(100, 1000) == (256, 1024) and nearest_bucket_512(1000, 100) == (1024, 256)
    with pytest.raises(ValueError):
        nearest_bucket_512(0, 10)


def test_flowmatch_schedule_matches_upstream():
    data = json.loads((COND_DIR / "flowmatch_shift5.json").read_text())
    scheduler = flowmatch_scheduler_17b()
    for key, value in data["scheduler_kwargs"].items():
        assert scheduler.config[key] == value, key
    with safe_open(str(COND_DIR / "flowmatch_shift5.safetensors"), framework="pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    steps = sorted({int(k.rsplit("_", 1)[1]) for k in stored})
    assert steps
    for n in steps:
        timesteps, sigmas = flowmatch_timesteps_17b(n)
        assert sigmas.shape == (n + 1,) and sigmas[-1] == 0
        torch.testing.assert_close(timesteps, stored[f"timesteps_{n}"], rtol=1e-6, atol=0)
        torch.testing.assert_close(sigmas, stored[f"sigmas_{n}"], rtol=1e-6, atol=0)
        json_steps = data.get(f"steps_{n}")
        if json_steps:
            assert timesteps.tolist() == pytest.approx(json_steps["timesteps"], rel=1e-6)
    with pytest.raises(ValueError):
        flowmatch_timesteps_17b(0)
