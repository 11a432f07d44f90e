"""MV-DiT-7B loading: released key list, file formats, dtypes, streaming, wrong variants."""

import json

import pytest
import torch
from conftest import reference_dir
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError, Checkpoint
from mtv_pack.mtv_core.dit.config import MVDiT7BConfig
from mtv_pack.mtv_core.dit.loading import load_mvdit7b
from mtv_pack.mtv_core.dit.rope import motion_rope_7b, vision_rope_7b
from mtv_pack.mtv_core.dit.tiny import random_state_dict_7b, save_mvdit7b, tiny_mvdit7b_config, write_tiny_mvdit7b
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _released_shapes():
    data = json.loads((reference_dir() / "mvdit7b" / "mvdit7b_full_keys.json").read_text())
    return {k: tuple(v) for k, v in data["params"].items()}


def test_released_key_list_matches_released_size_model_on_meta():
    released = _released_shapes()
    assert len(released) == 1529
    with torch.device("meta"):
        model = MVDiT7B(MVDiT7BConfig())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == released
    assert MVDiT7BConfig.infer_from_shapes(released) == MVDiT7BConfig()
    params = sum(v.numel() for v in model.state_dict().values())
    assert round(params / 1e9, 3) == 7.157


def test_released_key_list_loads_on_meta(tmp_path, monkeypatch):
    """The loader accepts exactly the released key set (tensors stand in lazily; nothing is materialised)."""
    released = _released_shapes()

    class MetaCheckpoint(Checkpoint):
        def shape(self, key):
            return released[key]

        def dtype(self, key):
            return torch.bfloat16

        def get(self, key, dtype=None, device="cpu"):
            return torch.empty(released[key], dtype=dtype or torch.bfloat16, device="meta")

    fake = MetaCheckpoint(tmp_path / "MV-DiT" / "CogVideoX", dict.fromkeys(released), None)
    monkeypatch.setattr("mtv_pack.mtv_core.dit.loading.open_checkpoint", lambda path: fake)
    model = load_mvdit7b("released", dtype="bf16", device="meta")
    assert model.config == MVDiT7BConfig()
    assert all(p.dtype == torch.bfloat16 and p.is_meta for p in model.parameters())


@pytest.fixture(scope="module")
def tiny_state():
    return random_state_dict_7b(tiny_mvdit7b_config(), seed=3)


def _assert_state(model, expected, dtype):
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, tensor in expected.items():
        assert state[key].dtype == dtype, key
        assert torch.equal(state[key], tensor.to(dtype)), key


def test_single_file_fp32_streamed_into_bf16(tmp_path, tiny_state, monkeypatch):
    path = save_mvdit7b(tiny_state, tmp_path / "mvdit7b.safetensors", tiny_mvdit7b_config())
    returned = []
    original_get = Checkpoint.get

    def spy(self, key, dtype=None, device="cpu", out=None):
        tensor = original_get(self, key, dtype, device, out=out)
        returned.append(tensor.dtype)
        return tensor

    monkeypatch.setattr(Checkpoint, "get", spy)
    model = load_mvdit7b(path, dtype=torch.bfloat16)
    assert set(returned) == {torch.bfloat16} and len(returned) == len(tiny_state)
    _assert_state(model, tiny_state, torch.bfloat16)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_bf16_sharded_diffusers_folder(tmp_path, tiny_state):
    folder = save_mvdit7b(
        tiny_state, tmp_path / "CogVideoX", tiny_mvdit7b_config(), as_folder=True, dtype=torch.bfloat16,
        max_shard_bytes=200_000,
    )
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) > 2 and (folder / "diffusion_pytorch_model.safetensors.index.json").is_file()
    model = load_mvdit7b(folder, dtype="bf16")
    assert model.config == tiny_mvdit7b_config()
    bf16_state = {k: v.to(torch.bfloat16) for k, v in tiny_state.items()}
    _assert_state(model, bf16_state, torch.bfloat16)
    model32 = load_mvdit7b(folder, dtype=torch.float32)
    _assert_state(model32, {k: v.float() for k, v in bf16_state.items()}, torch.float32)


