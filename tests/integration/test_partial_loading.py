"""ComfyUI's own partial ("lowvram") loading of our models, in-process with the ComfyUI of COMFYUI_DIR.

A tiny MV-DiT-7B built from ``comfy.ops`` layers (through the pack's ``operations_for`` / ``manage``) and given a
memory budget below its size is loaded partially by ``LoadedModel.model_load`` (the step ``load_models_gpu``
takes once it has worked out the budget from free VRAM under --lowvram), says so (``model_lowvram``,
``model_loaded_weight_memory`` below the model size) and samples exactly what the fully loaded model samples; a
partial unload (what ``free_memory`` does under memory pressure) keeps it so. The same for the 4DMoT tokenizer and
for a DiT stored in bf16 that computes in fp32 (``manual_cast``).

CPU is enough for this: the layers ComfyUI leaves "offloaded" stay on the same device, so what is proven is
ComfyUI's bookkeeping and its per-layer casting path through our models (weights used only inside their layers,
the compute device and dtype set from outside). The transfers themselves happen on CUDA (the --lowvram /
--novram server tests in test_model_management.py).
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.dit.sampler_7b import denoise_7b
from mtv_pack.mtv_core.dit.tiny import random_state_dict_7b, tiny_mvdit7b_config
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B
from mtv_pack.mtv_core.dit.vae import load_vae, write_tiny_vae
from mtv_pack.mtv_core.tokenizer.encode import decode_to_mm, encode_joints
from mtv_pack.mtv_core.tokenizer.model import MotionVQVAE
from mtv_pack.mtv_core.tokenizer.testing import TINY_CONFIG, random_state_dict
from mtv_pack.nodes import _comfy

pytestmark = pytest.mark.integration

CPU = torch.device("cpu")
FRAMES = 13  # the unconditional tokens' length: motion guidance (and so the unconditional tokens) run


@pytest.fixture(scope="module")
def comfy():
    """ComfyUI's modules imported into this process (``--cpu`` as the server has it when there is no GPU)."""
    sys.path.insert(0, os.environ["COMFYUI_DIR"])
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops

    torch.set_num_threads(1)
    yield types.SimpleNamespace(mm=comfy.model_management, ops=comfy.ops, ModelPatcher=comfy.model_patcher.ModelPatcher)
    comfy.model_management.current_loaded_models.clear()


def _dit(operations, seed: int = 3) -> MVDiT7B:
    model = MVDiT7B(tiny_mvdit7b_config(), operations=operations)
    model.load_state_dict(random_state_dict_7b(tiny_mvdit7b_config(), seed=seed))
    return model.eval().requires_grad_(False)


def _sample(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, FRAMES, 16, 4, 4, generator=g)
    ref = torch.randn(1, FRAMES, 16, 4, 4, generator=g)
    motion = torch.randn(1, FRAMES * 24, 128, generator=g)
    joint_mean = np.zeros((24, 3), np.float32) + [0, 0, 2000]
    with torch.inference_mode():  # as ComfyUI runs nodes
        return denoise_7b(model, latents, ref, motion, num_steps=2, guidance=3.0, joint_mean_mm=joint_mean,
                          generator=torch.Generator().manual_seed(1))


def _partially_load(comfy, managed, fraction: float):
    """``LoadedModel.model_load`` with a budget of ``fraction`` of the model's size: returns the LoadedModel."""
    patcher = managed.patcher
    loaded = comfy.mm.LoadedModel(patcher)
    loaded.model_load(lowvram_model_memory=int(patcher.model_size() * fraction))
    return loaded


def _cast_per_call(model) -> list[torch.nn.Module]:
    return [m for m in model.modules() if getattr(m, "comfy_cast_weights", False)]


