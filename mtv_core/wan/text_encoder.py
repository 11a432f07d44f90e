"""umT5-XXL text encoder of MV-DiT-17B (transformers ``UMT5EncoderModel``): loading, tokenizer, encoding.

Accepted files:
    * Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (keys ``token_embedding.weight``, ``blocks.N.attn.q.weight``,
      ``blocks.N.pos_embedding.embedding.weight`` ...), as upstream MTVCrafter loads it;
    * ComfyUI's ``umt5_xxl_fp16.safetensors`` / ``umt5_xxl_fp8_e4m3fn_scaled.safetensors`` (transformers
      names ``shared.weight``, ``encoder.block.N.layer.0.SelfAttention.q.weight`` ...; scaled fp8 weights
      are dequantised with their per-tensor scale).

umT5 differs from T5 in having relative-position buckets in every layer (Wan: ``shared_pos=False``);
the rest is T5 v1.1: RMS layer norm without mean, gated tanh-GELU feed-forward, unscaled attention
logits. The architecture is read from the weights' shapes (heads from the bucket table's width).

Layouts: ``input_ids``/``attention_mask`` (B, L) int64; ``last_hidden_state`` (B, L, dim) — padded rows
included, as upstream computes them; ``encode_text`` returns each prompt's (L_i, dim) rows up to its
true length (upstream's pipeline trims them the same way).

The tokenizer (``google/umt5-xxl`` files) is read from a local folder only; nothing is downloaded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_into, open_checkpoint, strip_key_prefix
from ..meta_init import empty_weights, finish_loading
from .keymap import MappedCheckpoint, Source, fp8_scales, is_quantisation_aux, save_state

logger = logging.getLogger(__name__)

TEXT_LENGTH = 512  # upstream's max_sequence_length
TOKENIZER_SOURCE = "the tokenizer files of google/umt5-xxl (spiece.model, tokenizer.json, tokenizer_config.json)"
_KEY_PREFIXES = ("text_encoders.umt5xxl.transformer.", "umt5xxl.transformer.", "text_encoder.", "model.",
                 "module.")
_WAN_LAYER = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def _wan_to_hf(key: str) -> str | None:
    if key == "token_embedding.weight":
        return "shared.weight"
    if key == "norm.weight":
        return "encoder.final_layer_norm.weight"
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if m and m.group(2) in _WAN_LAYER:
        return f"encoder.block.{m.group(1)}.{_WAN_LAYER[m.group(2)]}"
    return None


def _shared_position_buckets(keys: set[str]) -> bool:
    """T5 v1.1 layout: one position-bucket table (Wan ``shared_pos=True``, or only in the first block)."""
    if "pos_embedding.embedding.weight" in keys:
        return True
    bias = "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias.weight"
    return bias.format(0) in keys and "encoder.block.1.layer.0.layer_norm.weight" in keys and bias.format(1) not in keys


def umt5_key_map(ckpt) -> MappedCheckpoint:
    """``ckpt`` (Wan or ComfyUI/transformers naming) under ``UMT5EncoderModel``'s key names."""
    keys = ckpt.keys()
    if _shared_position_buckets(set(keys)):
        raise CheckpointError(
            f"{ckpt.path}: a T5 encoder with one shared position-bucket table (T5 v1.1), not umT5; "
            "MV-DiT-17B needs the umT5-XXL encoder (models_t5_umt5-xxl-enc-bf16.pth or umt5_xxl_*.safetensors)"
        )
    wan = "token_embedding.weight" in keys
    scales = fp8_scales(ckpt)
    sources: dict[str, Source] = {}
    unexpected: dict[str, tuple[int, ...]] = {}
    ignored: list[str] = []
    for key in keys:
        if is_quantisation_aux(key) or key == "spiece_model":
            ignored.append(key)
            continue
        target = _wan_to_hf(key) if wan else key
        if not wan and key == "encoder.embed_tokens.weight":
            if "shared.weight" in keys:
                ignored.append(key)  # tied to shared.weight
                continue
            target = "shared.weight"
        if target is None:
            unexpected[key] = ckpt.shape(key)
            continue
        sources[target] = Source(key, ckpt.shape(key), scale_key=scales.get(key))
    if ignored:
        logger.info("%s: not used by the text encoder: %s", ckpt.path, ", ".join(sorted(ignored)[:6]))
    return MappedCheckpoint(ckpt, sources, unexpected)


