"""umT5 text encoder: parity with upstream's WanT5EncoderModel, file namings, fp8 files, full size, tokenizer."""

import json
import re

import pytest
import torch
from _wan_reference import ShapesOnly, cases, full_keys, load_case, manifest_for, max_abs, write_release_file
from safetensors import safe_open
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError, load_into
from mtv_pack.mtv_core.wan.text_encoder import (
    build_umt5,
    load_umt5,
    load_umt5_tokenizer,
    umt5_config_from_shapes,
    umt5_key_map,
    write_tiny_umt5,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CASES = cases("umt5")


def test_reference_cases_present():
    assert CASES, "no case_umt5_tiny_seed*.safetensors under the reference folder"


@pytest.mark.parametrize("case_path", CASES, ids=[c.name for c in CASES])
def test_umt5_matches_upstream(case_path, tmp_path):
    manifest = manifest_for(case_path)
    encoder = load_umt5(write_release_file(manifest, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"), torch.float32)
    case, meta = load_case(case_path)
    config = manifest["config"]
    assert encoder.model.config.num_heads == config["num_heads"]
    assert encoder.model.config.num_layers == config["num_layers"]
    hidden = encoder.hidden_states(case["input_ids"], case["attention_mask"])
    assert max_abs(hidden, case["last_hidden_state"]) < 1e-4  # padded rows included
    embeds = encoder.encode_text(case["input_ids"], case["attention_mask"])
    assert [e.shape[0] for e in embeds] == case["seq_lens"].tolist()
    for i, e in enumerate(embeds):
        assert max_abs(e, case[f"embeds_{i}"]) < 1e-4


def _tiny_ids():
    ids = torch.tensor([[5, 17, 300, 1, 0, 0, 0, 0], [9, 8, 7, 6, 5, 4, 3, 1]])
    return ids, (ids != 0).long()


def test_wan_and_comfy_namings_give_the_same_encoder(tmp_path):
    wan = load_umt5(write_tiny_umt5(tmp_path / "enc.pth", seed=3, naming="wan"), torch.float32)
    comfy_file = write_tiny_umt5(tmp_path / "umt5_xxl_fp16.safetensors", seed=3, naming="comfy")
    with safe_open(str(comfy_file), framework="pt") as f:
        assert "encoder.block.0.layer.0.SelfAttention.q.weight" in f.keys() and "shared.weight" in f.keys()
    comfy = load_umt5(comfy_file, torch.float32)
    ids, mask = _tiny_ids()
    a, b = wan.encode_text(ids, mask), comfy.encode_text(ids, mask)
    assert [x.shape for x in a] == [(4, 64), (8, 64)]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=0, rtol=0)
    assert comfy.model.encoder.embed_tokens is comfy.model.shared  # tied, one copy


def test_tiny_wan_file_uses_released_key_names(tmp_path):
    released = {re.sub(r"\.\d+\.", ".N.", k) for k in full_keys("umt5_xxl_enc_full_keys.json")["params"]}
    path = write_tiny_umt5(tmp_path / "t.pth", naming="wan")
    tiny = {re.sub(r"\.\d+\.", ".N.", k) for k in torch.load(str(path), weights_only=True)}
    assert tiny == released


def _fp8_comfy_file(tmp_path, layout: str):
    src = write_tiny_umt5(tmp_path / "src.safetensors", seed=5, naming="comfy")
    with safe_open(str(src), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    expected = {}
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)} if layout == "old" else {}
    for key, value in state.items():
        if value.ndim == 2 and key.endswith(("q.weight", "k.weight", "v.weight", "o.weight", "wi_0.weight",
                                             "wi_1.weight", "wo.weight")):
            scale = value.abs().max() / 448
            q = (value / scale).to(torch.float8_e4m3fn)
            out[key] = q
            layer = key[: -len(".weight")]
            if layout == "old":
                out[f"{layer}.scale_weight"] = scale.reshape(())
                out[f"{layer}.scale_input"] = torch.tensor(1.0)
            else:
                out[f"{layer}.weight_scale"] = scale.reshape(())
                out[f"{layer}.comfy_quant"] = torch.tensor(list(json.dumps({"format": "float8_e4m3fn"}).encode()),
                                                           dtype=torch.uint8)
            expected[key] = q.float() * scale
        else:
            out[key] = value
            expected[key] = value
    path = tmp_path / f"umt5_xxl_fp8_{layout}.safetensors"
    save_file(out, str(path))
    return path, expected


@pytest.mark.parametrize("layout", ["old", "new"])
def test_scaled_fp8_files_are_dequantised(tmp_path, layout):
    path, expected = _fp8_comfy_file(tmp_path, layout)
    encoder = load_umt5(path, torch.float32)
    state = encoder.model.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, atol=0, rtol=0)
    ids, mask = _tiny_ids()
    assert all(torch.isfinite(e).all() for e in encoder.encode_text(ids, mask))


