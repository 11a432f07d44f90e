"""The only place that touches ComfyUI: its V3 API, model folders, progress and Cancel.

Everything degrades gracefully when ComfyUI is not importable (unit tests, the CLI): the
V3 ``io`` module is replaced by ``_standalone_io``, model folders come from ``MTV_MODELS_DIR``
(default ``./models``), and progress/cancel become no-ops.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

try:  # pragma: no cover - exercised inside ComfyUI only
    from comfy_api.latest import ComfyExtension, io, ui

    HAVE_COMFY = True
except ImportError:
    from . import _standalone_io as io

    ComfyExtension = object
    ui = None
    HAVE_COMFY = False

logger = logging.getLogger(__name__)

__all__ = ["HAVE_COMFY", "ComfyExtension", "io", "ui"]

# Folder keys this pack registers, relative to ComfyUI's models directory.
MTV_FOLDER = "mtvcrafter"
NLF_FOLDER = "nlf"
_OWN_FOLDERS = {MTV_FOLDER: "mtvcrafter", NLF_FOLDER: "nlf"}
# Where each model is documented to live, for error messages.
MODEL_HELP_URL = "https://huggingface.co/yanboding/MTVCrafter"


def _folder_paths():
    try:
        import folder_paths  # type: ignore[import-not-found]
    except ImportError:
        return None
    return folder_paths


def register_model_folders() -> None:
    """Register ``models/mtvcrafter`` and ``models/nlf`` with ComfyUI (no-op outside ComfyUI)."""
    fp = _folder_paths()
    if fp is None:
        return
    for key, sub in _OWN_FOLDERS.items():
        fp.add_model_folder_path(key, os.path.join(fp.models_dir, sub), is_default=True)


def _standalone_dirs(key: str) -> list[Path]:
    root = Path(os.environ.get("MTV_MODELS_DIR", "models"))
    sub = {"diffusion_models": ["diffusion_models", "unet"]}.get(key, [key])
    return [root / s for s in sub]


def folder_dirs(key: str) -> list[str]:
    """Directories searched for model folder ``key``."""
    fp = _folder_paths()
    if fp is None:
        return [str(p) for p in _standalone_dirs(key)]
    try:
        return list(fp.get_folder_paths(key))
    except KeyError:
        return []


def files_under(root: str | Path, suffixes: tuple[str, ...] | None = None, include_dirs: bool = False) -> list[str]:
    """Relative posix paths of the files below ``root`` ending in ``suffixes`` (any with None), sorted; with
    ``include_dirs`` also the sub-folders holding a config.json (diffusers model folders)."""
    root = Path(root)
    if not root.is_dir():
        return []
    names = []
    for path in root.rglob("*"):
        if path.is_file() and (suffixes is None or path.name.lower().endswith(suffixes)):
            names.append(path.relative_to(root).as_posix())
        elif include_dirs and path.is_dir() and (path / "config.json").is_file():
            names.append(path.relative_to(root).as_posix())
    return sorted(names)


def list_models(*keys: str, suffixes: tuple[str, ...] | None = None, include_dirs: bool = False) -> list[str]:
    """Files (and, with ``include_dirs``, model sub-folders holding a config.json) under folder keys."""
    names = {name for key in keys for base in folder_dirs(key) for name in files_under(base, suffixes, include_dirs)}
    return sorted(names)


def model_choices(
    keys: tuple[str, ...],
    suffixes: tuple[str, ...],
    empty: str,
    hints: tuple[str, ...] = (),
    include_dirs: bool = False,
    skip: Callable[[str], bool] | None = None,
) -> list[str]:
    """A loader's combo options: model files (and, with ``include_dirs``, model folders) under ``keys``.

    Files inside a listed model folder are hidden (they are its shards), names for which ``skip`` is
    true are left out, names containing one of ``hints`` come first, and ``[empty]`` stands in for
    an empty list (running the node with it then explains where to put the file).
    """
    names = list_models(*keys, suffixes=suffixes, include_dirs=include_dirs)
    dirs = [n for n in names if not n.lower().endswith(suffixes)]
    names = [n for n in names if not any(n.startswith(d + "/") for d in dirs) and not (skip and skip(n))]
    names.sort(key=lambda n: (not any(h in n.lower() for h in hints), n))
    return names or [empty]


def resolve_model(keys: tuple[str, ...] | str, name: str, hint: str = "") -> str:
    """Absolute path of ``name`` in the folders of ``keys``; FileNotFoundError naming them if absent."""
    from ..mtv_core.errors import InputError
    from ..mtv_core.files import contained_path

    if isinstance(keys, str):
        keys = (keys,)
    parts = Path(name).parts if isinstance(name, str) else ()
    if not name or not isinstance(name, str) or Path(name).is_absolute() or ".." in parts:
        raise InputError(f"model name '{name}' must be a path inside the model folders (no '..', not absolute)")
    searched: list[str] = []
    for key in keys:
        for base in folder_dirs(key):
            candidate = contained_path(base, name, "model name")
            searched.append(base)
            if candidate.exists():
                return str(candidate)
    where = ", ".join(searched) or ", ".join(f"models/{k}" for k in keys)
    msg = f"model file '{name}' not found in {where}"
    raise FileNotFoundError(msg + (f". {hint}" if hint else ""))


def input_directory() -> str:
    fp = _folder_paths()
    return fp.get_input_directory() if fp is not None else os.environ.get("MTV_INPUT_DIR", "input")


def output_directory() -> str:
    fp = _folder_paths()
    return fp.get_output_directory() if fp is not None else os.environ.get("MTV_OUTPUT_DIR", "output")


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def progress(total: int, node_id: str | None = None) -> Callable[[int, int, np.ndarray | None], None]:
    """A core ``ProgressCallback`` driving ComfyUI's progress bar (and thus Cancel)."""
    try:
        import comfy.utils  # type: ignore[import-not-found]
    except ImportError:
        return lambda step, total_, preview=None: None
    bar = comfy.utils.ProgressBar(total, node_id=node_id)

    def callback(step: int, total_: int, preview: np.ndarray | None = None) -> None:
        shown = None
        if preview is not None:
            from PIL import Image

            from ..mtv_core.video import to_uint8

            shown = ("JPEG", Image.fromarray(to_uint8(preview)), 512)
        bar.update_absolute(step, total_, shown)
        throw_if_interrupted()

    return callback


