"""Real-ComfyUI integration layer (marker ``integration``; runs only when ``COMFYUI_DIR`` is set)."""
