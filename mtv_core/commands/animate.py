"""``python -m mtv_core animate``: reference image + motion file -> mp4 with an MV-DiT (upstream ``infer_7b.py`` /
``infer_17b.py``).

Models folder layout (``--models DIR``; each part can also be given directly) for ``--variant 7b``::

    DIR/4DMoT/mp_rank_00_model_states.pt     4DMoT tokenizer (or any single .pt/.safetensors in DIR/4DMoT/)
    DIR/MV-DiT/CogVideoX/                    MV-DiT-7B diffusers folder (config.json + *.safetensors)
    DIR/CogVideoX-5b/vae/  or  DIR/vae/      CogVideoX-5B VAE folder (or one .safetensors file in DIR/vae/)

That is the ``yanboding/MTVCrafter`` snapshot with THUDM/CogVideoX-5b's ``vae/`` folder added. For ``--variant 17b``
(upstream's layout, with alibaba-pai/Wan2.1-Fun-V1.1-14B-InP's files in ``wan2.1/``)::

    DIR/4DMoT/mp_rank_00_model_states.pt                               4DMoT tokenizer
    DIR/MV-DiT/Wan-2-1/                                                MV-DiT-17B (config.json + weights)  --dit
    DIR/wan2.1/Wan2.1_VAE.pth                                          Wan2.1 VAE                          --vae
    DIR/wan2.1/models_t5_umt5-xxl-enc-bf16.pth                         umT5-XXL text encoder      --text-encoder
    DIR/wan2.1/google/umt5-xxl/                                        its tokenizer files    --tokenizer-folder
    DIR/wan2.1/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth CLIP ViT-H/14                      --clip

The variant (``mtv_core.dit.variants``) names these paths, its defaults and its window length, which comes from
the DiT's weights (49 frames for the release). Any length of motion works (overlapping windows, see
``mtv_core.dit.pipeline``); motion shorter than one window is an error. The mp4 is written to a temporary name
and moved into place, so a failed run leaves no output behind.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import InputError, LimitError, log_input_error
from ..precision import DTYPE_CHOICES
from ..progress import ProgressCallback

logger = logging.getLogger(__name__)

DEFAULT_VARIANT = "7b"
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin")
TOKENIZER_PATHS = ("4DMoT/mp_rank_00_model_states.pt", "4DMoT")


@dataclass(frozen=True)
class ModelPaths:
    """Where the models of a run are: the tokenizer, the DiT and its VAE, and the variant's other parts (17B:
    ``text_encoder``, ``tokenizer_folder``, ``clip``)."""

    tokenizer: Path
    dit: Path
    vae: Path
    extra: Mapping[str, Path] = field(default_factory=dict)


def _single_weight_file(folder: Path) -> Path | None:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(WEIGHT_SUFFIXES))
    return files[0] if len(files) == 1 else None


def find_models(models_dir: str | Path | None, tokenizer: str | Path | None = None, dit: str | Path | None = None,
                vae: str | Path | None = None, variant: str = DEFAULT_VARIANT,
                extra: Mapping[str, str | Path | None] | None = None) -> ModelPaths:
    """Resolve the model paths from the folder layout of ``variant`` (above); explicit paths win (``extra``: the
    variant's other parts by name, e.g. ``{"clip": ...}``). FileNotFoundError names what is missing."""
    from ..dit.variants import get_variant

    layout = get_variant(variant).model_paths
    extra = dict(extra or {})
    unknown = sorted(set(extra) - set(layout))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a model part of the {variant} variant")
    root = Path(models_dir) if models_dir else None
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"models folder not found: {root}")
    found: dict[str, Path] = {}
    missing = []
    parts = [("tokenizer", tokenizer, list(TOKENIZER_PATHS)), ("dit", dit, list(layout.get("dit", ()))),
             ("vae", vae, list(layout.get("vae", ())))]
    parts += [(name, extra.get(name), list(paths)) for name, paths in layout.items() if name not in ("dit", "vae")]
    for name, explicit, candidates in parts:
        if explicit:
            path = Path(explicit)
            if not path.exists():
                raise FileNotFoundError(f"--{name.replace('_', '-')} path not found: {path}")
            found[name] = path
            continue
        for rel in candidates if root is not None else []:
            path = root / rel
            if path.is_file():
                found[name] = path
                break
            if path.is_dir():
                if name == "tokenizer" or (name == "vae" and not (path / "config.json").exists()):
                    single = _single_weight_file(path)
                    if single is not None:
                        found[name] = single
                        break
                    continue
                found[name] = path
                break
        if name not in found:
            where = " or ".join(f"{root}/{c}" for c in candidates) if root is not None else "(no --models folder)"
            missing.append(f"{name}: {where}")
    if missing:
        raise FileNotFoundError("models not found: " + "; ".join(missing) + ". See `python -m mtv_core animate -h` "
                                "for the folder layout, or pass the parts' paths (--tokenizer, --dit, --vae, ...)")
    return ModelPaths(found.pop("tokenizer"), found.pop("dit"), found.pop("vae"), found)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} requested but CUDA is not available")
    return device