def test_dit_partially_loaded_by_comfyui_samples_what_the_fully_loaded_one_does(comfy):
    ops = _comfy.operations_for(torch.float32, torch.float32, CPU)
    assert ops is comfy.ops.disable_weight_init  # same weight and compute dtype: casting only where offloaded
    full = _comfy.manage(_dit(ops), _comfy.Placement(CPU, CPU))
    comfy.mm.LoadedModel(full.patcher).model_load()  # no budget: the whole model
    assert not full.model.model_lowvram and full.patcher.loaded_size() == full.patcher.model_size()
    assert not _cast_per_call(full.model)
    expected = _sample(full.model)

    part = _comfy.manage(_dit(ops), _comfy.Placement(CPU, CPU))
    size = part.patcher.model_size()
    loaded = _partially_load(comfy, part, 0.5)
    assert part.model.model_lowvram, "ComfyUI did not load the model partially"
    assert 0 < part.patcher.loaded_size() < size and part.model.model_loaded_weight_memory < size
    offloaded = _cast_per_call(part.model)
    assert offloaded and len(offloaded) < len([m for m in part.model.modules() if hasattr(m, "comfy_cast_weights")])
    assert part.model.device == CPU  # set by the patcher: where it computes
    assert torch.equal(_sample(part.model), expected)

    before = part.patcher.loaded_size()
    assert loaded.model_unload(memory_to_free=before // 2) is False  # partial unload was enough: still listed
    assert part.patcher.loaded_size() < before and len(_cast_per_call(part.model)) > len(offloaded)
    assert torch.equal(_sample(part.model), expected)
    loaded.model_unload()  # whole unload, as "Unload Models"
    assert part.patcher.loaded_size() == 0 and not _cast_per_call(part.model)
    assert torch.equal(_sample(part.model), expected)


def test_dit_stored_in_bf16_computes_in_fp32_through_manual_cast(comfy):
    ops = _comfy.operations_for(torch.bfloat16, torch.float32, CPU)
    assert ops is comfy.ops.manual_cast
    stored = _dit(ops).to(torch.bfloat16)
    stored.compute_dtype = torch.float32
    reference = _dit(torch.nn).to(torch.bfloat16).float()  # the same bf16 weights, held in fp32
    managed = _comfy.manage(stored, _comfy.Placement(CPU, CPU))
    _partially_load(comfy, managed, 0.5)
    assert stored.model_lowvram and stored.proj_out.weight.dtype == torch.bfloat16 and stored.dtype == torch.float32
    assert torch.equal(_sample(stored), _sample(reference))


def test_tokenizer_partially_loaded_gives_the_same_tokens(comfy):
    state = random_state_dict(TINY_CONFIG, seed=5)
    plain = MotionVQVAE(TINY_CONFIG).eval()
    plain.load_state_dict(state)
    model = MotionVQVAE(TINY_CONFIG, operations=_comfy.operations_for(torch.float32, torch.float32, CPU)).eval()
    model.load_state_dict(state)
    managed = _comfy.manage(model, _comfy.Placement(CPU, CPU))
    _partially_load(comfy, managed, 0.3)
    assert model.model_lowvram and _cast_per_call(model)
    joints = np.random.default_rng(2).normal(0, 300, (1, 49, 24, 3)).astype(np.float32) + [0, 200, 3000]
    with torch.inference_mode():
        expected, got = encode_joints(plain, joints), encode_joints(model, joints)
        assert torch.equal(got.indices, expected.indices)
        np.testing.assert_allclose(decode_to_mm(model, indices=got.indices),
                                   decode_to_mm(plain, indices=expected.indices), rtol=1e-4, atol=1e-2)


def test_loaded_registers_models_with_comfyui_and_unload_after_takes_them_out(comfy, tmp_path):
    mm = comfy.mm
    dit = _comfy.manage(_dit(_comfy.operations_for(torch.float32, torch.float32, CPU)),
                        _comfy.Placement(CPU, CPU, unload_after=True))
    video_vae = load_vae(write_tiny_vae(tmp_path / "vae.safetensors"), dtype=torch.float32)
    vae = _comfy.manage(video_vae, _comfy.Placement(CPU, CPU), module=video_vae.vae, whole=True)
    assert isinstance(vae.patcher, comfy.ModelPatcher) and vae.patcher.model.inner is video_vae.vae
    with _comfy.loaded(dit, vae, memory_required=1 << 20) as (model, core_vae):
        listed = [entry.model for entry in mm.current_loaded_models]
        assert dit.patcher in listed and vae.patcher in listed
        assert model is dit.model and core_vae is video_vae
        with torch.inference_mode():
            frames = core_vae.decode(torch.zeros(1, 2, 16, 4, 4))
        assert frames.shape[:2] == (1, 3) and frames.shape[-2:] == (32, 32) and torch.isfinite(frames).all()
    listed = [entry.model for entry in mm.current_loaded_models]
    assert dit.patcher not in listed and vae.patcher in listed  # offload placement: unloaded after the run
