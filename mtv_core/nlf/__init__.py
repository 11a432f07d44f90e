"""SMPL-24 motion extraction from video frames with NLF (isarandi/nlf TorchScript models)."""

from .errors import (
    NLF_LICENSE_NOTE,
    NLF_RELEASE_URL,
    NLFDeviceError,
    NLFError,
    NLFModelFormatError,
    NLFModelNotFoundError,
    NoPersonDetectedError,
)
from .extract import FrameDetections, detect_people, frames_to_nchw
from .model import (
    DEFAULT_MODEL_NAME,
    MODEL_SUFFIXES,
    NLFModel,
    check_device,
    jit_script_patch,
    load_nlf_model,
    profiling_executor,
    warm_up_model,
)
from .pipeline import DEFAULT_FPS, NLFMotion, extract_smpl_motion
from .tracking import PERSON_POLICIES, PersonTrack, TrackedBoxes, fill_gaps, rank_people, track_people

__all__ = [
    "DEFAULT_FPS", "DEFAULT_MODEL_NAME", "MODEL_SUFFIXES", "NLF_LICENSE_NOTE", "NLF_RELEASE_URL", "PERSON_POLICIES",
    "FrameDetections", "NLFDeviceError", "NLFError", "NLFModel", "NLFModelFormatError", "NLFModelNotFoundError",
    "NLFMotion", "NoPersonDetectedError", "PersonTrack", "TrackedBoxes", "check_device", "detect_people",
    "extract_smpl_motion", "fill_gaps", "frames_to_nchw", "jit_script_patch", "load_nlf_model",
    "profiling_executor", "rank_people", "track_people", "warm_up_model",
]
