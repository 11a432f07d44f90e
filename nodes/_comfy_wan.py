"""MV-DiT-17B's motion layers as a patch on ComfyUI's native Wan2.1 MODEL (the ComfyUI-touching half of
``MTVApplyMotionWan``; comfy is imported lazily so the pack imports without it).

How the patch hooks into ComfyUI (0.8.0 names):

* the motion layers (``mtv_core.dit.motion_patch.MotionAdapter17B``, built from ``comfy.ops.manual_cast``) live
  in their own ``ModelPatcher``, attached to the patched MODEL with ``set_additional_models``: sampling loads
  and offloads them together with the Wan model;
* a ``DIFFUSION_MODEL`` wrapper sees each call of ``WanModel.forward`` (latents, CLIP features, the context
  window, the sigma) and puts the call's motion tokens and float32 motion RoPE into ``transformer_options``;
* every motion block (0, 4, ...) gets a ``("double_block", i)`` replacement that re-runs the native block's own
  sub-modules (self-attention, cross-attention, FFN: LoRA weight patches, attention overrides and compile keep
  working) and adds ``strength * motion_attn(norm4(x), tokens)`` between cross-attention and FFN, as upstream;
* motion guidance (optional) is a ``sampler_post_cfg_function``: one extra forward of the positive prompt with
  the motion layers off per step, ``out += (scale - 1) * (cond - cond_without_motion)``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import weakref
from typing import Any

import torch

from ..mtv_core.constants import latent_frames
from ..mtv_core.dit.motion_patch import MotionAdapter17B, MotionInputs, check_adapter_fits, load_motion_adapter

logger = logging.getLogger(__name__)

PATCH_KEY = "mtvcrafter_motion"  # wrappers, callbacks and additional models of the patch
CALL_KEY = "mtv_motion_call"  # transformer_options entry: this call's motion inputs (None: motion off)
OFF_KEY = "mtv_motion_off"  # transformer_options flag of the motion-guidance pass

_ADAPTERS: "weakref.WeakValueDictionary[tuple, Any]" = weakref.WeakValueDictionary()  # ModelPatchers


def wan_i2v_model(model: Any, what: str = "model"):
    """The ``WanModel`` of a native MODEL, or ValueError saying why it cannot take MTV motion."""
    import comfy.ldm.wan.model as wan
    import comfy.model_base

    base = getattr(model, "model", None)
    if not isinstance(base, comfy.model_base.WAN21):
        kind = type(base).__name__ if base is not None else type(model).__name__
        raise ValueError(f"MTV Apply Motion (Wan) needs a Wan 2.1 image-to-video MODEL (Wan2.1 I2V-14B, "
                         f"Wan2.1-Fun-14B-InP or MTVCrafter's MV-DiT-17B loaded with Load Diffusion Model); the "
                         f"{what} is a {kind} model")
    dm = base.diffusion_model
    if type(dm) is not wan.WanModel:
        raise ValueError(f"the {what} is a {type(dm).__name__} (a Wan variant with extra inputs); MTV motion "
                         "needs plain Wan 2.1 image-to-video (WanModel)")
    if dm.img_emb is None or dm.in_dim != 2 * dm.out_dim + 4:
        raise ValueError(
            f"the {what} is a Wan with {dm.in_dim} input channels"
            f"{' and no image embedding (text-to-video)' if dm.img_emb is None else ''}; MTV motion needs "
            f"Wan 2.1 image-to-video with {2 * dm.out_dim + 4} (noise + mask + reference latents): Wan2.1 I2V-14B "
            "or Wan2.1-Fun-14B-InP")
    block = dm.blocks[0]
    if type(block).forward is not wan.WanAttentionBlock.forward:
        raise ValueError(f"the {what}'s Wan blocks are {type(block).__name__}, not ComfyUI's WanAttentionBlock: "
                         "MTV motion re-runs that block and does not know this one")
    return dm


def adapter_patcher_for(path: str, dtype: torch.dtype, load_device, offload_device):
    """A ModelPatcher of the motion layers of ``path`` in ``dtype`` (waiting on ``offload_device``).

    Patched MODELs get clones of one patcher per file, so ComfyUI sees one model however often it is applied;
    it is read again once no patched MODEL holds it any more.
    """
    import comfy.model_patcher
    import comfy.ops

    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, str(dtype), str(load_device), str(offload_device))
    patcher = _ADAPTERS.get(key)
    if patcher is None:
        adapter = load_motion_adapter(path, dtype=dtype, device=offload_device, operations=comfy.ops.manual_cast)
        patcher = comfy.model_patcher.ModelPatcher(adapter, load_device=load_device, offload_device=offload_device)
        _ADAPTERS[key] = patcher
    return patcher.clone()


class _Call:
    """One model call's motion inputs."""

    def __init__(self, patch: "MotionPatch", blocks, tokens, rope, context_img_len) -> None:
        self.patch, self.blocks, self.tokens, self.rope, self.context_img_len = patch, blocks, tokens, rope, context_img_len


