"""MV-DiT-7B against the reference implementation: RoPE tables, forward outputs and 4-step sampling.

One test per ``case_mvdit7b_*.safetensors`` found in ``reference_dir()/mvdit7b``; its manifest is derived
from the case name (``case_X.safetensors`` -> ``manifest_X.json``), so new cases are picked up unchanged.
"""


import numpy as np
import pytest
import torch
from conftest import load_case, manifest_for, reference_cases, reference_dir

from mtv_pack.mtv_core.dit.config import MVDiT7BConfig
from mtv_pack.mtv_core.dit.rope import motion_rope_7b, vision_rope_7b
from mtv_pack.mtv_core.dit.sampler_7b import denoise_7b, make_scheduler_7b
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B
from mtv_pack.mtv_core.tokenizer.testing import regenerate_from_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASE_DIR = reference_dir() / "mvdit7b"
CASES = reference_cases("mvdit7b", "mvdit7b")
ids = [case.stem for case in CASES]


def test_reference_cases_present():
    assert CASES, f"no case_mvdit7b_*.safetensors in {CASE_DIR}"


@pytest.fixture(scope="module", params=CASES, ids=ids)
def setup(request):
    case_path = request.param
    manifest = manifest_for(case_path)
    model = MVDiT7B(MVDiT7BConfig.from_diffusers_config(manifest["config"]))
    model.load_state_dict(regenerate_from_manifest(manifest), strict=True)
    model.eval()
    case, meta = load_case(case_path)
    joint_mean = np.load(reference_dir() / "motion" / "mean.npy", allow_pickle=False)
    return model, case, meta, manifest, joint_mean


def _tables(model, case, joint_mean):
    frames, _, h, w = case["latents"].shape[1:]
    p, head_dim = model.config.patch_size, model.config.attention_head_dim
    return vision_rope_7b(frames, h // p, w // p, head_dim), motion_rope_7b(frames, joint_mean, head_dim)


def test_rope_tables(setup):
    model, case, _, _, joint_mean = setup
    (vc, vs), (mc, ms) = _tables(model, case, joint_mean)
    torch.testing.assert_close(vc, case["vision_rope_cos"], atol=1e-6, rtol=0)
    torch.testing.assert_close(vs, case["vision_rope_sin"], atol=1e-6, rtol=0)
    torch.testing.assert_close(mc, case["motion_rope_cos"], atol=1e-6, rtol=0)
    torch.testing.assert_close(ms, case["motion_rope_sin"], atol=1e-6, rtol=0)


def test_forward(setup):
    model, case, _, _, joint_mean = setup
    vision_rope, motion_rope = _tables(model, case, joint_mean)
    latents = torch.cat([case["latents"]] * 2)
    model_in = torch.cat([latents, torch.cat([case["ref_latents"]] * 2)], dim=2)
    motion = torch.cat([model.unconditional_motion_token.detach()[None], case["motion_tokens"]])
    keys = sorted(k for k in case if k.startswith("forward_t"))
    assert keys, "case holds no forward outputs"
    with torch.no_grad():
        for key in keys:
            t = int(key.removeprefix("forward_t"))
            out = model(model_in, torch.tensor([t, t]), motion, vision_rope, motion_rope)
            torch.testing.assert_close(out, case[key], atol=1e-4, rtol=0, msg=f"{key} differs")


def test_sampling(setup):
    model, case, meta, manifest, joint_mean = setup
    steps = int(meta.get("steps", len(case["timesteps"])))
    guidance = float(meta.get("guidance", 3.0))
    generator_seed = int(meta.get("dpm_generator_seed", int(manifest["seed"]) + 2))
    scheduler = make_scheduler_7b()
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.tolist() == case["timesteps"].tolist()
    key = next(k for k in case if k.startswith("sampled_"))
    out = denoise_7b(
        model, case["latents"], case["ref_latents"], case["motion_tokens"], num_steps=steps, guidance=guidance,
        generator=torch.Generator().manual_seed(generator_seed), joint_mean_mm=joint_mean,
    )
    torch.testing.assert_close(out, case[key], atol=1e-3, rtol=0)
