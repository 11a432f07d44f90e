"""Our models under ComfyUI's model management, as far as it can be checked without ComfyUI: the standalone
fallback, and the calls made into ``comfy.*`` (recorded by a stand-in ``comfy`` package). The real thing runs in
tests/integration (a live server, and ModelPatcher's partial loading in-process)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from mtv_pack.nodes import _comfy
from mtv_pack.nodes._comfy import ManagedModel, Placement, StandalonePatcher

CPU = torch.device("cpu")


class _Module(torch.nn.Module):
    def __init__(self, size: int = 4) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(size))


def test_outside_comfyui_models_are_plain_torch_and_move_whole(monkeypatch):
    monkeypatch.setitem(sys.modules, "comfy", None)  # not importable
    assert _comfy.operations_for(torch.bfloat16, torch.bfloat16, CPU) is torch.nn
    assert _comfy.model_placement("cpu") == Placement(CPU, CPU)
    offload = _comfy.model_placement("offload")
    assert offload.offload_device == CPU and offload.unload_after
    assert not _comfy.model_placement("auto").unload_after
    managed = _comfy.manage(_Module(), Placement(CPU, CPU, unload_after=True))
    assert isinstance(managed.patcher, StandalonePatcher)
    moves = []
    managed.model.to = lambda device: moves.append(device)
    with pytest.raises(RuntimeError, match="boom"), _comfy.loaded(managed) as (model,):
        assert model is managed.model and moves == [CPU]
        raise RuntimeError("boom")
    assert moves == [CPU, CPU]  # back to the offload device on error too


class _FakeComfy:
    """Records what the pack asks of ComfyUI's model management."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple] = []
        comfy = types.ModuleType("comfy")
        mm = types.ModuleType("comfy.model_management")
        mp = types.ModuleType("comfy.model_patcher")
        ops = types.ModuleType("comfy.ops")
        gpu = torch.device("cuda", 0)
        mm.get_torch_device = lambda: gpu
        mm.unet_offload_device = lambda: CPU
        mm.vae_device = lambda: torch.device("cuda", 1)
        mm.vae_offload_device = lambda: CPU
        mm.module_size = lambda module: sum(p.numel() * p.element_size() for p in module.parameters())
        mm.current_loaded_models = []
        mm.soft_empty_cache = lambda: self.calls.append(("empty_cache",))
        fake = self

        class LoadedModel:
            def __init__(self, patcher):
                self.model = patcher

            def model_unload(self):
                fake.calls.append(("unload", self.model))
                return True

        def load_models_gpu(models, memory_required=0, force_full_load=False):
            self.calls.append(("load", list(models), memory_required, force_full_load))
            for patcher in models:
                if not any(entry.model is patcher for entry in mm.current_loaded_models):
                    mm.current_loaded_models.insert(0, LoadedModel(patcher))

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0):
                self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size

            def model_size(self):
                return self.size

            def loaded_size(self):
                return 0

        mm.load_models_gpu = load_models_gpu
        mp.ModelPatcher = ModelPatcher
        ops.pick_operations = lambda weight, compute, load_device=None: ("ops", weight, compute, load_device)
        comfy.model_management, comfy.model_patcher, comfy.ops = mm, mp, ops
        for name, module in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.model_patcher", mp),
                             ("comfy.ops", ops)):
            monkeypatch.setitem(sys.modules, name, module)
        self.mm = mm


def test_device_choices_map_onto_comfyui_devices(monkeypatch):
    _FakeComfy(monkeypatch)
    gpu = torch.device("cuda", 0)
    assert _comfy.model_placement("auto") == Placement(gpu, CPU)
    assert _comfy.model_placement("offload") == Placement(gpu, CPU, unload_after=True)
    assert _comfy.model_placement("cpu") == Placement(CPU, CPU)
    assert _comfy.model_placement(kind="vae") == Placement(torch.device("cuda", 1), CPU)
    assert _comfy.operations_for(torch.float8_e4m3fn, torch.bfloat16, gpu) == (
        "ops", torch.float8_e4m3fn, torch.bfloat16, gpu)


def test_models_are_wrapped_in_model_patchers(monkeypatch):
    _FakeComfy(monkeypatch)
    dit = _Module(8)
    managed = _comfy.manage(dit, Placement(torch.device("cuda", 0), CPU))
    assert managed.patcher.model is dit and managed.patcher.load_device == torch.device("cuda", 0)
    assert managed.patcher.offload_device == CPU and managed.patcher.size == 8 * 4
    core = types.SimpleNamespace(vae=_Module(3))  # a VideoVAE-like holder of a diffusers module
    whole = _comfy.manage(core, Placement(torch.device("cuda", 0), CPU), module=core.vae, whole=True)
    assert whole.model is core and whole.patcher.model.inner is core.vae  # held in a plain container
    assert whole.patcher.size == 3 * 4


