"""LoRA merging into MV-DiT-17B: lora_down/up (+ alpha), diff, diff_b, key prefixes, fp8 layers, upstream mode."""

import logging

import pytest
import torch
from safetensors.torch import save_file

from mtv_pack.mtv_core.dit.fp8_ops import FP8Linear
from mtv_pack.mtv_core.dit.loading_17b import load_mvdit17b
from mtv_pack.mtv_core.dit.lora import apply_lora
from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, save_mvdit17b, tiny_mvdit17b_config
from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RANK, ALPHA = 4, 2.0


@pytest.fixture(scope="module")
def state():
    return random_state_dict_17b(tiny_mvdit17b_config(), seed=7)


def _model(state):
    model = MVDiT17B(tiny_mvdit17b_config())
    model.load_state_dict(state)
    return model.eval()


def _lora():
    g = torch.Generator().manual_seed(2)
    return {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(RANK, 256, generator=g),
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(256, RANK, generator=g) * 0.01,
        "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(ALPHA),
        "lora_unet_blocks_3_ffn_0.lora_down.weight": torch.randn(RANK, 256, generator=g),
        "lora_unet_blocks_3_ffn_0.lora_up.weight": torch.randn(512, RANK, generator=g) * 0.01,
        "diffusion_model.patch_embedding.lora_down.weight": torch.randn(RANK, 36, 1, 2, 2, generator=g),
        "diffusion_model.patch_embedding.lora_up.weight": torch.randn(256, RANK, 1, 1, 1, generator=g) * 0.01,
        "diffusion_model.blocks.1.norm3.diff": torch.randn(256, generator=g) * 0.01,
        "diffusion_model.blocks.1.cross_attn.o.diff_b": torch.randn(256, generator=g) * 0.01,
        "diffusion_model.blocks.2.modulation.diff": torch.randn(1, 6, 256, generator=g) * 0.01,
        "diffusion_model.blocks.9.self_attn.q.lora_down.weight": torch.zeros(RANK, 256),  # no block 9 here
        "text_encoder.something.lora_up.weight": torch.zeros(3, 3),
    }


def test_merges_every_format_at_strength(state, tmp_path, caplog):
    lora = _lora()
    path = tmp_path / "wan_lora.safetensors"
    save_file(lora, str(path))
    model = _model(state)
    with caplog.at_level(logging.WARNING, logger="mtv_pack.mtv_core.dit.lora"):
        report = apply_lora(model, path, strength=0.5)
    sd = model.state_dict()
    down, up = lora["diffusion_model.blocks.0.self_attn.q.lora_down.weight"], lora["diffusion_model.blocks.0.self_attn.q.lora_up.weight"]
    torch.testing.assert_close(sd["blocks.0.self_attn.q.weight"], state["blocks.0.self_attn.q.weight"] + 0.5 * ALPHA / RANK * up @ down)
    down, up = lora["lora_unet_blocks_3_ffn_0.lora_down.weight"], lora["lora_unet_blocks_3_ffn_0.lora_up.weight"]
    torch.testing.assert_close(sd["blocks.3.ffn.0.weight"], state["blocks.3.ffn.0.weight"] + 0.5 * up @ down)  # no alpha
    conv = (lora["diffusion_model.patch_embedding.lora_up.weight"].flatten(1)
            @ lora["diffusion_model.patch_embedding.lora_down.weight"].flatten(1)).reshape(256, 36, 1, 2, 2)
    torch.testing.assert_close(sd["patch_embedding.weight"], state["patch_embedding.weight"] + 0.5 * conv)
    torch.testing.assert_close(sd["blocks.1.norm3.weight"], state["blocks.1.norm3.weight"] + 0.5 * lora["diffusion_model.blocks.1.norm3.diff"])
    torch.testing.assert_close(sd["blocks.1.cross_attn.o.bias"],
                               state["blocks.1.cross_attn.o.bias"] + 0.5 * lora["diffusion_model.blocks.1.cross_attn.o.diff_b"])
    torch.testing.assert_close(sd["blocks.2.modulation"], state["blocks.2.modulation"] + 0.5 * lora["diffusion_model.blocks.2.modulation.diff"])
    untouched = set(state) - {"blocks.0.self_attn.q.weight", "blocks.3.ffn.0.weight", "patch_embedding.weight",
                              "blocks.1.norm3.weight", "blocks.1.cross_attn.o.bias", "blocks.2.modulation"}
    assert all(torch.equal(sd[k], state[k]) for k in untouched)
    assert sorted(report.unmatched) == ["diffusion_model.blocks.9.self_attn.q.lora_down.weight",
                                        "text_encoder.something.lora_up.weight"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 keys" in warnings[0].getMessage() and "blocks.9" in warnings[0].getMessage()


def test_upstream_merge_ignores_alpha_and_non_weight_diffs(state):
    lora = _lora()
    model = _model(state)
    report = apply_lora(model, lora, strength=1.0, upstream=True)
    sd = model.state_dict()
    down, up = lora["diffusion_model.blocks.0.self_attn.q.lora_down.weight"], lora["diffusion_model.blocks.0.self_attn.q.lora_up.weight"]
    torch.testing.assert_close(sd["blocks.0.self_attn.q.weight"], state["blocks.0.self_attn.q.weight"] + up @ down)
    assert torch.equal(sd["blocks.2.modulation"], state["blocks.2.modulation"])
    assert "diffusion_model.blocks.2.modulation.diff" in report.unmatched


def test_a_lora_of_another_size_changes_nothing(state):
    model = _model(state)
    lora = _lora()
    lora["diffusion_model.blocks.4.cross_attn.k.diff"] = torch.zeros(128, 128)  # e.g. a Wan 1.3B LoRA
    with pytest.raises(ValueError, match="blocks.4.cross_attn.k"):
        apply_lora(model, lora)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_fp8_layers_are_requantised(state, tmp_path):
    path = save_mvdit17b(state, tmp_path / "m.safetensors", dtype=torch.bfloat16)
    model = load_mvdit17b(path, dtype=torch.float32, weight_dtype="fp8_e4m3fn")
    layer = model.blocks[0].self_attn.q
    assert isinstance(layer, FP8Linear)
    before = layer.dequantized_weight()
    lora = {k: v for k, v in _lora().items() if "blocks.0.self_attn.q" in k}
    apply_lora(model, lora, strength=1.0)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.scale_weight.dtype == torch.float32
    delta = ALPHA / RANK * lora["diffusion_model.blocks.0.self_attn.q.lora_up.weight"] @ lora[
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight"]
    expected = before + delta
    # re-quantised: within half an e4m3 step (2**-4 relative, on the new per-tensor scale) of the exact merge
    error = (layer.dequantized_weight() - expected).abs()
    assert (error <= expected.abs() * 2.0**-4 + layer.scale_weight * 2.0**-9 + 1e-7).all()
    assert (layer.dequantized_weight() - before).abs().max() > 0.5 * delta.abs().max()
