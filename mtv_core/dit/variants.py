"""The DiT variant registry: how each MV-DiT is recognised, configured, built and sampled.

A variant is registered by one small module calling ``register(DiTVariant(...))`` (``variant_7b.py``; the
17B adds ``variant_17b.py`` and its name to ``VARIANT_MODULES``). The modules are imported on first use, so
this module stays import-light. ``loading.load_dit`` dispatches on the registry, and so do the CLI and the
generic nodes; nothing outside a variant's own modules needs to know its key names or constants.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from torch import nn

from .sampling import SamplingDefaults

# modules under mtv_core.dit that register a variant when imported
VARIANT_MODULES = ("variant_7b", "variant_17b")

_REGISTRY: dict[str, "DiTVariant"] = {}
_imported = False


@dataclass(frozen=True)
class DiTVariant:
    """Everything the framework needs to know about one MV-DiT.

    ``config_from_checkpoint(config_json_or_None, shapes)`` builds the config from a checkpoint's
    ``config.json`` (None for single files) and key shapes; every shape-dependent setting must come from the
    shapes. ``model_class(config)`` or ``model_class(config, operations=...)`` builds the model.
    ``conditioning(model, guidance=..., **options)`` makes the ``pipeline.WindowConditioning`` the windowed
    pipeline samples with; ``window_frames(config)`` is the window length its guidance works on.

    Variants whose files need more than the generic loader offers provide hooks: ``recognise(keys)`` replaces
    the ``signature_keys`` test (any key prefix, fp8 markers ...); ``open_weights(path, **options)`` returns the
    checkpoint view (keys, shapes, ``config``, ``path``) of a file or of several (17B: a base + a motion adapter);
    ``load(path, dtype=, device=, attention=, operations=, **options)`` loads the model (17B: fp8 and scaled-fp8
    storage). ``loading.load_dit`` calls them, so every caller goes through the one ``load_dit``.
    ``load_options`` names the options ``load`` / ``open_weights`` take; ``prepare_conditioning(parts, **kw)``
    runs the side models a command-line run needs besides the DiT and the VAE (17B: text and image encoders)
    and returns keyword arguments for ``conditioning``; ``model_paths`` lists those parts too. ``output_size``
    chooses the size from the reference when width or height is 0 (17B: upstream's aspect buckets).
    """

    name: str  # registry name: --variant, MTVLatent.variant
    title: str  # display name, e.g. "MV-DiT-7B"
    signature_keys: tuple[str, ...]  # keys every checkpoint of the variant has (after prefix stripping)
    key_prefixes: tuple[str, ...]  # prefixes single files may carry (stripped when every key has one)
    config_from_checkpoint: Callable[[Mapping | None, Mapping[str, tuple]], Any]
    model_class: type[nn.Module]
    latent_format_name: str  # LatentFormat.name of the VAE the model works with
    defaults: SamplingDefaults
    window_frames: Callable[[Any], int]
    conditioning: Callable[..., Any]
    load_vae: Callable[..., Any]  # (path, dtype=..., device=...) -> VideoVAE
    expected: str  # what file to give, for error messages
    near_miss: Callable[[set[str]], str | None] = lambda keys: None  # "is a ... (what is wrong)" for look-alikes
    model_paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # CLI --models layout: part -> paths
    recognise: Callable[[Iterable[str]], bool] | None = None
    open_weights: Callable[..., Any] | None = None
    load: Callable[..., nn.Module] | None = None
    load_options: tuple[str, ...] = ()
    prepare_conditioning: Callable[..., dict] | None = None
    output_size: Callable[[Any, int, int], tuple[int, int]] | None = None  # (reference, w, h) -> size; 0 = choose

    def matches(self, keys: Iterable[str]) -> bool:
        if self.recognise is not None:
            return self.recognise(keys)
        keys = set(keys)
        return all(k in keys for k in self.signature_keys)

    def build(self, config: Any, operations: Any = None) -> nn.Module:
        """The model for ``config``; ``operations`` (a namespace of layer classes, e.g. ``comfy.ops``) is passed
        on only when given, so constructors without that parameter keep working."""
        if operations is None:
            return self.model_class(config)
        return self.model_class(config, operations=operations)


def register(variant: DiTVariant) -> DiTVariant:
    """Add ``variant`` to the registry (a second registration under the same name replaces the first)."""
    _REGISTRY[variant.name] = variant
    return variant


def _import_builtin() -> None:
    global _imported
    if not _imported:
        _imported = True
        for name in VARIANT_MODULES:
            importlib.import_module(f".{name}", __package__)


def variants() -> list[DiTVariant]:
    """Every registered variant, in registration order."""
    _import_builtin()
    return list(_REGISTRY.values())


def variant_names() -> list[str]:
    return [v.name for v in variants()]


def get_variant(name: str) -> DiTVariant:
    """The variant registered as ``name``; ValueError listing the known ones otherwise."""
    _import_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown MV-DiT variant {name!r}; choose one of {', '.join(_REGISTRY) or '(none)'}")
    return _REGISTRY[name]


def variant_title(name: str) -> str:
    """Display name of variant ``name`` (the name itself if it is not registered)."""
    _import_builtin()
    return _REGISTRY[name].title if name in _REGISTRY else f"MV-DiT variant {name!r}"


def variant_of(model: Any) -> DiTVariant | None:
    """The variant whose model class ``model`` is an instance of, if any."""
    return next((v for v in variants() if isinstance(model, v.model_class)), None)


def describe_keys(keys: Iterable[str], wanted: DiTVariant | None = None) -> str:
    """What a state dict that no variant (or not ``wanted``) recognises looks like: "is ..." / "has ..."."""
    keys = set(keys)
    for variant in variants():
        text = variant.near_miss(keys)
        if text:
            return text
    if any(k.startswith("blocks.") for k in keys) and "patch_embedding.weight" in keys:
        return ("has Wan-like key names (blocks.N, patch_embedding) but is none of the registered variants "
                f"({', '.join(v.title for v in variants())}): an incomplete or foreign Wan-family file")
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys):
        return "has encoder/decoder keys: it looks like the 4DMoT motion tokenizer or a VAE, not an MV-DiT"
    what = wanted.title if wanted is not None else " or ".join(v.title for v in variants())
    return f"has none of the {what} keys"