def load_reference(path: str | Path, min_side: int = 0) -> np.ndarray:
    """An image file -> (H, W, 3) RGB, uint8 (uint16 for 16-bit images), turned upright by its EXIF orientation.

    The size is checked from the header, before the image is decoded (at most ``MAX_IMAGE_PIXELS``, at least
    ``min_side`` px on each side: the commands pass the pipeline's ``MIN_REFERENCE_SIDE``, so a reference the
    pipeline would refuse is found before any model is loaded); anything wrong with the file is an InputError
    naming it.
    """
    import warnings

    from PIL import Image, ImageOps

    from ..errors import reading
    from ..limits import MAX_IMAGE_PIXELS, check_limit

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference image not found: {path}")
    with reading(path, "reference image"), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit applies instead
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as exc:  # a header claiming even more pixels than PIL allows
            raise LimitError(f"{path}: the number of pixels is over the limit ({exc})") from None
        with image:
            check_limit(image.size[0] * image.size[1], MAX_IMAGE_PIXELS, "the number of pixels", path)
            if min(image.size) < min_side:
                raise InputError(f"{path}: reference image is {image.size[0]}x{image.size[1]} pixels; it must be at "
                                 f"least {min_side} px on each side")
            # upright as the camera meant it (EXIF orientation), as ComfyUI's LoadImage
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit grey: keep its range
                grey = np.asarray(image)
                if grey.dtype != np.uint16:  # mode I holds 16-bit PNG data in int32
                    grey = np.clip(grey, 0, 65535).astype(np.uint16)
                return np.broadcast_to(grey[..., None], (*grey.shape, 3))  # a grey view, not three copies
            return np.asarray(image.convert("RGB"))


def motion_window(dit: str | Path, variant: str = DEFAULT_VARIANT, **load_options: Any) -> int:
    """Frames per window of the DiT at ``dit`` (from its headers: the frames its motion guidance covers);
    ``load_options`` as for ``load_dit`` (17B: ``adapter``)."""
    from ..dit.loading import read_dit_config

    found, config = read_dit_config(dit, variant, **{k: v for k, v in load_options.items() if k == "adapter"})
    return found.window_frames(config)


def check_motion_length(num_frames: int, window: int, title: str = "the MV-DiT") -> None:
    if num_frames < window:
        raise ValueError(f"motion has {num_frames} frames, shorter than one window of {window} frames "
                         f"({window / 20:.2f} s at 20 fps); {title} needs at least {window}")


