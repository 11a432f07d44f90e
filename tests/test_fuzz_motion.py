"""Fuzzing every motion file format the pack reads: upstream and raw-NLF pickles, npz, npy, SMPL files.

Each example is loaded in the fuzz worker (``tests/_fuzz.py``): it must load into a valid motion or be
refused with an ``InputError`` naming the file; a crash, a hang, a memory blow-up or a raw exception fails.
Seeds are the shared reference data (``motion/sampled_data.pkl``) and procedural motion written here.
"""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from _fuzz import check, pk_build, pk_bytes, pk_call, pk_global, pk_int, pk_str, pk_tuple
from _fuzz_strategies import INTERESTING, Corpus, deeply_nested, json_text, json_values, mutated, scaled
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mtv_pack.mtv_core.motion import procedural_motion, save_motion

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- seed corpus ---------------------------------------------------------------------------------------


def _cuda_tagged(data) -> bytes:
    """``pickle.dumps`` with tensor storages tagged as CUDA, as upstream process_nlf output is."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        return pickle.dumps(data)


@pytest.fixture(scope="module")
def seeds(reference, tmp_path_factory) -> dict[str, list[bytes]]:
    sampled = (reference / "motion" / "sampled_data.pkl").read_bytes()
    items = pickle.loads(sampled)  # trusted reference data, to derive small seeds
    small = [{**items[0], "pose": items[0]["pose"][:12]}, {**items[1], "pose": items[1]["pose"][5:9]}]
    pose = torch.from_numpy(items[2]["pose"][:6].copy())
    nlf_frames = [[pose[t : t + 1]] if t != 3 else [torch.zeros(0, 24, 3)] for t in range(6)]
    nlf_frames[1] = [torch.stack([pose[1], pose[1] + 900])]
    nlf = {"video_path": "clip.mp4", "video_length": 6, "video_width": 64, "video_height": 48,
           "pose": {"joints3d_nonparam": nlf_frames}}
    folder = tmp_path_factory.mktemp("motion_seeds")
    dance = procedural_motion("dance", frames=10, fps=20.0)
    npz = save_motion(dance, folder / "dance.npz").read_bytes()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, joints_mm=dance.joints_mm, fps=np.float64(25.0), valid=dance.valid,
                        meta=np.array('{"source": "compressed"}'))
    npy = io.BytesIO()
    np.save(npy, items[4]["pose"][:7])
    return {
        "pickle": Corpus([sampled] + [pickle.dumps(small, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]),
        "nlf": Corpus([_cuda_tagged(nlf), _cuda_tagged({"joints3d_nonparam": [[pose[t : t + 1] for t in range(4)]]})]),
        "npz": Corpus([npz, buffer.getvalue()]),
        "npy": Corpus([npy.getvalue()]),
    }


_SUFFIX = {"pickle": ".pkl", "nlf": ".pkl", "npz": ".npz", "npy": ".npy"}


def _load(worker, path: Path, data: bytes, **extra) -> None:
    path.write_bytes(data)
    check(worker.run("motion", path, **extra), path)


def test_seed_corpus_loads(fuzz_worker, seeds, tmp_path):
    """The unmutated seeds are valid files: the fuzz targets start from files that load."""
    for kind, blobs in seeds.items():
        for i, blob in enumerate(blobs):
            path = tmp_path / f"{kind}{i}{_SUFFIX[kind]}"
            path.write_bytes(blob)
            verdict = fuzz_worker.run("motion", path)
            assert verdict["outcome"] == "ok", (kind, i, verdict)


@scaled(600)
@given(data=st.data())
def test_fuzz_mutated_motion_files(fuzz_worker, seeds, tmp_path_factory, data):
    kind = data.draw(st.sampled_from(sorted(seeds)))
    blob = data.draw(mutated(seeds[kind]))
    _load(fuzz_worker, tmp_path_factory.getbasetemp() / f"mutated_{kind}{_SUFFIX[kind]}", blob)


# --- pickles built from random Python structures -----------------------------------------------------

_DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int16, np.uint8, np.bool_, np.complex64,
           np.dtype("m8[s]"), np.dtype("M8[D]"), np.dtype("U3"), np.dtype("S2")]
_KEYS = ["pose", "joints3d_nonparam", "video_path", "video_length", "video_height", "video_width", "poses", "betas",
         "trans", "mocap_framerate", "fps"]


def _shapes():
    frames = st.sampled_from([0, 1, 2, 5, 49])
    return st.one_of(st.tuples(frames, st.just(24), st.just(3)), st.tuples(frames, st.integers(0, 30), st.integers(0, 4)),
                     hnp.array_shapes(min_dims=0, max_dims=4, max_side=6))


arrays = st.one_of(
    hnp.arrays(st.sampled_from(_DTYPES), _shapes()),
    hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.just(24), st.just(3)),
               elements=st.sampled_from([0.0, 1e3, -1e3, 1e30, 1e300, float("nan"), float("inf")])),
    hnp.arrays(object, st.tuples(st.integers(0, 3)), elements=st.integers(-5, 5)),
)


@st.composite
def tensors(draw):
    array = draw(hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.float16]),
                            st.tuples(st.integers(0, 4), st.just(24), st.just(3))))
    tensor = torch.from_numpy(array)
    view = draw(st.sampled_from(["plain", "transpose", "slice", "expand", "stride0"]))
    if view == "transpose" and tensor.ndim == 3:
        tensor = tensor.transpose(0, 2)
    elif view == "slice":
        tensor = tensor[::2]
    elif view == "expand" and tensor.shape[0] == 1:
        tensor = tensor.expand(draw(st.integers(1, 50)), 24, 3)
    elif view == "stride0" and tensor.numel():
        tensor = tensor.flatten()[:1].as_strided((draw(st.integers(1, 2000)), 24, 3), (0, 0, 0))
    return tensor


plain_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(), st.text(max_size=8),
                          st.binary(max_size=8))
leaves = st.one_of(arrays, tensors(), plain_scalars)
trees = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=6)), inner, max_size=4)), max_leaves=12)
upstream_like = st.lists(st.fixed_dictionaries({"pose": st.one_of(arrays, tensors(), trees)},
                                               optional={k: trees for k in _KEYS[2:6]}), min_size=0, max_size=3)
nlf_like = st.fixed_dictionaries({"pose": st.fixed_dictionaries({"joints3d_nonparam": st.lists(
    st.one_of(st.lists(tensors(), max_size=2), tensors(), trees), max_size=6)})}, optional={"video_length": trees})


@scaled(600)
@given(structure=st.one_of(upstream_like, nlf_like, trees), protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_fuzz_pickled_structures(fuzz_worker, tmp_path_factory, structure, protocol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blob = _cuda_tagged(structure) if protocol == 2 else pickle.dumps(structure, protocol=protocol)
    _load(fuzz_worker, tmp_path_factory.getbasetemp() / "structure.pkl", blob)


# --- hand-assembled pickle programs around the allow-listed globals ---------------------------------------
# The pickle a hostile file holds is not one Python's pickler would write: these build the allowed calls
# (numpy array / dtype / scalar rebuilds, tensor rebuilds, codecs, OrderedDict) with adversarial arguments
# and states, plus random opcodes.


_CORE = ("numpy._core", "numpy.core")
_SPECS = ["<f4", "f8", "<i8", "|b1", "u1", "c8", "O", "O8", "|O", "V8", "U3", "S2", "m8", "M8", "f4,i4", "(2,)f4",
          "<f4\x00", "", "x" * 40]

scalar_values = st.one_of(st.sampled_from(INTERESTING), st.integers(-(2**70), 2**70), st.none(), st.booleans())


@st.composite
def dtype_objects(draw) -> bytes:
    spec = draw(st.one_of(st.sampled_from(_SPECS), st.text(max_size=6)))
    obj = pk_call(pk_global("numpy", "dtype"), pk_str(spec), b"\x89", b"\x88")
    if draw(st.booleans()):
        fields = draw(st.sampled_from([b"NNN", pk_tuple(pk_str("a")) + b"}N", b"N" + pk_tuple(pk_str("a")) + b"N"]))
        state = pk_tuple(pk_int(3), pk_str(draw(st.sampled_from(["<", ">", "|", "=", "?"]))), fields,
                       pk_int(draw(st.sampled_from([-1, 0, 4, 8, 2**31]))), pk_int(draw(st.sampled_from([-1, 1, 4]))),
                       pk_int(draw(st.sampled_from([0, 63, 1, 16, 255]))))  # flags: object / list-pickle bits
        obj = pk_build(obj, state)
    return obj


@st.composite
def shape_tuples(draw) -> tuple[bytes, int]:
    dims = draw(st.lists(st.one_of(st.integers(0, 30), st.sampled_from([24, 3, -1, 2**31, 2**40, 2**62])),
                         max_size=4))
    count = 1
    for d in dims:
        count *= max(d, 0)
    return pk_tuple(*(pk_int(d) for d in dims)), count


@st.composite
def array_programs(draw) -> bytes:
    shape, count = draw(shape_tuples())
    itemsize = draw(st.sampled_from([1, 2, 4, 8]))
    nbytes = draw(st.one_of(st.just(min(count * itemsize, 4096)), st.integers(0, 64)))
    raw = draw(st.binary(min_size=min(nbytes, 4096), max_size=min(nbytes, 4096)))
    core = draw(st.sampled_from(_CORE))
    kind = draw(st.sampled_from(["reconstruct", "frombuffer", "scalar", "ndarray"]))
    if kind == "reconstruct":
        cls = draw(st.sampled_from([pk_global("numpy", "ndarray"), pk_global("collections", "OrderedDict"), b"N"]))
        base = pk_call(pk_global(f"{core}.multiarray", "_reconstruct"), cls, pk_tuple(pk_int(0)), pk_bytes(b"b"))
        state_items = [pk_int(draw(st.sampled_from([1, 0, 2]))), shape, draw(dtype_objects()),
                       draw(st.sampled_from([b"\x89", b"\x88", pk_int(2)])),
                       draw(st.sampled_from([pk_bytes(raw), pk_str(raw.decode("latin-1")), b"]" + pk_int(1) + b"a"]))]
        if draw(st.booleans()):
            state_items = state_items[1:]
        return pk_build(base, pk_tuple(*state_items))
    if kind == "frombuffer":
        return pk_call(pk_global(f"{core}.numeric", "_frombuffer"), pk_bytes(raw), draw(dtype_objects()), shape,
                     pk_str(draw(st.sampled_from(["C", "F", "K"]))))
    if kind == "scalar":
        return pk_call(pk_global(f"{core}.multiarray", "scalar"), draw(dtype_objects()), pk_bytes(raw[:16]))
    return pk_call(pk_global("numpy", "ndarray"), shape, pk_str(draw(st.sampled_from(_SPECS[:3]))))


def _storage_blob(n: int, dtype: torch.dtype) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.zeros(n, dtype=dtype).storage().__reduce__()[1][0]


@st.composite
def tensor_programs(draw) -> bytes:
    blob = _storage_blob(draw(st.integers(0, 80)), draw(st.sampled_from([torch.float32, torch.int64, torch.bool])))
    if draw(st.booleans()):
        blob = draw(mutated([blob], max_ops=3))
    storage = draw(st.sampled_from([
        pk_call(pk_global("torch.storage", "_load_from_bytes"), pk_bytes(blob)),
        draw(array_programs()),  # a numpy array where a storage belongs (e.g. 2-D)
        pk_int(5),
    ]))
    dims = draw(st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 24, 2000, 2**31, -1]),
                                   st.sampled_from([0, 1, 3, 72, -1, 2**40])), max_size=4))
    size = pk_tuple(*(pk_int(s) for s, _ in dims))
    stride = pk_tuple(*(pk_int(st_) for _, st_ in dims)) if draw(st.booleans()) else pk_tuple(pk_int(1))
    offset = pk_int(draw(st.sampled_from([0, 1, 5, 79, -1, 2**40])))
    hooks = pk_call(pk_global("collections", "OrderedDict"))
    return pk_call(pk_global("torch._utils", "_rebuild_tensor_v2"), storage, offset, size, stride, b"\x89", hooks)


@st.composite
def misc_programs(draw) -> bytes:
    kind = draw(st.sampled_from(["codec", "build_global", "ordered", "deny", "memo", "keys", "lengths"]))
    if kind == "codec":
        return pk_call(pk_global("_codecs", "encode"), pk_str(draw(st.text(max_size=200))),
                     pk_str(draw(st.sampled_from(["latin1", "latin-1", "utf-8", "punycode", "idna", "rot13",
                                                "base64", "bz2_codec", "zlib_codec"]))))
    if kind == "build_global":
        target = draw(st.sampled_from([("collections", "OrderedDict"), ("numpy", "dtype"), ("_codecs", "encode"),
                                       (f"{_CORE[0]}.multiarray", "_reconstruct"), ("numpy", "ndarray")]))
        state = draw(st.sampled_from([b"}" + pk_str("__reduce__") + b"Ns",
                                      b"N}" + pk_str("__defaults__") + b"N" + b"s\x86"]))
        return pk_build(pk_global(*target), state) + b"0" + pk_call(pk_global("collections", "OrderedDict"))
    if kind == "ordered":
        key = draw(st.sampled_from([pk_str("pose"), pk_tuple(pk_int(1), pk_int(2)), pk_int(2**80), b"N"]))
        return pk_call(pk_global("collections", "OrderedDict"), b"]" + b"(" + pk_tuple(key, pk_int(1)) + b"e")
    if kind == "deny":
        return pk_call(pk_global(*draw(st.sampled_from([("os", "system"), ("builtins", "eval"), ("posix", "system"),
                                                    ("numpy.dtypes", "Float32DType"), ("copyreg", "_reconstructor"),
                                                    ("torch", "load")]))), pk_str("true"))
    if kind == "memo":
        index = draw(st.sampled_from([0, 1, 255, 2**16, 2**24, 2**31 - 1, 2**32 - 1]))
        return b"N" + b"r" + struct.pack("<I", index) + b"0" + b"j" + struct.pack("<I", index)
    if kind == "keys":
        key = draw(st.sampled_from([pk_tuple(pk_int(1), pk_int(2)), pk_int(2**80), b"N", pk_str("k"), b"G" + struct.pack(
            ">d", float("nan"))]))
        return b"}" + key + pk_int(1) + b"s"
    opcode = draw(st.sampled_from([b"\x8e", b"\x8d", b"\x96", b"\x95", b"T", b"B", b"X", b"\x8b"]))
    width = 8 if opcode in (b"\x8e", b"\x8d", b"\x96", b"\x95") else 4
    length = draw(st.sampled_from([0, 1, 2**20, 2**31 - 1, 2**32 - 1] + ([2**40, 2**63] if width == 8 else [])))
    return opcode + length.to_bytes(width, "little") + b"abc"


random_opcodes = st.lists(st.one_of(
    st.sampled_from([b"(", b")", b"]", b"}", b"t", b"\x85", b"\x86", b"\x87", b"R", b"b", b"s", b"u", b"a", b"e",
                     b"l", b"d", b"0", b"1", b"2", b"N", b"\x88", b"\x89", b"\x94", b"\x81", b"\x92", b"\x8f", b"\x90",
                     b"\x91"]),
    st.builds(pk_int, scalar_values.filter(lambda v: isinstance(v, int) and not isinstance(v, bool))),
    st.builds(pk_str, st.sampled_from(_SPECS + ["latin1", "pose"])),
    st.builds(lambda m: pk_global(*m), st.sampled_from([(f"{_CORE[0]}.multiarray", "_reconstruct"), ("numpy", "ndarray"),
                                                      ("numpy", "dtype"), ("_codecs", "encode"),
                                                      ("collections", "OrderedDict"), ("torch._utils",
                                                                                       "_rebuild_tensor_v2")])),
), max_size=30).map(b"".join)


_VALID_POSE = pk_call(pk_global("numpy._core.numeric", "_frombuffer"),
                      pk_bytes(np.full((2, 24, 3), 1000.0, np.float32).tobytes()),
                      pk_call(pk_global("numpy", "dtype"), pk_str("<f4"), b"\x89", b"\x88"),
                      pk_tuple(pk_int(2), pk_int(24), pk_int(3)), pk_str("C"))


@scaled(1200)
@given(program=st.one_of(array_programs(), tensor_programs(), misc_programs(), random_opcodes),
       wrap=st.sampled_from(["bare", "upstream", "meta", "nlf"]),
       protocol=st.sampled_from([b"\x80\x02", b"\x80\x04", b""]))
def test_fuzz_pickle_programs(fuzz_worker, tmp_path_factory, program, wrap, protocol):
    if wrap == "upstream":
        program = b"]" + b"(" + b"}" + pk_str("pose") + program + b"s" + b"e"
    elif wrap == "meta":  # a valid pose, the program as metadata (which the loader copies into the sequence)
        program = b"]" + b"(" + b"}(" + pk_str("pose") + _VALID_POSE + pk_str("video_path") + program + b"u" + b"e"
    elif wrap == "nlf":
        program = b"}" + pk_str("joints3d_nonparam") + b"]" + b"(" + b"]" + program + b"a" + b"e" + b"s"
    _load(fuzz_worker, tmp_path_factory.getbasetemp() / "program.pkl", protocol + program + b".")


# --- npy / npz ------------------------------------------------------------------------------------------

_DESCRS = ["'<f4'", "'<f8'", "'|u1'", "'<i8'", "'|b1'", "'<c8'", "'<m8[s]'", "'<M8[D]'", "'|O'", "'|V8'", "'<U3'",
           "'|S2'", "[('a', '<f4')]", "[('a', '|O')]", "'<f4,<i4'", "'>f4'", "'<f2'", "'|S0'", "object"]


@st.composite
def npy_files(draw, joints_like: bool = False) -> bytes:
    frames = draw(st.sampled_from([0, 1, 5, 49, 100_001, 2**31, 2**40]))
    shape = (frames, 24, 3) if joints_like or draw(st.booleans()) else draw(
        st.lists(st.sampled_from([0, 1, 3, 24, 2**20, -1]), max_size=4).map(tuple))
    descr = draw(st.sampled_from(_DESCRS))
    header = "{" + f"'descr': {descr}, 'fortran_order': {draw(st.sampled_from(['False', 'True', '0', 'None']))}, " \
             f"'shape': {shape!r}, " + "}"
    if draw(st.integers(0, 9)) == 0:
        header = draw(st.text(max_size=60))
    header_bytes = header.encode("latin-1", "replace")
    version = draw(st.sampled_from([1, 2, 3]))
    pad = (-(10 + len(header_bytes) + 1 + (2 if version > 1 else 0))) % 64
    header_bytes += b" " * pad + b"\n"
    length = struct.pack("<H" if version == 1 else "<I", len(header_bytes) if draw(st.integers(0, 9)) else
                         draw(st.sampled_from([0, 1, 2**15, 65535])))
    count = 1
    for d in shape:
        count *= max(d, 0) if isinstance(d, int) else 1
    data_len = draw(st.one_of(st.just(min(count * 4, 8192)), st.integers(0, 300)))
    data = draw(st.one_of(st.binary(min_size=data_len, max_size=data_len),
                          st.just(np.full(data_len // 4, 1000.0, np.float32).tobytes())))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header_bytes + data


@scaled(400)
@given(blob=npy_files())
def test_fuzz_npy_headers(fuzz_worker, tmp_path_factory, blob):
    _load(fuzz_worker, tmp_path_factory.getbasetemp() / "fuzz.npy", blob)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


member_names = st.sampled_from(["joints_mm", "fps", "valid", "meta", "poses", "pose", "trans", "betas",
                                "mocap_framerate", "junk", "joints_mm.npy/../x", "../../evil"])


@st.composite
def member_data(draw, name: str) -> bytes:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(npy_files(joints_like=name == "joints_mm"))
    if choice == 1 and name == "meta":
        text = draw(st.one_of(json_values.map(json_text), deeply_nested(), st.text(max_size=30)))
        return _npy(np.array(text))
    if choice == 2:
        return _npy(draw(arrays))
    if choice == 3:
        return _npy(np.zeros(draw(st.sampled_from([(3, 24, 3), (1,), (2_000_000,)])), np.float32))  # a bomb, compressed
    if choice == 4:
        value = draw(st.sampled_from([1e3, 1e39, float("nan"), 0.0]))
        frames = draw(st.integers(1, 6))
        dtype = np.float64 if value == 1e39 else draw(st.sampled_from([np.float32, np.float64]))
        return _npy(np.full((frames, 24, 3), value, dtype))
    return draw(st.binary(max_size=200))


@st.composite
def npz_files(draw) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        names = draw(st.lists(member_names, min_size=0, max_size=5, unique=True))
        if draw(st.booleans()):
            names = ["joints_mm"] + [n for n in names if n != "joints_mm"]
        for name in names:
            method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2]))
            archive.writestr(zipfile.ZipInfo(name + ".npy"), draw(member_data(name)), compress_type=method)
    blob = buffer.getvalue()
    return draw(mutated([blob], max_ops=2)) if draw(st.integers(0, 3)) == 0 else blob


@scaled(480)
@given(blob=npz_files())
def test_fuzz_npz_archives(fuzz_worker, tmp_path_factory, blob):
    _load(fuzz_worker, tmp_path_factory.getbasetemp() / "fuzz.npz", blob)


# --- SMPL parameter files and SMPL model files ----------------------------------------------------------


@pytest.fixture(scope="module")
def smpl_files(tmp_path_factory):
    from test_motion_smpl import _synthetic_model, _write_model_pickle

    folder = tmp_path_factory.mktemp("smpl_seeds")
    model = _synthetic_model()
    with pytest.MonkeyPatch.context() as mp:
        model_pkl = _write_model_pickle(folder / "SMPL_NEUTRAL.pkl", model, mp, chumpy=True)
    model_npz = folder / "SMPL_NEUTRAL.npz"
    np.savez(model_npz, **{k: v for k, v in model.items() if not isinstance(v, str)})
    rng = np.random.default_rng(0)
    amass = io.BytesIO()
    np.savez(amass, poses=rng.normal(0, 0.2, (4, 156)), betas=np.zeros(16), trans=rng.normal(0, 0.1, (4, 3)),
             mocap_framerate=np.float64(60.0))
    camera = pickle.dumps({"pose": rng.normal(0, 0.2, (3, 72)).astype(np.float32), "betas": np.zeros(10, np.float32),
                           "trans": np.array([[0, 0, 3.0]] * 3, np.float32)}, protocol=2)
    return {"model_pkl": model_pkl, "model_npz": model_npz,
            "models": Corpus([model_pkl.read_bytes(), model_npz.read_bytes()]), "params": Corpus([amass.getvalue(), camera])}


@scaled(120)
@given(data=st.data())
def test_fuzz_smpl_parameter_files(fuzz_worker, smpl_files, tmp_path_factory, data):
    blob = data.draw(mutated(smpl_files["params"], max_ops=3))
    path = tmp_path_factory.getbasetemp() / "smpl_params.npz"
    path.write_bytes(blob)
    check(fuzz_worker.run("motion", path, smpl_model=str(smpl_files["model_pkl"])), path,
          names=(str(smpl_files["model_pkl"]),))


@scaled(200)
@given(data=st.data())
def test_fuzz_smpl_model_files(fuzz_worker, smpl_files, tmp_path_factory, data):
    blob = data.draw(mutated(smpl_files["models"], max_ops=4))
    suffix = ".npz" if blob[:2] == b"PK" else ".pkl"
    path = tmp_path_factory.getbasetemp() / f"SMPL_fuzz{suffix}"
    path.write_bytes(blob)
    check(fuzz_worker.run("smpl_model", path), path)
