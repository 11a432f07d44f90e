"""MV-DiT-7B nodes without ComfyUI: schemas (ids, tooltips, widgets) and a tiny end-to-end run through the nodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.dit.tiny import write_tiny_mvdit7b
from mtv_pack.mtv_core.dit.vae import write_tiny_vae
from mtv_pack.mtv_core.motion.sequence import JointSequence
from mtv_pack.mtv_core.tokenizer.tokens import MotionTokens, TokenWindow
from mtv_pack.mtv_core.windows import plan_windows
from mtv_pack.nodes import dit7b
from mtv_pack.nodes._comfy import StandalonePatcher

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NODE_IDS = ["MTVLoadDiT7B", "MTVLoadCogVideoXVAE", "MTVSampler7B", "MTVDecode7B"]


def test_schemas_have_ids_category_and_tooltips():
    schemas = [cls.define_schema() for cls in dit7b.NODES]
    assert [s.node_id for s in schemas] == NODE_IDS
    for schema in schemas:
        assert schema.category == "MTVCrafter/MV-DiT" and schema.description and schema.display_name
        for item in [*schema.inputs, *schema.outputs]:
            assert item.tooltip, f"{schema.node_id}.{getattr(item, 'id', None)} has no tooltip"
    sampler = schemas[2]
    inputs = {i.id: i for i in sampler.inputs}
    assert [i.id for i in sampler.inputs] == ["model", "vae", "reference", "motion", "width", "height", "steps",
                                              "motion_guidance", "seed", "max_windows", "latent_preview"]
    assert inputs["steps"].default == 50 and inputs["motion_guidance"].default == 3.0
    assert inputs["seed"].default == 6666 and inputs["seed"].options.get("control_after_generate") is True
    assert [o.io_type for o in schemas[3].outputs] == ["IMAGE", "FLOAT"]


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    write_tiny_mvdit7b(tmp_path / "mtvcrafter" / "MTVCrafter" / "MV-DiT" / "CogVideoX", as_folder=True)
    write_tiny_mvdit7b(tmp_path / "diffusion_models" / "mvdit7b_tiny.safetensors")
    write_tiny_vae(tmp_path / "vae" / "CogVideoX-5b-vae", as_folder=True)
    write_tiny_vae(tmp_path / "vae" / "cogvideox_vae_tiny.safetensors")
    monkeypatch.setenv("MTV_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_model_choices_list_folders_and_files(models_dir):
    dit_choices = dit7b._choices(dit7b.DIT_FOLDERS, dit7b._DIT_HINTS, dit7b.NO_DIT, "mvdit7b")
    assert "MTVCrafter/MV-DiT/CogVideoX" in dit_choices and "mvdit7b_tiny.safetensors" in dit_choices
    assert not any(c.startswith("MTVCrafter/MV-DiT/CogVideoX/") for c in dit_choices)  # shards hidden
    vae_choices = dit7b._choices(dit7b.VAE_FOLDERS, dit7b._VAE_HINTS, dit7b.NO_VAE, "cogvideox-vae")
    assert set(vae_choices) == {"CogVideoX-5b-vae", "cogvideox_vae_tiny.safetensors"}


def test_missing_models_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MTV_MODELS_DIR", str(tmp_path))
    assert dit7b._choices(dit7b.DIT_FOLDERS, dit7b._DIT_HINTS, dit7b.NO_DIT, "mvdit7b") == [dit7b.NO_DIT]
    with pytest.raises(FileNotFoundError, match="huggingface.co/yanboding/MTVCrafter"):
        dit7b.MTVLoadDiT7B.execute(dit7b.NO_DIT)
    with pytest.raises(FileNotFoundError, match="CogVideoX-5b"):
        dit7b.MTVLoadCogVideoXVAE.execute(dit7b.NO_VAE)
    with pytest.raises(FileNotFoundError, match="not found"):
        dit7b.MTVLoadDiT7B.execute("gone.safetensors")


def test_nodes_end_to_end_with_offload(models_dir, monkeypatch):
    model = dit7b.MTVLoadDiT7B.execute("MTVCrafter/MV-DiT/CogVideoX", dtype="fp32", device="offload").args[0]
    # outside ComfyUI: plain torch layers, a stand-in patcher, waiting on the CPU and unloaded after each run
    assert isinstance(model.patcher, StandalonePatcher) and model.placement.unload_after
    assert model.model.device.type == "cpu" and type(model.model.proj_out) is torch.nn.Linear
    vae = dit7b.MTVLoadCogVideoXVAE.execute("cogvideox_vae_tiny.safetensors", dtype="fp32", tiling=True).args[0]
    assert vae.whole and not vae.placement.unload_after
    plan = plan_windows(89)
    gen = torch.Generator().manual_seed(0)
    windows = [TokenWindow(s, 49, torch.randn(1, 312, 128, generator=gen), torch.zeros(1, 312, dtype=torch.long))
               for s in plan.starts]
    motion = MotionTokens(windows, JointSequence(np.zeros((89, 24, 3), np.float32), fps=24.0), plan)
    reference = torch.rand(1, 72, 90, 3)  # ComfyUI IMAGE batch
    latents = dit7b.MTVSampler7B.execute(model, vae, reference, motion, width=96, height=64, steps=2,
                                         motion_guidance=3.0, seed=5, max_windows=0).args[0]
    assert latents.samples.shape == (2, 13, 16, 8, 12) and latents.num_frames == 89  # width != height
    decodes = []
    real_decode = type(vae.model).decode
    monkeypatch.setattr(type(vae.model), "decode", lambda self, z: decodes.append(z.shape) or real_decode(self, z))
    images, fps = dit7b.MTVDecode7B.execute(vae, latents).args
    assert decodes == [] and images is latents.frames  # the sampler decoded every window once already
    assert images.shape == (89, 64, 96, 3) and images.dtype == torch.float32 and fps == 24.0
    assert 0 <= images.min() and images.max() <= 1
    one = dit7b.MTVSampler7B.execute(model, vae, reference, motion, width=96, height=64, steps=2,
                                     motion_guidance=3.0, seed=5, max_windows=1).args[0]
    assert one.samples.shape[0] == 1 and one.num_frames == 49
    assert torch.equal(one.samples[0], latents.samples[0])  # same seed: the first window is unchanged
