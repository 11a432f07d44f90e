"""Loading and saving 4DMoT checkpoints.

Accepted files: upstream's DeepSpeed ``4DMoT/mp_rank_00_model_states.pt`` (state dict under
``module``, read with ``torch.load(weights_only=True)``), kijai's single-file
``WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors`` (same keys), and our own safetensors
(same keys, the configuration in the ``mtv_tokenizer_config`` metadata entry).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..checkpoint import Checkpoint, CheckpointError, load_into, open_checkpoint
from ..errors import InputError
from ..files import atomic_output
from ..limits import parse_json
from ..meta_init import empty_weights, finish_loading
from .config import SHAPE_FIELDS, SIGNATURE_KEYS, TokenizerConfig
from .model import MotionVQVAE

logger = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "mtv_tokenizer_config"
STATS_METADATA_KEY = "mtv_tokenizer_stats"  # {"mean": 24x3 mm, "std": 24x3 mm} of the training data
EXPECTED = (
    "a 4DMoT motion tokenizer checkpoint (keys encoder.*, decoder.*, vq.codebook), e.g. "
    "4DMoT/mp_rank_00_model_states.pt from yanboding/MTVCrafter or "
    "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors from Kijai/WanVideo_comfy"
)


def stats_to_metadata(stats: tuple[np.ndarray, np.ndarray]) -> str:
    """The ``STATS_METADATA_KEY`` entry for (mean, std) (24, 3) mm (read back by :func:`stats_from_metadata`)."""
    return json.dumps({"mean": np.asarray(stats[0]).tolist(), "std": np.asarray(stats[1]).tolist()})


def stats_from_metadata(metadata: Mapping[str, str], path: object = "") -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) stored with a checkpoint we trained, or None (then the released statistics apply)."""
    stored = metadata.get(STATS_METADATA_KEY)
    if not stored:
        return None
    message = f"{path}: stored normalisation statistics must be two (24, 3) arrays of finite numbers with std > 0"
    try:
        data = parse_json(stored, path, f"'{STATS_METADATA_KEY}' metadata")
        mean = np.asarray(data["mean"], dtype=np.float64)
        std = np.asarray(data["std"], dtype=np.float64)
    except InputError as exc:
        raise CheckpointError(str(exc)) from None
    except (KeyError, ValueError, TypeError, OverflowError):
        raise CheckpointError(message) from None
    if mean.shape != (24, 3) or std.shape != (24, 3) or not (np.isfinite(mean).all() and np.isfinite(std).all()) \
            or not (std > 0).all() or np.abs(mean).max() > 1e7 or std.max() > 1e7:
        raise CheckpointError(message)
    return mean.astype(np.float32), std.astype(np.float32)


def config_from_checkpoint(ckpt: Checkpoint, metadata: Mapping[str, str], **overrides: Any) -> TokenizerConfig:
    """The model configuration of an opened checkpoint with its safetensors ``metadata`` (raises
    CheckpointError if it is not 4DMoT)."""
    shapes = ckpt.shapes()
    missing = [k for k in SIGNATURE_KEYS if k not in shapes]
    if missing:
        sample = ", ".join(sorted(shapes)[:3])
        raise CheckpointError(
            f"{ckpt.path}: not {EXPECTED}. Missing {', '.join(missing)}; the file holds {len(shapes)} "
            f"tensors such as {sample}"
        )
    stored = metadata.get(CONFIG_METADATA_KEY)
    try:
        inferred = TokenizerConfig.from_shapes(shapes, **overrides)
        if not stored:
            return inferred
        data = parse_json(stored, ckpt.path, f"'{CONFIG_METADATA_KEY}' metadata")
        data.update(overrides)
        config = TokenizerConfig.from_dict(data)
    except InputError as exc:
        raise CheckpointError(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{ckpt.path}: {exc}") from exc
    # the stored config is trusted only where the weights agree (before a model of its size is built)
    blocks_known = any(k.startswith("encoder.resnet1.") for k in shapes)
    for name in SHAPE_FIELDS:
        if name == "num_res_blocks" and not blocks_known:
            continue
        if getattr(config, name) != getattr(inferred, name):
            raise CheckpointError(f"{ckpt.path}: the stored config says {name}={getattr(config, name)} but the "
                                  f"weights have {getattr(inferred, name)}")
    return config


def build_empty(config: TokenizerConfig, operations: Any = torch.nn) -> MotionVQVAE:
    """The model with its weights on the meta device (no memory), ready for :func:`load_into`; layers from
    ``operations``."""
    with empty_weights():
        return MotionVQVAE(config, operations=operations)


def load_tokenizer(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    operations: Any = torch.nn,
    **config_overrides: Any,
) -> MotionVQVAE:
    """Load a 4DMoT checkpoint strictly, in eval mode without gradients.

    The networks run in ``dtype``; the codebook stays fp32 (code selection is always fp32). ``operations``: the
    namespace the layers are built from (``torch.nn``; ComfyUI passes ``comfy.ops``).
    Raises FileNotFoundError for a missing path and CheckpointError naming the file and what was
    expected for any other checkpoint (e.g. a DiT) or a mis-shaped one.
    """
    ckpt = open_checkpoint(path)
    metadata = ckpt.metadata
    config = config_from_checkpoint(ckpt, metadata, **config_overrides)
    model = build_empty(config, operations)
    load_into(model, ckpt, dtype=None, device=device, what="4DMoT motion tokenizer", hint=f"Expected {EXPECTED}.")
    finish_loading(model, device, ckpt.path)
    # one pass: the compute dtype and the channels-last layout the loaded (contiguous) weights lack
    model.encoder.to(dtype=dtype, memory_format=torch.channels_last)
    model.decoder.to(dtype=dtype, memory_format=torch.channels_last)
    model.vq.codebook = model.vq.codebook.float()
    model.eval().requires_grad_(False)
    model.stats = stats_from_metadata(metadata, ckpt.path)
    logger.info("loaded 4DMoT tokenizer %s (%d codes x %d, %s on %s)", Path(path).name, config.num_codes,
                config.code_dim, str(dtype).replace("torch.", ""), device)
    return model


def state_dict_for_saving(model: MotionVQVAE) -> dict[str, torch.Tensor]:
    """The upstream-named state dict (encoder.*, decoder.*, vq.codebook), contiguous CPU tensors."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_tokenizer(model: MotionVQVAE, path: str | Path, extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Write a safetensors file with upstream key names and our configuration as metadata (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {CONFIG_METADATA_KEY: model.config.to_json(), "format": "pt"}
    if model.stats is not None:
        metadata[STATS_METADATA_KEY] = stats_to_metadata(model.stats)
    metadata.update(extra_metadata or {})
    write_safetensors(state_dict_for_saving(model), path, metadata)
    return path


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]) -> None:
    """``save_file`` to a temporary name in the same folder, then moved into place: a failed or
    interrupted write never leaves a truncated ``path`` (nor the temporary file)."""
    from safetensors.torch import save_file

    with atomic_output(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata))
