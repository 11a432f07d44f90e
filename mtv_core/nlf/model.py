"""Loading the NLF multi-person TorchScript model (``nlf_{s,l}_multi*.torchscript``).

NLF (Sárándi & Pons-Moll, "Neural Localizer Fields") is distributed by its author as a
TorchScript file exporting ``detect_smpl_batched`` (alias of ``detect_parametric_batched``).
This module loads it, checks it, optionally warms it up, and guards the two known traps:
its TorchScript does not run on CPU (isarandi/nlf issues 43 and 45), and other custom node
packs sometimes monkey-patch ``torch.jit.script``, which breaks it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import NLF_LICENSE_NOTE, NLFDeviceError, NLFModelFormatError, NLFModelNotFoundError

logger = logging.getLogger(__name__)

# Exported method names, newest first; ``detect_smpl_batched`` is the stable name (0.2.0 .. 0.3.2).
DETECT_METHODS = ("detect_smpl_batched", "detect_parametric_batched")
MODEL_SUFFIXES = (".torchscript", ".pt", ".pth")
DEFAULT_MODEL_NAME = "nlf_l_multi_0.3.2.torchscript"


@dataclass
class NLFModel:
    """A loaded NLF model and what the extraction needs to know about it.

    Attributes:
        module: the TorchScript module (parked on the offload device between runs).
        name: file name, for messages and metadata.
        path: absolute file path, or None for an in-memory module.
        requires_cuda: True for real NLF files, whose TorchScript only runs on CUDA. Test doubles
            scripted on CPU set it to False.
        method: name of the exported detection method found in the file.
    """

    module: Any
    name: str
    path: str | None = None
    requires_cuda: bool = True
    method: str = DETECT_METHODS[0]
    info: dict[str, Any] = field(default_factory=dict)

    def detect(self, images_nchw: torch.Tensor, **kwargs: Any) -> dict[str, list[torch.Tensor]]:
        """Call the model's batched detection on (N, 3, H, W) RGB images (uint8, or float in 0..1)."""
        return getattr(self.module, self.method)(images_nchw, **kwargs)

    def to(self, device: torch.device | str) -> "NLFModel":
        self.module.to(device)
        return self

    def __repr__(self) -> str:  # ComfyUI may show it; keep it short
        return f"NLFModel({self.name!r}, method={self.method!r})"


def jit_script_patch() -> str | None:
    """Describe a monkey-patch of ``torch.jit.script`` by another package, or None if it is the original."""
    import torch.jit._script as jit_script_module

    current = torch.jit.script
    original = getattr(jit_script_module, "script", None)
    patched = (
        current is not original
        or getattr(current, "__module__", None) != "torch.jit._script"
        or hasattr(current, "__wrapped__")
    )
    if not patched:
        return None
    code = getattr(current, "__code__", None)
    where = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else "unknown file"
    return (
        f"{getattr(current, '__module__', '?')}.{getattr(current, '__qualname__', getattr(current, '__name__', '?'))}"
        f" defined in {where}"
    )


def warn_if_jit_script_patched() -> bool:
    """Log a warning when ``torch.jit.script`` was replaced; returns True if it was."""
    patch = jit_script_patch()
    if patch is None:
        return False
    logger.warning(
        "torch.jit.script has been replaced by another package (%s). This is known to break the NLF TorchScript "
        "model; if extraction fails, disable the custom node pack that patches it.",
        patch,
    )
    return True


@contextlib.contextmanager
def profiling_executor(enabled: bool = True) -> Iterator[None]:
    """Run with TorchScript's profiling executor set to ``enabled``, restoring the previous setting after.

    NLF is scripted for the default (profiling) executor; other packs sometimes switch it off globally.
    """
    previous = torch._C._jit_set_profiling_executor(enabled)
    try:
        yield
    finally:
        torch._C._jit_set_profiling_executor(previous)