class MotionPatch:
    """State of one ``MTVApplyMotionWan``: the adapter's ModelPatcher, the motion inputs and the settings.

    Shared, not copied, when ComfyUI deep-copies model options on ``clone()``.
    """

    def __init__(self, adapter_patcher, inputs: MotionInputs, start_frame: int, strength: float,
                 start_percent: float, end_percent: float, guidance: float, model_sampling) -> None:
        self.adapter_patcher, self.inputs, self.start_frame = adapter_patcher, inputs, start_frame
        self.strength, self.start_percent, self.end_percent, self.guidance = strength, start_percent, end_percent, guidance
        self.sigma_range = self._sigma_range(model_sampling)

    def __deepcopy__(self, memo):
        return self

    def to(self, device_or_dtype):  # ModelPatcher.model_patches_to: inputs move per call
        return self

    @property
    def adapter(self) -> MotionAdapter17B:
        return self.adapter_patcher.model

    def _sigma_range(self, model_sampling) -> tuple[float, float]:
        return (float(model_sampling.percent_to_sigma(self.start_percent)),
                float(model_sampling.percent_to_sigma(self.end_percent)))

    def on_pre_run(self, model_patcher) -> None:
        """Sigma range from the model sampling in use when sampling starts (e.g. after a ModelSampling node)."""
        self.sigma_range = self._sigma_range(model_patcher.get_model_object("model_sampling"))

    def active(self, transformer_options: dict) -> bool:
        if self.strength == 0 or transformer_options.get(OFF_KEY):
            return False
        sigmas = transformer_options.get("sigmas")
        if sigmas is None:
            return True
        sigma = float(sigmas.reshape(-1)[0])
        high, low = self.sigma_range
        return low <= sigma <= high

    def latent_indices(self, frames: int, transformer_options: dict) -> list[int]:
        """The latent frames of the video this call sees: all, or a context window's (WAN Context Windows)."""
        window = transformer_options.get("context_window")
        if window is not None and getattr(window, "dim", None) == 2:
            indices = list(getattr(window, "index_list", []))
            if len(indices) != frames:
                raise ValueError(f"context window of {len(indices)} latent frames, but the model call has {frames}")
            total = getattr(window, "total_frames", 0) or (max(indices) + 1)
            return [i % total for i in indices]
        return list(range(frames))

    # DIFFUSION_MODEL wrapper around WanModel._forward
    def __call__(self, executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={},
                 **kwargs):
        call = None
        if self.active(transformer_options):
            if time_dim_concat is not None:
                raise ValueError("MTV motion does not support Wan's time_dim_concat conditioning")
            indices = self.latent_indices(x.shape[2], transformer_options)
            tokens, rope = self.inputs(self.start_frame, indices, x.shape[0], x.dtype, x.device)
            context_img_len = clip_fea.shape[-2] if clip_fea is not None else None
            call = _Call(self, executor.class_obj.blocks, tokens, rope, context_img_len)
        transformer_options = {**transformer_options, CALL_KEY: call}
        return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)

    # sampler_post_cfg_function
    def guide(self, args: dict) -> torch.Tensor:
        denoised = args["denoised"]
        options = args["model_options"].get("transformer_options", {})
        probe = {**options, "sigmas": args["sigma"]}
        if self.guidance == 1.0 or args.get("cond") is None or not self.active(probe):
            return denoised
        import comfy.patcher_extension
        import comfy.samplers

        model_options = comfy.patcher_extension.copy_nested_dicts(args["model_options"])
        model_options.setdefault("transformer_options", {})[OFF_KEY] = True
        (without_motion,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"],
                                                            args["sigma"], model_options)
        return denoised + (self.guidance - 1.0) * (args["cond_denoised"] - without_motion)


