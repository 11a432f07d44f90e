"""Test-only stand-ins for two native loaders that know only the released model sizes (integration tests only).

Installed next to the pack as the custom node folder ``mtv_test_stubs`` of the throw-away test server; never
shipped. Each builds the *native* type from ComfyUI's own classes, at the tiny file's size:

* ``TestTinyWanCLIPLoader`` stands in for ``CLIPLoader`` (type wan): ComfyUI's ``T5`` / ``SDClipModel`` /
  ``SDTokenizer`` with the file's sizes (read from its shapes) and the umT5 settings of
  ``comfy/text_encoders/wan.py`` (zero-padded to 512 tokens); the tokenizer is byte-level, as the real umT5
  sentencepiece model is not available offline. Native detection only knows umT5-XXL.
* ``TestTinyCLIPVisionLoader`` stands in for ``CLIPVisionLoader``: ComfyUI's ``ClipVisionModel`` with the
  tower's sizes from the file's metadata (written by ``mtv_core.wan.image_encoder.write_tiny_clip_vision``).
  Native detection only knows the released towers (ViT-H has 32 blocks).
"""

from __future__ import annotations

import json
import os
import re

import comfy.clip_vision
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base
import comfy.text_encoders.t5
import comfy.utils
import folder_paths

BYTE_OFFSET = 3  # ids 0..2 are pad, eos, unk as in T5


class ByteTokenizer:
    """UTF-8 bytes as token ids (+3), eos 1 appended: the interface SDTokenizer needs from a HF tokenizer."""

    vocab_size = 256 + BYTE_OFFSET

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        return cls()

    def __call__(self, text):
        return {"input_ids": [b + BYTE_OFFSET for b in text.encode("utf-8")] + [1]}

    def get_vocab(self):
        return {f"<{i}>": i for i in range(self.vocab_size)}


def _t5_config(sd: dict) -> dict:
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    vocab, d_model = sd["shared.weight"].shape
    bias = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    heads = bias.shape[1]
    inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    if vocab < ByteTokenizer.vocab_size:
        raise ValueError(f"tiny umT5 with {vocab} tokens; the byte tokenizer needs {ByteTokenizer.vocab_size}")
    return {"d_ff": sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0], "d_kv": inner // heads,
            "d_model": d_model, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
            "layer_norm_epsilon": 1e-6, "model_type": "umt5", "num_heads": heads, "num_layers": len(layers),
            "relative_attention_num_buckets": bias.shape[0], "vocab_size": vocab, "pad_token_id": 0,
            "eos_token_id": 1}


def tiny_wan_clip(path: str) -> comfy.sd.CLIP:
    sd = comfy.utils.load_torch_file(path, safe_load=True)
    config = _t5_config(sd)
    config_path = os.path.join(folder_paths.get_temp_directory(), f"tiny_umt5_{config['d_model']}.json")
    os.makedirs(os.path.dirname(config_path), exist_ok=True)
    with open(config_path, "w") as fh:
        json.dump(config, fh)

    class TinyUMT5(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, model_options={}):
            super().__init__(device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config=config_path,
                             dtype=dtype, special_tokens={"end": 1, "pad": 0}, model_class=comfy.text_encoders.t5.T5,
                             enable_attention_masks=True, zero_out_masked=True, model_options=model_options)

    class TinyUMT5Tokenizer(comfy.sd1_clip.SDTokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            super().__init__(None, pad_with_end=False, embedding_size=config["d_model"], embedding_key="umt5xxl",
                             tokenizer_class=ByteTokenizer, has_start_token=False, pad_to_max_length=False,
                             max_length=99999999, min_length=512, pad_token=0, tokenizer_data=tokenizer_data)

    class Tokenizer(comfy.sd1_clip.SD1Tokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                             clip_name="umt5xxl", tokenizer=TinyUMT5Tokenizer)

    class Model(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options, name="umt5xxl",
                             clip_model=TinyUMT5, **kwargs)

    target = comfy.supported_models_base.ClipTarget(Tokenizer, Model)
    return comfy.sd.CLIP(target=target, state_dict=[sd], parameters=comfy.utils.calculate_parameters(sd))


def tiny_clip_vision(path: str) -> comfy.clip_vision.ClipVisionModel:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        stored = json.loads((f.metadata() or {})["mtv_clip_vision_config"])
    sd = comfy.utils.load_torch_file(path, safe_load=True)
    config = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": stored["hidden_act"],
              "hidden_size": stored["hidden_size"], "image_size": stored["image_size"], "initializer_factor": 1.0,
              "initializer_range": 0.02, "intermediate_size": stored["intermediate_size"],
              "layer_norm_eps": stored["layer_norm_eps"], "model_type": "clip_vision_model",
              "num_attention_heads": stored["num_attention_heads"], "num_channels": 3,
              "num_hidden_layers": stored["num_hidden_layers"], "patch_size": stored["patch_size"],
              "projection_dim": sd["visual_projection.weight"].shape[0], "torch_dtype": "float32"}
    config_path = os.path.join(folder_paths.get_temp_directory(), "tiny_clip_vision.json")
    os.makedirs(os.path.dirname(config_path), exist_ok=True)
    with open(config_path, "w") as fh:
        json.dump(config, fh)
    clip = comfy.clip_vision.ClipVisionModel(config_path)
    missing, unexpected = clip.load_sd(sd)
    if missing:
        raise ValueError(f"{path}: tiny CLIP vision tower misses {missing[:5]}")
    return clip


class TestTinyWanCLIPLoader:
    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's V1 node API
        return {"required": {"clip_name": (folder_paths.get_filename_list("text_encoders"),),
                             "type": (["wan"],)},
                "optional": {"device": (["default", "cpu"],)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, clip_name, type="wan", device="default"):
        return (tiny_wan_clip(folder_paths.get_full_path_or_raise("text_encoders", clip_name)),)


class TestTinyCLIPVisionLoader:
    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"clip_name": (folder_paths.get_filename_list("clip_vision"),)}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, clip_name):
        return (tiny_clip_vision(folder_paths.get_full_path_or_raise("clip_vision", clip_name)),)


NODE_CLASS_MAPPINGS = {"TestTinyWanCLIPLoader": TestTinyWanCLIPLoader,
                       "TestTinyCLIPVisionLoader": TestTinyCLIPVisionLoader}
# the native loaders each one replaces in a workflow under test
STAND_INS = {"CLIPLoader": "TestTinyWanCLIPLoader", "CLIPVisionLoader": "TestTinyCLIPVisionLoader"}