def test_block_scaled_quantisation_is_refused_naming_the_file(tmp_path):
    path, _ = _fp8_comfy_file(tmp_path, "new")
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in state if k.endswith(".comfy_quant"))
    state[key] = torch.tensor(list(json.dumps({"format": "nvfp4"}).encode()), dtype=torch.uint8)
    bad = tmp_path / "umt5_nvfp4.safetensors"
    save_file(state, str(bad))
    with pytest.raises(CheckpointError, match="umt5_nvfp4.safetensors.*nvfp4"):
        load_umt5(bad)


def test_wrong_files_are_named(tmp_path):
    from mtv_pack.mtv_core.wan.vae import write_tiny_wan_vae

    vae = write_tiny_wan_vae(tmp_path / "wan_2.1_vae.safetensors")
    with pytest.raises(CheckpointError, match="wan_2.1_vae.safetensors"):
        load_umt5(vae)
    # a T5 v1.1 encoder: one position-bucket table in the first block only
    src = write_tiny_umt5(tmp_path / "t5.safetensors", naming="comfy")
    with safe_open(str(src), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if "block.1.layer.0.SelfAttention.relative" not in k}
    save_file(state, str(tmp_path / "t5xxl.safetensors"))
    with pytest.raises(CheckpointError, match="t5xxl.safetensors.*not umT5"):
        load_umt5(tmp_path / "t5xxl.safetensors")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_umt5(tmp_path / "nothing.pth")


def test_released_umt5_xxl_keys_load_on_meta():
    spec = full_keys("umt5_xxl_enc_full_keys.json")
    assert len(spec["params"]) == 242
    mapped = umt5_key_map(ShapesOnly(spec["file"], spec["params"]))
    config = umt5_config_from_shapes(mapped.shapes())
    assert (config["d_model"], config["num_layers"], config["num_heads"], config["d_ff"], config["d_kv"]) == (
        4096, 24, 64, 10240, 64)
    model = build_umt5(config)
    model.encoder.embed_tokens = torch.nn.Identity()
    load_into(model, mapped, device="meta", what="umT5")  # strict: no missing, unexpected or mis-shaped keys
    model.encoder.embed_tokens = model.shared
    assert sum(p.numel() for p in model.parameters()) == spec["num_params"]


def test_tokenizer_is_read_from_a_local_folder_only(tmp_path):
    with pytest.raises(FileNotFoundError, match="umt5-xxl"):
        load_umt5_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*umt5-xxl"):
        load_umt5_tokenizer(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="broken"):
        load_umt5_tokenizer(tmp_path / "broken")


def test_prompts_are_padded_encoded_and_trimmed(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate("the woman is dancing".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>") \
        .save_pretrained(str(tmp_path / "tok"))
    tokenizer = load_umt5_tokenizer(tmp_path / "tok")
    encoder = load_umt5(write_tiny_umt5(tmp_path / "enc.safetensors", naming="comfy"), torch.float32)
    embeds = encoder.encode_prompts(tokenizer, ["the woman is dancing", "dancing"], max_length=16)
    assert [e.shape for e in embeds] == [(5, 64), (2, 64)]  # words + eos
    ids = torch.tensor([[3, 4, 5, 6, 1] + [0] * 11])
    full = encoder.hidden_states(ids, (ids != 0).long())
    torch.testing.assert_close(embeds[0], full[0, :5])