def check_device(model: NLFModel, device: torch.device | str | None) -> torch.device:
    """The device to run ``model`` on; raises NLFDeviceError when a real NLF file would land on a non-CUDA device."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if model.requires_cuda and (device.type != "cuda" or not torch.cuda.is_available()):
        reason = "no CUDA GPU is available" if not torch.cuda.is_available() else f"the compute device is '{device}'"
        raise NLFDeviceError(
            f"The NLF model '{model.name}' needs an NVIDIA CUDA GPU, but {reason}. NLF's TorchScript does not run "
            "on CPU (see isarandi/nlf issues 43 and 45); run the extraction on a CUDA machine, or load a joint "
            "sequence saved elsewhere."
        )
    return device


def _find_method(module: Any) -> str | None:
    for name in DETECT_METHODS:
        if hasattr(module, name):
            return name
    return None


# Attribute by which a TorchScript stand-in for NLF says it runs on CPU (used by integration tests).
CPU_CAPABLE_ATTRIBUTE = "mtv_cpu_capable"


def load_nlf_model(
    path: str | os.PathLike,
    *,
    device: torch.device | str | None = None,
    offload_device: torch.device | str = "cpu",
    warm_up: bool = False,
    requires_cuda: bool = True,
) -> NLFModel:
    """Load an NLF TorchScript file.

    Args:
        path: the ``nlf_*_multi*.torchscript`` file.
        device: compute device. When it is CUDA the file is mapped straight onto it (as NLF's own
            examples do: buffers held in plain dicts are not moved by ``.to()``), then parked on
            ``offload_device``; otherwise it is mapped to CPU.
        offload_device: where the model waits between runs.
        warm_up: run two small detections now (on ``device``) so the first real run skips the
            TorchScript profiling passes. Needs CUDA for real NLF files.
        requires_cuda: False only for CPU test doubles. A TorchScript test double may also declare
            itself CPU-capable with a ``mtv_cpu_capable = True`` attribute (real NLF files have none).
    """
    path = Path(path)
    if not path.is_file():
        raise NLFModelNotFoundError(path.name, [str(path.parent)])
    warn_if_jit_script_patched()
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    map_location = device if device.type == "cuda" and torch.cuda.is_available() else torch.device("cpu")
    try:
        with warnings.catch_warnings():  # recent torch deprecates TorchScript; NLF ships only as such
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*", category=DeprecationWarning)
            module = torch.jit.load(str(path), map_location=map_location)
    except (RuntimeError, ValueError) as exc:
        raise NLFModelFormatError(
            f"'{path}' could not be loaded as a TorchScript file ({exc}). Expected an NLF multi-person model "
            f"such as nlf_l_multi_0.3.2.torchscript."
        ) from exc
    method = _find_method(module)
    if method is None:
        raise NLFModelFormatError(
            f"'{path}' is a TorchScript file but exports none of {', '.join(DETECT_METHODS)}: it is not an NLF "
            "multi-person model (use nlf_l_multi*.torchscript or nlf_s_multi*.torchscript)."
        )
    module.eval()
    if requires_cuda and getattr(module, CPU_CAPABLE_ATTRIBUTE, False) is True:
        logger.info("%s declares itself CPU-capable (a test double, not a real NLF model)", path.name)
        requires_cuda = False
    model = NLFModel(module=module, name=path.name, path=str(path.resolve()), requires_cuda=requires_cuda, method=method)
    logger.info("loaded NLF model %s (method %s). %s.", path, method, NLF_LICENSE_NOTE)
    if warm_up:
        warm_up_model(model, device=device)
    model.to(offload_device)
    return model


def warm_up_model(model: NLFModel, device: torch.device | str | None = None, size: int = 256) -> None:
    """Run two detections on a black (1, 3, size, size) image so TorchScript's profiling passes happen now."""
    device = check_device(model, device)
    images = torch.zeros(1, 3, size, size, device=device)
    model.to(device)
    with torch.inference_mode(), profiling_executor(True):
        for _ in range(2):
            model.detect(images)
    logger.info("NLF model %s warmed up on %s", model.name, device)
