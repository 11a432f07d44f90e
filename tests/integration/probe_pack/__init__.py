"""Test-only custom node folder for the integration server: reports ComfyUI's model management state.

``GET /mtv_test/loaded_models`` lists ``comfy.model_management.current_loaded_models``: for each entry the class
of the model its patcher holds (and of the module inside a plain container), whether the patcher is a
``comfy.model_patcher.ModelPatcher``, its devices and sizes, whether it is loaded partially, and the modules
its weighted layers come from. No nodes. Installed by tests/integration/conftest.py next to the pack.
"""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher
import torch
from aiohttp import web
from server import PromptServer

NODE_CLASS_MAPPINGS: dict = {}
WEIGHTED = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.LayerNorm,
            torch.nn.GroupNorm)


def _describe(entry) -> dict:
    patcher = entry.model
    model = patcher.model
    inner = getattr(model, "inner", None)
    layers = {type(m).__module__ for m in model.modules() if isinstance(m, WEIGHTED)}
    return {
        "class": type(model).__name__,
        "inner": type(inner).__name__ if inner is not None else None,
        "model_patcher": isinstance(patcher, comfy.model_patcher.ModelPatcher),
        "load_device": str(patcher.load_device),
        "offload_device": str(patcher.offload_device),
        "size": int(patcher.model_size()),
        "loaded": int(patcher.loaded_size()),
        "lowvram": bool(getattr(model, "model_lowvram", False)),
        "layer_modules": sorted(layers),
    }


@PromptServer.instance.routes.get("/mtv_test/loaded_models")
async def loaded_models(request):
    return web.json_response({
        "vram_state": mm.vram_state.name,
        "models": [_describe(entry) for entry in list(mm.current_loaded_models) if entry.model is not None],
    })
