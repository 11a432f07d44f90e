"""Wan2.1 VAE (diffusers AutoencoderKLWan): parity with upstream's wan_vae, namings, full size, interface."""

import json
import re

import pytest
import torch
from _wan_reference import ShapesOnly, cases, full_keys, load_case, manifest_for, max_abs, write_release_file

from mtv_pack.mtv_core.checkpoint import CheckpointError, load_into
from mtv_pack.mtv_core.wan.vae import (
    WAN21_LATENT_MEAN,
    WAN21_LATENT_STD,
    build_wan_vae,
    load_wan_vae,
    wan_vae_config_from_shapes,
    wan_vae_key_map,
    write_tiny_wan_vae,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CASES = cases("wanvae")


def test_reference_cases_present():
    assert CASES, "no case_wanvae_tiny_seed*.safetensors under the reference folder"


@pytest.mark.parametrize("case_path", CASES, ids=[c.name for c in CASES])
def test_wan_vae_matches_upstream(case_path, tmp_path):
    manifest = manifest_for(case_path)
    vae = load_wan_vae(write_release_file(manifest, tmp_path / "Wan2.1_VAE.pth"), torch.float32)
    config = manifest["config"]
    assert vae.vae.config.base_dim == config["dim"] and list(vae.vae.config.dim_mult) == config["dim_mult"]
    assert list(vae.vae.config.temperal_downsample) == config["temperal_downsample"]
    case, _ = load_case(case_path)
    assert torch.equal(torch.tensor(vae.latent_format.mean), case["latent_mean"])  # the released tables
    assert torch.equal(torch.tensor(vae.latent_format.std), case["latent_std"])

    quant_out = {}
    hook = vae.vae.quant_conv.register_forward_hook(lambda m, i, out: quant_out.setdefault("x", out))
    latents, logvar = vae.encode_posterior(case["video"])
    hook.remove()
    assert max_abs(quant_out["x"], case["enc_conv1_out"]) < 1e-4
    assert max_abs(latents, case["latents"]) < 1e-4
    assert max_abs(logvar, case["posterior_logvar"]) < 1e-4
    assert max_abs(vae.encode(case["video"]), case["latents"]) < 1e-4

    decoded = vae.decode(case["latents"])
    assert max_abs(decoded, case["decoded"]) < 1e-4
    assert max_abs((decoded / 2 + 0.5).clamp(0, 1), case["decoded_01"]) < 1e-4


@pytest.mark.parametrize("naming,name", [("wan", "Wan2.1_VAE.pth"), ("comfy", "wan_2.1_vae.safetensors"),
                                         ("diffusers", "vae")])
def test_tiny_writers_load_and_agree(tmp_path, naming, name):
    reference = load_wan_vae(write_tiny_wan_vae(tmp_path / "ref.pth", seed=4), torch.float32)
    vae = load_wan_vae(write_tiny_wan_vae(tmp_path / name, seed=4, naming=naming), torch.float32)
    pixels = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    latents = vae.encode(pixels)
    assert latents.shape == (1, 16, 2, 2, 3)
    torch.testing.assert_close(latents, reference.encode(pixels), atol=0, rtol=0)
    out = vae.decode(latents)
    assert out.shape == (1, 3, 5, 16, 24) and out.abs().max() <= 1


def test_diffusers_named_file_without_config_reads_its_architecture(tmp_path):
    folder = write_tiny_wan_vae(tmp_path / "vae", seed=4, naming="diffusers")
    alone = load_wan_vae(folder / "diffusion_pytorch_model.safetensors", torch.float32)
    with_config = load_wan_vae(folder, torch.float32)
    assert alone.vae.config.base_dim == 8 and list(alone.vae.config.dim_mult) == [1, 2, 4, 4]
    pixels = torch.rand(1, 3, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(alone.encode(pixels), with_config.encode(pixels), atol=0, rtol=0)


def test_tiny_wan_file_uses_released_key_names(tmp_path):
    released = full_keys("wanvae_full_keys.json")["params"]
    tiny = torch.load(str(write_tiny_wan_vae(tmp_path / "t.pth")), weights_only=True)
    assert set(tiny) == set(released)  # same layout: only the widths differ


def test_interface(tmp_path):
    vae = load_wan_vae(write_tiny_wan_vae(tmp_path / "v.safetensors"), torch.float32)
    assert vae.dtype == torch.float32 and vae.device.type == "cpu" and vae.to("cpu") is vae
    assert vae.latent_format.mean == pytest.approx(WAN21_LATENT_MEAN) and len(vae.latent_format.std) == 16
    raw = torch.randn(1, 16, 2, 3, 3)
    torch.testing.assert_close(vae.latent_format.denormalize(vae.latent_format.normalize(raw)), raw)
    vae.set_tiling(True)
    assert vae.vae.use_tiling
    vae.set_tiling(False)
    assert not vae.vae.use_tiling
    with pytest.raises(ValueError, match="B, 3, T, H, W"):
        vae.encode(torch.zeros(1, 5, 3, 16, 16))
    with pytest.raises(ValueError, match="B, 16, F, h, w"):
        vae.decode(torch.zeros(1, 2, 16, 2, 2))


def test_released_wan_vae_keys_load_on_meta():
    spec = full_keys("wanvae_full_keys.json")
    assert len(spec["params"]) == 194
    ckpt = ShapesOnly(spec["file"], spec["params"])
    config = wan_vae_config_from_shapes(ckpt.shapes())
    assert (config["base_dim"], config["z_dim"], config["dim_mult"], config["num_res_blocks"],
            config["temperal_downsample"]) == (96, 16, [1, 2, 4, 4], 2, [False, True, True])
    assert config["latents_mean"] == list(WAN21_LATENT_MEAN) and config["latents_std"] == list(WAN21_LATENT_STD)
    vae = build_wan_vae(config)
    load_into(vae, wan_vae_key_map(ckpt, config), device="meta", what="Wan VAE")  # strict
    assert sum(p.numel() for p in vae.parameters()) == spec["num_params"]


def test_wrong_files_are_named(tmp_path):
    from mtv_pack.mtv_core.wan.text_encoder import write_tiny_umt5

    umt5 = write_tiny_umt5(tmp_path / "umt5.pth")
    with pytest.raises(CheckpointError, match="umt5.pth.*not a Wan VAE"):
        load_wan_vae(umt5)
    state = torch.load(str(write_tiny_wan_vae(tmp_path / "v.pth")), weights_only=True)
    state = {k: v for k, v in state.items() if not re.match(r"decoder\.upsamples\.14\.", k)}
    torch.save(state, str(tmp_path / "cut_vae.pth"))
    with pytest.raises(CheckpointError, match="(?s)cut_vae.pth.*missing keys.*up_blocks.3.resnets.2"):
        load_wan_vae(tmp_path / "cut_vae.pth")
    folder = write_tiny_wan_vae(tmp_path / "wan22", naming="diffusers")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "z_dim": 48}))
    with pytest.raises(CheckpointError, match="wan22.*z_dim 48"):
        load_wan_vae(folder)
    with pytest.raises(FileNotFoundError, match="no_vae.pth"):
        load_wan_vae(tmp_path / "no_vae.pth")
