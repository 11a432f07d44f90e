"""Our models live outside ComfyUI's model management: before they go to a CUDA device we ask ComfyUI to make room."""

import sys
import types

import torch
from safetensors.torch import save_file

from mtv_pack.nodes import _comfy


def _fake_model_management(monkeypatch):
    calls = []
    mm = types.ModuleType("comfy.model_management")
    mm.free_memory = lambda nbytes, device: calls.append((nbytes, device))
    comfy = types.ModuleType("comfy")
    comfy.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    return calls


def test_make_room_frees_comfy_memory_for_cuda_only(monkeypatch):
    calls = _fake_model_management(monkeypatch)
    _comfy.make_room(10 << 30, "cpu")
    assert calls == []
    _comfy.make_room(10 << 30, "cuda:0")
    (nbytes, device), = calls
    assert device == torch.device("cuda:0") and nbytes > 10 << 30


def test_make_room_is_a_no_op_outside_comfyui(monkeypatch):
    monkeypatch.setitem(sys.modules, "comfy", None)
    monkeypatch.setitem(sys.modules, "comfy.model_management", None)
    _comfy.make_room(1 << 30, "cuda:0")  # must not raise without ComfyUI


def test_sizes_from_headers_and_modules(tmp_path):
    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5, dtype=torch.bfloat16)}, tmp_path / "m.safetensors")
    assert _comfy.checkpoint_bytes(str(tmp_path / "m.safetensors"), torch.bfloat16) == 17 * 2
    assert _comfy.checkpoint_bytes(str(tmp_path / "m.safetensors"), torch.float32) == 17 * 4
    module = torch.nn.Linear(4, 3)
    module.register_buffer("stats", torch.zeros(2, dtype=torch.float64))
    assert _comfy.model_bytes(module) == (12 + 3) * 4 + 2 * 8
