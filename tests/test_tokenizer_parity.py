"""4DMoT parity with the upstream reference outputs (../shared/reference/4dmot)."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import reference_cases, reference_dir
from safetensors.torch import load_file

from mtv_pack.mtv_core.checkpoint import key_report
from mtv_pack.mtv_core.tokenizer.config import TokenizerConfig
from mtv_pack.mtv_core.tokenizer.loading import build_empty
from mtv_pack.mtv_core.tokenizer.model import MotionVQVAE
from mtv_pack.mtv_core.tokenizer.testing import regenerate_from_manifest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


CASES = reference_cases("4dmot", "4dmot")
MANIFESTS = sorted((reference_dir() / "4dmot").glob("manifest_4dmot_*.json"))
_MODELS: dict[str, MotionVQVAE] = {}


def _manifest_for(case) -> object:
    seed = re.match(r"case_4dmot_seed(\d+)_", case.name)
    assert seed, f"unexpected case file name {case.name}"
    path = case.parent / f"manifest_4dmot_seed{seed.group(1)}.json"
    assert path.is_file(), f"{case.name} needs {path.name}"
    return path


def _model(manifest) -> MotionVQVAE:
    if manifest.name not in _MODELS:
        state = regenerate_from_manifest(manifest)
        model = MotionVQVAE(TokenizerConfig.from_shapes({k: tuple(v.shape) for k, v in state.items()}))
        model.load_state_dict(state, strict=True)
        _MODELS.clear()  # keep at most one released-size model in memory
        _MODELS[manifest.name] = model.eval().requires_grad_(False)
    return _MODELS[manifest.name]


def test_reference_cases_present():
    assert CASES, f"no case_4dmot_*.safetensors under {reference_dir() / '4dmot'}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_4dmot_case_parity(case):
    data = load_file(str(case))
    model = _model(_manifest_for(case))
    with torch.inference_mode():
        features = model.encode_features(data["normalized"][None])
        tokens, indices, commit = model.quantize(features)
        recon = model.decode_tokens(tokens, features.shape[2])
    torch.testing.assert_close(features[0], data["encoder_out"], atol=1e-4, rtol=0)
    expected = data["indices"]
    differ = indices[0] != expected
    ties = data["dist_gap"] < 1e-3
    assert not (differ & ~ties).any(), f"{int((differ & ~ties).sum())} codebook indices differ"
    assert tokens.shape == (1, expected.numel(), model.config.code_dim)
    torch.testing.assert_close(recon[0], data["recon_normalized"], atol=1e-4, rtol=0)
    torch.testing.assert_close(commit, data["commit_loss"][0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_manifest_keys_load_into_released_size(manifest):
    import json

    shapes = {k: tuple(v["shape"]) for k, v in json.loads(manifest.read_text())["params"].items()}
    config = TokenizerConfig.from_shapes(shapes)
    assert config == TokenizerConfig()  # the manifest describes the released configuration
    model = build_empty(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert key_report(expected, shapes) is None
    assert sum(p.numel() for p in model.parameters()) == 48_323_075
