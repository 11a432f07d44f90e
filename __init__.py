"""MTVCrafter for ComfyUI: the pack's entry point (V3 schema via ``comfy_entrypoint``)."""

from __future__ import annotations

from .nodes import all_nodes
from .nodes._comfy import ComfyExtension, register_model_folders

register_model_folders()


class MTVCrafterExtension(ComfyExtension):
    async def get_node_list(self) -> list[type]:
        return all_nodes()


async def comfy_entrypoint() -> MTVCrafterExtension:
    return MTVCrafterExtension()