class MotionBlock:
    """``("double_block", i)`` replacement of a motion block: the native block plus motion attention."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __deepcopy__(self, memo):
        return self

    def to(self, device_or_dtype):
        return self

    def __call__(self, args: dict, extra: dict) -> dict:
        options = args["transformer_options"]
        call: _Call | None = options.get(CALL_KEY)
        if call is None:
            return extra["original_block"](args)
        block = call.blocks[self.index]
        layer = call.patch.adapter.layer(self.index)
        freqs = args["pe"]
        strength = call.patch.strength

        def motion(x: torch.Tensor) -> torch.Tensor:
            import comfy.ldm.wan.model as wan

            def rotate_q(q: torch.Tensor) -> torch.Tensor:  # (B, heads, L, d) with the vision RoPE of the call
                return wan.apply_rope1(q.transpose(1, 2), freqs).transpose(1, 2)

            def attend(q, k, v):
                return wan.optimized_attention(q, k, v, heads=q.shape[1], skip_reshape=True,
                                               transformer_options=options)

            update = layer(x, call.tokens.to(x.dtype), rotate_q, call.rope, attend)
            return update if strength == 1.0 else update * strength

        img = wan_block_forward(block, args["img"], args["vec"], freqs, args["txt"], call.context_img_len, options,
                                motion)
        return {"img": img}


def wan_block_forward(block, x, e, freqs, context, context_img_len, transformer_options, between):
    """ComfyUI's ``WanAttentionBlock.forward`` from the block's own sub-modules, with ``x = x + between(x)``
    after the cross-attention (where MTVCrafter's 17B has its motion attention)."""
    import comfy.ldm.wan.model as wan
    import comfy.model_management

    repeat_e = getattr(wan, "repeat_e", lambda e_, x_: e_)
    modulation = comfy.model_management.cast_to(block.modulation, dtype=x.dtype, device=x.device)
    if e.ndim < 4:
        e = (modulation + e).chunk(6, dim=1)
    else:
        e = (modulation.unsqueeze(0) + e).unbind(2)
    x = x.contiguous()
    y = block.self_attn(torch.addcmul(repeat_e(e[0], x), block.norm1(x), 1 + repeat_e(e[1], x)), freqs,
                        **_options_kwarg(block.self_attn, transformer_options))
    x = torch.addcmul(x, y, repeat_e(e[2], x))
    del y
    x = x + block.cross_attn(block.norm3(x), context, context_img_len=context_img_len,
                             **_options_kwarg(block.cross_attn, transformer_options))
    x = x + between(x)
    y = block.ffn(torch.addcmul(repeat_e(e[3], x), block.norm2(x), 1 + repeat_e(e[4], x)))
    return torch.addcmul(x, y, repeat_e(e[5], x))


_TAKES_OPTIONS: dict[type, bool] = {}


def _options_kwarg(module, transformer_options) -> dict:
    kind = type(module)
    if kind not in _TAKES_OPTIONS:
        _TAKES_OPTIONS[kind] = "transformer_options" in inspect.signature(module.forward).parameters
    return {"transformer_options": transformer_options} if _TAKES_OPTIONS[kind] else {}


def apply_motion(model, adapter_path: str, motion, strength: float = 1.0, start_percent: float = 0.0,
                 end_percent: float = 1.0, guidance: float = 1.0, start_frame: int = 0):
    """A clone of the native Wan MODEL ``model`` with MTVCrafter's motion layers from ``adapter_path`` applied.

    ``motion``: an ``MTV_MOTION`` (``MotionTokens``); ``start_frame``: the video frame of the motion where this
    generation starts (a multiple of 4). Raises ValueError for a model, adapter or motion that do not fit.
    """
    import comfy.patcher_extension

    from ..mtv_core.dit.motion_patch import MotionTimeline

    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"start_percent {start_percent} / end_percent {end_percent}: need 0 <= start <= end <= 1")
    if not math.isfinite(strength) or not math.isfinite(guidance):
        raise ValueError("strength and motion guidance must be finite numbers")
    dm = wan_i2v_model(model)
    base = model.model
    dtype = base.manual_cast_dtype or base.get_dtype()
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        dtype = torch.bfloat16
    adapter_patcher = adapter_patcher_for(adapter_path, dtype, model.load_device, model.offload_device)
    info = adapter_patcher.model.info
    check_adapter_fits(info, dm.dim, len(dm.blocks), what="the MODEL")
    if dm.dim // dm.num_heads != dm.dim // info.num_heads:
        raise ValueError(f"the MODEL has {dm.num_heads} heads of {dm.dim // dm.num_heads}; MV-DiT-17B's motion "
                         f"layers use heads of {dm.dim // info.num_heads}")
    timeline = MotionTimeline.from_motion(motion)
    try:
        inputs = MotionInputs(timeline, dm.dim, dm.dim // dm.num_heads, info.motion_token_dim)
    except ValueError as exc:
        tokenizer = (getattr(motion, "meta", None) or {}).get("tokenizer") or "the tokenizer"
        raise ValueError(f"motion tokens of width {timeline.width} (from {tokenizer}) do not fit the motion layers "
                         f"of {info.path.name} (width {info.dim}, tokens of "
                         f"{info.motion_token_dim or f'at most {info.dim}'}): use the 4DMoT tokenizer released "
                         f"with these weights ({exc})") from None
    if start_frame + 1 > timeline.num_frames:
        raise ValueError(f"start_frame {start_frame} is past the motion's {timeline.num_frames} frames")

    patched = model.clone()
    if patched.get_additional_models_with_key(PATCH_KEY):
        logger.warning("the MODEL already has MTV motion applied; the new motion replaces it")
    patch = MotionPatch(adapter_patcher, inputs, start_frame, strength, start_percent, end_percent, guidance,
                        model.get_model_object("model_sampling"))
    patched.set_additional_models(PATCH_KEY, [adapter_patcher])
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, PATCH_KEY)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, PATCH_KEY, patch)
    patched.remove_callbacks_with_key(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, PATCH_KEY)
    patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, PATCH_KEY, patch.on_pre_run)
    replaced = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    for key in [k for k, v in replaced.items() if isinstance(v, MotionBlock)]:  # an earlier Apply Motion's
        del replaced[key]
    for index in info.block_ids:
        patched.set_model_patch_replace(MotionBlock(index), "dit", "double_block", index)
    post = [f for f in patched.model_options.get("sampler_post_cfg_function", [])
            if not isinstance(getattr(f, "__self__", None), MotionPatch)]
    patched.model_options["sampler_post_cfg_function"] = post
    if guidance != 1.0:
        patched.set_model_sampler_post_cfg_function(patch.guide)
    logger.info("MTV motion on %d blocks (%s) of the Wan MODEL: %d motion frames from frame %d, strength %g, "
                "%g-%g of the steps, motion guidance %g", len(info.block_ids), info.path.name, timeline.num_frames,
                start_frame, strength, start_percent, end_percent, guidance)
    return patched