def torch_device():
    """ComfyUI's compute device, else CUDA when available, else CPU."""
    import torch

    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]

        return mm.get_torch_device()
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")


def parse_dtype(name: str, device: Any = None):
    """A dtype widget value -> torch dtype (``auto``: bf16 on CUDA, fp16 where it has no bf16, else fp32)."""
    from ..mtv_core.dit.loading import resolve_dtype

    return resolve_dtype(name, device)


def compute_device(choice: str = "auto"):
    """A device widget value -> torch device: ``cpu`` is the CPU, anything else ComfyUI's compute device."""
    import torch

    return torch.device("cpu") if choice == "cpu" else torch.device(torch_device())


def make_room(nbytes: int, device: Any) -> None:
    """Ask ComfyUI to unload its own models until ``nbytes`` (plus headroom) fit on a CUDA ``device``.

    Our models live outside ComfyUI's model management, so without this a MODEL left on the GPU by an
    earlier workflow could make our load run out of memory. No-op outside ComfyUI or off CUDA.
    """
    import torch

    if torch.device(device).type != "cuda":
        return
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return
    mm.free_memory(int(nbytes * 1.2) + (1 << 30), torch.device(device))


def model_bytes(model: Any) -> int:
    """Bytes held by a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def checkpoint_bytes(path: str, dtype: Any) -> int:
    """Bytes the tensors of checkpoint ``path`` take in ``dtype`` (read from the file headers only)."""
    import math

    from ..mtv_core.checkpoint import open_checkpoint

    numel = sum(math.prod(shape) for shape in open_checkpoint(path).shapes().values())
    return numel * dtype.itemsize


@contextlib.contextmanager
def model_on(model: Any, device: Any) -> Iterator[Any]:
    """Move ``model`` to ``device`` for the block, then back to the offload device (also on error or Cancel)."""
    import torch

    make_room(model_bytes(model), device)
    model.to(device)
    try:
        yield model
    finally:
        model.to(offload_device())
        if torch.device(device).type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_target(compute: Any, park: bool) -> Any:
    """Where a loader puts a model: the offload device if it waits there between runs (``park``), else ``compute``."""
    return offload_device() if park else compute


def mark_placement(model: Any, compute: Any, park: bool) -> Any:
    """Record for ``in_use`` where ``model`` runs and whether it waits on the offload device between runs."""
    model.mtv_offload = park
    model.mtv_compute_device = compute
    return model


def in_use(model: Any):
    """Context for running ``model``: a model loaded offloaded (``mtv_offload`` True) is moved to its
    ``mtv_compute_device`` for the block and back to the offload device after; others stay where they are."""
    if not getattr(model, "mtv_offload", False):
        return contextlib.nullcontext(model)
    return model_on(model, getattr(model, "mtv_compute_device", None) or torch_device())


def offload_device():
    """Where idle models wait: ComfyUI's offload device, else CPU."""
    import torch

    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]

        return mm.unet_offload_device()
    except ImportError:
        return torch.device("cpu")
