"""Errors raised by the NLF extraction stage, each naming what is at fault."""

from __future__ import annotations

NLF_RELEASE_URL = "https://github.com/isarandi/nlf/releases"
NLF_LICENSE_NOTE = (
    "NLF models are released for non-commercial research use only (they also embed SMPL/SMPL-X body-model "
    "data under the MPI non-commercial licence and a YOLOv8 detector); download the file yourself after "
    "reading the terms"
)


class NLFError(RuntimeError):
    """Base class of the NLF stage's errors."""


class NLFModelNotFoundError(NLFError, FileNotFoundError):
    """The NLF TorchScript file is not where it was looked for."""

    def __init__(self, name: str, folders: list[str] | tuple[str, ...]):
        where = ", ".join(str(f) for f in folders) or "models/nlf"
        super().__init__(
            f"NLF model file '{name}' not found in {where}. Download a multi-person TorchScript file such as "
            f"'nlf_l_multi_0.3.2.torchscript' (or 'nlf_s_multi_*.torchscript') from {NLF_RELEASE_URL} and put it "
            f"in one of those folders (ComfyUI: models/nlf). {NLF_LICENSE_NOTE}. Nothing is downloaded automatically."
        )
        self.name = name
        self.folders = list(folders)


class NLFModelFormatError(NLFError):
    """The file loads but is not an NLF multi-person model (no ``detect_smpl_batched``)."""


class NLFDeviceError(NLFError):
    """NLF's TorchScript needs a CUDA GPU (it does not run on CPU, isarandi/nlf issues 43 and 45)."""


class NoPersonDetectedError(NLFError, ValueError):
    """No person was found in any frame, so there is no motion to extract."""