def encode_clip_upstream(clip_vision, image: torch.Tensor, truncate_uint8: bool = False):
    """A native ``CLIP_VISION_OUTPUT`` of ``image`` (B, H, W, C) in [0, 1] with upstream's preprocessing: squash to
    the tower's size by bicubic resizing without antialiasing (no 8-bit re-rounding), then the CLIP mean/std.

    ``truncate_uint8``: first round the image down to 8 bits the way upstream's script converts its reference.
    """
    import comfy.clip_vision
    import comfy.model_management

    from ..mtv_core.wan.conditioning import clip_image_uint8
    from ..mtv_core.wan.image_encoder import clip_normalize, resize_for_clip

    comfy.model_management.load_model_gpu(clip_vision.patcher)
    pixels = image[..., :3].movedim(-1, 1).float() * 2 - 1  # (B, 3, H, W) in [-1, 1]
    if truncate_uint8:
        pixels = torch.stack([clip_image_uint8(p).permute(2, 0, 1).float() / 255 * 2 - 1 for p in pixels])
    resized = resize_for_clip(pixels, clip_vision.image_size)
    pixel_values = clip_normalize(resized, clip_vision.image_mean, clip_vision.image_std).to(clip_vision.load_device)
    all_states = getattr(clip_vision, "return_all_hidden_states", False)
    out = clip_vision.model(pixel_values=pixel_values, intermediate_output="all" if all_states else -2)
    device = comfy.model_management.intermediate_device()
    outputs = comfy.clip_vision.Output()
    outputs["last_hidden_state"] = out[0].to(device)
    outputs["image_embeds"] = out[2].to(device)
    outputs["penultimate_hidden_states"] = (out[1][:, -2] if all_states else out[1]).to(device)
    outputs["mm_projected"] = out[3]
    return outputs


