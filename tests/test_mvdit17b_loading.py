"""Loading MV-DiT-17B: released folder layouts, prefixed single files, fp8 (plain and scaled), fp8 storage of a bf16
file, base + motion adapter (and its extraction, by function and CLI), refusal of files that do not fit."""

import json

import numpy as np
import pytest
import torch
from conftest import reference_dir
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError
from mtv_pack.mtv_core.cli import main
from mtv_pack.mtv_core.dit.config_17b import MVDiT17BConfig
from mtv_pack.mtv_core.dit.fp8_ops import FP8Linear, quantize_fp8
from mtv_pack.mtv_core.dit.loading_17b import extract_adapter, load_mvdit17b
from mtv_pack.mtv_core.dit.rope_17b import motion_rope_17b
from mtv_pack.mtv_core.dit.tiny_17b import (
    random_state_dict_17b,
    save_mvdit17b,
    split_adapter,
    tiny_mvdit17b_config,
    to_fp8,
    write_tiny_mvdit17b,
)
from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# e4m3fn keeps 3 mantissa bits: each weight is rounded by at most half an ulp, 2**-4 of its magnitude (RMS about
# 2**-4 / sqrt(3) = 3.6 %). Independent rounding errors add up to about that relative RMS error in every layer's
# output, and the residual stream does not compound them (measured: 3.0 % scaled, 3.2 % plain at the tiny size).
# The bound is the worst case of a single weight, 2**-4 of the output's RMS.
FP8_REL_RMS = 2.0**-4


def _rel_rms(out, ref):
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.fixture(scope="module")
def state():
    return random_state_dict_17b(tiny_mvdit17b_config(), seed=5)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    frames = 2
    return dict(
        latents=torch.randn(1, 16, frames, 4, 6, generator=g), y=torch.randn(1, 20, frames, 4, 6, generator=g),
        context=torch.randn(1, 6, 64, generator=g), clip_fea=torch.randn(1, 257, 1280, generator=g),
        motion_tokens=torch.randn(1, frames * 24, 192, generator=g), timestep=600.0,
        motion_rope=motion_rope_17b(frames, np.load(reference_dir() / "motion" / "mean.npy")),
    )


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs).float()


def _assert_weights(model, expected, dtype):
    sd = model.state_dict()
    assert set(sd) == set(expected)
    for key, tensor in expected.items():
        assert sd[key].dtype == dtype, key
        assert torch.equal(sd[key], tensor.to(dtype)), key


@pytest.mark.parametrize("layout", ["file", "model.diffusion_model.", "diffusion_model.", "sharded_folder", "bin_folder"])
def test_layouts_load_exactly_in_the_target_dtype(tmp_path, state, layout):
    config = tiny_mvdit17b_config()
    if layout == "file":
        path = save_mvdit17b(state, tmp_path / "m.safetensors")
    elif layout.endswith("."):
        path = save_mvdit17b(state, tmp_path / "m.safetensors", prefix=layout)
    elif layout == "sharded_folder":
        path = save_mvdit17b(state, tmp_path / "Wan-2-1", config, as_folder=True, max_shard_bytes=2_000_000)
        assert len(list(path.glob("*.safetensors"))) > 2
    else:  # the released folder may hold diffusion_pytorch_model.bin
        path = tmp_path / "Wan-2-1"
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config.to_wan_config()))
        torch.save(state, path / "diffusion_pytorch_model.bin")
    model = load_mvdit17b(path, dtype=torch.bfloat16)
    assert isinstance(model, MVDiT17B) and not model.training
    assert model.config == MVDiT17BConfig.from_wan_config(config.to_wan_config())
    _assert_weights(model, state, torch.bfloat16)
    assert not any(p.requires_grad for p in model.parameters())


def test_folder_config_json_is_used(tmp_path, state):
    """The released config.json wins over shape inference (here: eps and text_len, which no shape records)."""
    config = tiny_mvdit17b_config(eps=1e-5, text_len=256)
    path = save_mvdit17b(state, tmp_path / "Wan-2-1", config, as_folder=True)
    model = load_mvdit17b(path, dtype=torch.float32)
    assert model.config.eps == 1e-5 and model.config.text_len == 256


