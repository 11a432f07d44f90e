"""Building a model without memory for its weights, and checking that loading left nothing on the meta device.

Inside ``empty_weights()`` every parameter and every persistent buffer a module registers goes to PyTorch's
meta device (no memory, no initialisation work): the checkpoint provides them. Non-persistent buffers are
not in any checkpoint, so they are built for real and keep the values their constructor computed (a RoPE
frequency table, say); building the whole model under ``torch.device("meta")`` would leave them as empty
meta tensors that break the first forward. After loading, ``finish_loading`` moves those buffers to the
model's device and raises if any parameter or buffer is still on the meta device.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .checkpoint import CheckpointError


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Construct modules with parameters and persistent buffers on the meta device (not thread-safe: it
    patches ``nn.Module.register_parameter`` / ``register_buffer`` for the duration of the block)."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register_parameter(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    def buffer_on_meta(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(module, name, tensor, persistent)
        if tensor is not None and persistent and not tensor.is_meta:
            module._buffers[name] = tensor.to("meta")

    nn.Module.register_parameter, nn.Module.register_buffer = parameter_on_meta, buffer_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` that are still on the meta device."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return [name for name, tensor in named if tensor.is_meta]


def finish_loading(model: nn.Module, device: torch.device | str, where: object = "") -> None:
    """Move the buffers the checkpoint did not provide to ``device``; CheckpointError naming ``where`` if any
    parameter or buffer is left on the meta device. Loading onto the meta device itself is left alone."""
    device = torch.device(device)
    if device.type == "meta":
        return
    for module in model.modules():
        for name, tensor in module._buffers.items():
            if tensor is not None and not tensor.is_meta and tensor.device != device:
                module._buffers[name] = tensor.to(device)
    left = meta_tensors(model)
    if left:
        shown = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
        raise CheckpointError(f"{where}: {len(left)} tensors were not loaded and have no value: {shown}")
