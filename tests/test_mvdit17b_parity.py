"""MV-DiT-17B against the reference implementation: motion RoPE tables, forward outputs and 3-step text-CFG sampling.

One test per ``case_mvdit17b_*.safetensors`` found in ``reference_dir()/mvdit17b``; its manifest is derived
from the case name (``case_X.safetensors`` -> ``manifest_X.json``), so new cases are picked up unchanged. Every
shape (width, heads, text width, motion token width, frames, size) comes from the manifest and the case.
"""

import logging

import numpy as np
import pytest
import torch
from conftest import load_case, manifest_for, reference_cases, reference_dir

from mtv_pack.mtv_core.dit.config_17b import MVDiT17BConfig
from mtv_pack.mtv_core.dit.guidance_17b import text_cfg_17b
from mtv_pack.mtv_core.dit.rope_17b import motion_rope_17b
from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B
from mtv_pack.mtv_core.tokenizer.testing import regenerate_from_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")
logger = logging.getLogger(__name__)

CASE_DIR = reference_dir() / "mvdit17b"
CASES = reference_cases("mvdit17b", "mvdit17b")
ids = [case.stem for case in CASES]


def test_reference_cases_present():
    assert CASES, f"no case_mvdit17b_*.safetensors in {CASE_DIR}"


@pytest.fixture(scope="module", params=CASES, ids=ids)
def setup(request):
    case_path = request.param
    manifest = manifest_for(case_path)
    config = MVDiT17BConfig.from_wan_config(manifest["config"], motion_token_dim=manifest.get("motion_code_dim"))
    model = MVDiT17B(config)
    model.load_state_dict(regenerate_from_manifest(manifest), strict=True)
    model.eval()
    case, meta = load_case(case_path)
    joint_mean = np.load(reference_dir() / "motion" / "mean.npy", allow_pickle=False)
    motion_rope = motion_rope_17b(case["x"].shape[1], joint_mean, config.head_dim)
    return model, case, meta, motion_rope


def _max_diff(name, out, ref):
    diff = (out - ref).abs().max().item()
    logger.info("%s: max abs diff %.3g", name, diff)
    return diff


def test_motion_rope_tables(setup):
    _, case, _, (cos, sin) = setup
    torch.testing.assert_close(cos, case["motion_rope_cos"], atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, case["motion_rope_sin"], atol=1e-6, rtol=0)


def test_forward(setup):
    model, case, _, motion_rope = setup
    keys = sorted(k for k in case if k.startswith("forward_t"))
    assert keys, "case holds no forward outputs"
    with torch.no_grad():
        for key in keys:
            t = float(key.removeprefix("forward_t"))
            out = model(
                case["x"][None], torch.tensor([t]), case["context"][None], case["clip_fea"], case["motion_tokens"],
                motion_rope, y=case["y"][None],
            )[0]
            assert out.shape == case[key].shape
            assert _max_diff(key, out, case[key]) <= 1e-4, f"{key} differs"


def test_sampling_text_cfg(setup):
    from diffusers import FlowMatchEulerDiscreteScheduler

    model, case, meta, motion_rope = setup
    key = next(k for k in case if k.startswith("sampled_"))
    steps = int(meta.get("steps", len(case["timesteps"])))
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=float(meta.get("shift", 5.0)), use_dynamic_shifting=False
    )
    scheduler.set_timesteps(steps)
    torch.testing.assert_close(scheduler.timesteps, case["timesteps"], atol=0, rtol=1e-6)
    latents = case["x"][None]
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = text_cfg_17b(
                model, latents, t, case["context"][None], case["context_negative"][None], float(meta.get("guidance", 6.0)),
                clip_fea=case["clip_fea"], y=case["y"][None], motion_tokens=case["motion_tokens"], motion_rope=motion_rope,
            )
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
    assert _max_diff(key, latents[0], case[key]) <= 1e-3


def test_unbatched_guidance_matches_batched(setup):
    """Two calls instead of one batch of 2 give the same guided velocity (a memory option, not another result)."""
    model, case, _, motion_rope = setup
    kwargs = dict(clip_fea=case["clip_fea"], y=case["y"][None], motion_tokens=case["motion_tokens"], motion_rope=motion_rope)
    with torch.no_grad():
        args = (model, case["x"][None], 500.0, [case["context"]], [case["context_negative"]], 6.0)
        batched = text_cfg_17b(*args, **kwargs)
        separate = text_cfg_17b(*args, batched=False, **kwargs)
        positive_only = text_cfg_17b(*args[:-1], 1.0, **kwargs)
    torch.testing.assert_close(separate, batched, atol=1e-4, rtol=0)  # guidance 6 amplifies kernel rounding
    assert (positive_only - batched).abs().max() > 1e-3  # guidance changes the result