def test_scaled_fp8_stays_fp8_and_runs_within_fp8_rounding(tmp_path, state, inputs):
    fp8_state = to_fp8({k: v.to(torch.bfloat16) for k, v in state.items()}, scaled=True)
    path = save_mvdit17b(fp8_state, tmp_path / "m_fp8_e4m3fn_scaled.safetensors", prefix="model.diffusion_model.")
    model = load_mvdit17b(path, dtype=torch.float32)
    q = model.blocks[0].self_attn.q
    assert isinstance(q, FP8Linear) and q.weight.dtype == torch.float8_e4m3fn
    assert torch.equal(q.scale_weight, fp8_state["blocks.0.self_attn.q.scale_weight"])
    assert model.blocks[0].motion_attn.o.weight.dtype == torch.float8_e4m3fn
    assert model.head.head.weight.dtype == torch.float32  # kept in higher precision by the file
    out = _run(model, inputs)

    # exactly the model whose weights are the dequantised fp8 values
    dequantised = {k: v for k, v in fp8_state.items() if not k.endswith("scale_weight") and k != "scaled_fp8"}
    for key, tensor in dequantised.items():
        if tensor.dtype == torch.float8_e4m3fn:
            dequantised[key] = tensor.float() * fp8_state[key[: -len("weight")] + "scale_weight"]
    twin = MVDiT17B(tiny_mvdit17b_config())
    twin.load_state_dict({k: v.float() for k, v in dequantised.items()})
    torch.testing.assert_close(out, _run(twin.eval(), inputs), atol=2e-5, rtol=0)

    # and within fp8 rounding of the bf16 model it was quantised from
    bf16_twin = MVDiT17B(tiny_mvdit17b_config())
    bf16_twin.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in state.items()})
    reference = _run(bf16_twin.eval(), inputs)
    assert _rel_rms(out, reference) < FP8_REL_RMS
    # the bound can fail: the same file read without its scales is far off
    for module in model.modules():
        if isinstance(module, FP8Linear):
            module.scale_weight = torch.ones(())
    assert _rel_rms(_run(model, inputs), reference) > 10 * FP8_REL_RMS


def test_plain_fp8_and_dequantising_it(tmp_path, state, inputs):
    path = write_tiny_mvdit17b(tmp_path / "m_fp8.safetensors", seed=5, dtype=torch.bfloat16, fp8="plain")
    model = load_mvdit17b(path, dtype=torch.bfloat16)
    assert model.blocks[4].ffn[0].weight.dtype == torch.float8_e4m3fn
    assert model.blocks[4].ffn[0].scale_weight.item() == 1.0
    assert model.dtype == torch.bfloat16
    reference = _run(load_mvdit17b(write_tiny_mvdit17b(tmp_path / "m.safetensors", seed=5, dtype=torch.bfloat16)), inputs)
    out = _run(model, inputs)
    assert _rel_rms(out, reference) < FP8_REL_RMS
    # weight_dtype = the compute dtype: an ordinary model holding the dequantised values
    plain = load_mvdit17b(path, dtype=torch.bfloat16, weight_dtype=torch.bfloat16)
    assert type(plain.blocks[4].ffn[0]) is torch.nn.Linear and plain.blocks[4].ffn[0].weight.dtype == torch.bfloat16
    torch.testing.assert_close(_run(plain, inputs), out, atol=0, rtol=0)


