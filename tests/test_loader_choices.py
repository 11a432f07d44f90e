"""Loader lists offer only what each loader can load (nodes/_comfy.model_choices with model kinds)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from mtv_pack.mtv_core import model_kinds
from mtv_pack.mtv_core.dit.tiny import tiny_tokenizer_config_for_7b, write_tiny_mvdit7b
from mtv_pack.mtv_core.dit.vae import write_tiny_vae
from mtv_pack.mtv_core.tokenizer.testing import write_tiny_checkpoint
from mtv_pack.nodes import dit7b, tokenizer


@pytest.fixture
def mixed_models(tmp_path, monkeypatch):
    """Every kind of file a user may keep in the folders our loaders read, as in a real models/ tree."""
    monkeypatch.setenv("MTV_MODELS_DIR", str(tmp_path))
    mtv, vae, dm = tmp_path / "mtvcrafter", tmp_path / "vae", tmp_path / "diffusion_models"
    write_tiny_checkpoint(mtv / "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors",
                          config=tiny_tokenizer_config_for_7b())
    write_tiny_checkpoint(vae / "my_tokenizer.safetensors", config=tiny_tokenizer_config_for_7b())
    write_tiny_mvdit7b(mtv / "MV-DiT" / "CogVideoX", as_folder=True)
    write_tiny_mvdit7b(dm / "mvdit7b_single.safetensors")
    write_tiny_vae(vae / "cogvideox_vae_bf16.safetensors")
    write_tiny_vae(vae / "CogVideoX-5b" / "vae", as_folder=True)
    (mtv / "4DMoT").mkdir()
    torch.save({"module": {"vq.codebook": torch.zeros(2, 2)}}, mtv / "4DMoT" / "mp_rank_00_model_states.pt")
    torch.save({"w": torch.zeros(1)}, vae / "some_image_vae.pt")  # a pickle elsewhere, named like nothing of ours
    save_file({"first_stage_model.decoder.conv_in.weight": torch.zeros(1)}, str(vae / "sdxl_vae.safetensors"))
    save_file({"patch_embed.proj.weight": torch.zeros(1), "transformer_blocks.0.attn1.to_q.weight": torch.zeros(1)},
              str(dm / "cogvideox5b_stock_transformer.safetensors"))
    return tmp_path


def _dit_choices():
    return dit7b._choices(dit7b.DIT_FOLDERS, dit7b._DIT_HINTS, dit7b.NO_DIT, "mvdit7b")


def _vae_choices():
    return dit7b._choices(dit7b.VAE_FOLDERS, dit7b._VAE_HINTS, dit7b.NO_VAE, "cogvideox-vae")


def test_each_loader_lists_only_its_own_kind(mixed_models):
    # the tokenizer next to the DiT folder is not offered to the DiT loader, nor the stock CogVideoX transformer
    assert _dit_choices() == ["MV-DiT/CogVideoX", "mvdit7b_single.safetensors"]
    assert _vae_choices() == ["CogVideoX-5b/vae", "cogvideox_vae_bf16.safetensors"]
    # pickles cannot be read cheaply: kept in the pack's folder, dropped elsewhere unless the name says 4DMoT
    assert tokenizer.tokenizer_file_choices() == [
        "4DMoT/mp_rank_00_model_states.pt", "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors",
        "my_tokenizer.safetensors"]


def test_a_refresh_reads_no_header_twice(mixed_models):
    _dit_choices(), _vae_choices(), tokenizer.tokenizer_file_choices()
    before = model_kinds.cache_info()
    _dit_choices(), _vae_choices(), tokenizer.tokenizer_file_choices()
    after = model_kinds.cache_info()
    assert after.misses == before.misses and after.hits > before.hits


def test_nothing_of_the_kind_gives_the_placeholder(tmp_path, monkeypatch):
    monkeypatch.setenv("MTV_MODELS_DIR", str(tmp_path))
    write_tiny_checkpoint(tmp_path / "diffusion_models" / "a_tokenizer.safetensors")
    assert _dit_choices() == [dit7b.NO_DIT]


def test_folder_listings_are_walked_again_only_when_a_folder_changed(tmp_path, monkeypatch):
    from mtv_pack.nodes import _comfy

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "sub" / "b.safetensors").write_bytes(b"x")
    for folder in (tmp_path, tmp_path / "sub"):  # an hour old: the file added below surely changes the mtime
        os.utime(folder, (folder.stat().st_atime - 3600, folder.stat().st_mtime - 3600))
    assert _comfy.files_under(tmp_path, (".safetensors",)) == ["a.safetensors", "sub/b.safetensors"]
    walks = []
    real_walk = _comfy.os.walk
    monkeypatch.setattr(_comfy.os, "walk", lambda *a, **k: walks.append(a) or real_walk(*a, **k))
    assert _comfy.files_under(tmp_path, (".safetensors",)) == ["a.safetensors", "sub/b.safetensors"]
    assert _comfy.files_under(tmp_path, (".pt",)) == []
    assert walks == []  # unchanged folders: the cached listing
    (tmp_path / "sub" / "c.safetensors").write_bytes(b"x")
    assert _comfy.files_under(tmp_path, (".safetensors",)) == ["a.safetensors", "sub/b.safetensors",
                                                                "sub/c.safetensors"]
    assert len(walks) == 1
