"""The only place that touches ComfyUI: its V3 API, model folders, model management, progress and Cancel.

Everything degrades gracefully when ComfyUI is not importable (unit tests, the CLI): the
V3 ``io`` module is replaced by ``_standalone_io``, model folders come from ``MTV_MODELS_DIR``
(default ``./models``), models are built from ``torch.nn`` and moved whole by ``StandalonePatcher``,
and progress/cancel become no-ops.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..mtv_core import precision as _precision

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


# root -> (modification times of every folder walked, files, sub-folders holding a config.json), relative posix
_LISTINGS: dict[str, tuple[dict[str, int], list[str], list[str]]] = {}


def _listing(root: Path) -> tuple[list[str], list[str]]:
    """(files, sub-folders holding a config.json) below ``root``, walked again only when one of its folders
    changed (a file added, removed or renamed changes its folder's mtime): ComfyUI builds every node schema on
    each prompt, and several loaders list the same model folders."""
    key = str(root)
    cached = _LISTINGS.get(key)
    if cached is not None:
        try:
            if all(os.stat(folder).st_mtime_ns == mtime for folder, mtime in cached[0].items()):
                return cached[1], cached[2]
        except OSError:
            pass
    mtimes: dict[str, int] = {}
    files: list[str] = []
    model_dirs: list[str] = []
    for folder, dirnames, filenames in os.walk(root, followlinks=True):  # as rglob did: linked model folders count
        mtimes[folder] = os.stat(folder).st_mtime_ns
        rel = Path(folder).relative_to(root)
        files.extend((rel / name).as_posix() for name in filenames if os.path.isfile(os.path.join(folder, name)))
        if folder != str(root) and "config.json" in filenames:
            model_dirs.append(rel.as_posix())
    _LISTINGS[key] = mtimes, files, model_dirs
    return files, model_dirs


def files_under(root: str | Path, suffixes: tuple[str, ...] | None = None, include_dirs: bool = False) -> list[str]:
    """Relative posix paths of the files below ``root`` ending in ``suffixes`` (any with None), sorted; with
    ``include_dirs`` also the sub-folders holding a config.json (diffusers model folders)."""
    root = Path(root)
    if not root.is_dir():
        return []
    files, model_dirs = _listing(root)
    names = [name for name in files if suffixes is None or name.lower().endswith(suffixes)]
    return sorted(names + (model_dirs if include_dirs else []))


def _model_paths(keys: tuple[str, ...], suffixes: tuple[str, ...] | None, include_dirs: bool) -> dict[str, tuple[str, Path]]:
    """name -> (folder key, path) of the files (and model folders) under folder ``keys``; the first folder
    holding a name wins, as in ``resolve_model``."""
    found: dict[str, tuple[str, Path]] = {}
    for key in keys:
        for base in folder_dirs(key):
            for name in files_under(base, suffixes, include_dirs):
                found.setdefault(name, (key, Path(base) / name))
    return found


def list_models(*keys: str, suffixes: tuple[str, ...] | None = None, include_dirs: bool = False) -> list[str]:
    """Files (and, with ``include_dirs``, model sub-folders holding a config.json) under folder keys."""
    return sorted(_model_paths(keys, suffixes, include_dirs))


def model_choices(
    keys: tuple[str, ...],
    suffixes: tuple[str, ...],
    empty: str,
    hints: tuple[str, ...] = (),
    include_dirs: bool = False,
    skip: Callable[[str], bool] | None = None,
    kinds: tuple[str, ...] | None = None,
) -> list[str]:
    """A loader's combo options: model files (and, with ``include_dirs``, model folders) under ``keys``.

    Files inside a listed model folder are hidden (they are its shards), names for which ``skip`` is
    true are left out, names containing one of ``hints`` come first, and ``[empty]`` stands in for
    an empty list (running the node with it then explains where to put the file).

    With ``kinds`` (``mtv_core.model_kinds``), only models whose tensor names say they are one of those
    kinds are offered: a safetensors header or a diffusers folder's index is read once per (path, size,
    mtime), never the tensors. Files whose names cannot be read cheaply (pickles) are offered when they sit
    in the pack's own folder or their name contains a hint.
    """
    from ..mtv_core.model_kinds import model_kind

    paths = _model_paths(keys, suffixes, include_dirs)
    dirs = [n for n in paths if not n.lower().endswith(suffixes)]
    names = [n for n in paths if not any(n.startswith(d + "/") for d in dirs) and not (skip and skip(n))]

    def hinted(name: str) -> bool:
        return any(h in name.lower() for h in hints)

    def offered(name: str) -> bool:
        if kinds is None:
            return True
        key, path = paths[name]
        kind = model_kind(path)
        if kind == "unknown":
            return key == MTV_FOLDER or hinted(name)
        return kind in kinds

    names = sorted((n for n in names if offered(n)), key=lambda n: (not hinted(n), n))
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


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """ValueError naming the widget ``name`` and its ``choices`` when ``value`` is not one of them (a workflow
    written by hand or by an older version of the pack)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def input_directory() -> str:
    fp = _folder_paths()
    return fp.get_input_directory() if fp is not None else os.environ.get("MTV_INPUT_DIR", "input")


