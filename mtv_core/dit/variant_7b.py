"""MV-DiT-7B in the variant registry: its keys, config, model, VAE, conditioning and defaults."""

from __future__ import annotations

from typing import Any, Mapping

from .config import SHAPE_FIELDS, MVDiT7BConfig, check_against_weights
from .pipeline_7b import DEFAULTS, TITLE, VARIANT, MVDiT7BConditioning
from .transformer_7b import MVDiT7B
from .vae import LATENT_FORMAT_NAME, load_vae
from .variants import DiTVariant, register


def config_7b(config_json: Mapping | None, shapes: Mapping[str, tuple]) -> MVDiT7BConfig:
    """From the folder's config.json (completed from the shapes) when there is one, else from the shapes alone.

    A config.json is trusted only where the weights agree with it (layer count, widths, ...): checked here,
    before any model is built from it."""
    inferred = MVDiT7BConfig.infer_from_shapes(shapes)
    if config_json is None:
        return inferred
    config = MVDiT7BConfig.from_diffusers_config(config_json, shapes)
    check_against_weights(config, inferred, SHAPE_FIELDS)
    return config


def near_miss_7b(keys: set[str]) -> str | None:
    if "patch_embed.proj.weight" in keys and "unconditional_motion_token" not in keys:
        return ("is a CogVideoX transformer without motion attention (no attn0 / unconditional_motion_token): "
                "use the MTVCrafter MV-DiT/CogVideoX weights, not the stock CogVideoX-5B transformer")
    return None


def conditioning_7b(model: MVDiT7B, guidance: float = DEFAULTS.guidance, **options: Any) -> MVDiT7BConditioning:
    if options:
        raise ValueError(f"{TITLE} takes no conditioning options {sorted(options)}")
    return MVDiT7BConditioning(model, guidance)


VARIANT_7B = register(DiTVariant(
    name=VARIANT,
    title=TITLE,
    signature_keys=("unconditional_motion_token", "transformer_blocks.0.attn0.to_q.weight"),
    key_prefixes=("model.diffusion_model.", "diffusion_model.", "transformer.", "module."),
    config_from_checkpoint=config_7b,
    model_class=MVDiT7B,
    latent_format_name=LATENT_FORMAT_NAME,
    defaults=DEFAULTS,
    window_frames=lambda config: config.window_frames,
    conditioning=conditioning_7b,
    load_vae=load_vae,
    expected="the MTVCrafter MV-DiT/CogVideoX transformer (diffusers folder or single safetensors)",
    near_miss=near_miss_7b,
    model_paths={"dit": ("MV-DiT/CogVideoX",), "vae": ("CogVideoX-5b/vae", "vae")},
))
