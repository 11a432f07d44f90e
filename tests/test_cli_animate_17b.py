"""``python -m mtv_core animate --variant 17b`` on tiny random models in upstream's layout: the shipped sample motion
(where upstream's infer_17b.py crashes), base + adapter, LoRA, distilled mode, clear errors, nothing half-written."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import reference_dir
from PIL import Image
from safetensors.torch import save_file

from mtv_pack.mtv_core.cli import main
from mtv_pack.mtv_core.commands.animate import find_models, write_tiny_models
from mtv_pack.mtv_core.dit.tiny_17b import tiny_mvdit17b_config, write_tiny_mvdit17b
from mtv_pack.mtv_core.video import read_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SAMPLED_DATA = reference_dir() / "motion" / "sampled_data.pkl"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("animate17b")
    paths = write_tiny_models(root / "models", variant="17b")
    Image.fromarray((np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)).save(root / "ref.png")
    return root, paths


def _args(root, out, *extra, frames="89", steps=("--steps", "2")):
    return ["animate", "--variant", "17b", "--ref", str(root / "ref.png"), "--motion", str(SAMPLED_DATA),
            "--frames", frames, "--models", str(root / "models"), "--out", str(out), *steps, "--width", "64",
            "--height", "64", "--device", "cpu", "--dtype", "fp32", *extra]


def test_layout_is_upstreams(workspace):
    root, paths = workspace
    assert find_models(root / "models", variant="17b") == paths
    assert paths.dit.relative_to(root / "models").as_posix() == "MV-DiT/Wan-2-1"
    assert {k: v.relative_to(root / "models").as_posix() for k, v in paths.extra.items()} == {
        "text_encoder": "wan2.1/models_t5_umt5-xxl-enc-bf16.pth", "tokenizer_folder": "wan2.1/google/umt5-xxl",
        "clip": "wan2.1/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"}


def test_animates_the_shipped_sample_motion_over_two_windows(workspace, tmp_path, caplog):
    root, _ = workspace
    out = tmp_path / "result.mp4"
    with caplog.at_level(logging.INFO):
        assert main(_args(root, out, "--prompt", "The woman is dancing on the beach", "--motion-guidance", "2")) == 0
    frames, fps = read_video(out)
    assert frames.shape == (89, 64, 64, 3) and fps == pytest.approx(20.0)
    assert "carrying 9 overlap frames" in caplog.text and "sampling step 4/4" in caplog.text
    assert not list(tmp_path.glob(".*partial*"))


def test_base_plus_adapter_and_a_lora_at_a_strength(workspace, tmp_path, caplog):
    root, paths = workspace
    config = tiny_mvdit17b_config(text_dim=64, clip_dim=128)
    base = write_tiny_mvdit17b(tmp_path / "wan_i2v_base.safetensors", config=config, part="base")
    adapter = write_tiny_mvdit17b(tmp_path / "adapter.safetensors", config=config, part="adapter")
    gen = torch.Generator().manual_seed(0)
    lora = tmp_path / "distill_lora.safetensors"
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 256, generator=gen) * 0.01,
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(256, 4, generator=gen) * 0.01,
               "diffusion_model.not_a_layer.lora_up.weight": torch.zeros(1, 1)}, str(lora))
    out = tmp_path / "adapter.mp4"
    with caplog.at_level(logging.INFO):
        assert main(_args(root, out, "--dit", str(base), "--adapter", str(adapter), "--lora", str(lora),
                          "--lora-strength", "0.5", "--distilled", frames="49", steps=())) == 0
    assert read_video(out)[0].shape == (49, 64, 64, 3)
    assert "merged into 1 weights at strength 0.5" in caplog.text
    assert "1 keys match no layer" in caplog.text and "not_a_layer" in caplog.text
    assert "sampling step 10/10" in caplog.text  # the distilled mode's default steps (upstream: 10)


@pytest.mark.parametrize("change, message", [
    (lambda root, p, tmp: ["--variant", "7b"], "--prompt: only for --variant 17b"),
    (lambda root, p, tmp: ["--dit", str(write_tiny_mvdit17b(tmp / "base.safetensors", part="base"))],
     "without motion attention"),
    (lambda root, p, tmp: ["--adapter", str(write_tiny_mvdit17b(tmp / "wide.safetensors", part="adapter",
                                                               config=tiny_mvdit17b_config(dim=384, num_heads=3)))],
     "does not fit the base"),
    (lambda root, p, tmp: ["--tokenizer-folder", str(tmp)], "no tokenizer.json or spiece.model"),
    (lambda root, p, tmp: ["--clip", str(p.extra["text_encoder"])], "not a CLIP vision checkpoint"),
    (lambda root, p, tmp: ["--vae", str(p.tokenizer)], "not a Wan VAE"),
    (lambda root, p, tmp: ["--lora", str(tmp / "missing.safetensors")], "--lora file not found"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(workspace, tmp_path, caplog, change, message):
    root, paths = workspace
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "out" / "never.mp4"
    args = _args(root, out, "--prompt", "a man")
    extra = change(root, paths, scratch)
    if extra[0] in args:
        args[args.index(extra[0]) + 1] = extra[1]
    else:
        args += extra
    if "--adapter" in extra:  # an adapter needs a base
        args += ["--dit", str(write_tiny_mvdit17b(scratch / "b.safetensors", part="base"))]
    with caplog.at_level(logging.ERROR):
        assert main(args) == 2
    assert message in caplog.text
    assert not out.exists()
    shutil.rmtree(scratch)
