"""CLIP ViT-H/14 visual tower of MV-DiT-17B (transformers ``CLIPVisionModel``): loading and features.

Accepted files (the text tower and projection heads, where present, are ignored with a log line):
    * Wan's ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``: the tower under ``visual.`` in Wan's
      naming (``patch_embedding``, ``cls_embedding``, ``pos_embedding``, ``pre_norm``,
      ``transformer.N.{norm1, attn.to_qkv, attn.proj, norm2, mlp.0, mlp.2}``, ``post_norm``, ``head``);
    * ComfyUI's ``clip_vision_h.safetensors`` (transformers naming ``vision_model.*``);
    * open-clip naming (``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
      ``transformer.resblocks.N.{ln_1, attn.in_proj_weight, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``).
Fused q/k/v projections are split row-wise (q, k, v in that order).

What upstream computes (``CLIPModel.forward`` with ``use_31_block``): pixels in [-1, 1] -> bicubic resize to
the tower's image size (align_corners False, no antialias, no crop) -> back to [0, 1] -> CLIP mean/std ->
patch embedding + class token + positions -> pre-norm -> every transformer block but the last. No
post-norm, no head: ``features`` (B, 1 + (S/14)^2, width) = (B, 257, 1280) in the release.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import CheckpointError, load_into, open_checkpoint, strip_key_prefix
from ..meta_init import empty_weights, finish_loading
from .keymap import MappedCheckpoint, Source, save_state

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Heads cannot be read from the weights; these are the widths of the released open-clip towers.
_HEADS_BY_WIDTH = {1280: 16, 1024: 16, 768: 12, 1664: 16}
_METADATA_KEY = "mtv_clip_vision_config"
_KEY_PREFIXES = ("model.", "module.", "clip.", "clip_vision.")
_IGNORED = re.compile(r"^(textual\.|text_model\.|text_projection|logit_scale|log_scale|visual_projection|"
                      r"visual\.head$|visual\.proj$|vision_model\.embeddings\.position_ids$)")

_WAN_LAYER = {
    "norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
    "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2",
}
_OPEN_CLIP_LAYER = {
    "ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}


def _naming(keys: list[str]) -> str | None:
    if any(k.startswith("visual.transformer.resblocks.") for k in keys):
        return "open_clip"
    if any(k.startswith(("visual.transformer.", "visual.patch_embedding")) for k in keys):
        return "wan"
    if any(k.startswith("vision_model.") for k in keys):
        return "hf"
    if any(k.startswith("transformer.resblocks.") for k in keys):
        return "open_clip_bare"
    if "patch_embedding.weight" in keys and any(k.startswith("transformer.") for k in keys):
        return "wan_bare"
    return None


def _tower_sources(ckpt, naming: str) -> tuple[dict[str, Source], dict[str, tuple], list[str]]:
    """Sources for the canonical (transformers, no ``vision_model.`` prefix) keys."""
    prefix = {"open_clip": "visual.", "wan": "visual.", "hf": "vision_model.", "open_clip_bare": "",
              "wan_bare": ""}[naming]
    sources: dict[str, Source] = {}
    unexpected: dict[str, tuple] = {}
    ignored: list[str] = []
    for key in ckpt.keys():
        shape = ckpt.shape(key)
        if _IGNORED.match(key) or (naming.endswith("bare") and key in ("head", "proj")):
            ignored.append(key)
            continue
        if not key.startswith(prefix):
            unexpected[key] = shape
            continue
        name = key[len(prefix):]
        if naming == "hf":
            sources[name] = Source(key, shape)
            continue
        fused = None
        target = None
        if naming.startswith("wan"):
            simple = {"patch_embedding.weight": "embeddings.patch_embedding.weight",
                      "pre_norm.weight": "pre_layrnorm.weight", "pre_norm.bias": "pre_layrnorm.bias",
                      "post_norm.weight": "post_layernorm.weight", "post_norm.bias": "post_layernorm.bias"}
            if name == "cls_embedding":
                sources["embeddings.class_embedding"] = Source(key, (shape[-1],), reshape=True)
                continue
            if name == "pos_embedding":
                sources["embeddings.position_embedding.weight"] = Source(key, tuple(shape[-2:]), reshape=True)
                continue
            target = simple.get(name)
            m = re.fullmatch(r"transformer\.(\d+)\.(.+)\.(weight|bias)", name)
            if m:
                if m.group(2) == "attn.to_qkv":
                    fused = (m.group(1), m.group(3))
                elif m.group(2) in _WAN_LAYER:
                    target = f"encoder.layers.{m.group(1)}.{_WAN_LAYER[m.group(2)]}.{m.group(3)}"
        else:
            simple = {"conv1.weight": "embeddings.patch_embedding.weight",
                      "class_embedding": "embeddings.class_embedding",
                      "positional_embedding": "embeddings.position_embedding.weight",
                      "ln_pre.weight": "pre_layrnorm.weight", "ln_pre.bias": "pre_layrnorm.bias",
                      "ln_post.weight": "post_layernorm.weight", "ln_post.bias": "post_layernorm.bias"}
            target = simple.get(name)
            m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", name)
            if m:
                if m.group(2) in ("attn.in_proj_weight", "attn.in_proj_bias"):
                    fused = (m.group(1), m.group(2).rsplit("_", 1)[-1])
                else:
                    sub = re.fullmatch(r"(.+)\.(weight|bias)", m.group(2))
                    if sub and sub.group(1) in _OPEN_CLIP_LAYER:
                        target = f"encoder.layers.{m.group(1)}.{_OPEN_CLIP_LAYER[sub.group(1)]}.{sub.group(2)}"
        if fused is not None:
            layer, leaf = fused
            width = shape[0] // 3
            for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                sources[f"encoder.layers.{layer}.self_attn.{proj}.{leaf}"] = Source(
                    key, (width,) + tuple(shape[1:]), rows=(i * width, (i + 1) * width))
        elif target is not None:
            sources[target] = Source(key, shape)
        else:
            unexpected[key] = shape
    return sources, unexpected, ignored


def clip_vision_key_map(ckpt, model_prefix: str = "") -> MappedCheckpoint:
    """``ckpt`` (Wan, ComfyUI/transformers or open-clip naming) under ``CLIPVisionModel``'s key names.

    ``model_prefix``: the prefix the transformers model puts before ``embeddings.`` (``vision_model.`` in
    transformers 4, none in 5).
    """
    naming = _naming(ckpt.keys())
    if naming is None:
        raise CheckpointError(
            f"{ckpt.path}: not a CLIP vision checkpoint (no visual.*, vision_model.* or open-clip tower keys); "
            "expected models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth or clip_vision_h.safetensors"
        )
    sources, unexpected, ignored = _tower_sources(ckpt, naming)
    if ignored:
        logger.info("%s: %d keys outside the visual tower are not used (%s ...)", ckpt.path, len(ignored),
                    ", ".join(sorted(ignored)[:3]))
    return MappedCheckpoint(ckpt, sources, unexpected).prefixed(model_prefix)


def clip_vision_config_from_shapes(shapes: dict[str, tuple], num_heads: int | None = None, path="") -> dict:
    """``CLIPVisionConfig`` arguments from canonical (unprefixed) shapes; heads from ``num_heads`` or the
    released widths (ViT-H/14: 1280 wide, 16 heads), else ``width // 64``."""
    shapes = {k.removeprefix("vision_model."): v for k, v in shapes.items()}
    try:
        width, _, patch, _ = shapes["embeddings.patch_embedding.weight"]
        positions = shapes["embeddings.position_embedding.weight"][0]
        intermediate = shapes["encoder.layers.0.mlp.fc1.weight"][0]
    except KeyError as exc:
        raise CheckpointError(f"{path}: not a CLIP vision tower (no {exc.args[0]})") from None
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise CheckpointError(f"{path}: {positions} position embeddings are not 1 + a square grid")
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    if num_heads is None:
        num_heads = _HEADS_BY_WIDTH.get(width, max(1, width // 64))
    if width % num_heads:
        raise CheckpointError(f"{path}: width {width} is not a multiple of {num_heads} heads")
    return dict(hidden_size=width, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=num_heads, image_size=grid * patch, patch_size=patch, num_channels=3,
                hidden_act="gelu", layer_norm_eps=1e-5, attention_dropout=0.0)


def build_clip_vision(config: dict):
    """An (unloaded) ``CLIPVisionModel`` for ``config``: weights on the meta device, the non-persistent position
    ids real (``meta_init.empty_weights``)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    with empty_weights():
        return CLIPVisionModel(CLIPVisionConfig(**config))


def _model_prefix(model) -> str:
    return "vision_model." if any(k.startswith("vision_model.") for k in model.state_dict()) else ""


def resize_for_clip(pixels_pm1: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 3, S, S): bicubic, align_corners False, no antialias, no crop."""
    return F.interpolate(pixels_pm1, size=(image_size, image_size), mode="bicubic", align_corners=False)


def clip_normalize(resized_pm1: torch.Tensor, image_mean: Sequence[float] = CLIP_MEAN,
                   image_std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Resized [-1, 1] pixels -> [0, 1] -> the tower's mean/std (OpenAI CLIP's by default): the tower's input."""
    mean = torch.tensor(image_mean, dtype=resized_pm1.dtype, device=resized_pm1.device).view(1, 3, 1, 1)
    std = torch.tensor(image_std, dtype=resized_pm1.dtype, device=resized_pm1.device).view(1, 3, 1, 1)
    return (resized_pm1 * 0.5 + 0.5 - mean) / std


class ClipVisionEncoder:
    """A loaded CLIP visual tower giving upstream's penultimate-block features."""

    def __init__(self, model: torch.nn.Module, source: str = "") -> None:
        self.model = model.eval().requires_grad_(False)
        self.source = source

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> "ClipVisionEncoder":
        self.model.to(device)
        return self

    def preprocess(self, pixels_pm1: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, S, S) normalised tower input (float32)."""
        if pixels_pm1.ndim != 4 or pixels_pm1.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, H, W), got {tuple(pixels_pm1.shape)}")
        return clip_normalize(resize_for_clip(pixels_pm1.float(), self.image_size))

    @torch.no_grad()
    def features_from_input(self, visual_input: torch.Tensor, skip_last: int = 1) -> torch.Tensor:
        """Normalised input -> (B, tokens, width) float32: output of all blocks but the last ``skip_last``
        (upstream ``use_31_block``: 1; 0 gives every block), before the post-norm."""
        out = self.model(pixel_values=visual_input.to(self.device, self.dtype), output_hidden_states=True)
        return out.hidden_states[-1 - skip_last].float()

    def encode(self, pixels_pm1: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 1 + (S/p)^2, width) float32 features (``clip_fea``)."""
        return self.features_from_input(self.preprocess(pixels_pm1))


def load_clip_vision(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    num_heads: int | None = None,
) -> ClipVisionEncoder:
    """Load the CLIP visual tower from a Wan ``.pth``, a ComfyUI ``clip_vision_*.safetensors`` or an
    open-clip file. Upstream runs it in float32 (the default). ``num_heads`` overrides the head count
    (read from the file's metadata when written by :func:`write_tiny_clip_vision`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CLIP vision model not found: {path}")
    ckpt = strip_key_prefix(open_checkpoint(path), _KEY_PREFIXES)
    stored = json.loads(ckpt.metadata[_METADATA_KEY]) if _METADATA_KEY in ckpt.metadata else {}
    canonical = clip_vision_key_map(ckpt)
    config = clip_vision_config_from_shapes(canonical.shapes(), num_heads or stored.get("num_attention_heads"), path)
    model = build_clip_vision(config)
    load_clip_vision_weights(model, canonical.prefixed(_model_prefix(model)), dtype=dtype, device=device)
    logger.info("loaded CLIP vision tower from %s (%d blocks, width %d, %d heads, %s)", path,
                config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"], dtype)
    return ClipVisionEncoder(model, source=str(path))


def load_clip_vision_weights(model, mapped, dtype: torch.dtype | None = None,
                             device: torch.device | str = "cpu") -> None:
    """Strictly load ``mapped`` into ``model`` (built by ``build_clip_vision``) on ``device``."""
    load_into(model, mapped, dtype=dtype, device=device, what="CLIP vision",
              hint="expected models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth or clip_vision_h.safetensors")
    finish_loading(model, device, mapped.path)


def tiny_clip_vision_config() -> dict:
    """A 3-block tower with the real layout (patch 14, class token, pre-norm, gelu), head dim 64."""
    return dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=2,
                image_size=56, patch_size=14, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-5,
                attention_dropout=0.0)


def _canonical_to_wan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    inverse = {v: k for k, v in _WAN_LAYER.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if m and m.group(2).startswith("self_attn.") and m.group(2) != "self_attn.out_proj":
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)[len("self_attn."):]] = value
        elif m:
            out[f"visual.transformer.{m.group(1)}.{inverse[m.group(2)]}.{m.group(3)}"] = value
        else:
            simple = {"embeddings.patch_embedding.weight": "patch_embedding.weight",
                      "pre_layrnorm.weight": "pre_norm.weight", "pre_layrnorm.bias": "pre_norm.bias",
                      "post_layernorm.weight": "post_norm.weight", "post_layernorm.bias": "post_norm.bias"}
            if key == "embeddings.class_embedding":
                out["visual.cls_embedding"] = value.view(1, 1, -1)
            elif key == "embeddings.position_embedding.weight":
                out["visual.pos_embedding"] = value.unsqueeze(0)
            else:
                out[f"visual.{simple[key]}"] = value
    for (layer, leaf), parts in qkv.items():
        out[f"visual.transformer.{layer}.attn.to_qkv.{leaf}"] = torch.cat(
            [parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def write_tiny_clip_vision(path: str | Path, seed: int = 0, naming: str = "wan", **overrides) -> Path:
    """Write a tiny random CLIP visual tower with real key names.

    naming ``wan``: Wan's full-model naming (tower under ``visual.``, plus a text-tower key and ``log_scale``
    that the loader ignores); a ``.pth`` path is written with ``torch.save``, else safetensors.
    ``comfy``: transformers naming ``vision_model.*`` (ComfyUI's clip_vision_h layout) as safetensors.
    Safetensors files carry the config in their metadata. ``overrides``: fields of ``tiny_clip_vision_config()``
    (e.g. ``hidden_size=1280``, the width native Wan's image embedding takes).
    """

    from ..tokenizer.testing import random_weights

    if naming not in ("wan", "comfy"):
        raise ValueError(f"naming must be 'wan' or 'comfy', got {naming!r}")
    config = {**tiny_clip_vision_config(), **overrides}
    model = build_clip_vision(config)
    prefix = _model_prefix(model)
    state = {k.removeprefix(prefix): v for k, v in random_weights(
        model, seed, unit_keys=(f"{prefix}embeddings.class_embedding",)).items()}
    if naming == "wan":
        state = _canonical_to_wan(state)
        gen = torch.Generator().manual_seed(seed)
        state["visual.head"] = torch.randn(config["hidden_size"], 32, generator=gen) * 0.1
        state["textual.norm.weight"] = torch.ones(16)
        state["log_scale"] = torch.tensor(math.log(1 / 0.07))
    else:
        state = {f"vision_model.{k}": v for k, v in state.items()}
        state["visual_projection.weight"] = torch.zeros(32, config["hidden_size"])
    return save_state(state, path, metadata={_METADATA_KEY: json.dumps(config)})