def test_fp8_storage_of_a_bf16_file(tmp_path, state, inputs):
    path = save_mvdit17b(state, tmp_path / "m.safetensors", dtype=torch.bfloat16)
    model = load_mvdit17b(path, dtype=torch.float32, weight_dtype="fp8_e4m3fn")
    assert model.blocks[1].cross_attn.k_img.weight.dtype == torch.float8_e4m3fn
    assert model.blocks[1].cross_attn.k_img.scale_weight.item() != 1.0
    assert model.text_embedding[0].weight.dtype == torch.float32  # only block Linear weights are quantised
    reference = _run(load_mvdit17b(path, dtype=torch.float32), inputs)
    assert _rel_rms(_run(model, inputs), reference) < FP8_REL_RMS
    with pytest.raises(ValueError, match="weight_dtype"):
        load_mvdit17b(path, dtype=torch.float32, weight_dtype="int4")


@pytest.mark.parametrize("file_dtype", [torch.bfloat16, torch.float32])
def test_fp8_storage_quantises_the_stored_weights_exactly(tmp_path, state, file_dtype):
    """The loader quantises each block weight from a borrowed read: the same codes and scales as quantising the
    stored tensor directly; every other tensor is the stored one in the compute dtype."""
    path = save_mvdit17b(state, tmp_path / "m.safetensors", dtype=file_dtype)
    model = load_mvdit17b(path, dtype=torch.bfloat16, weight_dtype="fp8_e4m3fn")
    quantised = 0
    for name, module in model.named_modules():
        if isinstance(module, FP8Linear) and name.startswith("blocks."):
            stored = state[f"{name}.weight"].to(file_dtype)
            codes, scale = quantize_fp8(stored, torch.float8_e4m3fn)
            assert torch.equal(module.weight.view(torch.uint8), codes.view(torch.uint8)), name
            assert module.scale_weight.item() == scale.item(), name
            quantised += 1
    assert quantised > 0
    torch.testing.assert_close(model.text_embedding[0].weight,
                               state["text_embedding.0.weight"].to(file_dtype).to(torch.bfloat16), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, None])
def test_base_plus_extracted_adapter_is_bit_identical(tmp_path, state, dtype):
    source_dtype = torch.bfloat16 if dtype is not None else torch.float32
    full = save_mvdit17b(state, tmp_path / "full.safetensors", dtype=source_dtype)
    base, _ = split_adapter(state)
    base_path = save_mvdit17b(base, tmp_path / "wan_i2v_14b.safetensors", dtype=source_dtype, prefix="diffusion_model.")
    adapter = extract_adapter(full, tmp_path / "motion_adapter.safetensors", dtype=dtype)
    from safetensors import safe_open

    with safe_open(str(adapter), "pt") as f:
        keys = set(f.keys())
        assert all(".motion_attn." in k or ".norm4." in k for k in keys)
        assert {k.split(".")[1] for k in keys} == {"0", "4"} and f.metadata()["dim"] == "256"
    load_dtype = source_dtype
    from_full = load_mvdit17b(full, dtype=load_dtype).state_dict()
    combined = load_mvdit17b(base_path, dtype=load_dtype, adapter=adapter).state_dict()
    assert from_full.keys() == combined.keys()
    assert all(torch.equal(from_full[k], combined[k]) for k in from_full)


def test_adapter_from_a_scaled_fp8_file_is_dequantised(tmp_path, state):
    fp8_state = to_fp8(state, scaled=True)
    full = save_mvdit17b(fp8_state, tmp_path / "full_fp8.safetensors")
    adapter = extract_adapter(full, tmp_path / "adapter.safetensors", dtype=torch.float32)
    from safetensors.torch import load_file

    tensors = load_file(str(adapter))
    key = "blocks.4.motion_attn.v.weight"
    expected = fp8_state[key].float() * fp8_state["blocks.4.motion_attn.v.scale_weight"]
    assert tensors[key].dtype == torch.float32 and torch.equal(tensors[key], expected)
    assert not any(k.endswith("scale_weight") for k in tensors)


