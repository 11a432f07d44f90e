"""Fuzzing the checkpoint formats: safetensors (headers, metadata), torch ``.pt`` files, diffusers folders
(``config.json``, the shard index) for the 4DMoT, MV-DiT-7B and CogVideoX VAE loaders.

Seeds: the reference case files (``../shared/reference/**/case_*.safetensors``), the tiny MV-DiT-7B of the
reference manifest (``mvdit7b/manifest_mvdit7b_tiny_*.json``) and tiny 4DMoT / VAE files with the real key
names. Every example must load or be refused with an ``InputError`` naming the file (see ``tests/_fuzz.py``).
"""

from __future__ import annotations

import io
import json
import shutil
import struct

import numpy as np
import pytest
import torch

from _fuzz import check
from _fuzz_strategies import deeply_nested, json_text, json_values, mutated, scaled
from hypothesis import given
from hypothesis import strategies as st

from mtv_pack.mtv_core.dit.config import MVDiT7BConfig
from mtv_pack.mtv_core.dit.tiny import INDEX_NAME, save_mvdit7b, tiny_mvdit7b_config
from mtv_pack.mtv_core.dit.vae import write_tiny_vae
from mtv_pack.mtv_core.tokenizer.testing import TINY_CONFIG, regenerate_from_manifest, tiny_model, write_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(reference, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ckpt_seeds")
    tokenizer = write_tiny_checkpoint(folder / "tiny_4dmot.safetensors")
    tokenizer_pt = write_tiny_checkpoint(folder / "mp_rank_00_model_states.pt")
    manifest = sorted((reference / "mvdit7b").glob("manifest_mvdit7b_tiny_*.json"))[0]
    config = json.loads(manifest.read_text()).get("config", {})
    dit_config = MVDiT7BConfig.from_diffusers_config(config) if config else tiny_mvdit7b_config()
    state = regenerate_from_manifest(manifest)
    dit = save_mvdit7b(state, folder / "CogVideoX", dit_config, as_folder=True, max_shard_bytes=200_000)
    vae = write_tiny_vae(folder / "vae", as_folder=True)
    cases = sorted(reference.glob("**/case_*.safetensors"))
    return {"tokenizer": tokenizer, "tokenizer_pt": tokenizer_pt, "dit": dit, "vae": vae, "cases": cases}


def test_seeds_load(fuzz_worker, files):
    assert fuzz_worker.run("tokenizer", files["tokenizer"])["outcome"] == "ok"
    assert fuzz_worker.run("tokenizer", files["tokenizer_pt"])["outcome"] == "ok"
    assert fuzz_worker.run("dit", files["dit"])["outcome"] == "ok"
    assert fuzz_worker.run("vae", files["vae"])["outcome"] == "ok"
    assert len(files["cases"]) >= 4
    for case in files["cases"]:
        assert fuzz_worker.run("checkpoint", case)["outcome"] == "ok", case


@scaled(240)
@given(data=st.data())
def test_fuzz_mutated_safetensors(fuzz_worker, files, tmp_path_factory, data):
    which = data.draw(st.sampled_from(["tokenizer", "case"]))
    seed = files["tokenizer"] if which == "tokenizer" else data.draw(st.sampled_from(files["cases"]))
    path = tmp_path_factory.getbasetemp() / f"mutated_{which}.safetensors"
    path.write_bytes(data.draw(mutated([seed.read_bytes()])))
    check(fuzz_worker.run("tokenizer" if which == "tokenizer" else "checkpoint", path), path)


_ST_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "C64", "U64", "X9", ""]


