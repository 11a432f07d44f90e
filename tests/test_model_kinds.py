"""mtv_core.model_kinds: which loader a checkpoint is for, from its key names (header reads only)."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from mtv_pack.mtv_core import model_kinds
from mtv_pack.mtv_core.dit.tiny import tiny_tokenizer_config_for_7b, write_tiny_mvdit7b
from mtv_pack.mtv_core.dit.vae import write_tiny_vae
from mtv_pack.mtv_core.model_kinds import classify_keys, model_kind, safetensors_keys
from mtv_pack.mtv_core.tokenizer.testing import write_tiny_checkpoint


def _keys_file(path, keys, prefix=""):
    save_file({prefix + k: torch.zeros(1) for k in keys}, str(path))
    return path


# Key sets with the real names of models we do not build in tiny form here (only the names matter).
WAN_DIT = ["patch_embedding.weight", "head.modulation", "head.head.weight", "blocks.0.self_attn.q.weight",
           "blocks.0.self_attn.k.weight", "blocks.0.cross_attn.q.weight", "blocks.1.self_attn.q.weight"]
MVDIT17B = WAN_DIT + ["blocks.0.motion_attn.q.weight", "blocks.0.motion_attn.norm_q.weight"]
WAN_VAE_ORIGINAL = ["conv1.weight", "conv2.weight", "encoder.conv1.weight", "encoder.downsamples.0.residual.0.gamma",
                    "decoder.middle.0.residual.0.gamma", "decoder.upsamples.0.residual.0.gamma"]
COGVIDEOX_DIT = ["patch_embed.proj.weight", "transformer_blocks.0.attn1.to_q.weight", "norm_final.weight"]


@pytest.mark.parametrize("keys, kind", [
    (MVDIT17B, "mvdit17b"),
    (WAN_DIT, "other"),  # a Wan2.1 text-to-video transformer: nothing of ours loads it
    (WAN_DIT + ["img_emb.proj.1.weight"], "wan-i2v"),  # an image-to-video one: the base of a motion adapter
    (["blocks.0.motion_attn.q.weight", "blocks.0.norm4.weight", "blocks.4.motion_attn.o.scale_weight"],
     "mvdit17b-adapter"),
    (["scaled_fp8"] + ["model.diffusion_model." + k for k in MVDIT17B], "mvdit17b"),  # marker without the prefix
    (WAN_VAE_ORIGINAL, "wan-vae"),
    (COGVIDEOX_DIT, "other"),  # stock CogVideoX-5B transformer: no motion attention
    (["first_stage_model.encoder.conv_in.weight", "first_stage_model.decoder.conv_in.weight"], "other"),  # SD VAE
    ([], "other"),
])
def test_classify_keys_by_name(keys, kind):
    assert classify_keys(keys) == kind


def test_prefixes_are_stripped_like_the_loaders_do():
    assert classify_keys(["model.diffusion_model." + k for k in MVDIT17B]) == "mvdit17b"
    assert classify_keys(["transformer." + k for k in ["transformer_blocks.0.attn0.to_q.weight"]]) == "mvdit7b"


@pytest.fixture
def tiny_files(tmp_path):
    files = {
        "tok": write_tiny_checkpoint(tmp_path / "tok.safetensors", config=tiny_tokenizer_config_for_7b(), seed=0),
        "dit": write_tiny_mvdit7b(tmp_path / "dit.safetensors", seed=0),
        "dit_folder": write_tiny_mvdit7b(tmp_path / "MV-DiT" / "CogVideoX", seed=0, as_folder=True),
        "vae": write_tiny_vae(tmp_path / "vae.safetensors", seed=0),
        "vae_folder": write_tiny_vae(tmp_path / "vae_folder", seed=0, as_folder=True),
    }
    from diffusers import AutoencoderKLWan

    wan = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1], num_res_blocks=1, attn_scales=[],
                           temperal_downsample=[False])
    save_file({k: v.contiguous() for k, v in wan.state_dict().items()}, str(tmp_path / "wan_diffusers_vae.safetensors"))
    files["wan_vae"] = tmp_path / "wan_diffusers_vae.safetensors"
    return files


def test_tiny_checkpoints_with_real_key_names(tiny_files):
    kinds = {name: model_kind(path) for name, path in tiny_files.items()}
    assert kinds == {"tok": "4dmot", "dit": "mvdit7b", "dit_folder": "mvdit7b", "vae": "cogvideox-vae",
                     "vae_folder": "cogvideox-vae", "wan_vae": "wan-vae"}


def test_only_the_header_is_read(tmp_path):
    # A header announcing 4 GB of tensor data in a file of a few hundred bytes: classified from the header.
    header = {"vq.codebook": {"dtype": "F32", "shape": [8192, 3072 * 32], "data_offsets": [0, 2**32]},
              "encoder.conv_in.weight": {"dtype": "F32", "shape": [1], "data_offsets": [2**32, 2**32 + 4]},
              "decoder.conv_out.weight": {"dtype": "F32", "shape": [1], "data_offsets": [2**32 + 4, 2**32 + 8]},
              "__metadata__": {"format": "pt"}}
    raw = json.dumps(header).encode()
    path = tmp_path / "huge_tokenizer.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    assert sorted(safetensors_keys(path)) == sorted(k for k in header if k != "__metadata__")
    assert model_kind(path) == "4dmot"


@pytest.mark.parametrize("content", [b"", b"\x00" * 4, struct.pack("<Q", 2**40) + b"{}", struct.pack("<Q", 5) + b"{nope",
                                     struct.pack("<Q", 100) + b"{}"])
def test_unreadable_headers_are_unknown_not_errors(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken.safetensors"):
        safetensors_keys(path)
    assert model_kind(path) == "unknown"


def test_pickles_and_missing_files_are_unknown(tmp_path):
    torch.save({"vq.codebook": torch.zeros(2, 2)}, tmp_path / "mp_rank_00_model_states.pt")
    assert model_kind(tmp_path / "mp_rank_00_model_states.pt") == "unknown"  # never unpickled to look
    assert model_kind(tmp_path / "absent.safetensors") == "unknown"
    (tmp_path / "empty_folder").mkdir()
    assert model_kind(tmp_path / "empty_folder") == "unknown"


def test_results_are_cached_on_path_size_and_mtime(tmp_path):
    path = _keys_file(tmp_path / "model.safetensors", COGVIDEOX_DIT)
    before = model_kinds.cache_info()
    assert model_kind(path) == "other"
    assert model_kind(path) == "other"
    after = model_kinds.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    # Replaced by another model (new size and mtime): read again.
    _keys_file(path, MVDIT17B)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert model_kind(path) == "mvdit17b"
    assert model_kinds.cache_info().misses - after.misses == 1


def test_folder_config_class_decides_for_video_vaes(tmp_path):
    folder = tmp_path / "wan_vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan"}))
    _keys_file(folder / "diffusion_pytorch_model.safetensors", ["anything.weight"])
    assert model_kind(folder) == "wan-vae"