def animate_frames(
    joints: Any,
    reference: np.ndarray,
    paths: ModelPaths,
    *,
    variant: str = DEFAULT_VARIANT,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    width: int | None = None,
    height: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    attention: str = "auto",
    offload: str = "none",
    weight_dtype: str | None = None,
    load_options: Mapping[str, Any] | None = None,
    side_options: Mapping[str, Any] | None = None,
    conditioning_options: Mapping[str, Any] | None = None,
    lora: str | Path | None = None,
    lora_strength: float = 1.0,
    callback: ProgressCallback | None = None,
    compile_dit: bool = False,
    window: int | None = None,
) -> tuple[torch.Tensor, float]:
    """Tokenize ``joints`` (JointSequence) in the DiT's windows, sample and decode: ((T, H, W, 3) float32 0..1, fps).

    ``steps``, ``guidance`` and ``seed`` default to the variant's; ``width`` / ``height`` None: 512 x 512, or for
    a variant that sizes by the reference (17B) its aspect bucket. ``offload`` ("none", "group", "leaf") and
    ``weight_dtype`` (None, "fp8_e4m3fn", "fp8_e5m2") fit the DiT into less GPU memory (``mtv_core.offload``; the
    17B stores fp8 through its own loader); ``dtype`` stays the compute dtype. ``load_options`` go to
    ``load_dit`` (17B: ``adapter``), ``side_options`` to the variant's ``prepare_conditioning`` (17B: ``prompt``,
    ``negative_prompt``), ``conditioning_options`` to its conditioning (17B: ``cfg_mode``, ``motion_guidance`` ...).
    ``lora`` is merged into the DiT's weights at ``lora_strength`` (``mtv_core.dit.lora``). ``compile_dit``:
    ``torch.compile`` each DiT block (``dit.compile.compile_blocks``; the first step pays the compilation).
    ``window``: the DiT's window in frames when the caller has already read it (``motion_window``, with the length
    checked); None reads it from the DiT's headers.
    """
    from ..dit.loading import load_dit
    from ..dit.pipeline import sample_video, snap_size
    from ..dit.variants import get_variant
    from ..offload import OFFLOAD_MODES, place_dit
    from ..offload import weight_dtype as parse_weight_dtype
    from ..precision import resolve_dtype
    from ..tokenizer.encode import encode_windows
    from ..tokenizer.loading import load_tokenizer
    from ..windows import default_overlap

    found = get_variant(variant)
    defaults = found.defaults
    load_options = dict(load_options or {})
    if window is None:
        window = motion_window(paths.dit, variant, **load_options)
        check_motion_length(joints.num_frames, window, found.title)
    if found.output_size is not None:
        width, height = found.output_size(reference, width or 0, height or 0)
    width, height = snap_size(width or 512, height or 512)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    storage_dtype = parse_weight_dtype(weight_dtype)
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    if torch_device.type == "cpu":
        # denormal floats (frequent with random test weights) slow CPU math down several times
        torch.set_flush_denormal(True)
    started = time.perf_counter()
    side = {}
    if found.prepare_conditioning is not None:  # text / image encoders first: freed before the DiT is loaded
        side = found.prepare_conditioning(paths.extra, device=torch_device, dtype=torch_dtype, **(side_options or {}))
    tokenizer = load_tokenizer(paths.tokenizer, device=torch_device)
    motion = encode_windows(tokenizer, joints, window=window, overlap=default_overlap(window))
    del tokenizer
    logger.info("motion: %d frames in %d window(s) of %d", motion.joints.num_frames, len(motion.windows), window)
    if storage_dtype is not None and "weight_dtype" in found.load_options:
        load_options["weight_dtype"], storage_dtype = weight_dtype, None  # the variant's loader stores fp8 itself
    # straight onto the device unless hooks must see it in CPU RAM first (offloading, fp8 storage)
    hooked = offload != "none" or storage_dtype is not None
    model = load_dit(paths.dit, dtype=torch_dtype, device="cpu" if hooked else torch_device, attention=attention,
                     variant=variant, **load_options)
    if lora is not None:
        from ..dit.lora import apply_lora

        apply_lora(model, lora, strength=lora_strength)
    place_dit(model, torch_device, offload=offload, storage_dtype=storage_dtype)
    if compile_dit:
        from ..dit.compile import compile_blocks

        compile_blocks(model)
    vae = found.load_vae(paths.vae, dtype=torch_dtype, device=torch_device)
    conditioning = found.conditioning(model, guidance=defaults.guidance if guidance is None else guidance,
                                      **side, **(conditioning_options or {}))
    sampled = sample_video(conditioning, vae, reference, motion, width=width, height=height,
                           num_steps=defaults.steps if steps is None else steps,
                           seed=defaults.seed if seed is None else seed, callback=callback, keep_frames=True)
    logger.info("generated %d frames at %dx%d with %s in %.1f s (%s, %s)", sampled.num_frames, width, height,
                found.title, time.perf_counter() - started, torch_device, torch_dtype)
    return sampled.frames, sampled.fps


def animate(joints: Any, reference: np.ndarray, paths: ModelPaths, out: str | Path, **kwargs: Any) -> Path:
    """``animate_frames`` and write ``out`` (.mp4, via a temporary name). Returns the path."""
    from ..video import write_mp4

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"output must be an .mp4 file, got {out}")
    frames, fps = animate_frames(joints, reference, paths, **kwargs)
    # to uint8 in place: a long float32 video is large, and write_mp4 would convert through two float copies
    pixels = frames.clamp_(0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8).numpy()
    del frames
    return write_mp4(out, pixels, fps=fps)


def _log_progress(every: int = 5) -> ProgressCallback:
    def callback(step: int, total: int, preview: Any = None) -> None:
        if step == total or step % every == 0:
            logger.info("sampling step %d/%d", step, total)

    return callback