def test_config_json_is_used_and_checked(tmp_path, tiny_state):
    folder = save_mvdit7b(tiny_state, tmp_path / "CogVideoX", tiny_mvdit7b_config(), as_folder=True)
    config = json.loads((folder / "config.json").read_text())
    config.update(sample_width=90, sample_height=60, motion_dim=168)  # released extras are ignored
    (folder / "config.json").write_text(json.dumps(config))
    assert load_mvdit7b(folder, dtype="fp32").config == tiny_mvdit7b_config()
    config["num_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    # checked against the weights before a model of the config's size is built
    with pytest.raises(CheckpointError, match=r"config\.json does not match the weights: num_layers=3 but the weights "
                                              r"have 2"):
        load_mvdit7b(folder, dtype="fp32")


def test_loaded_model_reproduces_in_memory_model(tmp_path, tiny_state):
    path = write_tiny_mvdit7b(tmp_path / "tiny.safetensors", seed=3)
    loaded = load_mvdit7b(path, dtype="fp32", attention="sdpa")
    reference = MVDiT7B(tiny_mvdit7b_config())
    reference.load_state_dict(tiny_state)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 32, 4, 6, generator=g)
    motion = torch.randn(1, 48, 128, generator=g)
    mean = torch.randn(24, 3, generator=g).numpy() * 100
    ropes = vision_rope_7b(2, 2, 3), motion_rope_7b(2, mean)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, torch.tensor([500]), motion, *ropes),
                                   reference(x, torch.tensor([500]), motion, *ropes), atol=1e-5, rtol=0)


def test_prefixed_single_file(tmp_path, tiny_state):
    path = tmp_path / "comfy.safetensors"
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in tiny_state.items()}, str(path))
    _assert_state(load_mvdit7b(path, dtype="fp32"), tiny_state, torch.float32)


def _write(path, tensors):
    save_file({k: torch.zeros(v) for k, v in tensors.items()}, str(path))
    return path


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"patch_embedding.weight": (8, 36, 1, 2, 2), "blocks.0.self_attn.q.weight": (8, 8)}, "MV-DiT-17B"),
        ({"encoder.conv_in.weight": (8, 3, 3), "decoder.conv_out.weight": (3, 8, 3)}, "4DMoT"),
        ({"patch_embed.proj.weight": (8, 16, 2, 2), "transformer_blocks.0.attn1.to_q.weight": (8, 8)},
         "without motion attention"),
        ({"foo.weight": (2, 2)}, "none of the MV-DiT-7B keys"),
    ],
    ids=["wan17b", "4dmot", "stock_cogvideox", "unrelated"],
)
def test_wrong_variant_is_named(tmp_path, keys, message):
    path = _write(tmp_path / "other.safetensors", keys)
    with pytest.raises(CheckpointError, match=message) as info:
        load_mvdit7b(path)
    assert str(path) in str(info.value)


def test_missing_and_misshaped_keys_are_listed(tmp_path, tiny_state):
    broken = dict(tiny_state)
    del broken["transformer_blocks.1.attn0.to_v.bias"]
    broken["proj_out.bias"] = torch.zeros(65)
    path = save_mvdit7b(broken, tmp_path / "broken.safetensors", tiny_mvdit7b_config())
    with pytest.raises(CheckpointError) as info:
        load_mvdit7b(path)
    text = str(info.value)
    assert "transformer_blocks.1.attn0.to_v.bias" in text and "proj_out.bias" in text and str(path) in text


def test_bad_arguments(tmp_path):
    path = write_tiny_mvdit7b(tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError, match="dtype"):
        load_mvdit7b(path, dtype="int8")
    with pytest.raises(ValueError, match="attention"):
        load_mvdit7b(path, attention="flash")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mvdit7b(tmp_path / "nowhere.safetensors")


def test_config_round_trip_and_unsupported_settings():
    config = tiny_mvdit7b_config()
    assert MVDiT7BConfig.from_diffusers_config(config.to_diffusers_config()) == config
    with pytest.raises(ValueError, match="activation_fn"):
        MVDiT7BConfig.from_diffusers_config({**config.to_diffusers_config(), "activation_fn": "gelu"})
    with pytest.raises(ValueError, match="unconditional_motion_token"):
        MVDiT7BConfig.infer_from_shapes({k: v for k, v in _released_shapes().items() if "unconditional" not in k})


def test_auto_dtype_follows_the_device(monkeypatch):
    from mtv_pack.mtv_core.precision import resolve_dtype

    assert resolve_dtype("auto") == resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype(torch.float16) == torch.float16
    for bf16_ok, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
        assert resolve_dtype("auto", "cuda:0") == expected