def umt5_config_from_shapes(shapes: dict[str, tuple[int, ...]], path="") -> dict:
    """``UMT5Config`` arguments read from transformers-named shapes."""
    try:
        vocab, d_model = shapes["shared.weight"]
        buckets, heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
        d_ff = shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0]
    except KeyError as exc:
        raise CheckpointError(f"{path}: not a umT5 text encoder checkpoint (no {exc.args[0]})") from None
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.block\.(\d+)\.", k)))
    if inner % heads:
        raise CheckpointError(f"{path}: attention width {inner} is not a multiple of {heads} heads")
    return dict(
        vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff, num_layers=layers, num_heads=heads,
        relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
        tie_word_embeddings=False,
    )


def build_umt5(config: dict):
    """An (unloaded) ``UMT5EncoderModel`` for ``config``, weights on the meta device (``meta_init.empty_weights``)."""
    from transformers import UMT5Config, UMT5EncoderModel

    with empty_weights():
        return UMT5EncoderModel(UMT5Config(**config))


class UMT5TextEncoder:
    """A loaded umT5 encoder (eval mode, no grad)."""

    def __init__(self, model: torch.nn.Module, source: str = "") -> None:
        self.model = model.eval().requires_grad_(False)
        self.source = source

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    def to(self, device: torch.device | str) -> "UMT5TextEncoder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask -> (B, L, dim) float32 last hidden state (padded rows included)."""
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device))
        return out.last_hidden_state.float()

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) ids and mask -> B tensors (L_i, dim) float32, each trimmed to its true length."""
        hidden = self.hidden_states(input_ids, attention_mask)
        lengths = attention_mask.gt(0).sum(dim=1).tolist()
        return [h[:n] for h, n in zip(hidden, lengths)]

    def encode_prompts(self, tokenizer, prompts: str | list[str], max_length: int = TEXT_LENGTH) -> list[torch.Tensor]:
        """Tokenise as upstream (padded to ``max_length``, truncated, eos added) and encode."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids, mask = tokenize(tokenizer, prompts, max_length)
        return self.encode_text(ids, mask)


