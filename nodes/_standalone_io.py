"""A small stand-in for ``comfy_api.latest.io`` used when ComfyUI is not importable.

It implements only the subset of the V3 schema API this pack uses, with the same names and
arguments, so node schemas can be built and ``execute`` called in plain unit tests. Inside
ComfyUI the real module is used (see ``_comfy.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class _Input:
    def __init__(self, io_type: str, id: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, **options: Any) -> None:
        self.io_type = io_type
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.options = options

    @property
    def default(self) -> Any:
        return self.options.get("default")


class _Output:
    def __init__(self, io_type: str, id: str | None = None, display_name: str | None = None,
                 tooltip: str | None = None, is_output_list: bool = False) -> None:
        self.io_type = io_type
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list


class _IOType:
    io_type = "*"
    is_widget = False

    @classmethod
    def Input(cls, id: str, **kwargs: Any) -> _Input:  # noqa: N802 - mirrors comfy_api
        return _Input(cls.io_type, id, **kwargs)

    @classmethod
    def Output(cls, id: str | None = None, **kwargs: Any) -> _Output:  # noqa: N802
        return _Output(cls.io_type, id, **kwargs)


def _make(name: str, widget: bool = False) -> type[_IOType]:
    return type(name, (_IOType,), {"io_type": name.upper() if name != "Vae" else "VAE", "is_widget": widget})


Int = _make("Int", True)
Float = _make("Float", True)
String = _make("String", True)
Boolean = _make("Boolean", True)
Image = _make("Image")
Mask = _make("Mask")
Video = _make("Video")
Latent = _make("Latent")
Vae = _make("Vae")
AnyType = _make("AnyType")
AnyType.io_type = "*"
Conditioning = _make("Conditioning")
ClipVision = type("ClipVision", (_IOType,), {"io_type": "CLIP_VISION"})
ClipVisionOutput = type("ClipVisionOutput", (_IOType,), {"io_type": "CLIP_VISION_OUTPUT"})


class Combo(_IOType):
    io_type = "COMBO"
    is_widget = True

    @classmethod
    def Input(cls, id: str, options: list[str] | None = None, **kwargs: Any) -> _Input:  # noqa: N802
        return _Input(cls.io_type, id, options=list(options or []), **kwargs)


_CUSTOM: dict[str, type[_IOType]] = {}


def Custom(io_type: str) -> type[_IOType]:  # noqa: N802 - mirrors comfy_api
    if io_type not in _CUSTOM:
        _CUSTOM[io_type] = type(io_type, (_IOType,), {"io_type": io_type})
    return _CUSTOM[io_type]


class Hidden:
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[_Input] = field(default_factory=list)
    outputs: list[_Output] = field(default_factory=list)
    hidden: list[Any] = field(default_factory=list)
    description: str = ""
    is_output_node: bool = False
    is_experimental: bool = False
    is_deprecated: bool = False
    not_idempotent: bool = False


class NodeOutput:
    def __init__(self, *args: Any, ui: Any = None, expand: Any = None, block_execution: Any = None) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None


class _HiddenValues:
    unique_id = None
    prompt = None
    extra_pnginfo = None


class ComfyNode:
    hidden = _HiddenValues()

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError
