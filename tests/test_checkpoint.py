"""mtv_core.checkpoint: formats, strict loading into meta modules, safety of pickled files."""

import enum
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError, key_report, load_into, open_checkpoint, strip_key_prefix


class ZeroStage(enum.IntEnum):  # stands for a DeepSpeed config enum pickled into model_states.pt
    weights = 3


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)
        self.register_buffer("codebook", torch.zeros(5, 3))


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "proj.weight": torch.randn(3, 4, generator=g),
        "proj.bias": torch.randn(3, generator=g),
        "codebook": torch.randn(5, 3, generator=g),
    }


def _meta_tiny():
    with torch.device("meta"):
        return Tiny()


def test_safetensors_file_loads_into_meta_module_in_target_dtype(tmp_path):
    sd = _state()
    save_file(sd, tmp_path / "m.safetensors")
    model = _meta_tiny()
    load_into(model, open_checkpoint(tmp_path / "m.safetensors"), dtype=torch.bfloat16)
    assert model.proj.weight.dtype == torch.bfloat16 and model.proj.weight.device.type == "cpu"
    assert isinstance(model.proj.weight, torch.nn.Parameter)
    torch.testing.assert_close(model.codebook, sd["codebook"].bfloat16())


def test_sharded_diffusers_folder_with_index(tmp_path):
    sd = _state(1)
    save_file({"proj.weight": sd["proj.weight"]}, tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors")
    save_file({k: sd[k] for k in ("proj.bias", "codebook")}, tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors")
    weight_map = {"proj.weight": "diffusion_pytorch_model-00001-of-00002.safetensors"}
    weight_map.update({k: "diffusion_pytorch_model-00002-of-00002.safetensors" for k in ("proj.bias", "codebook")})
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps({"num_layers": 2}))
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.config == {"num_layers": 2}
    assert ckpt.shapes() == {k: tuple(v.shape) for k, v in sd.items()}
    model = _meta_tiny()
    load_into(model, ckpt)
    torch.testing.assert_close(model.proj.weight, sd["proj.weight"])


def test_deepspeed_model_states_with_foreign_classes(tmp_path):
    sd = _state(2)
    torch.save({"module": sd, "ds_config": {"zero_stage": ZeroStage.weights}, "ds_version": "0.16"}, tmp_path / "mp.pt")
    ckpt = open_checkpoint(tmp_path / "mp.pt")
    assert sorted(ckpt.keys()) == sorted(sd)
    torch.testing.assert_close(ckpt.get("codebook"), sd["codebook"])


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_command_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"module": _state(), "payload": _Exploit(marker)}, tmp_path / "evil.pt")
    try:
        open_checkpoint(tmp_path / "evil.pt")
    except Exception:
        pass
    assert not marker.exists()


def test_strict_mismatch_names_file_and_keys(tmp_path):
    sd = _state()
    sd["extra.weight"] = sd.pop("proj.bias")
    sd["codebook"] = torch.zeros(6, 3)
    save_file(sd, tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_into(_meta_tiny(), open_checkpoint(tmp_path / "wrong.safetensors"), what="4DMoT", hint="expected a tokenizer")
    text = str(err.value)
    assert "wrong.safetensors" in text and "4DMoT" in text and "expected a tokenizer" in text
    assert "missing keys" in text and "proj.bias" in text
    assert "unexpected keys" in text and "extra.weight" in text
    assert "codebook: file (6, 3), model (5, 3)" in text


def test_key_report_none_when_equal_and_limits_listing():
    assert key_report({"a": (1,)}, {"a": (1,)}) is None
    report = key_report({f"k{i}": (1,) for i in range(20)}, {}, limit=3)
    assert report.startswith("20 missing keys (showing 3):") and report.count("\n") == 3


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        open_checkpoint(tmp_path / "nothing.safetensors")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        open_checkpoint(tmp_path / "notes.txt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        open_checkpoint(tmp_path / "bad.safetensors")


def test_metadata_and_prefixed_view(tmp_path):
    sd = {f"model.diffusion_model.{k}": v for k, v in _state(3).items()}
    save_file(sd, tmp_path / "p.safetensors", metadata={"mtv_config": "{}"})
    ckpt = open_checkpoint(tmp_path / "p.safetensors")
    assert ckpt.metadata == {"mtv_config": "{}"}
    view = strip_key_prefix(ckpt, ("diffusion_model.", "model.diffusion_model."))
    assert sorted(view.keys()) == ["codebook", "proj.bias", "proj.weight"] and view.metadata == ckpt.metadata
    model = _meta_tiny()
    load_into(model, view)
    torch.testing.assert_close(model.codebook, sd["model.diffusion_model.codebook"])
    assert strip_key_prefix(ckpt, ("other.",)) is ckpt
