"""MTV on native Wan inside a real ComfyUI server (CPU, tiny weights): LoRA on and off, the unpatched MODEL
after a patched run, a second window with Next Window, and a motion of the wrong width.

The graphs use native nodes throughout (UNETLoader, LoraLoaderModelOnly, CLIPTextEncode, VAELoader,
WanImageToVideo, KSampler / KSamplerAdvanced, VAEDecode, SaveLatent). Two native loaders only know the released
model sizes, so the test-only stand-ins of ``stub_nodes`` replace them, building the same native types:
``CLIPLoader`` -> ``TestTinyWanCLIPLoader`` and ``CLIPVisionLoader`` -> ``TestTinyCLIPVisionLoader``.
The model files are the tiny ones written for the shipped native template (its ``models[]``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors import safe_open

from .run_checks import node_with_defaults
from .workflow_assets import WORKFLOWS_DIR, load_workflow

pytestmark = pytest.mark.integration

TEMPLATE = WORKFLOWS_DIR / "mtvcrafter_17b_native.json"


def _files() -> dict[str, str]:
    """The template's model files by folder (the session fixture wrote tiny ones under these names)."""
    workflow = load_workflow(TEMPLATE)
    entries = workflow["models"]
    files = {e["directory"]: e["name"] for e in entries if e["directory"] != "mtvcrafter"}
    files["tokenizer"] = next(e["name"] for e in entries if e["directory"] == "mtvcrafter" and "4DMoT" in e["name"])
    # the adapter is a folder models[] cannot list: the node's widget names it (workflow_assets.LOADERS wrote it)
    apply = next(node for node in workflow["nodes"] if node["type"] == "MTVApplyMotionWan")
    files["adapter"] = apply["widgets_values"][0]
    return files


def _graph(info, *, lora: bool = True, motion: bool = True, sampler: str = "KSampler", tokenizer: str | None = None,
           prefix: str = "it/native") -> dict:
    f = _files()
    n = node_with_defaults
    model = ["lora", 0] if lora else ["unet", 0]
    prompt = {
        "joints": n(info, "MTVProceduralMotion", motion="dance", frames=49, fps=20.0),
        "tok": n(info, "MTVLoadMotionTokenizer", tokenizer_file=tokenizer or f["tokenizer"], dtype="fp32",
                 device="cpu"),
        "enc": n(info, "MTVEncodeMotion", tokenizer=["tok", 0], joints=["joints", 0]),
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": f["diffusion_models"], "weight_dtype": "default"}},
        "lora": {"class_type": "LoraLoaderModelOnly",
                 "inputs": {"model": ["unet", 0], "lora_name": f["loras"], "strength_model": 1.0}},
        "clip": {"class_type": "TestTinyWanCLIPLoader", "inputs": {"clip_name": f["text_encoders"], "type": "wan"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "The character is dancing."}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "blurry, low quality"}},
        "vision": {"class_type": "TestTinyCLIPVisionLoader", "inputs": {"clip_name": f["clip_vision"]}},
        "ref": {"class_type": "LoadImage", "inputs": {"image": "reference.png"}},
        "clip_fea": n(info, "MTVWanClipVisionEncode", clip_vision=["vision", 0], image=["ref", 0]),
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": f["vae"]}},
        "i2v": {"class_type": "WanImageToVideo",
                "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "width": 64,
                           "height": 64, "length": 17, "batch_size": 1, "clip_vision_output": ["clip_fea", 0],
                           "start_image": ["ref", 0]}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": prefix}},
    }
    if motion:
        prompt["apply"] = n(info, "MTVApplyMotionWan", model=model, adapter=f["adapter"], motion=["enc", 0])
        model = ["apply", 0]
    common = {"model": model, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple", "positive": ["i2v", 0],
              "negative": ["i2v", 1], "latent_image": ["i2v", 2], "steps": 2}
    if sampler == "KSampler":
        prompt["sample"] = {"class_type": "KSampler", "inputs": {**common, "seed": 7, "denoise": 1.0}}
    else:  # the same sampling through another node, so a cached graph runs the model again
        prompt["sample"] = {"class_type": "KSamplerAdvanced",
                            "inputs": {**common, "add_noise": "enable", "noise_seed": 7, "start_at_step": 0,
                                       "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    return prompt


def _latent(comfy, result, node: str = "save") -> torch.Tensor:
    entry = result.outputs[node]["latents"][0]
    with safe_open(str(comfy.output_dir / entry["subfolder"] / entry["filename"]), framework="pt") as f:
        return f.get_tensor("latent_tensor")


def _run(comfy, prompt, label: str):
    result = comfy.server.run(prompt, timeout=600)
    comfy.timings[f"native_{label}_s"] = round(result.seconds, 1)
    assert result.status == "success", f"{label}: {result.error_text()}\n{comfy.server.log_tail(2000)}"
    return result


def test_native_graph_with_and_without_lora_and_the_unpatched_model_after(comfy):
    info = comfy.object_info
    assert {"TestTinyWanCLIPLoader", "TestTinyCLIPVisionLoader"} <= set(info), "stand-in loaders not loaded"
    fresh = _latent(comfy, _run(comfy, _graph(info, motion=False, prefix="it/native_plain"), "plain"))
    with_lora = _latent(comfy, _run(comfy, _graph(info, prefix="it/native_lora"), "lora"))
    without_lora = _latent(comfy, _run(comfy, _graph(info, lora=False, prefix="it/native_nolora"), "no_lora"))
    # the same unpatched MODEL (cached UNETLoader + LoRA outputs) sampled again after the patched runs
    again = _latent(comfy, _run(comfy, _graph(info, motion=False, sampler="KSamplerAdvanced",
                                              prefix="it/native_plain_again"), "plain_again"))
    assert fresh.shape == with_lora.shape == (1, 16, 5, 8, 8)
    assert (with_lora - fresh).abs().max() > 1e-3, "motion changed nothing"
    assert (with_lora - without_lora).abs().max() > 1e-3, "the LoRA changed nothing"
    torch.testing.assert_close(again, fresh, atol=1e-6, rtol=0)  # no motion left on the reused MODEL


def test_next_window_continues_the_video(comfy):
    info = comfy.object_info
    prompt = _graph(info, prefix="it/native_window0")
    f = _files()
    prompt.update({
        "dec1": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "next": node_with_defaults(info, "MTVWanNextWindow", positive=["i2v", 0], negative=["i2v", 1],
                                   vae=["vae", 0], previous_images=["dec1", 0], motion=["enc", 0], length=17,
                                   overlap=9, clip_vision=["vision", 0]),
        "apply2": node_with_defaults(info, "MTVApplyMotionWan", model=["lora", 0], adapter=f["adapter"],
                                     motion=["next", 3]),
        "sample2": {"class_type": "KSampler",
                    "inputs": {"model": ["apply2", 0], "seed": 8, "steps": 2, "cfg": 3.0, "sampler_name": "euler",
                               "scheduler": "simple", "positive": ["next", 0], "negative": ["next", 1],
                               "latent_image": ["next", 2], "denoise": 1.0}},
        "save2": {"class_type": "SaveLatent", "inputs": {"samples": ["sample2", 0], "filename_prefix": "it/window1"}},
        "dec2": {"class_type": "VAEDecode", "inputs": {"samples": ["sample2", 0], "vae": ["vae", 0]}},
        "video": {"class_type": "ImageBatch", "inputs": {"image1": ["next", 5], "image2": ["dec2", 0]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["video", 0]}},
    })
    result = _run(comfy, prompt, "next_window")
    assert len(result.outputs["preview"]["images"]) == 8 + 17  # 17 - 9 kept frames, then the new window
    second = _latent(comfy, result, "save2")
    first = _latent(comfy, result, "save")
    assert second.shape == first.shape and (second - first).abs().max() > 1e-3


def test_motion_tokens_of_another_width_are_refused(comfy):
    from mtv_pack.mtv_core.tokenizer.testing import TINY_CONFIG, write_tiny_checkpoint

    name = "it_wide_4dmot.safetensors"
    # wider than the tiny Wan (256): tokens of a tokenizer made for another model
    write_tiny_checkpoint(comfy.models_root / "mtvcrafter" / name, config=dataclasses.replace(TINY_CONFIG, code_dim=320),
                          seed=0)
    result = comfy.server.run(_graph(comfy.object_info, tokenizer=name, prefix="it/native_wide"), timeout=600)
    assert result.status == "error"
    errors = result.of_type("execution_error")
    assert errors and errors[0]["node_type"] == "MTVApplyMotionWan", result.error_text()
    assert "motion tokens of width 320" in errors[0]["exception_message"], errors[0]["exception_message"]