# options of one variant only: flag -> variant name
VARIANT_ONLY = {"--prompt": "17b", "--negative-prompt": "17b", "--adapter": "17b", "--text-encoder": "17b",
                "--tokenizer-folder": "17b", "--clip": "17b", "--distilled": "17b", "--motion-guidance": "17b",
                "--motion-guidance-start": "17b", "--motion-guidance-end": "17b", "--window-clip": "17b",
                "--unbatched-cfg": "17b",
                "--lora": "17b"}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..attention import BACKENDS
    from ..dit.pipeline_17b import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT, WINDOW_CLIP
    from ..dit.sampler_17b import DISTILLED_STEPS
    from ..dit.variants import get_variant, variant_names

    defaults = get_variant(DEFAULT_VARIANT).defaults
    seventeen = get_variant("17b").defaults
    parser = subparsers.add_parser(
        "animate", help="reference image + motion file -> mp4 (MV-DiT)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", choices=variant_names(), default=DEFAULT_VARIANT,
                        help=f"MV-DiT variant (default: {DEFAULT_VARIANT})")
    parser.add_argument("--ref", required=True, help="reference image (png/jpg); cover-resized and centre-cropped")
    parser.add_argument("--motion", required=True, help="motion file (.npz/.npy/.pkl: ours, upstream or NLF output)")
    parser.add_argument("--motion-index", type=int, default=0, help="sequence index in multi-sequence files")
    parser.add_argument("--motion-fps", type=float, default=None, help="override the motion frame rate")
    parser.add_argument("--frames", type=int, default=None, help="use only the first N motion frames")
    parser.add_argument("--models", default=None, help="models folder (layout above)")
    parser.add_argument("--tokenizer", default=None, help="4DMoT checkpoint (overrides --models)")
    parser.add_argument("--dit", default=None, help="MV-DiT folder or safetensors file (overrides --models); 17b: also "
                        "a Wan2.1 I2V-14B base with --adapter")
    parser.add_argument("--vae", default=None, help="the variant's VAE folder or file (overrides --models)")
    parser.add_argument("--out", required=True, help="output .mp4")
    ours = f"the variant's; {DEFAULT_VARIANT}:"
    parser.add_argument("--steps", type=int, default=None, help=f"denoising steps (default: {ours} {defaults.steps}; "
                        f"17b: {seventeen.steps}, {DISTILLED_STEPS} with --distilled)")
    parser.add_argument("--guidance", type=float, default=None,
                        help=f"7b: motion guidance, 1 = off; 17b: text guidance (CFG), 1 = off (default: {ours} "
                             f"{defaults.guidance}; 17b: {seventeen.guidance})")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"random seed (default: {ours} {defaults.seed}; 17b: {seventeen.seed})")
    parser.add_argument("--width", type=int, default=None, help="width, multiple of 16 (default: 512; 17b: the "
                        "512-area aspect bucket nearest the reference, as upstream)")
    parser.add_argument("--height", type=int, default=None, help="height, multiple of 16 (default: as --width)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="DiT/VAE dtype; auto = bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--attention", default="auto", choices=BACKENDS, help="attention backend (default: auto)")
    parser.add_argument("--offload", default="none", choices=("none", "group", "leaf"),
                        help="DiT weights in CPU RAM, brought to the GPU block by block (group, prefetched on "
                             "CUDA) or layer by layer (leaf) with diffusers' group offloading (default: none)")
    parser.add_argument("--weight-dtype", default=None, choices=("fp8_e4m3fn", "fp8_e5m2"),
                        help="store the DiT's Linear weights in fp8 and compute in --dtype: half the memory of bf16, "
                             "slightly different results (17b: fp8 files stay fp8 anyway)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each DiT block (dynamic shapes; the first step pays the compilation)")
    wan = parser.add_argument_group("17b only (upstream infer_17b.py)")
    wan.add_argument("--prompt", default=None, help=f"text prompt (default: {DEFAULT_PROMPT!r})")
    wan.add_argument("--negative-prompt", default=None,
                     help=f"negative prompt for text CFG (default: upstream's {DEFAULT_NEGATIVE_PROMPT!r}; '' = none)")
    wan.add_argument("--adapter", default=None, help="motion adapter file: --dit is then a Wan2.1 I2V-14B base")
    wan.add_argument("--text-encoder", default=None, help="umT5-XXL encoder (.pth or ComfyUI's umt5_xxl_*.safetensors)")
    wan.add_argument("--tokenizer-folder", default=None,
                     help="folder with google/umt5-xxl's tokenizer files (tokenizer.json or spiece.model); never downloaded")
    wan.add_argument("--clip", default=None, help="CLIP ViT-H/14 (Wan's .pth or ComfyUI's clip_vision_h.safetensors)")
    wan.add_argument("--lora", default=None, help="LoRA file merged into the DiT (e.g. a distillation LoRA)")
    wan.add_argument("--lora-strength", type=float, default=1.0, help="LoRA strength (default: 1.0)")
    wan.add_argument("--distilled", action="store_true",
                     help=f"no text CFG, one forward per step (for a distillation LoRA such as FusionX); default steps "
                          f"{DISTILLED_STEPS}")
    wan.add_argument("--motion-guidance", type=float, default=None,
                     help="motion guidance: one more forward per step without motion attention; 1 = off (default)")
    wan.add_argument("--motion-guidance-start", type=float, default=None,
                     help="fraction of the steps motion guidance starts at (default: 0)")
    wan.add_argument("--motion-guidance-end", type=float, default=None,
                     help="fraction of the steps motion guidance ends at (default: 1)")
    wan.add_argument("--unbatched-cfg", action="store_true",
                     help="run the negative and the positive prompt one after the other (half the activation memory)")
    wan.add_argument("--window-clip", default=None, choices=WINDOW_CLIP,
                     help="CLIP image of later windows: their last overlap frame (upstream) or the reference")
    parser.set_defaults(func=run_animate)
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Every number and the output path, checked before any file is read or model loaded (InputError)."""
    from ..dit.pipeline import snap_size
    from ..files import check_writable
    from ..limits import MAX_FRAMES, MAX_GUIDANCE, MAX_STEPS, check_fps, check_number

    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"output must be an .mp4 file, got {out}")
    check_writable(out, "output video")
    if args.steps is not None:  # None: the variant's default
        check_number(args.steps, "--steps", 1, MAX_STEPS, integer=True)
    if args.guidance is not None:
        check_number(args.guidance, "--guidance", 0.0, MAX_GUIDANCE)
    if args.width is not None or args.height is not None:  # None: 512 x 512, or the 17B's aspect bucket
        snap_size(args.width or 512, args.height or 512)
    if args.motion_fps is not None:
        check_fps(args.motion_fps, name="--motion-fps")
    if args.frames is not None:
        check_number(args.frames, "--frames", 1, MAX_FRAMES, integer=True)
    if args.motion_index < 0:
        raise InputError(f"--motion-index must be 0 or more, got {args.motion_index}")


def _variant_options(args: argparse.Namespace) -> dict[str, Any]:
    """The 17B's options from the command line: load, side-model and conditioning options, steps, LoRA."""
    from ..dit.sampler_17b import DISTILLED_STEPS

    given = {flag for flag in VARIANT_ONLY if getattr(args, flag[2:].replace("-", "_"), None) not in (None, False)}
    wrong = sorted(flag for flag in given if VARIANT_ONLY[flag] != args.variant)
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: only for --variant {VARIANT_ONLY[wrong[0]]}")
    if args.variant != "17b":
        return {}
    side = {k: v for k, v in (("prompt", args.prompt), ("negative_prompt", args.negative_prompt)) if v is not None}
    conditioning: dict[str, Any] = {"cfg_mode": "distilled" if args.distilled else "text_cfg"}
    if args.motion_guidance is not None:
        conditioning.update(motion_guidance=args.motion_guidance,
                            motion_guidance_start=args.motion_guidance_start or 0.0,
                            motion_guidance_end=1.0 if args.motion_guidance_end is None else args.motion_guidance_end)
    if args.window_clip is not None:
        conditioning["window_clip"] = args.window_clip
    if args.unbatched_cfg:
        conditioning["batched_cfg"] = False
    return {"load_options": {"adapter": args.adapter} if args.adapter else {}, "side_options": side,
            "conditioning_options": conditioning, "lora": args.lora, "lora_strength": args.lora_strength,
            "steps": args.steps if args.steps is not None or not args.distilled else DISTILLED_STEPS}


def run_animate(args: argparse.Namespace) -> int:
    """Command entry: returns the exit code (2 for bad input or missing models)."""
    from ..dit.pipeline_7b import MIN_REFERENCE_SIDE
    from ..dit.variants import get_variant
    from ..motion import load_motion

    try:
        check_arguments(args)
        options = _variant_options(args)
        if args.lora is not None and not Path(args.lora).is_file():
            raise FileNotFoundError(f"--lora file not found: {args.lora}")
        reference = load_reference(args.ref, min_side=MIN_REFERENCE_SIDE)
        joints = load_motion(args.motion, index=args.motion_index, fps=args.motion_fps)
        if args.frames is not None:
            from ..motion import trim

            joints = trim(joints, 0, min(args.frames, joints.num_frames))
        extra = {"text_encoder": args.text_encoder, "tokenizer_folder": args.tokenizer_folder, "clip": args.clip}
        paths = find_models(args.models, args.tokenizer, args.dit, args.vae, variant=args.variant,
                            extra={k: v for k, v in extra.items() if v} if args.variant == "17b" else None)
        # before any weights are read: the window length comes from the DiT's headers
        window = motion_window(paths.dit, args.variant, **options.get("load_options", {}))
        check_motion_length(joints.num_frames, window, get_variant(args.variant).title)
        steps = options.pop("steps", args.steps)
        animate(joints, reference, paths, args.out, variant=args.variant, steps=steps, guidance=args.guidance,
                seed=args.seed, width=args.width, height=args.height, device=args.device, dtype=args.dtype,
                attention=args.attention, offload=args.offload, weight_dtype=args.weight_dtype,
                callback=_log_progress(), compile_dit=args.compile, window=window, **options)
    except (FileNotFoundError, ValueError, IndexError) as exc:  # InputError (CheckpointError, ...) is a ValueError
        log_input_error(exc)
        return 2
    return 0


def write_tiny_models(root: str | Path, seed: int = 0, variant: str = DEFAULT_VARIANT) -> ModelPaths:
    """A models folder in the layout of ``variant`` (above) with tiny RANDOM weights (real key names): for tests and
    the demo.

    The sizes fit together: the 4DMoT's code size is the tiny MV-DiT's motion token width (7b: 128, 17b: 192); the
    tiny MV-DiT-17B reads the tiny umT5's width (64) and the tiny CLIP tower's (128).
    """
    from ..tokenizer.testing import write_tiny_checkpoint

    root = Path(root)
    if variant == "17b":
        from ..dit.tiny_17b import tiny_mvdit17b_config, tiny_tokenizer_config_for_17b, write_tiny_mvdit17b
        from ..wan.image_encoder import tiny_clip_vision_config, write_tiny_clip_vision
        from ..wan.text_encoder import tiny_umt5_config, write_tiny_umt5, write_tiny_umt5_tokenizer
        from ..wan.vae import write_tiny_wan_vae

        config = tiny_mvdit17b_config(text_dim=tiny_umt5_config()["d_model"],
                                      clip_dim=tiny_clip_vision_config()["hidden_size"])
        tokenizer = write_tiny_checkpoint(root / "4DMoT" / "tiny_4dmot.safetensors",
                                          config=tiny_tokenizer_config_for_17b(config), seed=seed)
        dit = write_tiny_mvdit17b(root / "MV-DiT" / "Wan-2-1", seed=seed, config=config, as_folder=True)
        wan = root / "wan2.1"
        vae = write_tiny_wan_vae(wan / "Wan2.1_VAE.pth", seed=seed)
        extra = {"text_encoder": write_tiny_umt5(wan / "models_t5_umt5-xxl-enc-bf16.pth", seed=seed),
                 "tokenizer_folder": write_tiny_umt5_tokenizer(wan / "google" / "umt5-xxl",
                                                               vocab_size=tiny_umt5_config()["vocab_size"]),
                 "clip": write_tiny_clip_vision(wan / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
                                                seed=seed)}
        return ModelPaths(tokenizer, dit, vae, extra)
    if variant != "7b":
        raise ValueError(f"no tiny models for variant {variant!r}")
    from ..dit.tiny import tiny_mvdit7b_config, tiny_tokenizer_config_for_7b, write_tiny_mvdit7b
    from ..dit.vae import write_tiny_vae

    tokenizer = write_tiny_checkpoint(root / "4DMoT" / "tiny_4dmot.safetensors", config=tiny_tokenizer_config_for_7b(),
                                      seed=seed)
    dit = write_tiny_mvdit7b(root / "MV-DiT" / "CogVideoX", seed=seed, as_folder=True, config=tiny_mvdit7b_config())
    vae = write_tiny_vae(root / "vae", seed=seed, as_folder=True)
    return ModelPaths(tokenizer, dit, vae)
