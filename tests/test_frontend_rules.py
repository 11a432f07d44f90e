"""The frontend's model rules (integration/frontend_rules.py) catch every way a models[] entry goes wrong.

Each broken entry below is one the shipped 7B templates had: the "Missing Models" dialog showed it although
every file was installed, or its Download button could not fetch it.
"""

from __future__ import annotations

import pytest

from integration.frontend_rules import listed_names, listing_holds, model_entry_problems

GOOD = {"name": "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors", "directory": "mtvcrafter",
        "url": "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/MTVCrafter/"
               "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors"}


def test_a_single_safetensors_file_on_hugging_face_passes():
    assert model_entry_problems(GOOD) == []


@pytest.mark.parametrize("entry, expected", [
    # a diffusers folder: never a file in the listing, and not downloadable
    ({"name": "MV-DiT/CogVideoX", "directory": "mtvcrafter",
      "url": "https://huggingface.co/yanboding/MTVCrafter/resolve/main/MV-DiT/CogVideoX"}, "names a folder"),
    # a Hugging Face folder page instead of a file download
    ({"name": "diffusion_pytorch_model.safetensors", "directory": "vae",
      "url": "https://huggingface.co/THUDM/CogVideoX-5b/tree/main/vae"}, "web page"),
    # a GitHub release: not an allowed host
    ({"name": "nlf_l_multi.safetensors", "directory": "nlf",
      "url": "https://github.com/isarandi/nlf/releases/download/v0.3.2/nlf_l_multi.safetensors"}, "allowed host"),
    # .torchscript: ComfyUI's model listing never lists it, so it is always "missing"
    ({"name": "nlf_l_multi_0.3.2.torchscript", "directory": "nlf",
      "url": "https://huggingface.co/o/r/resolve/main/nlf_l_multi_0.3.2.torchscript"}, "never lists .torchscript"),
    # not in the folder's listing once installed: a hidden file, a folder the server does not know
    ({"name": ".tokenizer.safetensors", "directory": "mtvcrafter",
      "url": "https://huggingface.co/o/r/resolve/main/.tokenizer.safetensors"}, "not in the folder's listing"),
    ({**GOOD, "directory": "unet"}, "Invalid directory"),
    # saved by the browser under another name than the one checked
    ({**GOOD, "name": "cogvideox5b_vae.safetensors"}, "saves"),
    # a pickle: the Download button takes .safetensors/.sft only
    ({**GOOD, "name": "mp_rank_00_model_states.pt", "url": "https://huggingface.co/o/r/resolve/main/mp_rank_00_model_states.pt"},
     "only names ending in"),
])
def test_each_broken_entry_is_named(entry, expected):
    problems = model_entry_problems(entry)
    assert any(expected in p for p in problems), problems


def test_listing_emulates_the_servers_walk(tmp_path):
    for rel in ("a.safetensors", "sub/b.pt", ".hidden.safetensors", ".git/c.safetensors", "d.torchscript",
                "MV-DiT/CogVideoX/config.json", "MV-DiT/CogVideoX/diffusion_pytorch_model.safetensors"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert listed_names(tmp_path) == ["MV-DiT/CogVideoX/diffusion_pytorch_model.safetensors", "a.safetensors",
                                      "sub/b.pt"]
    assert listing_holds("a.safetensors") and not listing_holds("x.torchscript") and not listing_holds("../x.pt")