def tokenize(tokenizer, prompts: list[str], max_length: int = TEXT_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, max_length) ids and mask, padded and truncated as upstream; warns when a prompt is cut."""
    enc = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                    add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    full = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    for prompt, ids in zip(prompts, full):
        if len(ids) > max_length:
            logger.warning("prompt truncated to %d tokens: %r", max_length, prompt[:80])
    return enc["input_ids"].long(), enc["attention_mask"].long()


def load_umt5_tokenizer(folder: str | Path):
    """The umT5 tokenizer from a local folder (never downloads; FileNotFoundError names what is missing)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"umT5 tokenizer folder not found: {folder}; put {TOKENIZER_SOURCE} there")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "spiece.model")):
        raise FileNotFoundError(
            f"no tokenizer.json or spiece.model in {folder}; put {TOKENIZER_SOURCE} there "
            "(Wan2.1 checkpoints carry them in google/umt5-xxl/)"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError/ValueError/... for unusable folders
        raise CheckpointError(f"{folder}: could not load the umT5 tokenizer ({exc})") from exc


def load_umt5(
    path: str | Path, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu"
) -> UMT5TextEncoder:
    """Load the umT5 encoder from a Wan ``.pth`` or a ComfyUI/transformers safetensors file.

    Built on the meta device, each tensor read from the mapped file straight into ``dtype``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"umT5 text encoder not found: {path}")
    ckpt = strip_key_prefix(open_checkpoint(path), _KEY_PREFIXES)
    mapped = umt5_key_map(ckpt)
    config = umt5_config_from_shapes(mapped.shapes(), path)
    model = build_umt5(config)
    load_umt5_weights(model, mapped, dtype=dtype, device=device)
    logger.info("loaded umT5 encoder from %s (%d layers, dim %d, %s)", path, config["num_layers"],
                config["d_model"], dtype)
    return UMT5TextEncoder(model, source=str(path))


def load_umt5_weights(model, mapped, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> None:
    """Strictly load ``mapped`` into ``model``; the encoder's embedding stays tied to ``shared``."""
    model.encoder.embed_tokens = torch.nn.Identity()  # the tied copy: loaded once as shared.weight
    load_into(model, mapped, dtype=dtype, device=device, what="umT5 text encoder",
              hint="expected Wan's models_t5_umt5-xxl-enc-bf16.pth or ComfyUI's umt5_xxl_*.safetensors")
    model.encoder.embed_tokens = model.shared
    finish_loading(model, device, mapped.path)


def tiny_umt5_config() -> dict:
    """A 2-layer umT5 with the real layer layout, for tests and integration checks."""
    return dict(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0, tie_word_embeddings=False)


def _hf_to_wan(key: str) -> str:
    if key == "shared.weight":
        return "token_embedding.weight"
    if key == "encoder.final_layer_norm.weight":
        return "norm.weight"
    m = re.fullmatch(r"encoder\.block\.(\d+)\.(.+)", key)
    inverse = {v: k for k, v in _WAN_LAYER.items()}
    return f"blocks.{m.group(1)}.{inverse[m.group(2)]}"


def write_tiny_umt5(path: str | Path, seed: int = 0, naming: str = "wan", **config) -> Path:
    """Write a tiny random umT5 encoder with real key names.

    naming ``wan``: Wan's original names (a ``.pth`` path is written with ``torch.save``, else safetensors);
    ``comfy``: ComfyUI/transformers names (``shared.weight``, ``encoder.block.N...``) as safetensors.
    ``config``: overrides of ``tiny_umt5_config()`` (e.g. ``d_model=4096``, the width native Wan takes).
    """
    from ..tokenizer.testing import random_weights

    if naming not in ("wan", "comfy"):
        raise ValueError(f"naming must be 'wan' or 'comfy', got {naming!r}")
    model = build_umt5({**tiny_umt5_config(), **config})
    state = {k: v for k, v in random_weights(model, seed, unit_keys=("shared.weight",)).items()
             if k != "encoder.embed_tokens.weight"}
    if naming == "wan":
        state = {_hf_to_wan(k): v for k, v in state.items()}
    return save_state(state, Path(path))


def write_tiny_umt5_tokenizer(folder: str | Path, vocab_size: int = 512) -> Path:
    """Write a tiny umT5-style tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json``) for tests.

    A unigram model over single characters and a few common words, with umT5's special ids (pad 0, eos 1, unk 2),
    ``▁`` word boundaries and eos appended, so ``load_umt5_tokenizer`` and ``tokenize`` work as with the real
    files; every id is below ``vocab_size`` (the tiny encoder's vocabulary). Built with the ``tokenizers`` library.
    """
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    words = ["the", "a", "is", "dancing", "character", "woman", "man", "on", "beach", "waves", "sunset", "low",
             "quality", "blurry", "bad", "hands", "extra", "limbs", "fused", "fingers"]
    chars = [chr(c) for c in range(33, 127)]
    pieces = ["<pad>", "</s>", "<unk>"] + [f"▁{w}" for w in words] + ["▁"] + chars + [f"▁{c}" for c in chars]
    pieces = list(dict.fromkeys(pieces))[:vocab_size]
    vocab = [(piece, 0.0 if i < 3 else -float(len(pieces) - i) / len(pieces) - (5.0 if len(piece) == 1 else 0.0))
             for i, piece in enumerate(pieces)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Replace("  ", " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
              "unk_token": "<unk>", "model_max_length": TEXT_LENGTH, "padding_side": "right"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder
