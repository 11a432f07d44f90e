"""Helpers for the ``wan/`` reference data: case discovery, manifest weights written as release files.

Cases are ``case_<model>_tiny_seed{S}.safetensors`` paired with ``manifest_<model>_tiny_seed{S}.json`` in the
same folder (``cond17b`` cases name their VAE/CLIP manifests in their metadata instead).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import load_case, manifest_for, reference_cases, reference_dir  # noqa: F401 (re-exported)
from safetensors.torch import save_file

from mtv_pack.mtv_core.tokenizer.testing import regenerate_from_manifest

WAN_DIR = reference_dir() / "wan"


def cases(model: str) -> list[Path]:
    return reference_cases(f"wan/{model}", model)


def find_manifest(name: str) -> dict:
    """A manifest named in a case's metadata, wherever it sits under ``wan/``."""
    found = sorted(WAN_DIR.glob(f"*/{name}"))
    assert found, f"manifest {name} not found under {WAN_DIR}"
    return json.loads(found[0].read_text())


def write_release_file(manifest: dict, path: Path) -> Path:
    """The manifest's weights under the key prefix the released file uses (``.pth`` or safetensors)."""
    prefix = manifest.get("key_prefix_in_release", "")
    state = {prefix + k: v for k, v in regenerate_from_manifest(manifest).items()}
    if path.suffix == ".pth":
        torch.save(state, str(path))
    else:
        save_file(state, str(path))
    return path


def full_keys(name: str) -> dict:
    return json.loads((WAN_DIR / "fullkeys" / name).read_text())


class ShapesOnly:
    """A checkpoint that has only key names and shapes (tensors come back on the meta device)."""

    def __init__(self, path: str, shapes: dict[str, list[int]]) -> None:
        self.path = Path(path)
        self.config = None
        self.metadata: dict[str, str] = {}
        self._shapes = {k: tuple(v) for k, v in shapes.items()}

    def keys(self) -> list[str]:
        return list(self._shapes)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def dtype(self, key: str) -> torch.dtype:
        return torch.bfloat16

    def get(self, key, dtype=None, device="cpu") -> torch.Tensor:
        return torch.empty(self._shapes[key], dtype=dtype or torch.bfloat16, device="meta")


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()
