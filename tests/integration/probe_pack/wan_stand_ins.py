"""Test-only: ComfyUI's own Wan text encoder (CLIP) and CLIP vision model, built from tiny files.

ComfyUI's **Load CLIP** (type ``wan``) and **Load CLIP Vision** know only the released sizes: they pick a fixed
config by key names (umT5-XXL: 24 blocks of width 4096; clip_vision_h: 32 layers of 1280) and refuse anything
smaller. These builders read the architecture from the tiny file's shapes and build the *same native classes*
those loaders build (``comfy.sd.CLIP`` with ``comfy.text_encoders.wan``'s umT5 model and tokenizer,
``comfy.clip_vision.ClipVisionModel``), so CLIP Text Encode and CLIP Vision Encode run ComfyUI's own code on
them and produce real CONDITIONING / CLIP_VISION_OUTPUT. Used by the probe folder's stand-in loader nodes and
by the in-process equivalence tests. Nothing here ships with the pack.
"""

from __future__ import annotations

import json
import os
import re
import tempfile


def umt5_config(sd) -> dict:
    """ComfyUI T5 config overrides of a umT5 state dict in transformers naming."""
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.block\.(\d+)\.", k)))
    vocab, d_model = sd["shared.weight"].shape
    buckets, heads = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape
    inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    return {"d_model": d_model, "d_ff": sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0],
            "d_kv": inner // heads, "num_heads": heads, "num_layers": layers, "vocab_size": vocab,
            "relative_attention_num_buckets": buckets}


def native_wan_clip(path: str):
    """A ``comfy.sd.CLIP`` of type wan (umT5 model and SentencePiece tokenizer of ``comfy.text_encoders.wan``) for
    a tiny umT5 file that carries its tokenizer as ``spiece_model``, as ComfyUI's umT5 files do."""
    import comfy.sd
    import comfy.text_encoders.wan
    import comfy.utils
    import torch

    sd = comfy.utils.load_torch_file(path, safe_load=True)
    spiece = sd.pop("spiece_model")

    class Target:
        params: dict = {}
        clip = comfy.text_encoders.wan.te()
        tokenizer = comfy.text_encoders.wan.WanT5Tokenizer

    clip = comfy.sd.CLIP(target=Target, tokenizer_data={"spiece_model": spiece},
                         model_options={"umt5xxl_model_config": umt5_config(sd), "dtype": torch.float32})
    missing, unexpected = clip.load_sd(sd)
    if missing:
        raise ValueError(f"{path}: missing {missing}")
    return clip


def clip_vision_config(sd, num_heads: int) -> dict:
    """ComfyUI clip_vision json config of a tower in transformers naming (``vision_model.*``)."""
    width, _, patch, _ = sd["vision_model.embeddings.patch_embedding.weight"].shape
    positions = sd["vision_model.embeddings.position_embedding.weight"].shape[0]
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k)))
    return {"hidden_size": width, "image_size": int(round((positions - 1) ** 0.5)) * patch, "patch_size": patch,
            "intermediate_size": sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            "num_attention_heads": num_heads, "num_hidden_layers": layers, "num_channels": 3,
            "projection_dim": sd["visual_projection.weight"].shape[0], "hidden_act": "gelu", "layer_norm_eps": 1e-5,
            "attention_dropout": 0.0, "dropout": 0.0, "model_type": "clip_vision_model"}


def native_clip_vision(path: str):
    """A ``comfy.clip_vision.ClipVisionModel`` for a tiny tower in ComfyUI's clip_vision naming (its head count from
    the file's ``mtv_clip_vision_config`` metadata, as our tiny writer stores it)."""
    import comfy.clip_vision
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    heads = json.loads((metadata or {})["mtv_clip_vision_config"])["num_attention_heads"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(clip_vision_config(sd, heads), fh)
    try:
        model = comfy.clip_vision.ClipVisionModel(fh.name)
    finally:
        os.unlink(fh.name)
    missing, _ = model.load_sd(sd)
    if missing:
        raise ValueError(f"{path}: missing {missing}")
    return model


def train_tiny_spiece(vocab_size: int = 200) -> bytes:
    """A tiny SentencePiece unigram model with umT5's special ids (pad 0, eos 1, unk 2), trained on a few prompts."""
    import io

    import sentencepiece

    text = ["The character is dancing.", "bad hands, extra limbs, fused fingers, blurry, low quality",
            "The woman is dancing on the beach, waves, sunset.", "a man walks", "A person waves at the camera"] * 20
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, character_coverage=1.0,
        minloglevel=2)
    return model.getvalue()
