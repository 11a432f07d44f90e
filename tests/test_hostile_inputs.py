"""One regression test per hole found by attacking the pack's inputs (each failed on the code before the fix).

Files that could crash, hang or exhaust memory on a vulnerable loader are loaded in the fuzz worker
(``tests/_fuzz.py``: a subprocess with a memory ceiling and a timeout), so a regression fails the test
instead of taking pytest down.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _fuzz import pk_build, pk_bytes, pk_call, pk_global, pk_int, pk_str, pk_tuple
from PIL import Image
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError, open_checkpoint
from mtv_pack.mtv_core.cli import main
from mtv_pack.mtv_core.dit.pipeline_7b import prepare_reference, sample_7b
from mtv_pack.mtv_core.dit.tiny import INDEX_NAME, write_tiny_mvdit7b
from mtv_pack.mtv_core.dit.vae import write_tiny_vae
from mtv_pack.mtv_core.errors import InputError, LimitError
from mtv_pack.mtv_core.files import contained_path
from mtv_pack.mtv_core.motion import JointSequence, load_motion, procedural_motion, save_motion
from mtv_pack.mtv_core.motion.safe_pickle import UnsafePickleError
from mtv_pack.mtv_core.tokenizer.testing import TINY_CONFIG, write_tiny_checkpoint
from mtv_pack.mtv_core.video import write_mp4

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]


def _upstream(pose_program: bytes) -> bytes:
    """A protocol-2 upstream motion pickle: [{"pose": <program>}]."""
    return b"\x80\x02]" + b"(" + b"}" + pk_str("pose") + pose_program + b"s" + b"e."


def _dtype(spec: str, flags: int | None = None) -> bytes:
    obj = pk_call(pk_global("numpy", "dtype"), pk_str(spec), b"\x89", b"\x88")
    if flags is not None:  # numpy's pickled dtype state, flags last
        obj = pk_build(obj, pk_tuple(pk_int(3), pk_str("|"), b"NNN", pk_int(-1), pk_int(-1), pk_int(flags)))
    return obj


def _worker_refuses(worker, path: Path, *words: str, timeout: float | None = None) -> str:
    verdict = worker.run("motion", path, timeout=timeout)
    assert verdict["outcome"] == "input_error", verdict
    assert str(path) in verdict["message"] and all(w in verdict["message"] for w in words), verdict["message"]
    return verdict["message"]


# --- memory safety in the unpickler ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["setstate", "scalar", "frombuffer"])
def test_object_dtype_with_forged_flags_is_refused_not_a_segfault(fuzz_worker, tmp_path, kind):
    """numpy takes a pickled dtype's flags from the file: clearing the object flags made raw bytes object
    pointers, and the first use (here: copying the item's metadata) crashed the process."""
    forged = _dtype("O8", flags=0)
    if kind == "setstate":
        base = pk_call(pk_global("numpy._core.multiarray", "_reconstruct"), pk_global("numpy", "ndarray"),
                       pk_tuple(pk_int(0)), pk_bytes(b"b"))
        program = pk_build(base, pk_tuple(pk_int(1), pk_tuple(pk_int(2)), forged, b"\x89", pk_bytes(b"\x41" * 16)))
    elif kind == "scalar":
        program = pk_call(pk_global("numpy._core.multiarray", "scalar"), forged, pk_bytes(b"\x41" * 8))
    else:
        program = pk_call(pk_global("numpy._core.numeric", "_frombuffer"), pk_bytes(b"\x41" * 16), forged,
                          pk_tuple(pk_int(2)), pk_str("C"))
    pose = pk_call(pk_global("numpy._core.numeric", "_frombuffer"), pk_bytes(np.ones((2, 24, 3), np.float32).tobytes()),
                   _dtype("<f4"), pk_tuple(pk_int(2), pk_int(24), pk_int(3)), pk_str("C"))
    path = tmp_path / "forged.pkl"
    path.write_bytes(b"\x80\x02]" + b"(" + b"}(" + pk_str("pose") + pose + pk_str("video_path") + program + b"u" + b"e.")
    _worker_refuses(fuzz_worker, path, "object")


def test_tensor_over_a_2d_storage_is_refused(fuzz_worker, tmp_path):
    """A tensor view was bounds-checked against ``storage.size`` but sliced along the storage's first axis:
    over a 2-D array it read past the end."""
    storage = pk_call(pk_global("numpy._core.numeric", "_frombuffer"), pk_bytes(np.zeros((100, 1000), np.float32)
                      .tobytes()), _dtype("<f4"), pk_tuple(pk_int(100), pk_int(1000)), pk_str("C"))
    program = pk_call(pk_global("torch._utils", "_rebuild_tensor_v2"), storage, pk_int(90),
                      pk_tuple(pk_int(1), pk_int(24), pk_int(3)), pk_tuple(pk_int(1), pk_int(3), pk_int(1)), b"\x89",
                      pk_call(pk_global("collections", "OrderedDict")))
    path = tmp_path / "storage2d.pkl"
    path.write_bytes(_upstream(program))
    _worker_refuses(fuzz_worker, path, "tensor storage")


def test_numpy_ndarray_cannot_be_called_for_uninitialised_memory(tmp_path):
    path = tmp_path / "uninit.pkl"
    path.write_bytes(_upstream(pk_call(pk_global("numpy", "ndarray"), pk_tuple(pk_int(2), pk_int(24), pk_int(3)),
                                       pk_str("f4"))))
    with pytest.raises(UnsafePickleError, match=r"uninit\.pkl.*numpy\.ndarray may not be called"):
        load_motion(path)


# --- denial of service -----------------------------------------------------------------------------------


def test_only_latin1_byte_strings_are_decoded(tmp_path):
    """Any codec was accepted where numpy's Python 2 byte strings need latin-1; some are quadratic."""
    path = tmp_path / "codec.pkl"
    text = pk_call(pk_global("_codecs", "encode"), pk_str("a" * 5000), pk_str("punycode"))
    path.write_bytes(b"\x80\x02]" + b"(" + b"}" + pk_str("pose") + pk_call(
        pk_global("numpy._core.multiarray", "_reconstruct"), pk_global("numpy", "ndarray"), pk_tuple(pk_int(0)),
        text) + b"s" + b"e.")
    with pytest.raises(UnsafePickleError, match=r"codec\.pkl.*latin-1"):
        load_motion(path)


def test_stride0_tensor_cannot_demand_gigabytes(fuzz_worker, tmp_path):
    """A 1-element storage viewed with stride 0 as (100M, 24, 3) expanded to 29 GB on rebuild."""
    with pytest.MonkeyPatch.context():
        tensor = torch.zeros(1).as_strided((100_000_000, 24, 3), (0, 0, 0))
        blob = pickle.dumps({"joints3d_nonparam": [[tensor]]}, protocol=2)
    path = tmp_path / "stride0.pkl"
    path.write_bytes(blob)
    assert len(blob) < 2000
    _worker_refuses(fuzz_worker, path, "over the limit")


def test_pickle_memo_index_cannot_demand_gigabytes(fuzz_worker, tmp_path):
    """An 11-byte pickle storing one memo entry at index 2**28 made the C unpickler allocate and clear 2 GB."""
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x02Nr\xff\xff\xff\x0f0N.")
    verdict = fuzz_worker.run("motion", path)
    # read for what it is (a pickle of None), not a MemoryError under the worker's ceiling
    assert verdict["outcome"] == "input_error" and "unknown motion format" in verdict["message"], verdict


def test_colliding_dictionary_keys_are_refused(tmp_path):
    """Tuple keys (and integers beyond 64 bits) can be chosen to share a hash, making a dict quadratic."""
    path = tmp_path / "keys.pkl"
    path.write_bytes(b"\x80\x02}" + pk_tuple(pk_int(1), pk_int(2)) + pk_int(1) + b"s.")
    with pytest.raises(UnsafePickleError, match=r"keys\.pkl.*dictionary keys"):
        load_motion(path)


def _npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_npz_member_header_claiming_a_huge_shape(fuzz_worker, tmp_path):
    """numpy allocates the shape an .npy header claims before reading; 20 GB from a 200-byte member."""
    path = tmp_path / "claims.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("joints_mm.npy", _npy_header((70_000_000, 24, 3)) + b"\x00" * 64)
    _worker_refuses(fuzz_worker, path, "header says shape")


def test_npz_members_are_decompressed_only_when_used_and_within_budget(tmp_path):
    """Every member was decompressed (an unused one too), and a member could decompress to gigabytes."""
    seq = procedural_motion("walk", frames=8)
    good = io.BytesIO()
    np.save(good, seq.joints_mm)
    path = tmp_path / "unused.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("joints_mm.npy", good.getvalue())
        info = zipfile.ZipInfo("junk.npy")
        archive.writestr(info, b"never read", compress_type=zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"junk.npy") + len(b"junk.npy")  # corrupt the unused member's data after its local header
    raw[at : at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(raw))
    assert np.array_equal(load_motion(path).joints_mm, seq.joints_mm)  # the unused member is never opened

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("joints_mm.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((1_000_000, 24, 3)))
            zeros = bytes(1 << 24)
            for _ in range(288_000_000 // len(zeros)):
                member.write(zeros)
            member.write(bytes(288_000_000 % len(zeros)))
    assert bomb.stat().st_size < 1_000_000  # 288 MB of joints in under a megabyte
    with pytest.raises(LimitError, match=r"bomb\.npz.*over the limit"):
        load_motion(bomb)


def _dit_folder(tmp_path: Path, **config_changes) -> Path:
    folder = write_tiny_mvdit7b(tmp_path / "CogVideoX", as_folder=True)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _dit17b_folder(tmp_path: Path, **config_changes) -> Path:
    from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, save_mvdit17b, tiny_mvdit17b_config

    config = tiny_mvdit17b_config()
    folder = save_mvdit17b(random_state_dict_17b(config, seed=0), tmp_path / "Wan", config, as_folder=True)
    data = json.loads((folder / "config.json").read_text())
    data.update(config_changes)
    (folder / "config.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("target", ["dit", "dit17b", "dit17b_keys", "tokenizer", "vae"])
def test_config_counts_are_checked_against_the_weights_before_building(fuzz_worker, tmp_path, target):
    """config.json / metadata layer and block counts were trusted: a million layers built for minutes (the 17B:
    from its config.json or from a block index in a key name)."""
    from safetensors.torch import load_file

    if target == "dit":
        path, field = _dit_folder(tmp_path, num_layers=1_000_000), "num_layers"
    elif target == "dit17b":
        path, field = _dit17b_folder(tmp_path, num_layers=1_000_000), "num_layers"
    elif target == "dit17b_keys":
        from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, tiny_mvdit17b_config

        state = random_state_dict_17b(tiny_mvdit17b_config(), seed=0)
        state["blocks.999999999.norm3.weight"] = torch.ones(4)
        path, field, target = tmp_path / "far_block.safetensors", "num_layers", "dit17b"
        save_file(state, str(path))
    elif target == "tokenizer":
        path, field = write_tiny_checkpoint(tmp_path / "tok.safetensors", with_config=False), "num_res_blocks"
        config = TINY_CONFIG.to_dict() | {field: 1_000_000}
        save_file(load_file(str(path)), str(path), metadata={"mtv_tokenizer_config": json.dumps(config)})
    else:
        path, field = write_tiny_vae(tmp_path / "vae", as_folder=True), "layers_per_block"
        config = json.loads((path / "config.json").read_text())
        config[field] = 1_000_000
        (path / "config.json").write_text(json.dumps(config))
    verdict = fuzz_worker.run(target, path, timeout=60)
    assert verdict["outcome"] == "input_error" and verdict["seconds"] < 30, verdict
    assert str(path) in verdict["message"] and field in verdict["message"]


@pytest.mark.parametrize("target", ["dit", "dit17b", "tokenizer"])
def test_config_must_agree_with_the_weights(tmp_path, target):
    from safetensors.torch import load_file

    from mtv_pack.mtv_core.dit.loading import load_mvdit7b
    from mtv_pack.mtv_core.dit.loading_17b import load_mvdit17b
    from mtv_pack.mtv_core.tokenizer.loading import load_tokenizer

    if target == "dit":
        path = _dit_folder(tmp_path, num_layers=3)  # the weights hold 2
        with pytest.raises(CheckpointError, match=r"num_layers=3 but the weights have 2"):
            load_mvdit7b(path, dtype="fp32")
    elif target == "dit17b":
        layers = json.loads((_dit17b_folder(tmp_path / "probe") / "config.json").read_text())["num_layers"]
        path = _dit17b_folder(tmp_path, num_layers=layers + 1, ffn_dim=7)
        with pytest.raises(CheckpointError, match=rf"config.json.*ffn_dim=7 but the weights have \d+; "
                                                  rf"num_layers={layers + 1} but the weights have {layers}"):
            load_mvdit17b(path, dtype="fp32")
    else:
        path = write_tiny_checkpoint(tmp_path / "tok.safetensors", with_config=False)
        config = TINY_CONFIG.to_dict() | {"code_dim": 4096}
        save_file(load_file(str(path)), str(path), metadata={"mtv_tokenizer_config": json.dumps(config)})
        with pytest.raises(CheckpointError, match=r"code_dim=4096 but the weights have 48"):
            load_tokenizer(path)


def test_thin_reference_is_cropped_before_it_is_resized(fuzz_worker, tmp_path):
    """A 64 x 100000 reference was resized whole to 512 x 800000 (4.9 GB) before the centre crop."""
    path = tmp_path / "thin.npy"
    thin = np.zeros((100_000, 64, 3), np.uint8)
    thin[50_000 - 4 : 50_000 + 4] = 255  # a bright band in the centre survives the crop
    np.save(path, thin)
    verdict = fuzz_worker.run("image_array", path, width=512, height=512)
    assert verdict["outcome"] == "ok", verdict
    ref = prepare_reference(thin, 512, 512)
    assert ref.shape == (512, 512, 3) and ref[256, 256].min() > 0.9 and ref[0].max() < 0.05


def test_crop_first_keeps_the_result_for_images_of_the_target_aspect():
    rng = np.random.default_rng(0)
    image = (rng.random((300, 200, 3)) * 255).astype(np.uint8)  # same aspect as 96 x 144
    expected = torch.nn.functional.interpolate(torch.from_numpy(image).float().div(255).permute(2, 0, 1)[None],
                                               size=(144, 96), mode="bilinear", antialias=True)[0].permute(1, 2, 0)
    assert torch.equal(prepare_reference(image, 96, 144), expected.clamp(0, 1))


def test_metadata_stays_small_so_what_loads_saves_and_loads_again(tmp_path):
    """Found by the long fuzz run: an empty (2000, 2000, 0) array as a metadata value became 4 million empty
    lists, which saved as 24 MB of JSON that the loader then refused."""
    items = [{"pose": np.full((3, 24, 3), 1000.0, np.float32), "video_path": np.zeros((2000, 2000, 0), np.float32),
              "video_width": np.arange(4)}]
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps(items))
    seq = load_motion(path)
    assert "video_path" not in seq.meta and seq.meta["video_width"] == [0, 1, 2, 3]
    back = load_motion(save_motion(seq, tmp_path / "again.npz"))
    assert back.meta == seq.meta and np.array_equal(back.joints_mm, seq.joints_mm)
    seq.meta["huge"] = "x" * (17 << 20)  # metadata a later step made too large: refused before writing
    with pytest.raises(LimitError, match="metadata"):
        save_motion(seq, tmp_path / "too_big.npz")
    assert not (tmp_path / "too_big.npz").exists()


# --- process-global side effects -------------------------------------------------------------------------


def test_refused_file_leaves_allow_listed_globals_untouched(tmp_path):
    """BUILD on an allow-listed global set attributes on it: renaming numpy's _frombuffer broke numpy pickling
    for the rest of the process, although the file itself was refused."""
    path = tmp_path / "tamper.pkl"
    tamper = pk_build(pk_global("numpy._core.numeric", "_frombuffer"),
                      b"N}" + pk_str("__qualname__") + pk_str("gone") + b"s\x86") + b"0"
    path.write_bytes(b"\x80\x02" + tamper + pk_call(pk_global("os", "system"), pk_str("true")) + b".")
    code = f"""
import pickle, sys, numpy as np
sys.path.insert(0, {str(ROOT)!r})
from mtv_core.motion import load_motion
from mtv_core.errors import InputError
try:
    load_motion({str(path)!r})
except InputError:
    pass
back = pickle.loads(pickle.dumps(np.arange(3.0), protocol=5))
assert back.tolist() == [0.0, 1.0, 2.0]
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# --- path containment --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [".", "sub/..", "./", "a/../..", "/etc/x", ""])
def test_save_prefix_stays_strictly_inside_the_output_folder(tmp_path, monkeypatch, prefix):
    import mtv_pack.nodes.motion as motion_nodes
    from mtv_pack.mtv_core.errors import InputError as PackInputError  # the nodes' copy of the core

    output = tmp_path / "output"
    output.mkdir()
    monkeypatch.setenv("MTV_OUTPUT_DIR", str(output))
    with pytest.raises(PackInputError, match="filename_prefix"):
        motion_nodes.MTVSaveMotion.execute(joints=procedural_motion("wave", frames=3), filename_prefix=prefix)
    assert list(tmp_path.iterdir()) == [output] and not list(output.iterdir())


def test_contained_path_rule():
    assert contained_path("/data/out", "a/b.npz") == Path("/data/out/a/b.npz")
    assert contained_path("/data/out", "a/../b") == Path("/data/out/b")
    for name in (".", "a/..", "..", "../out2/x", "/data/out/x", "", "a\x00b"):
        with pytest.raises(InputError):
            contained_path("/data/out", name)


def test_shard_index_cannot_point_outside_the_model_folder(tmp_path):
    folder = write_tiny_mvdit7b(tmp_path / "models" / "CogVideoX", as_folder=True)
    weights = folder / "diffusion_pytorch_model.safetensors"
    outside = tmp_path / "elsewhere" / "stolen.safetensors"
    outside.parent.mkdir()
    shutil.move(weights, outside)
    keys = list(open_checkpoint(outside).keys())
    (folder / INDEX_NAME).write_text(json.dumps({"weight_map": {k: "../../elsewhere/stolen.safetensors" for k in keys}}))
    with pytest.raises(CheckpointError, match=r"index\.json.*points outside"):
        open_checkpoint(folder)


# --- validation of numbers -----------------------------------------------------------------------------------


def test_values_overflowing_float32_are_refused():
    joints = np.full((2, 24, 3), 1e39)  # finite as float64, inf as float32
    with pytest.raises(InputError, match="magnitude"):
        JointSequence(joints)


@pytest.mark.parametrize("dtype", [np.complex64, "m8[ms]", np.bool_, "U4"])
def test_only_real_numbers_are_joints(tmp_path, dtype):
    path = tmp_path / "odd.npz"
    np.savez(path, joints_mm=np.ones((3, 24, 3)).astype(dtype), fps=20.0)
    with pytest.raises(InputError, match=r"odd\.npz.*real numbers"):
        load_motion(path)


def test_nan_guidance_is_refused_before_sampling():
    with pytest.raises(InputError, match="motion guidance must be a finite number"):
        sample_7b(None, None, np.zeros((64, 64, 3), np.uint8), None, guidance=float("nan"))


def test_nan_vae_scaling_factor_is_refused(tmp_path):
    """A config.json scaling factor of NaN divided every latent into NaN: a black video after all the sampling."""
    from mtv_pack.mtv_core.dit.vae import load_vae

    folder = write_tiny_vae(tmp_path / "vae", as_folder=True)
    config = json.loads((folder / "config.json").read_text())
    config["scaling_factor"] = float("nan")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"vae.*scaling_factor must be a positive finite number"):
        load_vae(folder, dtype=torch.float32)


def test_nan_reference_pixels_are_refused():
    image = np.full((80, 80, 3), 0.5, np.float32)
    image[40, 40, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        prepare_reference(image, 64, 64)


@pytest.mark.parametrize("fps", [float("nan"), float("inf"), 1e9, 0.0])
def test_absurd_fps_is_refused_before_writing(tmp_path, fps):
    with pytest.raises(InputError, match="frames per second"):
        write_mp4(tmp_path / "v.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=fps)
    assert not list(tmp_path.iterdir())
    np.savez(tmp_path / "fast.npz", joints_mm=np.ones((3, 24, 3)), fps=fps)
    with pytest.raises(InputError, match=r"fast\.npz.*frames per second"):
        load_motion(tmp_path / "fast.npz")


def test_16bit_reference_keeps_its_range(tmp_path):
    from mtv_pack.mtv_core.commands.animate import load_reference

    grey = np.full((70, 90), 32768, np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    image = load_reference(tmp_path / "deep.png")
    ref = prepare_reference(image, 64, 64)
    assert abs(float(ref.mean()) - 0.5) < 0.01  # not clipped to white


@pytest.fixture(scope="module")
def animate_workspace(tmp_path_factory):
    from mtv_pack.mtv_core.commands.animate import write_tiny_models

    root = tmp_path_factory.mktemp("hostile_cli")
    write_tiny_models(root / "models")
    save_motion(procedural_motion("dance", frames=49), root / "dance.npz")
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(root / "ref.png")
    return root


def _animate_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["animate", "--ref", str(root / "ref.png"), "--motion", str(root / "dance.npz"), "--models",
            str(root / "models"), "--out", str(out), "--steps", "1", "--width", "64", "--height", "64", "--device",
            "cpu", *extra]


def test_unwritable_output_is_found_before_any_model_loads(animate_workspace, tmp_path, monkeypatch, caplog):
    import mtv_pack.mtv_core.tokenizer.loading as tokenizer_loading

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before the output path was checked")

    monkeypatch.setattr(tokenizer_loading, "load_tokenizer", never)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with caplog.at_level(logging.ERROR):
        assert main(_animate_args(animate_workspace, blocker / "out.mp4")) == 2
    assert "cannot write the output video" in caplog.text


@pytest.mark.parametrize("extra", [["--guidance", "nan"], ["--steps", "0"]])
def test_cli_refuses_bad_numbers_before_loading(animate_workspace, tmp_path, caplog, extra):
    with caplog.at_level(logging.ERROR):
        assert main(_animate_args(animate_workspace, tmp_path / "o.mp4", *extra)) == 2
    assert not list(tmp_path.iterdir())


# --- unnamed errors -----------------------------------------------------------------------------------------


def _int_weights(path: Path) -> Path:
    from safetensors.torch import load_file

    write_tiny_checkpoint(path)
    state = load_file(str(path))
    state["encoder.conv_in.weight"] = state["encoder.conv_in.weight"].long()
    save_file(state, str(path), metadata=open_checkpoint(path).metadata)
    return path


def _bool_weights(path: Path) -> Path:
    from safetensors.torch import load_file

    write_tiny_checkpoint(path)
    state = load_file(str(path))
    state["vq.codebook"] = state["vq.codebook"] > 0
    save_file(state, str(path), metadata=open_checkpoint(path).metadata)
    return path


def _truncated_member(path: Path) -> Path:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, joints_mm=np.random.default_rng(0).normal(size=(40, 24, 3)), fps=20.0)
    raw = bytearray(buffer.getvalue())
    start = raw.index(b"joints_mm.npy") + 40
    raw[start : start + 200] = bytes(200)  # damage the deflate stream of the member
    path.write_bytes(bytes(raw))
    return path


def _deep_meta(path: Path) -> Path:
    np.savez(path, joints_mm=np.ones((3, 24, 3)), fps=20.0, meta=np.array("[" * 100_000 + "]" * 100_000))
    return path


def _ragged_pose(path: Path) -> Path:
    path.write_bytes(pickle.dumps([{"pose": [np.zeros((24, 3)), np.zeros((23, 3))]}]))
    return path


def _expanded_view(path: Path) -> Path:
    torch.save({"module": {"vq.codebook": torch.zeros(1).as_strided((100_000, 100_000), (0, 0))}}, path)
    return path


@pytest.mark.parametrize(("name", "make", "load"), [
    ("config_not_json", lambda p: _dit_text(p, "config.json", "{not json"), "dit"),
    ("config_list", lambda p: _dit_text(p, "config.json", "[1, 2]"), "dit"),
    ("index_list", lambda p: _dit_text(p, INDEX_NAME, "[]"), "dit"),
    ("index_not_json", lambda p: _dit_text(p, INDEX_NAME, "\x00\x01"), "dit"),
    ("int_weights.safetensors", _int_weights, "tokenizer"),
    ("bool_weights.safetensors", _bool_weights, "tokenizer"),
    ("empty.pt", lambda p: p.write_bytes(b"") or p, "tokenizer"),
    ("expanded.pt", _expanded_view, "checkpoint"),
    ("truncated.npz", _truncated_member, "motion"),
    ("deep_meta.npz", _deep_meta, "motion"),
    ("ragged.pkl", _ragged_pose, "motion"),
])
def test_broken_files_give_one_error_naming_the_file(tmp_path, name, make, load):
    from mtv_pack.mtv_core.dit.loading import load_mvdit7b
    from mtv_pack.mtv_core.tokenizer.loading import load_tokenizer

    path = make(tmp_path / name)
    loader = {"dit": lambda p: load_mvdit7b(p, dtype="fp32"), "tokenizer": load_tokenizer, "motion": load_motion,
              "checkpoint": open_checkpoint}[load]
    with pytest.raises(InputError) as info:
        loader(path)
    assert str(path) in str(info.value)


def _dit_text(path: Path, filename: str, text: str) -> Path:
    folder = write_tiny_mvdit7b(path, as_folder=True, max_shard_bytes=100_000)
    (folder / filename).write_text(text)
    return folder


def test_cli_bad_motion_file_exits_2_with_one_line(animate_workspace, tmp_path, caplog, capsys):
    bad = _deep_meta(tmp_path / "deep.npz")
    args = _animate_args(animate_workspace, tmp_path / "o.mp4")
    args[args.index("--motion") + 1] = str(bad)
    with caplog.at_level(logging.ERROR):
        assert main(args) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage() and str(bad) in errors[0].getMessage()
    assert "Traceback" not in capsys.readouterr().err


def test_metadata_too_large_to_save_is_refused_at_load(tmp_path):
    """Found by the long fuzz run: a pickle item with thousands of small metadata entries loaded, but the .npz
    Save Motion wrote of it (numpy keeps the JSON as 4-byte characters) was over the reader's member limit, so the
    saved file could not be read back. The loader now refuses such metadata, naming the file and the limit."""
    from mtv_pack.mtv_core.limits import MAX_MOTION_META_CHARS

    item = {"pose": np.zeros((49, 24, 3), np.float32)}
    item.update({f"k{i}": "x" * 4000 for i in range(MAX_MOTION_META_CHARS // 4000 + 2)})
    path = tmp_path / "big_meta.pkl"
    path.write_bytes(pickle.dumps([item], protocol=2))
    with pytest.raises(InputError, match=r"big_meta\.pkl.*metadata.*over the limit"):
        load_motion(path)
    small = tmp_path / "small_meta.pkl"
    small.write_bytes(pickle.dumps([{"pose": np.zeros((49, 24, 3), np.float32), "video_path": "a.mp4"}], protocol=2))
    saved = save_motion(load_motion(small), tmp_path / "round.npz")
    assert load_motion(saved).meta["video_path"] == "a.mp4"