def next_window_conditioning(positive, negative, vae, overlap_frames: torch.Tensor, length: int, clip_vision=None):
    """Conditioning and latent of a window that starts on ``overlap_frames`` (T, H, W, C) in [0, 1].

    The conditioning is WanImageToVideo's with those frames as start image (upstream's ``y`` for window k > 0:
    mask 1 on the overlap's latent frames, their encoding then grey); CLIP sees the last overlap frame when
    ``clip_vision`` is given. The latent holds the overlap's latent frames under a noise mask of 0 (kept while
    sampling: upstream's latent inpainting of the overlap), zeros elsewhere.
    """
    import comfy.latent_formats
    import comfy.model_management
    import node_helpers

    overlap, height, width = overlap_frames.shape[:3]
    image = torch.full((length, height, width, 3), 0.5, dtype=torch.float32)
    image[:overlap] = overlap_frames[..., :3].float().cpu()
    concat = vae.encode(image)
    kept = latent_frames(overlap)
    mask = torch.ones((1, 1, concat.shape[2], concat.shape[-2], concat.shape[-1]), dtype=concat.dtype,
                      device=concat.device)
    mask[:, :, :kept] = 0.0
    values = {"concat_latent_image": concat, "concat_mask": mask}
    if clip_vision is not None:
        values["clip_vision_output"] = encode_clip_upstream(clip_vision, overlap_frames[-1:])
    positive = node_helpers.conditioning_set_values(positive, values)
    negative = node_helpers.conditioning_set_values(negative, values)
    samples = torch.zeros_like(concat)
    samples[:, :, :kept] = concat[:, :, :kept]
    # as Wan22ImageToVideoLatent: the sampler normalises a non-empty latent, so the free part is pre-denormalised
    samples = comfy.latent_formats.Wan21().process_out(torch.zeros_like(samples)) * mask + samples * (1.0 - mask)
    latent = {"samples": samples.to(comfy.model_management.intermediate_device()),
              "noise_mask": mask.to(comfy.model_management.intermediate_device())}
    return positive, negative, latent