def output_directory() -> str:
    fp = _folder_paths()
    return fp.get_output_directory() if fp is not None else os.environ.get("MTV_OUTPUT_DIR", "output")


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    mm = _model_management()
    if mm is not None:
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

    mm = _model_management()
    return mm.get_torch_device() if mm is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


DTYPE_CHOICES = _precision.DTYPE_CHOICES


def parse_dtype(name: str, device: Any = None):
    """A dtype widget value -> torch dtype (``auto``: bf16 on CUDA, fp16 where it has no bf16, else fp32)."""
    from ..mtv_core.precision import resolve_dtype

    return resolve_dtype(name, device)


def offload_device():
    """Where idle models wait: ComfyUI's offload device, else CPU."""
    import torch

    mm = _model_management()
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


# -- model management ------------------------------------------------------------------------------------------
#
# Every model of the pack is loaded into RAM (or memory-mapped) on its offload device and handed to ComfyUI's
# model management as a ``comfy.model_patcher.ModelPatcher``; a node that runs a model first asks
# ``comfy.model_management.load_models_gpu`` for it with an estimate of the activation memory it will need, so
# ComfyUI evicts, offloads or partially loads models (its own and ours) as it does for native ones, honours
# --lowvram / --novram / --reserve-vram / --highvram, and "Unload Models" frees ours too. The DiT and the
# tokenizer are built from ``comfy.ops`` layers, so they can be loaded partially (the rest is cast to the GPU
# layer by layer); the CogVideoX VAE (a diffusers model of plain torch layers) is always loaded whole.
# Outside ComfyUI (unit tests) ``StandalonePatcher`` moves a model whole to its load device instead.


def _model_management():
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return None
    return mm


@dataclass(frozen=True)
class Placement:
    """Where a model computes (``load_device``) and waits between runs (``offload_device``); ``unload_after``:
    back to the offload device as soon as the node that ran it is done, instead of when ComfyUI needs the room."""

    load_device: Any
    offload_device: Any
    unload_after: bool = False


def model_placement(choice: str = "auto", kind: str = "diffusion") -> Placement:
    """A loader's device widget -> Placement. ``auto``: ComfyUI's compute device, waiting on its offload device
    for ``kind`` ("diffusion" or "vae"), kept loaded while there is room; ``offload``: the same, but unloaded
    after every run; ``cpu``: computes and waits on the CPU. Outside ComfyUI: CUDA when available, else CPU."""
    import torch

    cpu = torch.device("cpu")
    if choice == "cpu":
        return Placement(cpu, cpu)
    mm = _model_management()
    if mm is None:
        load = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Placement(load, cpu, unload_after=choice == "offload")
    if kind == "vae":
        load, offload = mm.vae_device(), mm.vae_offload_device()
    else:
        load, offload = mm.get_torch_device(), mm.unet_offload_device()
    if choice == "offload":
        return Placement(load, cpu, unload_after=True)
    return Placement(load, offload)


def operations_for(weight_dtype: Any, compute_dtype: Any, load_device: Any):
    """The layers a model is built from: ComfyUI's ``comfy.ops.pick_operations`` for the weight and compute dtype
    (casting layers that ComfyUI can load partially), ``torch.nn`` outside ComfyUI."""
    try:
        import comfy.ops  # type: ignore[import-not-found]
    except ImportError:
        import torch

        return torch.nn
    return comfy.ops.pick_operations(weight_dtype, compute_dtype, load_device=load_device)


class StandalonePatcher:
    """Outside ComfyUI: moves ``model`` (anything with ``.to``) whole to the load device for a run."""

    def __init__(self, model: Any, load_device: Any, offload_device: Any) -> None:
        self.model, self.load_device, self.offload_device = model, load_device, offload_device

    def load(self) -> None:
        self.model.to(self.load_device)

    def unload(self) -> None:
        self.model.to(self.offload_device)


def _whole_module(module: Any):
    """``module`` inside a plain container, for ComfyUI's ModelPatcher: it sets ``.device`` on what it holds, which
    diffusers models refuse (read-only property)."""
    import torch

    container = torch.nn.Module()
    container.inner = module
    return container


class ManagedModel:
    """A loaded model between nodes (the MTV_DIT, MTV_VAE and MTV_TOKENIZER wire types): the core object
    ``model`` and the ``patcher`` that places it (ComfyUI's ModelPatcher, else a StandalonePatcher).

    ``whole``: the model cannot be split between devices (plain torch layers), so it is always loaded whole.
    """

    def __init__(self, model: Any, patcher: Any, placement: Placement, whole: bool = False) -> None:
        self.model, self.patcher, self.placement, self.whole = model, patcher, placement, whole

    def __repr__(self) -> str:
        return (f"ManagedModel({type(self.model).__name__}, load={self.placement.load_device}, "
                f"offload={self.placement.offload_device}, {type(self.patcher).__name__})")


def manage(model: Any, placement: Placement, module: Any = None, whole: bool = False) -> ManagedModel:
    """Hand ``model`` (whose weights are ``module``, default ``model`` itself) to ComfyUI's model management.

    In ComfyUI it is wrapped in ``comfy.model_patcher.ModelPatcher(module, load_device, offload_device, size)``;
    a ``whole`` model is wrapped in a container first (see ``_whole_module``).
    """
    module = model if module is None else module
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
        import comfy.model_patcher  # type: ignore[import-not-found]
    except ImportError:
        return ManagedModel(model, StandalonePatcher(model, placement.load_device, placement.offload_device),
                            placement, whole)
    held = _whole_module(module) if whole else module
    patcher = comfy.model_patcher.ModelPatcher(held, load_device=placement.load_device,
                                               offload_device=placement.offload_device, size=mm.module_size(held))
    return ManagedModel(model, patcher, placement, whole)


def load_managed(load: Callable[..., Any], path: str, dtype: str, device: str = "auto", **kwargs: Any) -> ManagedModel:
    """A loader node's run for a model built from ``comfy.ops`` layers: ``load(path, dtype=, device=, operations=,
    **kwargs)`` reads it in the ``dtype`` widget's precision onto the offload device of the ``device`` widget's
    placement, and ComfyUI's model management then moves it (whole or partially) to the GPU for each run."""
    placement = model_placement(device)
    torch_dtype = parse_dtype(dtype, placement.load_device)
    model = load(path, dtype=torch_dtype, device=placement.offload_device,
                 operations=operations_for(torch_dtype, torch_dtype, placement.load_device), **kwargs)
    return manage(model, placement)


def _loaded_bytes(patcher: Any) -> int:
    loaded = getattr(patcher, "loaded_size", None)
    return int(loaded()) if loaded is not None else 0


@contextlib.contextmanager
def loaded(*models: ManagedModel, memory_required: int = 0) -> Iterator[tuple[Any, ...]]:
    """Load ``models`` for a node's run and yield their core objects.

    ComfyUI's ``load_models_gpu`` loads them, keeping ``memory_required`` bytes (the run's activation estimate,
    ``mtv_core.memory``) free: models that can be split first, leaving room for the whole ones, then the whole
    ones with ``force_full_load`` (this also re-loads one that an eviction left partly offloaded). Models placed
    with ``unload_after`` go back to their offload device when the block ends, also on error or Cancel.
    """
    try:
        comfy_managed = [m for m in models if not isinstance(m.patcher, StandalonePatcher)]
        for managed in models:
            if isinstance(managed.patcher, StandalonePatcher):
                managed.patcher.load()
        if comfy_managed:
            import comfy.model_management as mm  # type: ignore[import-not-found]

            split = [m.patcher for m in comfy_managed if not m.whole]
            whole = [m.patcher for m in comfy_managed if m.whole]
            room_for_whole = sum(p.model_size() - _loaded_bytes(p) for p in whole)
            if split:
                mm.load_models_gpu(split, memory_required=memory_required + room_for_whole)
            if whole:
                mm.load_models_gpu(whole, memory_required=memory_required, force_full_load=True)
        yield tuple(m.model for m in models)
    finally:
        for managed in models:
            if managed.placement.unload_after:
                unload(managed)


def unload(managed: ManagedModel) -> None:
    """Move a model back to its offload device now, the way ComfyUI unloads its own under memory pressure."""
    if isinstance(managed.patcher, StandalonePatcher):
        managed.patcher.unload()
        return
    import comfy.model_management as mm  # type: ignore[import-not-found]

    for index, entry in enumerate(mm.current_loaded_models):
        if entry.model is managed.patcher:
            if entry.model_unload():
                mm.current_loaded_models.pop(index)
            break
    mm.soft_empty_cache()


