"""What a model file holds, from its tensor names alone: which of the pack's loaders can use it.

Loaders list only files of their own kind (a tokenizer is never offered to the DiT loader). Only
cheap reads are made: the JSON header of a safetensors file (never its tensors), a diffusers folder's
``config.json`` and ``*.safetensors.index.json`` (or its shards' headers). Pickled files (``.pt``,
``.bin`` ...) cannot be read without unpickling them, so they are ``unknown`` and the caller decides
by name and folder. Results are cached on (path, size, mtime), so a refresh re-reads only new or
changed files.

Kinds:

* ``4dmot``: the 4DMoT motion tokenizer (``encoder.*``, ``decoder.*``, ``vq.codebook``)
* ``mvdit7b``: MV-DiT-7B, CogVideoX naming with motion attention (``transformer_blocks.N.attn0.*``,
  ``unconditional_motion_token``)
* ``mvdit17b``: MV-DiT-17B, Wan2.1 naming (``blocks.N.self_attn.q.weight``, ``head.modulation``) with
  motion attention (``blocks.N.motion_attn.*``)
* ``wan-i2v``: a Wan2.1 image-to-video transformer without motion attention (``img_emb.*``): the base an
  MV-DiT-17B motion adapter completes (Wan2.1 I2V-14B, Wan2.1-Fun-14B-InP)
* ``mvdit17b-adapter``: MV-DiT-17B's motion layers alone (``blocks.N.motion_attn.*``, ``blocks.N.norm4.*``)
* ``cogvideox-vae``: the CogVideoX video VAE, diffusers naming (causal convolutions ``*.conv_in.conv.*``)
* ``wan-vae``: the Wan2.1 video VAE, original (``encoder.downsamples.*``, ``decoder.middle.*``) or diffusers
  naming (``quant_conv``, ``decoder.norm_out.gamma``)
* ``other``: readable, but none of the above (a stock CogVideoX or Wan transformer, an image VAE ...)
* ``unknown``: keys not readable cheaply (pickles, unreadable headers)
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable

from .checkpoint import SAFETENSORS_SUFFIXES
from .safetensors_reader import read_header

logger = logging.getLogger(__name__)

KINDS = ("4dmot", "mvdit7b", "mvdit17b", "wan-i2v", "mvdit17b-adapter", "cogvideox-vae", "wan-vae", "other", "unknown")
# Prefixes ComfyUI and trainers put in front of every key; removed before classifying (as the loaders do).
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "module.", "first_stage_model.", "vae.")
_FOLDER_CLASSES = {"AutoencoderKLCogVideoX": "cogvideox-vae", "AutoencoderKLWan": "wan-vae"}
_BLOCK_INDEX = re.compile(r"\.\d+\.")


def _strip_prefix(keys: list[str]) -> list[str]:
    for prefix in KEY_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return [k[len(prefix):] for k in keys]
    return keys


def classify_keys(keys: Iterable[str]) -> str:
    """The kind of a state dict from its key names (see the module docstring); never ``unknown``."""
    # the scaled-fp8 marker of ComfyUI / kijai files may lack the prefix the tensors carry
    keys = _strip_prefix([k for k in keys if k != "__metadata__" and k.rpartition(".")[2] != "scaled_fp8"])
    names = set(keys)
    generic = {_BLOCK_INDEX.sub(".N.", k) for k in keys}  # blocks.3.x -> blocks.N.x
    if "vq.codebook" in names and any(k.startswith("encoder.") for k in keys) \
            and any(k.startswith("decoder.") for k in keys):
        return "4dmot"
    if any(k.startswith("transformer_blocks.N.attn0.") for k in generic):
        return "mvdit7b"
    if "head.modulation" in names and "blocks.N.self_attn.q.weight" in generic:
        if any(k.startswith("blocks.N.motion_attn.") for k in generic):
            return "mvdit17b"
        return "wan-i2v" if any(k.startswith("img_emb.") for k in keys) else "other"
    weights = {k for k in generic if not k.endswith((".scale_weight", ".weight_scale"))}
    if weights and all(k.startswith(("blocks.N.motion_attn.", "blocks.N.norm4.")) for k in weights):
        return "mvdit17b-adapter"
    if "encoder.conv_in.conv.weight" in names and "decoder.conv_in.conv.weight" in names:
        return "cogvideox-vae"
    if any(k.startswith(("encoder.downsamples.", "decoder.middle.")) for k in keys):
        return "wan-vae"
    if "decoder.norm_out.gamma" in names and "post_quant_conv.weight" in names:
        return "wan-vae"
    return "other"


def safetensors_keys(path: str | Path) -> list[str]:
    """Tensor names in a safetensors file, read from its JSON header only (no tensor data, entries unchecked: a
    header is enough to tell the kind). Raises ValueError naming the file when the header is not a safetensors
    header."""
    return [k for k in read_header(Path(path))[0] if k != "__metadata__"]


def _folder_kind(path: Path) -> str:
    config = path / "config.json"
    if config.is_file():
        try:
            kind = _FOLDER_CLASSES.get(json.loads(config.read_text()).get("_class_name", ""))
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind:
            return kind
    index = next(iter(sorted(path.glob("*.safetensors.index.json"))), None)
    if index is not None:
        try:
            return classify_keys(json.loads(index.read_text()).get("weight_map", {}))
        except (OSError, ValueError, AttributeError):
            return "unknown"
    shards = sorted(p for p in path.iterdir() if p.name.lower().endswith(SAFETENSORS_SUFFIXES))
    if not shards:
        return "unknown"
    try:
        return classify_keys(k for shard in shards for k in safetensors_keys(shard))
    except (OSError, ValueError):
        return "unknown"


@functools.lru_cache(maxsize=4096)
def _classify(path: str, size: int, mtime_ns: int) -> str:
    """The kind of ``path``; ``size`` and ``mtime_ns`` only key the cache (a changed file is read again)."""
    p = Path(path)
    if p.is_dir():
        return _folder_kind(p)
    if not p.name.lower().endswith(SAFETENSORS_SUFFIXES):
        return "unknown"
    try:
        return classify_keys(safetensors_keys(p))
    except (OSError, ValueError) as exc:
        logger.debug("cannot classify %s: %s", p, exc)
        return "unknown"


def _folder_stamp(path: Path) -> tuple[int, int]:
    """(total size, newest mtime) of the files a folder's kind is read from."""
    size, mtime = 0, 0
    for child in path.iterdir():
        if child.name == "config.json" or child.name.lower().endswith(SAFETENSORS_SUFFIXES + (".json",)):
            st = child.stat()
            size, mtime = size + st.st_size, max(mtime, st.st_mtime_ns)
    return size, mtime


def model_kind(path: str | Path) -> str:
    """The kind of a model file or diffusers folder, cached on (path, size, mtime)."""
    path = Path(path)
    try:
        if path.is_dir():
            size, mtime = _folder_stamp(path)
        else:
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        return "unknown"
    return _classify(os.fspath(path), size, mtime)


def cache_info():
    """Hits and misses of the classification cache (how many files were actually read)."""
    return _classify.cache_info()