@st.composite
def safetensors_files(draw, model) -> bytes:
    """A safetensors file written by hand from the tiny 4DMoT's keys, with hostile dtypes / shapes / offsets /
    metadata drawn in."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    header: dict = {}
    blobs, offset = [], 0
    for key, tensor in state.items():
        raw = tensor.numpy().tobytes()
        entry = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + len(raw)]}
        if draw(st.integers(0, 20)) == 0:
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            entry[field] = draw(st.one_of(
                st.sampled_from(_ST_DTYPES), st.lists(st.sampled_from([0, 1, 3, 2**31, 2**40, -1]), max_size=5),
                json_values))
        header[key] = entry
        blobs.append(raw)
        offset += len(raw)
    metadata = {"format": "pt"}
    if draw(st.booleans()):
        metadata["mtv_tokenizer_config"] = draw(st.one_of(
            st.just(TINY_CONFIG.to_json()),
            st.builds(lambda k, v: json.dumps(TINY_CONFIG.to_dict() | {k: v}),
                      st.sampled_from(list(TINY_CONFIG.to_dict())), json_values),
            json_values.map(json_text), deeply_nested()))
    if draw(st.booleans()):
        metadata["mtv_tokenizer_stats"] = draw(st.one_of(json_values.map(json_text), st.just(json.dumps(
            {"mean": [[0.0] * 3] * 24, "std": [[float(draw(st.sampled_from([1, 0, -1, 1e300])))] * 3] * 24}))))
    header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    if draw(st.integers(0, 10)) == 0:
        text = draw(st.one_of(json_values.map(json_text), deeply_nested())).encode()
    size = len(text) if draw(st.integers(0, 10)) else draw(st.sampled_from([0, 1, 2**31, 2**63]))
    return struct.pack("<Q", size) + text + b"".join(blobs)


@scaled(240)
@given(data=st.data())
def test_fuzz_safetensors_headers(fuzz_worker, tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "header.safetensors"
    path.write_bytes(data.draw(safetensors_files(_TINY_TOKENIZER)))
    check(fuzz_worker.run("tokenizer", path), path)


_TINY_TOKENIZER = tiny_model(TINY_CONFIG, seed=0)


@st.composite
def torch_payloads(draw) -> object:
    """What a hostile .pt holds: the tiny 4DMoT state with odd tensors (expanded views, int/bool weights, empty
    ones, wrong shapes), non-tensor values, other wrappers."""
    original = {k: v.clone() for k, v in _TINY_TOKENIZER.state_dict().items()}
    state = dict(original)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(state)))
        tensor = original[key]
        state[key] = draw(st.sampled_from([
            torch.zeros(1).expand(*tensor.shape), torch.zeros(1).as_strided((1000, 1000), (0, 0)),
            tensor.long(), tensor.bool(), tensor.half(), torch.zeros(0), torch.tensor(3),
            tensor.t() if tensor.ndim == 2 else tensor, "not a tensor", 7, None,
        ]))
    wrapper = draw(st.sampled_from(["module", "state_dict", "model", "none", "list", "nested"]))
    if wrapper == "none":
        return state
    if wrapper == "list":
        return [state]
    if wrapper == "nested":
        return {"module": {"module": {"module": {"module": state}}}}
    return {wrapper: state, "ds_version": draw(st.sampled_from(["0.16", 3, None]))}


@scaled(200)
@given(data=st.data())
def test_fuzz_torch_files(fuzz_worker, files, tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.pt"
    if data.draw(st.booleans()):
        path.write_bytes(data.draw(mutated([files["tokenizer_pt"].read_bytes()], max_ops=4)))
    else:
        buffer = io.BytesIO()
        torch.save(data.draw(torch_payloads()), buffer, _use_new_zipfile_serialization=data.draw(st.booleans()))
        path.write_bytes(buffer.getvalue())
    check(fuzz_worker.run("tokenizer", path), path)


def _mutate_json(data, original: dict) -> str:
    kind = data.draw(st.sampled_from(["field", "field", "random", "deep", "bytes", "list"]))
    if kind == "field":
        changed = dict(original)
        key = data.draw(st.sampled_from(sorted(changed) + ["num_layers", "weight_map"]))
        changed[key] = data.draw(st.one_of(json_values, st.sampled_from([0, -1, 10**6, 10**9, 2**62, 1.5, True, "42"])))
        return json_text(changed)
    if kind == "random":
        return json_text(data.draw(json_values))
    if kind == "deep":
        return data.draw(deeply_nested())
    if kind == "list":
        return json_text(list(original.items()))
    return data.draw(mutated([json.dumps(original).encode()], max_ops=3)).decode("latin-1")


@scaled(120)
@given(data=st.data())
def test_fuzz_dit_folder_config_and_index(fuzz_worker, files, tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp() / "CogVideoX_fuzz"
    if not folder.exists():
        shutil.copytree(files["dit"], folder)
    original_config = json.loads((files["dit"] / "config.json").read_text())
    original_index = json.loads((files["dit"] / INDEX_NAME).read_text())
    (folder / "config.json").write_text(json.dumps(original_config))
    (folder / INDEX_NAME).write_text(json.dumps(original_index))
    which = data.draw(st.sampled_from(["config", "index", "shard_names"]))
    if which == "config":
        (folder / "config.json").write_text(_mutate_json(data, original_config))
    elif which == "index":
        (folder / INDEX_NAME).write_text(_mutate_json(data, original_index))
    else:
        index = json.loads(json.dumps(original_index))
        key = data.draw(st.sampled_from(sorted(index["weight_map"])))
        index["weight_map"][key] = data.draw(st.sampled_from([
            "../../../etc/passwd.safetensors", "/etc/hosts.safetensors", "..", ".", "", "missing.safetensors",
            "sub/../diffusion_pytorch_model-00001-of-00002.safetensors", "config.json", "\u0000.safetensors"]))
        (folder / INDEX_NAME).write_text(json.dumps(index))
    check(fuzz_worker.run("dit", folder), folder)


@scaled(80)
@given(data=st.data())
def test_fuzz_vae_config(fuzz_worker, files, tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp() / "vae_fuzz"
    if not folder.exists():
        shutil.copytree(files["vae"], folder)
    original = json.loads((files["vae"] / "config.json").read_text())
    (folder / "config.json").write_text(_mutate_json(data, original))
    check(fuzz_worker.run("vae", folder), folder)


def test_shard_index_fixture_is_sharded(files):
    index = json.loads((files["dit"] / INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) >= 2
    assert np.isfinite(len(index["weight_map"]))
