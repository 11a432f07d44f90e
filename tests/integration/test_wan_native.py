"""MTV motion as a patch on ComfyUI's native Wan model, in-process on CPU (fp32), against the reference data.

Native parity: every tiny MV-DiT-17B case whose manifest has the released text width (``config.text_dim``
4096) and Wan's 128-wide heads is loaded the way UNETLoader loads a file (``comfy.sd.
load_diffusion_model_state_dict`` of the weights without the motion keys -> native ``WanModel``), patched by
``MTVApplyMotionWan``'s code with the case's motion layers written as an adapter file, and must reproduce the
case's forward outputs (1e-4) and its 3-step text-CFG sample through ComfyUI's own sampler (1e-3).
Also: LoRA weight patches inside the replaced blocks, reuse of the unpatched MODEL, context-window token
slicing, motion guidance, the next-window conditioning and upstream's CLIP input, and the errors.

Needs ``COMFYUI_DIR``; ComfyUI is imported into this process with ``--cpu``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from conftest import reference_dir
from safetensors import safe_open
from safetensors.torch import save_file

from .conftest import comfyui_dir_or_skip

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

CASE_DIR = reference_dir() / "mvdit17b"
COND_DIR = reference_dir() / "wan" / "cond17b"


def _manifest(case: Path) -> dict:
    return json.loads(case.with_name(case.name.replace("case_", "manifest_", 1)).with_suffix(".json").read_text())


def _native_cases() -> list[Path]:
    """Cases ComfyUI's Wan detection can load: text width 4096 and heads of 128 (read from the manifests)."""
    cases = []
    for case in sorted(CASE_DIR.glob("case_mvdit17b_*.safetensors")):
        config = _manifest(case)["config"]
        if config.get("text_dim") == 4096 and config["dim"] // config["num_heads"] == 128:
            cases.append(case)
    return cases


NATIVE_CASES = _native_cases()


@pytest.fixture(scope="module")
def comfy_inproc():
    """ComfyUI's modules imported here, on the CPU, one thread."""
    root = comfyui_dir_or_skip()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (reads the flag)
    import comfy.samplers  # noqa: F401
    import comfy.sd  # noqa: F401

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield sys.modules["comfy"]
    torch.set_num_threads(threads)


def _load_case(case: Path):
    with safe_open(str(case), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def _native_wan(state: dict):
    import comfy.sd

    model = comfy.sd.load_diffusion_model_state_dict(dict(state), model_options={"dtype": torch.float32})
    assert model is not None, "ComfyUI did not recognise the tiny Wan"
    return model


def _motion(tokens: torch.Tensor, start: int = 0):
    from mtv_pack.mtv_core.tokenizer.tokens import MotionTokens, TokenWindow

    latent = tokens.shape[1] // 24
    indices = torch.zeros(tokens.shape[:2], dtype=torch.long)
    return MotionTokens(windows=[TokenWindow(start, 4 * (latent - 1) + 1, tokens, indices)], joints=None)


def _options(model) -> dict:
    """The transformer_options a sampler builds for ``model`` (its patches and wrappers)."""
    import comfy.patcher_extension

    options = comfy.patcher_extension.copy_nested_dicts(model.model_options["transformer_options"])
    comfy.patcher_extension.merge_nested_dicts(options.setdefault("wrappers", {}), model.wrappers, copy_dict1=False)
    return options


def _forward(model, x, y, t, context, clip_fea, **options):
    import comfy.model_management

    comfy.model_management.load_models_gpu([model] + model.get_nested_additional_models())
    with torch.no_grad():
        return model.model.diffusion_model(torch.cat([x, y], 1), torch.tensor([t]), context, clip_fea=clip_fea,
                                           transformer_options={**_options(model), **options})


def _padded(context: torch.Tensor, length: int = 512) -> torch.Tensor:
    """(L, C) -> (1, 512, C) zero-padded: what CLIPTextEncode gives with ComfyUI's umT5 (min_length 512)."""
    return torch.nn.functional.pad(context, (0, 0, 0, length - context.shape[0]))[None]


def _conds(case, context, model):
    """A native CONDITIONING carrying the case's y (as WanImageToVideo sets it) and CLIP features."""
    import comfy.clip_vision

    y = case["y"][None]
    clip = comfy.clip_vision.Output()
    clip["penultimate_hidden_states"] = case["clip_fea"]
    values = {"concat_latent_image": model.model.latent_format.process_out(y[:, 4:].clone()),
              "concat_mask": 1 - y[:, :4], "clip_vision_output": clip}
    return [[_padded(context), values]]


@pytest.fixture(scope="module", params=NATIVE_CASES, ids=[c.stem for c in NATIVE_CASES])
def native(request, comfy_inproc, tmp_path_factory):
    from mtv_pack.mtv_core.dit.tiny_17b import split_adapter
    from mtv_pack.mtv_core.tokenizer.testing import regenerate_from_manifest

    case_path = request.param
    manifest = _manifest(case_path)
    state = regenerate_from_manifest(manifest)
    base, adapter = split_adapter(state)
    folder = tmp_path_factory.mktemp("native_wan")
    adapter_path = folder / "motion_adapter.safetensors"
    save_file(adapter, str(adapter_path), metadata={"motion_token_dim": str(manifest["motion_code_dim"])})
    case, meta = _load_case(case_path)
    return dict(case=case, meta=meta, base=base, state=state, manifest=manifest, adapter=adapter_path,
                model=_native_wan(base), folder=folder)


def test_native_cases_present():
    assert NATIVE_CASES, f"no case in {CASE_DIR} has text_dim 4096 and 128-wide heads"


def test_native_forward_matches_reference(native):
    from mtv_pack.nodes._comfy_wan import apply_motion

    case = native["case"]
    patched = apply_motion(native["model"], str(native["adapter"]), _motion(case["motion_tokens"]))
    keys = sorted(k for k in case if k.startswith("forward_t"))
    assert keys
    for key in keys:
        out = _forward(patched, case["x"][None], case["y"][None], float(key.removeprefix("forward_t")),
                       _padded(case["context"]), case["clip_fea"])[0]
        diff = (out - case[key]).abs().max().item()
        logger.info("native %s: max abs diff %.3g", key, diff)
        assert diff <= 1e-4, f"{key}: {diff}"


def test_native_sampler_matches_reference(native):
    import comfy.samplers

    from mtv_pack.nodes._comfy_wan import apply_motion

    case, meta = native["case"], native["meta"]
    patched = apply_motion(native["model"], str(native["adapter"]), _motion(case["motion_tokens"]))
    sigmas = torch.cat([case["timesteps"] / 1000, torch.zeros(1)])  # the case's flow-match (shift 5) schedule
    assert sigmas[0] == 1.0  # noise_scaling at sigma 1 is the noise itself: the case's x
    key = next(k for k in case if k.startswith("sampled_"))
    out = comfy.samplers.sample(
        patched, case["x"][None].clone(), _conds(case, case["context"], patched),
        _conds(case, case["context_negative"], patched), float(meta.get("guidance", 6.0)), "cpu",
        comfy.samplers.sampler_object("euler"), sigmas, latent_image=torch.zeros_like(case["x"][None]),
        disable_pbar=True, seed=0)
    latents = patched.model.latent_format.process_in(out)[0]
    diff = (latents - case[key]).abs().max().item()
    logger.info("native %s through comfy.samplers (euler, case sigmas): max abs diff %.3g", key, diff)
    assert diff <= 1e-3, diff


def test_unpatched_model_is_untouched_after_a_patched_run(native):
    from mtv_pack.nodes._comfy_wan import apply_motion

    case, model = native["case"], native["model"]
    args = (case["x"][None], case["y"][None], 700.0, _padded(case["context"]), case["clip_fea"])
    fresh = _forward(_native_wan(native["base"]), *args)
    patched = apply_motion(model, str(native["adapter"]), _motion(case["motion_tokens"]))
    with_motion = _forward(patched, *args)
    after = _forward(model, *args)
    assert (with_motion - fresh).abs().max() > 1e-2  # the patch changes the result ...
    torch.testing.assert_close(after, fresh, atol=0, rtol=0)  # ... and the MODEL it came from stays native
    assert not model.model_options["transformer_options"].get("patches_replace")
    assert not model.get_additional_models()


def test_lora_patches_apply_inside_the_motion_blocks(native):
    """Native LoRA weight patches (LoraLoaderModelOnly's path) act in the blocks our replacement re-runs: the
    result equals the full 17B of the core with the same LoRA merged (ComfyUI's alpha / rank convention)."""
    import comfy.sd

    from mtv_pack.mtv_core.dit.config_17b import MVDiT17BConfig
    from mtv_pack.mtv_core.dit.lora import apply_lora
    from mtv_pack.mtv_core.dit.rope_17b import motion_rope_17b
    from mtv_pack.mtv_core.dit.tiny_17b import tiny_lora_17b
    from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B
    from mtv_pack.mtv_core.motion.stats import load_stats
    from mtv_pack.nodes._comfy_wan import apply_motion

    case, manifest = native["case"], native["manifest"]
    config = MVDiT17BConfig.from_wan_config(manifest["config"], motion_token_dim=manifest["motion_code_dim"])
    lora = tiny_lora_17b(config, seed=5)
    lora_model, _ = comfy.sd.load_lora_for_models(native["model"], None, lora, 1.0, 0)
    patched = apply_motion(lora_model, str(native["adapter"]), _motion(case["motion_tokens"]))
    out = _forward(patched, case["x"][None], case["y"][None], 600.0, _padded(case["context"]), case["clip_fea"])
    core = MVDiT17B(config)
    core.load_state_dict(native["state"])
    report = apply_lora(core.eval(), lora)
    assert len(report.applied) == 3 and not report.unmatched
    frames = case["x"].shape[1]
    with torch.no_grad():
        expected = core(case["x"][None], torch.tensor([600.0]), case["context"][None], case["clip_fea"],
                        case["motion_tokens"], motion_rope_17b(frames, load_stats()[0]), y=case["y"][None])
        without_lora = MVDiT17B(config)
        without_lora.load_state_dict(native["state"])
        plain = without_lora.eval()(case["x"][None], torch.tensor([600.0]), case["context"][None], case["clip_fea"],
                                    case["motion_tokens"], motion_rope_17b(frames, load_stats()[0]), y=case["y"][None])
    assert (expected - plain).abs().max() > 1e-3  # the LoRA matters
    assert (out - expected).abs().max().item() <= 1e-4


def test_context_windows_slice_motion_tokens_by_latent_frame(native):
    """With WAN Context Windows each window's call gets the tokens of its latent frames: the windowed call equals
    an unwindowed call on the same frames with the motion starting there."""
    import comfy.context_windows

    from mtv_pack.nodes._comfy_wan import apply_motion

    case = native["case"]
    frames = case["x"].shape[1]
    window = list(range(1, frames))  # latent frames 1 .. F-1 of the video
    tokens = case["motion_tokens"]
    patched = apply_motion(native["model"], str(native["adapter"]), _motion(tokens))
    try:
        ctx = comfy.context_windows.IndexListContextWindow(window, dim=2, total_frames=frames)
    except TypeError:  # ComfyUI 0.3.64: no total_frames
        ctx = comfy.context_windows.IndexListContextWindow(window, dim=2)
    x, y = case["x"][None][:, :, window], case["y"][None][:, :, window]
    windowed = _forward(patched, x, y, 500.0, _padded(case["context"]), case["clip_fea"], context_window=ctx)
    # the same tokens given as a motion that starts at latent frame 1 (video frame 4)
    shifted = _motion(tokens[:, 24:], start=0)
    direct = _forward(apply_motion(native["model"], str(native["adapter"]), shifted), x, y, 500.0,
                      _padded(case["context"]), case["clip_fea"])
    torch.testing.assert_close(windowed, direct, atol=1e-5, rtol=0)
    first = _forward(patched, x, y, 500.0, _padded(case["context"]), case["clip_fea"])  # no window: frames 0..F-2
    assert (first - windowed).abs().max() > 1e-3


def test_context_windows_in_a_sampler_run_get_every_window(native):
    import comfy.context_windows
    import comfy.samplers

    from mtv_pack.nodes._comfy_wan import MotionPatch, apply_motion

    import inspect

    if "total_frames" not in inspect.signature(comfy.context_windows.IndexListContextWindow).parameters:
        pytest.skip("this ComfyUI's context windows (0.3.64) do not slice Wan's concat conditioning per window")
    case = native["case"]
    frames = case["x"].shape[1]
    patched = apply_motion(native["model"], str(native["adapter"]), _motion(case["motion_tokens"]))
    handler = comfy.context_windows.IndexListContextHandler(
        context_schedule=comfy.context_windows.get_matching_context_schedule(
            comfy.context_windows.ContextSchedules.STATIC_STANDARD),
        fuse_method=comfy.context_windows.get_matching_fuse_method(comfy.context_windows.ContextFuseMethods.PYRAMID),
        context_length=frames - 2, context_overlap=1, dim=2)
    patched.model_options["context_handler"] = handler
    seen: list[list[int]] = []
    original = MotionPatch.latent_indices

    def spy(self, count, options):
        indices = original(self, count, options)
        seen.append(indices)
        return indices

    MotionPatch.latent_indices = spy
    try:
        sigmas = torch.tensor([1.0, 0.5, 0.0])
        conds = _conds(case, case["context"], patched)
        comfy.samplers.sample(patched, case["x"][None].clone(), conds, conds, 1.0, "cpu",
                              comfy.samplers.sampler_object("euler"), sigmas,
                              latent_image=torch.zeros_like(case["x"][None]), disable_pbar=True, seed=0)
    finally:
        MotionPatch.latent_indices = original
    windows = {tuple(w) for w in seen}
    assert len(windows) >= 2 and all(len(w) == frames - 2 for w in windows), windows
    assert set().union(*windows) == set(range(frames))


def test_motion_guidance_adds_one_pass_per_step(native):
    import comfy.patcher_extension
    import comfy.samplers

    from mtv_pack.nodes._comfy_wan import OFF_KEY, apply_motion

    case = native["case"]
    motion = _motion(case["motion_tokens"])
    calls: list[bool] = []

    def count(executor, *args, **kwargs):
        calls.append(bool(args[5].get(OFF_KEY)))  # transformer_options of WanModel._forward
        return executor(*args, **kwargs)

    def one_step(guidance):
        patched = apply_motion(native["model"], str(native["adapter"]), motion, guidance=guidance)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_count", count)
        return comfy.samplers.sample(
            patched, case["x"][None].clone(), _conds(case, case["context"], patched),
            _conds(case, case["context_negative"], patched), 3.0, "cpu", comfy.samplers.sampler_object("euler"),
            torch.tensor([1.0, 0.0]), latent_image=torch.zeros_like(case["x"][None]), disable_pbar=True, seed=0)

    off = one_step(1.0)
    assert calls == [False]  # one batched call (positive + negative), no extra pass
    calls.clear()
    on = one_step(2.5)
    assert sorted(calls) == [False, True]  # plus one pass of the positive prompt without motion
    # one Euler step from sigma 1 to 0 lands on the guided x0 = cfg + 1.5 * (x0_cond - x0_cond_without_motion),
    # and x0 = x - v at sigma 1
    patched = apply_motion(native["model"], str(native["adapter"]), motion)
    inputs = (case["x"][None], case["y"][None], 1000.0, _padded(case["context"]), case["clip_fea"])
    v_cond = _forward(patched, *inputs)
    v_without = _forward(patched, *inputs, **{OFF_KEY: True})
    latent_format = patched.model.latent_format
    shift = latent_format.process_in(on) - latent_format.process_in(off)
    torch.testing.assert_close(shift, -1.5 * (v_cond - v_without), atol=2e-4, rtol=0)
    assert shift.abs().max() > 1e-2


def test_start_and_end_percent_switch_motion_off(native):
    from mtv_pack.nodes._comfy_wan import apply_motion

    case = native["case"]
    args = (case["x"][None], case["y"][None], 300.0, _padded(case["context"]), case["clip_fea"])
    plain = _forward(native["model"], *args)
    late = apply_motion(native["model"], str(native["adapter"]), _motion(case["motion_tokens"]), start_percent=0.5)
    sigma = torch.tensor([0.3])
    ms = late.get_model_object("model_sampling")
    assert ms.percent_to_sigma(0.5) > 0.3  # sigma 0.3 is past half the denoising at Wan's shift
    assert (_forward(late, *args, sigmas=sigma) - plain).abs().max() > 1e-2
    early = apply_motion(native["model"], str(native["adapter"]), _motion(case["motion_tokens"]), end_percent=0.2)
    torch.testing.assert_close(_forward(early, *args, sigmas=sigma), plain, atol=0, rtol=0)
    zero = apply_motion(native["model"], str(native["adapter"]), _motion(case["motion_tokens"]), strength=0.0)
    torch.testing.assert_close(_forward(zero, *args, sigmas=sigma), plain, atol=0, rtol=0)


def test_bad_inputs_give_one_clear_error(native, comfy_inproc):
    import comfy.model_patcher

    from mtv_pack.mtv_core.dit.config_17b import MVDiT17BConfig
    from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, split_adapter
    from mtv_pack.nodes._comfy_wan import apply_motion

    case, manifest, folder = native["case"], native["manifest"], native["folder"]
    motion = _motion(case["motion_tokens"])
    adapter = str(native["adapter"])
    # a text-to-video Wan (16 input channels, no image embedding)
    t2v = {k: v for k, v in native["base"].items() if not k.startswith("img_emb.")}
    t2v["patch_embedding.weight"] = t2v["patch_embedding.weight"][:, :16].contiguous()
    with pytest.raises(ValueError, match="16 input channels.*text-to-video"):
        apply_motion(_native_wan(t2v), adapter, motion)
    # not a Wan at all
    other = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a Wan 2.1 image-to-video MODEL"):
        apply_motion(other, adapter, motion)
    # motion layers of another width (1 head of 128)
    narrow = MVDiT17BConfig.from_wan_config({**manifest["config"], "dim": 128, "num_heads": 1, "ffn_dim": 256})
    _, small = split_adapter(random_state_dict_17b(narrow, seed=1))
    save_file(small, str(folder / "narrow_adapter.safetensors"))
    with pytest.raises(ValueError, match="narrow_adapter.safetensors: motion layers of width 128 do not fit"):
        apply_motion(native["model"], str(folder / "narrow_adapter.safetensors"), motion)
    # a Wan base given as the adapter
    save_file(native["base"], str(folder / "wan_base.safetensors"))
    with pytest.raises(Exception, match="wan_base.safetensors: a Wan2.1 transformer, not a motion adapter"):
        apply_motion(native["model"], str(folder / "wan_base.safetensors"), motion)
    # motion tokens of a tokenizer of another width
    width = case["motion_tokens"].shape[-1]
    for other_width in (width // 2, native["model"].model.diffusion_model.dim + 8):
        wrong = _motion(torch.randn(1, case["motion_tokens"].shape[1], other_width))
        with pytest.raises(ValueError, match=f"motion tokens of width {other_width}"):
            apply_motion(native["model"], adapter, wrong)
    # video longer than the motion
    patched = apply_motion(native["model"], adapter, _motion(case["motion_tokens"][:, :48]))
    with pytest.raises(ValueError, match="needs motion up to frame"):
        _forward(patched, case["x"][None], case["y"][None], 500.0, _padded(case["context"]), case["clip_fea"])


# -- conditioning: native WanImageToVideo + CLIP vs upstream's y / clip_fea ------------------------------------------


@pytest.fixture(scope="module")
def cond_models(comfy_inproc, tmp_path_factory):
    """The cond17b cases' tiny Wan VAE as a native VAE and their CLIP tower as a native ClipVisionModel."""
    import comfy.clip_vision
    import comfy.sd

    from _wan_reference import find_manifest, write_release_file
    from mtv_pack.mtv_core.tokenizer.testing import regenerate_from_manifest
    from mtv_pack.mtv_core.wan.image_encoder import load_clip_vision

    folder = tmp_path_factory.mktemp("cond_models")
    vae_state = regenerate_from_manifest(find_manifest("manifest_wanvae_tiny_seed41.json"))
    try:
        vae = comfy.sd.VAE(sd=vae_state)
    except RuntimeError as exc:  # ComfyUI 0.3.64 builds the Wan VAE at the released width 96 only
        if "size mismatch" not in str(exc):
            raise
        pytest.skip(f"this ComfyUI's native Wan VAE has a fixed width; the tiny VAE needs 0.8.0+ ({exc!s:.80})")
    clip_manifest = find_manifest("manifest_clipvis_tiny_seed41.json")
    tower = load_clip_vision(write_release_file(clip_manifest, folder / "clip.pth"),
                             num_heads=clip_manifest["config"]["num_heads"])
    clip_vision = native_clip_vision(tower.model, folder)
    return vae, clip_vision


def native_clip_vision(hf_model, folder: Path):
    """A native ``ClipVisionModel`` (CLIP_VISION) with the weights of a transformers CLIPVisionModel tower."""
    import comfy.clip_vision

    cfg = hf_model.config
    config = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": cfg.hidden_act, "hidden_size": cfg.hidden_size,
              "image_size": cfg.image_size, "initializer_factor": 1.0, "initializer_range": 0.02,
              "intermediate_size": cfg.intermediate_size, "layer_norm_eps": cfg.layer_norm_eps,
              "model_type": "clip_vision_model", "num_attention_heads": cfg.num_attention_heads, "num_channels": 3,
              "num_hidden_layers": cfg.num_hidden_layers, "patch_size": cfg.patch_size, "projection_dim": 32,
              "torch_dtype": "float32"}
    path = folder / "clip_vision_config.json"
    path.write_text(json.dumps(config))
    clip = comfy.clip_vision.ClipVisionModel(str(path))
    clip.model.to(torch.float32)
    prefix = "" if any(k.startswith("vision_model.") for k in hf_model.state_dict()) else "vision_model."
    state = {prefix + k: v for k, v in hf_model.state_dict().items()}
    state["visual_projection.weight"] = torch.zeros(32, cfg.hidden_size)
    missing, unexpected = clip.load_sd(state)
    assert not missing and not unexpected, (missing, unexpected)
    return clip


COND_CASES = sorted(COND_DIR.glob("case_cond17b_*.safetensors"))


@pytest.mark.parametrize("case_path", COND_CASES, ids=[c.stem for c in COND_CASES])
def test_native_conditioning_against_upstream(case_path, cond_models):
    """WanImageToVideo's concat_latent_image / concat_mask give upstream's y (window 0: the reference as start
    image; window k: the overlap frames, which Next Window does the same way); our CLIP encode gives upstream's
    clip_fea; native CLIP Vision Encode differs by its preprocessing (antialiased resize + 8-bit rounding)."""
    import comfy.latent_formats

    from mtv_pack.nodes._comfy_wan import encode_clip_upstream, next_window_conditioning

    vae, clip_vision = cond_models
    case, meta = _load_case(case_path)
    frames = int(meta["num_frames"])
    if "previous_sample" in case:
        start = case["previous_sample"][0].permute(1, 2, 3, 0)  # (T, H, W, 3) in [0, 1]
        truncate = False
    else:
        start = case["ref_image_uint8"].float()[None] / 255  # LoadImage's IMAGE
        truncate = True
    positive, _, latent = next_window_conditioning([[torch.zeros(1, 4, 8), {}]], [[torch.zeros(1, 4, 8), {}]], vae,
                                                   start, frames)
    values = positive[0][1]
    y = torch.cat([(1 - values["concat_mask"]).repeat(1, 4, 1, 1, 1),
                   comfy.latent_formats.Wan21().process_in(values["concat_latent_image"])], 1)
    assert torch.equal(y[:, :4], case["y"][:, :4])
    y_diff = (y - case["y"]).abs().max().item()
    kept = (start.shape[0] - 1) // 4 + 1
    assert latent["noise_mask"][:, :, :kept].eq(0).all() and latent["noise_mask"][:, :, kept:].eq(1).all()
    clip = encode_clip_upstream(clip_vision, start[-1:], truncate_uint8=truncate)["penultimate_hidden_states"]
    clip_diff = (clip - case["clip_fea"]).abs().max().item()
    native = clip_vision.encode_image(start[-1:], crop=False)["penultimate_hidden_states"]
    native_rel = ((native - case["clip_fea"]).norm() / case["clip_fea"].norm()).item()
    logger.info("%s: y max diff %.3g, clip_fea (MTV encode) %.3g, native CLIPVisionEncode relative %.3g",
                case_path.stem, y_diff, clip_diff, native_rel)
    assert y_diff < 1e-4 and clip_diff < 1e-4
    assert native_rel > 1e-3  # why the pack ships its own CLIP encode node


def test_fp8_weights_and_attention_overrides_work_with_the_patch(native):
    """UNETLoader's fp8 storage (weights cast per layer) runs patched close to fp32, and an attention override in
    transformer_options (how attention-backend nodes work) also serves the motion attention."""
    import comfy.sd

    from mtv_pack.nodes._comfy_wan import apply_motion

    case = native["case"]
    args = (case["x"][None], case["y"][None], 600.0, _padded(case["context"]), case["clip_fea"])
    motion = _motion(case["motion_tokens"])
    full = _forward(apply_motion(native["model"], str(native["adapter"]), motion), *args)
    fp8 = comfy.sd.load_diffusion_model_state_dict(dict(native["base"]), model_options={"dtype": torch.float8_e4m3fn})
    assert fp8.model.get_dtype() == torch.float8_e4m3fn
    low = _forward(apply_motion(fp8, str(native["adapter"]), motion), *args)
    plain_fp8 = _forward(fp8, *args)
    assert ((low - full).norm() / full.norm()) < 0.1  # fp8 rounding, not a broken patch
    assert ((low - plain_fp8).norm() / plain_fp8.norm()) > 0.05  # the motion is there in fp8 too

    calls: list[int] = []

    def override(func, *a, **kw):
        calls.append(a[1].shape[-2] if kw.get("skip_reshape") else a[1].shape[1])  # key tokens
        return func(*a, **kw)

    patched = apply_motion(native["model"], str(native["adapter"]), motion)
    out = _forward(patched, *args, optimized_attention_override=override)
    torch.testing.assert_close(out, full, atol=1e-6, rtol=0)
    blocks = len(native["model"].model.diffusion_model.blocks)
    motion_tokens = case["motion_tokens"].shape[1]
    assert len(calls) == 3 * blocks + len(patched.get_additional_models()[0].model.block_ids)
    assert calls.count(motion_tokens) == 2  # the motion attention of blocks 0 and 4


def test_torch_compile_of_the_patched_model_gives_the_same_sample(native):
    """TorchCompileModel's wrapper (here with dynamo's eager backend, CPU) compiles the diffusion model with the
    motion blocks inside and samples exactly as the uncompiled patched model."""
    import comfy.samplers
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    from mtv_pack.nodes._comfy_wan import apply_motion

    case = native["case"]
    patched = apply_motion(native["model"], str(native["adapter"]), _motion(case["motion_tokens"]))
    compiled = patched.clone()
    set_torch_compile_wrapper(compiled, backend="eager", keys=["diffusion_model"])
    sigmas = torch.tensor([1.0, 0.6, 0.0])

    def sample(model):
        conds, negative = _conds(case, case["context"], model), _conds(case, case["context_negative"], model)
        return comfy.samplers.sample(model, case["x"][None].clone(), conds, negative, 6.0, "cpu",
                                     comfy.samplers.sampler_object("euler"), sigmas,
                                     latent_image=torch.zeros_like(case["x"][None]), disable_pbar=True, seed=0)

    torch.testing.assert_close(sample(compiled), sample(patched), atol=1e-5, rtol=0)


def test_a_second_apply_motion_replaces_the_first(native):
    from mtv_pack.nodes._comfy_wan import PATCH_KEY, apply_motion

    case = native["case"]
    args = (case["x"][None], case["y"][None], 450.0, _padded(case["context"]), case["clip_fea"])
    motion = _motion(case["motion_tokens"])
    once = apply_motion(native["model"], str(native["adapter"]), motion, strength=0.5)
    twice = apply_motion(apply_motion(native["model"], str(native["adapter"]), motion, guidance=3.0),
                         str(native["adapter"]), motion, strength=0.5)
    assert len(twice.get_additional_models_with_key(PATCH_KEY)) == 1
    assert not twice.model_options.get("sampler_post_cfg_function")  # the first one's guidance is gone too
    torch.testing.assert_close(_forward(twice, *args), _forward(once, *args), atol=0, rtol=0)
