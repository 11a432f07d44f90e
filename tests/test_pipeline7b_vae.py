"""CogVideoX VAE: shipped config, loading from folder / single file, encode/decode layout, bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mtv_pack.mtv_core.dit.vae import SCALING_FACTOR, load_vae, vae_config, write_tiny_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shipped_config_is_cogvideox5b():
    config = vae_config()
    assert config["scaling_factor"] == SCALING_FACTOR == 0.7
    assert config["block_out_channels"] == [128, 256, 256, 512]
    assert config["latent_channels"] == 16 and config["layers_per_block"] == 3
    assert config["temporal_compression_ratio"] == 4 and config["invert_scale_latents"] is False
    from diffusers import AutoencoderKLCogVideoX

    with torch.device("meta"):
        vae = AutoencoderKLCogVideoX.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    assert round(sum(p.numel() for p in vae.parameters()) / 1e6, 1) == 215.6


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return write_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny_vae.safetensors", seed=3)


def test_folder_and_file_load_the_same_weights(tmp_path, tiny_file):
    folder = write_tiny_vae(tmp_path / "CogVideoX-5b" / "vae", seed=3, as_folder=True)
    a = load_vae(tiny_file, dtype=torch.float32)
    b = load_vae(folder, dtype=torch.float32)
    c = load_vae(tmp_path / "CogVideoX-5b", dtype=torch.float32)  # whole snapshot folder
    for key, value in a.vae.state_dict().items():
        assert torch.equal(value, b.vae.state_dict()[key]) and torch.equal(value, c.vae.state_dict()[key])
    assert a.vae.use_tiling and a.vae.use_slicing
    assert a.scaling_factor == 0.7


def test_dtype_and_no_meta_left(tiny_file):
    vae = load_vae(tiny_file, dtype=torch.bfloat16, tiling=False)
    assert vae.dtype == torch.bfloat16 and not vae.vae.use_tiling
    assert all(p.device.type == "cpu" for p in vae.vae.parameters())


def test_encode_decode_layout(tiny_file):
    vae = load_vae(tiny_file, dtype=torch.float32)
    pixels = torch.rand(1, 3, 9, 64, 48) * 2 - 1
    z1 = vae.encode(pixels, generator=torch.Generator().manual_seed(0))
    z2 = vae.encode(pixels, generator=torch.Generator().manual_seed(0))
    z3 = vae.encode(pixels, generator=torch.Generator().manual_seed(1))
    assert z1.shape == (1, 3, 16, 8, 6)  # frame-major
    assert torch.equal(z1, z2) and not torch.equal(z1, z3)
    mode = vae.encode(pixels, sample=False)
    assert torch.equal(mode, vae.encode(pixels, sample=False))
    out = vae.decode(z1)
    assert out.shape == (1, 3, 9, 64, 48)
    with pytest.raises(ValueError, match="latents must be"):
        vae.decode(z1.permute(0, 2, 1, 3, 4))


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="VAE not found"):
        load_vae(tmp_path / "missing.safetensors")
    pt = tmp_path / "vae.pt"
    pt.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .safetensors"):
        load_vae(pt)
    other = tmp_path / "other.safetensors"
    save_file({"transformer_blocks.0.attn1.to_q.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ValueError, match="diffusion transformer"):
        load_vae(other)
    sat = tmp_path / "sat.safetensors"
    save_file({"encoder.down.0.block.0.norm1.weight": torch.zeros(2)}, str(sat))
    with pytest.raises(ValueError, match="missing keys"):
        load_vae(sat)
    empty = tmp_path / "empty_vae"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(vae_config()))
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        load_vae(empty)


def test_shape_mismatch_names_the_tensor(tmp_path, tiny_file):
    from safetensors.torch import load_file

    state = load_file(str(tiny_file))
    state["encoder.conv_in.conv.weight"] = torch.zeros(1, 1, 1, 1, 1)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata={"mtv_vae_config": json.dumps(vae_config() | {
        "block_out_channels": [8, 8, 8, 16], "layers_per_block": 1, "norm_num_groups": 4})})
    with pytest.raises(ValueError, match="encoder.conv_in.conv.weight"):
        load_vae(bad)