def native(model: Any) -> ManagedModel:
    """A ComfyUI-native model (``comfy.sd.VAE``, ``ClipVisionModel`` ...: it has its own ``patcher``) as a
    ManagedModel, so ``loaded`` can place it together with ours (it is always loaded whole). Without a patcher
    (a stand-in outside ComfyUI) nothing is moved."""
    import torch

    patcher = getattr(model, "patcher", None)
    if patcher is None or not hasattr(patcher, "model_size"):
        cpu = torch.device("cpu")
        return ManagedModel(model, StandalonePatcher(_Unmoved(), cpu, cpu), Placement(cpu, cpu), whole=True)
    return ManagedModel(model, patcher, Placement(patcher.load_device, patcher.offload_device), whole=True)


def decode_sampled(decode: Callable[..., Any], video_vae: Any, managed: ManagedModel, latents: Any,
                   memory_required: Callable[[], int] | None = None) -> Any:
    """A VAE-decode node's run: ``decode(video_vae, latents, callback=...)`` (a variant's window-by-window decoder)
    with ComfyUI's progress bar and Cancel. The VAE (``managed``, holding or wrapped by ``video_vae``) is loaded
    through model management keeping ``memory_required()`` bytes free, unless the sampler already decoded these
    latents with it: then its frames are reused and nothing is loaded."""
    from ..mtv_core.dit.latents import MTVLatent

    bar = progress(int(latents.samples.shape[0]) if isinstance(latents, MTVLatent) else 1)
    if isinstance(latents, MTVLatent) and latents.decoded_with(video_vae):
        return decode(video_vae, latents, callback=bar)
    with loaded(managed, memory_required=memory_required() if memory_required is not None else 0):
        return decode(video_vae, latents, callback=bar)


class _Unmoved:
    def to(self, device: Any) -> "_Unmoved":
        return self


def _patched_by_loading(model: Any, key: str) -> bool:
    """Whether ComfyUI's ModelPatcher patches parameter ``key`` when it loads ``model``: only parameters of modules
    without parameterised sub-modules (ModelPatcher._load_list skips the others)."""
    owner = model.get_submodule(key.rpartition(".")[0]) if "." in key else model
    return not any(True for child in owner.children() for _ in child.parameters())


def with_lora(managed: ManagedModel, lora_path: str, strength: float) -> ManagedModel:
    """``managed`` with a LoRA at ``strength``, the model itself left unchanged.

    In ComfyUI: a clone of its ModelPatcher with the LoRA as weight patches (``comfy.lora.load_lora`` with
    ``mtv_core.dit.lora.lora_key_map``), applied when ComfyUI loads the clone and undone when the model is used
    without them (fp8-stored weights through their layer's ``convert_weight`` / ``set_weight``, ComfyUI's hooks for
    quantised weights). Tables ComfyUI's loading does not patch (the blocks' ``modulation``) become object patches of the
    clone holding the patched table, swapped in and back the same way. Outside ComfyUI: a copy of the model with the LoRA merged (``mtv_core.dit.lora.apply_lora``). Keys that
    match no layer are listed in one warning.
    """
    from ..mtv_core.dit.lora import lora_key_map, split_lora_keys, warn_unmatched

    if isinstance(managed.patcher, StandalonePatcher):
        import copy

        from ..mtv_core.dit.lora import apply_lora

        model = copy.deepcopy(managed.model)
        apply_lora(model, lora_path, strength=strength)
        return ManagedModel(model, StandalonePatcher(model, managed.placement.load_device,
                                                     managed.placement.offload_device), managed.placement,
                            managed.whole)
    import comfy.lora  # type: ignore[import-not-found]
    import comfy.utils  # type: ignore[import-not-found]
    import torch

    lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
    key_map = lora_key_map(managed.model)
    matched, unmatched = split_lora_keys(list(lora), key_map)
    warn_unmatched(lora_path, unmatched)
    patches = comfy.lora.load_lora({k: lora[k] for k in matched}, key_map)
    clone = managed.patcher.clone()
    applied = 0
    for key, patch in patches.items():
        if _patched_by_loading(managed.model, key):
            applied += len(clone.add_patches({key: patch}, strength))
        else:  # a table of a module with sub-layers (a block's modulation): ComfyUI's loading never patches those
            param = managed.model.get_parameter(key)
            weight = param.detach().to(torch.float32, copy=True)  # calculate_weight works in place
            merged = comfy.lora.calculate_weight([(strength, patch, 1.0, None, None)], weight, key)
            clone.add_object_patch(key, type(param)(merged.to(param.dtype), requires_grad=False))
            applied += 1
    logger.info("%s: %d weight patches at strength %g", lora_path, applied, strength)
    if not applied:
        raise ValueError(f"LoRA {lora_path}: none of its keys fit this model (is it a LoRA for Wan2.1 14B?)")
    return ManagedModel(managed.model, clone, managed.placement, managed.whole)
