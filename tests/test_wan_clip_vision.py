"""CLIP ViT-H/14 visual tower: parity with upstream's VisionTransformer, namings, full size, errors."""

import re

import pytest
import torch
from _wan_reference import ShapesOnly, cases, full_keys, load_case, manifest_for, max_abs, write_release_file
from safetensors import safe_open
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError, load_into
from mtv_pack.mtv_core.wan.image_encoder import (
    CLIP_MEAN,
    CLIP_STD,
    build_clip_vision,
    clip_normalize,
    clip_vision_config_from_shapes,
    clip_vision_key_map,
    load_clip_vision,
    resize_for_clip,
    write_tiny_clip_vision,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CASES = cases("clipvis")


def test_reference_cases_present():
    assert CASES, "no case_clipvis_tiny_seed*.safetensors under the reference folder"


@pytest.mark.parametrize("case_path", CASES, ids=[c.name for c in CASES])
def test_clip_vision_matches_upstream(case_path, tmp_path):
    manifest = manifest_for(case_path)
    config = manifest["config"]
    path = write_release_file(manifest, tmp_path / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    clip = load_clip_vision(path, num_heads=config["num_heads"])
    case, meta = load_case(case_path)
    assert clip.image_size == config["image_size"] and clip.dim == config["dim"]
    pixels_pm1 = case["pixels_01"] * 2 - 1
    assert max_abs(pixels_pm1, case["pixels_pm1"]) < 1e-6
    resized = resize_for_clip(pixels_pm1, clip.image_size)
    assert max_abs(resized, case["resized_pm1"]) < 1e-5
    visual_input = clip_normalize(resized)
    assert max_abs(visual_input, case["visual_input"]) < 1e-5
    assert max_abs(clip.features_from_input(case["visual_input"]), case["features"]) < 1e-4
    assert max_abs(clip.features_from_input(case["visual_input"], skip_last=0), case["features_all_blocks"]) < 1e-4
    assert max_abs(clip.encode(pixels_pm1), case["features"]) < 1e-4  # the whole path in one call
    for name, ours in (("clip_mean", CLIP_MEAN), ("clip_std", CLIP_STD)):
        if name in meta:
            assert [float(v) for v in meta[name].split(",")] == pytest.approx(ours, abs=1e-8)


def _open_clip_state(wan_state: dict) -> dict:
    """Wan naming -> open-clip naming (the layout ComfyUI converts from)."""
    out = {}
    for key, value in wan_state.items():
        if not key.startswith("visual."):
            continue
        name = key[len("visual."):]
        m = re.fullmatch(r"transformer\.(\d+)\.(.+)", name)
        if m:
            leaf = {"norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias", "norm2.weight": "ln_2.weight",
                    "norm2.bias": "ln_2.bias", "attn.to_qkv.weight": "attn.in_proj_weight",
                    "attn.to_qkv.bias": "attn.in_proj_bias", "attn.proj.weight": "attn.out_proj.weight",
                    "attn.proj.bias": "attn.out_proj.bias", "mlp.0.weight": "mlp.c_fc.weight",
                    "mlp.0.bias": "mlp.c_fc.bias", "mlp.2.weight": "mlp.c_proj.weight",
                    "mlp.2.bias": "mlp.c_proj.bias"}[m.group(2)]
            out[f"visual.transformer.resblocks.{m.group(1)}.{leaf}"] = value
        else:
            simple = {"cls_embedding": ("class_embedding", lambda t: t.flatten()),
                      "pos_embedding": ("positional_embedding", lambda t: t[0]),
                      "patch_embedding.weight": ("conv1.weight", None), "pre_norm.weight": ("ln_pre.weight", None),
                      "pre_norm.bias": ("ln_pre.bias", None), "post_norm.weight": ("ln_post.weight", None),
                      "post_norm.bias": ("ln_post.bias", None), "head": ("proj", None)}
            new, fn = simple[name]
            out[f"visual.{new}"] = fn(value) if fn else value
    return out


def test_wan_comfy_and_open_clip_namings_give_the_same_features(tmp_path):
    wan_file = write_tiny_clip_vision(tmp_path / "clip.pth", seed=2, naming="wan")
    comfy_file = write_tiny_clip_vision(tmp_path / "clip_vision_h.safetensors", seed=2, naming="comfy")
    with safe_open(str(comfy_file), framework="pt") as f:
        assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in f.keys()
    wan_state = torch.load(str(wan_file), weights_only=True)
    open_clip_file = tmp_path / "open_clip.safetensors"
    save_file({k: v.contiguous() for k, v in _open_clip_state(wan_state).items()}, str(open_clip_file))
    pixels = torch.rand(2, 3, 40, 30) * 2 - 1
    features = [load_clip_vision(p).encode(pixels) for p in (wan_file, comfy_file, open_clip_file)]
    assert features[0].shape == (2, 17, 128)
    for other in features[1:]:
        torch.testing.assert_close(other, features[0], atol=0, rtol=0)


def test_tiny_wan_file_uses_released_key_names(tmp_path):
    released = {re.sub(r"\.\d+\.", ".N.", k) for k in full_keys("clip_xlmr_vith14_full_keys.json")["params"]}
    tiny = torch.load(str(write_tiny_clip_vision(tmp_path / "t.pth", naming="wan")), weights_only=True)
    assert {re.sub(r"\.\d+\.", ".N.", k) for k in tiny} <= released


def test_released_clip_keys_load_on_meta(caplog):
    spec = full_keys("clip_xlmr_vith14_full_keys.json")
    assert len(spec["params"]) == 784
    with caplog.at_level("INFO", logger="mtv_pack.mtv_core.wan.image_encoder"):
        canonical = clip_vision_key_map(ShapesOnly(spec["file"], spec["params"]))
    assert "keys outside the visual tower are not used" in caplog.text
    config = clip_vision_config_from_shapes(canonical.shapes())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"], config["image_size"],
            config["patch_size"], config["intermediate_size"]) == (1280, 32, 16, 224, 14, 5120)
    model = build_clip_vision(config)
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in model.state_dict()) else ""
    mapped = clip_vision_key_map(ShapesOnly(spec["file"], spec["params"]), prefix)
    load_into(model, mapped, device="meta", what="CLIP vision")  # strict
    visual = sum(int(torch.Size(s).numel()) for k, s in spec["params"].items() if k.startswith("visual."))
    head = int(torch.Size(spec["params"]["visual.head"]).numel())
    assert sum(p.numel() for p in model.parameters()) == visual - head


def test_wrong_files_are_named(tmp_path):
    from mtv_pack.mtv_core.wan.text_encoder import write_tiny_umt5

    umt5 = write_tiny_umt5(tmp_path / "umt5.safetensors", naming="comfy")
    with pytest.raises(CheckpointError, match="umt5.safetensors.*not a CLIP vision"):
        load_clip_vision(umt5)
    state = torch.load(str(write_tiny_clip_vision(tmp_path / "c.pth")), weights_only=True)
    del state["visual.transformer.1.mlp.0.weight"]
    torch.save(state, str(tmp_path / "broken_clip.pth"))
    with pytest.raises(CheckpointError, match="(?s)broken_clip.pth.*1 missing keys.*mlp.fc1"):
        load_clip_vision(tmp_path / "broken_clip.pth")