def test_split_models_load_first_leaving_room_for_whole_ones(monkeypatch):
    fake = _FakeComfy(monkeypatch)
    place = Placement(torch.device("cuda", 0), CPU)
    dit = _comfy.manage(_Module(8), place)
    core_vae = types.SimpleNamespace(vae=_Module(3))
    vae = _comfy.manage(core_vae, place, module=core_vae.vae, whole=True)
    with _comfy.loaded(dit, vae, memory_required=1000) as (a, b):
        assert a is dit.model and b is vae.model
    assert fake.calls == [
        ("load", [dit.patcher], 1000 + 12, False),  # the DiT may be loaded partially, next to the whole VAE
        ("load", [vae.patcher], 1000, True),  # the VAE whole (force_full_load)
    ]
    assert [entry.model for entry in fake.mm.current_loaded_models] == [vae.patcher, dit.patcher]


def test_unload_after_takes_the_model_out_of_comfyuis_loaded_list(monkeypatch):
    fake = _FakeComfy(monkeypatch)
    keep = _comfy.manage(_Module(), Placement(torch.device("cuda", 0), CPU))
    offload = _comfy.manage(_Module(), Placement(torch.device("cuda", 0), CPU, unload_after=True))
    with pytest.raises(KeyboardInterrupt), _comfy.loaded(keep, offload):
        raise KeyboardInterrupt  # Cancel
    assert ("unload", offload.patcher) in fake.calls and ("unload", keep.patcher) not in fake.calls
    assert [entry.model for entry in fake.mm.current_loaded_models] == [keep.patcher]


def test_managed_model_repr_names_the_model_and_devices():
    managed = ManagedModel(_Module(), None, Placement(CPU, CPU))
    assert "_Module" in repr(managed) and "cpu" in repr(managed)


def test_loaders_read_onto_the_offload_device_with_comfy_ops(monkeypatch):
    fake = _FakeComfy(monkeypatch)
    seen = {}

    def load(path, **kwargs):
        seen.update(kwargs, path=path)
        return _Module(2)

    managed = _comfy.load_managed(load, "model.safetensors", "fp16", "offload", variant="7b")
    gpu = torch.device("cuda", 0)
    assert seen == dict(path="model.safetensors", dtype=torch.float16, device=CPU, variant="7b",
                        operations=("ops", torch.float16, torch.float16, gpu))
    assert managed.placement == Placement(gpu, CPU, unload_after=True) and not managed.whole
    assert managed.patcher.load_device == gpu and fake.calls == []  # loaded to the GPU only for a run


def test_decoders_reuse_the_samplers_frames_without_loading_the_vae(monkeypatch):
    from mtv_pack.mtv_core.dit.latents import LatentFormat, MTVLatent

    fake = _FakeComfy(monkeypatch)
    vae = types.SimpleNamespace(identity=lambda: "vae-a", vae=_Module(3))
    managed = _comfy.manage(vae, Placement(torch.device("cuda", 1), CPU), module=vae.vae, whole=True)
    latent = MTVLatent(variant="7b", latent_format=LatentFormat(name="cogvideox"), samples=torch.zeros(2, 13, 16, 1, 1),
                       starts=(0, 40), window=49, num_frames=89, fps=20.0, width=8, height=8, seed=0,
                       frames=torch.zeros(89, 8, 8, 3), decoded_by="vae-a")
    decoded, estimates = [], []

    def decode(video_vae, latents, callback):
        decoded.append(video_vae)
        return "frames"

    def estimate():
        estimates.append(1)
        return 500

    assert _comfy.decode_sampled(decode, vae, managed, latent, memory_required=estimate) == "frames"
    assert decoded == [vae] and estimates == [] and fake.calls == []  # decoded while sampling: nothing loaded
    latent.decoded_by = "vae-b"
    assert _comfy.decode_sampled(decode, vae, managed, latent, memory_required=estimate) == "frames"
    assert decoded == [vae, vae] and estimates == [1]
    assert fake.calls == [("load", [managed.patcher], 500, True)]  # the VAE whole, its activations kept free


def test_a_widget_value_outside_its_choices_is_named_with_them():
    _comfy.check_choice("device", "auto", ("auto", "cpu"))
    with pytest.raises(ValueError, match=r"device must be one of \['auto', 'cpu'\], got 'cuda:7'"):
        _comfy.check_choice("device", "cuda:7", ("auto", "cpu"))
    from mtv_pack.nodes import dit17b, tokenizer

    with pytest.raises(ValueError, match=r"dtype must be one of \['fp32', 'bf16', 'fp16'\], got 'auto'"):
        tokenizer.MTVLoadMotionTokenizer.execute("4dmot.safetensors", dtype="auto")
    with pytest.raises(ValueError, match=r"device must be one of \['auto', 'offload', 'cpu'\], got 'gpu'"):
        dit17b.MTVLoadDiT17B.execute("mvdit17b.safetensors", device="gpu")
