"""MTVCrafter for ComfyUI: the pack's entry point (V3 schema via ``comfy_entrypoint``)."""

from __future__ import annotations

if __package__:  # ComfyUI (and the tests) import this folder as a package. pytest also imports this file on
    # its own, without a package, when the checkout's folder name is not a Python identifier (``my-clone``):
    # then there is nothing to register.
    from .nodes import all_nodes
    from .nodes._comfy import ComfyExtension, register_model_folders

    register_model_folders()

    class MTVCrafterExtension(ComfyExtension):
        async def get_node_list(self) -> list[type]:
            return all_nodes()

    async def comfy_entrypoint() -> MTVCrafterExtension:
        return MTVCrafterExtension()
