"""MV-DiT-7B: model, RoPE, loading, sampling (core, no ComfyUI)."""