def test_extract_adapter_cli(tmp_path, state):
    full = write_tiny_mvdit17b(tmp_path / "Wan-2-1", seed=5, as_folder=True)
    dst = tmp_path / "out" / "adapter.safetensors"
    assert main(["extract-adapter", str(full), str(dst), "--dtype", "fp16"]) == 0
    from safetensors.torch import load_file

    tensors = load_file(str(dst))
    assert tensors["blocks.0.norm4.weight"].dtype == torch.float16
    # a file that is not a full MV-DiT-17B: exit code 2 and nothing written
    base = write_tiny_mvdit17b(tmp_path / "base.safetensors", part="base")
    bad_dst = tmp_path / "out" / "bad.safetensors"
    assert main(["extract-adapter", str(base), str(bad_dst)]) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter.safetensors"]


def test_refuses_files_that_do_not_fit(tmp_path, state):
    from mtv_pack.mtv_core.dit.tiny import write_tiny_mvdit7b
    from mtv_pack.mtv_core.tokenizer.testing import write_tiny_checkpoint

    full = save_mvdit17b(state, tmp_path / "full.safetensors")
    base_state, adapter_state = split_adapter(state)
    base = save_mvdit17b(base_state, tmp_path / "base.safetensors")
    adapter = save_mvdit17b(adapter_state, tmp_path / "adapter.safetensors")

    def refused(match, path, **kwargs):
        with pytest.raises(CheckpointError, match=match) as info:
            load_mvdit17b(path, dtype=torch.float32, **kwargs)
        return str(info.value)

    assert "7b.safetensors" in refused("MV-DiT-7B loader", write_tiny_mvdit7b(tmp_path / "7b.safetensors"))
    assert "tok.pt" in refused("motion tokenizer", write_tiny_checkpoint(tmp_path / "tok.pt"))
    assert "base.safetensors" in refused("without motion attention.*adapter", base)
    assert "adapter.safetensors" in refused("only motion layers", adapter)
    assert "full.safetensors" in refused("already holds motion attention", full, adapter=adapter)
    assert "full.safetensors" in refused("not a motion adapter", base, adapter=full)

    # a text-to-video Wan base (16 input channels, no image embedding / image keys)
    t2v = {k: v for k, v in base_state.items() if not k.startswith("img_emb.") and "_img" not in k}
    t2v["patch_embedding.weight"] = t2v["patch_embedding.weight"][:, :16]
    t2v_path = save_mvdit17b(t2v, tmp_path / "wan_t2v_14b.safetensors")
    assert "wan_t2v_14b.safetensors" in refused("text-to-video", t2v_path, adapter=adapter)
    in16 = dict(base_state, **{"patch_embedding.weight": base_state["patch_embedding.weight"][:, :16]})
    assert "in16.safetensors" in refused("16 input channels", save_mvdit17b(in16, tmp_path / "in16.safetensors"),
                                         adapter=adapter)

    # an adapter of another width
    wide = random_state_dict_17b(tiny_mvdit17b_config(dim=384, num_heads=3), seed=1)
    wide_adapter = save_mvdit17b(split_adapter(wide)[1], tmp_path / "adapter_384.safetensors")
    message = refused("width 384", base, adapter=wide_adapter)
    assert "adapter_384.safetensors" in message and "base.safetensors" in message


def test_strict_keys_name_the_file(tmp_path, state):
    broken = dict(state)
    del broken["blocks.2.cross_attn.k_img.weight"]
    broken["blocks.2.extra.weight"] = torch.zeros(3)
    path = save_mvdit17b(broken, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="broken.safetensors") as info:
        load_mvdit17b(path, dtype=torch.float32)
    assert "blocks.2.cross_attn.k_img.weight" in str(info.value) and "blocks.2.extra.weight" in str(info.value)


def test_fp8_matmul_hints_are_ignored(tmp_path, state, inputs):
    """ComfyUI-written files may carry scale_input per layer; the weights are upcast, so they are not needed."""
    fp8_state = to_fp8(state, scaled=True)
    fp8_state["blocks.0.self_attn.q.scale_input"] = torch.ones(())
    path = tmp_path / "hints.safetensors"
    save_file({k: v.contiguous() for k, v in fp8_state.items()}, str(path))
    model = load_mvdit17b(path, dtype=torch.float32)
    assert model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
