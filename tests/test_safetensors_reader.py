"""mtv_core.safetensors_reader: bit-identical positional reads, conversion, laziness, corrupt files;
and the release of mapped pages of torch pickles in mtv_core.checkpoint."""

import json
import struct
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError, open_checkpoint
from mtv_pack.mtv_core import safetensors_reader
from mtv_pack.mtv_core.safetensors_reader import DTYPES, SafetensorsError, SafetensorsFile, StagingBuffer

ALL_DTYPES = sorted(set(DTYPES.values()), key=str)


def _random(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 3).to(dtype)
    info = torch.iinfo(dtype)
    low, high = max(info.min, -(2**31)), min(info.max, 2**31 - 1)
    return torch.randint(low, high, shape, generator=g, dtype=torch.int64).to(dtype)


def _reference(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype_reads_bit_identical_to_safetensors(tmp_path, dtype):
    tensors = {
        "matrix": _random((5, 7), dtype, 1),
        "scalar": _random((), dtype, 2),
        "empty": _random((0, 3), dtype, 3),
        "cube": _random((2, 3, 4), dtype, 4),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "x"})
    expected, metadata = _reference(path)
    f = SafetensorsFile(path)
    assert sorted(f.keys()) == sorted(tensors) and f.metadata == metadata
    for key, tensor in expected.items():
        assert f.shape(key) == tuple(tensor.shape) and f.dtype(key) == dtype
        _same_bits(f.read(key), tensor)


@pytest.mark.parametrize("source", [torch.float32, torch.float16, torch.float64, torch.float8_e4m3fn,
                                    torch.float8_e5m2], ids=str)
@pytest.mark.parametrize("target", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_conversion_matches_torch_and_leaves_integers_alone(tmp_path, source, target):
    tensors = {"w": _random((33, 17), source, 5), "idx": _random((9,), torch.int64, 6)}
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    f = SafetensorsFile(path)
    staging = StagingBuffer()
    for _ in range(2):  # the staging buffer is reused
        _same_bits(f.read("w", dtype=target, staging=staging), tensors["w"].to(target))
    _same_bits(f.read("idx", dtype=target), tensors["idx"])
    moved = f.read("w", dtype=target, device="meta")  # the staged path for another device
    assert moved.device.type == "meta" and moved.dtype == target and moved.shape == (33, 17)


@pytest.mark.parametrize("source", [torch.float32, torch.float8_e4m3fn, torch.int32], ids=str)
def test_large_tensors_pass_through_a_small_staging_buffer(tmp_path, monkeypatch, source):
    monkeypatch.setattr(safetensors_reader, "STAGING_BYTES", 96)
    tensor = _random((7, 51), source, 11)
    save_file({"w": tensor}, str(tmp_path / "t.safetensors"))
    f, staging = SafetensorsFile(tmp_path / "t.safetensors"), StagingBuffer()
    expected = tensor.to(torch.bfloat16) if source.is_floating_point else tensor
    _same_bits(f.read("w", torch.bfloat16, staging=staging), expected)
    if source.is_floating_point:  # converted through the staging buffer, never more than its limit at once
        assert 0 < staging._buffer.numel() <= 96
    else:  # integers keep their dtype: read straight into the result
        assert staging._buffer is None


def test_only_requested_tensors_are_read(tmp_path, monkeypatch):
    save_file({"a": torch.ones(1000), "b": torch.zeros(10), "c": torch.ones(3)}, str(tmp_path / "t.safetensors"))
    f = SafetensorsFile(tmp_path / "t.safetensors")
    reads = []
    original = SafetensorsFile._read_into
    monkeypatch.setattr(SafetensorsFile, "_read_into",
                        lambda self, file, buf, offset: reads.append((offset, buf.numel())) or original(self, file, buf, offset))
    assert torch.equal(f.read("b"), torch.zeros(10))
    assert reads == [(f.data_start + f._entries["b"][2], 40)]


def _write_raw(path: Path, header: dict, data: bytes = b"", header_len: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "header_len", "problem"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "outside"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "wrong length"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, "overlap"),
        ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, None, "unsupported dtype"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", None, "invalid shape"),
        ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, None, "lacks"),
        ({"__metadata__": {"a": 1}}, b"", None, "__metadata__"),
        ({"a": 1}, b"", 1 << 40, "header length"),
    ],
)
def test_corrupt_files_are_refused_naming_the_file(tmp_path, header, data, header_len, problem):
    path = _write_raw(tmp_path / "bad.safetensors", header, data, header_len)
    with pytest.raises(SafetensorsError, match=problem) as info:
        SafetensorsFile(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match=problem):
        open_checkpoint(path)


def test_garbage_and_short_files(tmp_path):
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 4) + b"{no}")
    for name, problem in (("short", "too short"), ("junk", "not JSON")):
        with pytest.raises(CheckpointError, match=problem):
            open_checkpoint(tmp_path / f"{name}.safetensors")


def test_file_truncated_after_opening(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.ones(100)}, str(path))
    f = SafetensorsFile(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(SafetensorsError, match="ended 40 bytes early"):
        f.read("a")


# ---------------------------------------------------------------------------------------------- torch pickles
def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_pickled_tensors_read_twice_stay_intact(tmp_path):
    """Pages dropped after a converting copy come back from the file (legacy pre-zip files are refused outright,
    see test_hostile_inputs)."""
    tensors = {"a": _random((3000,), torch.float32, 7), "b": _random((5,), torch.float32, 8),
               "c": _random((2049,), torch.float32, 9)}
    torch.save(tensors, tmp_path / "m.pt")
    ckpt = open_checkpoint(tmp_path / "m.pt")
    for _ in range(2):
        for key, tensor in tensors.items():
            _same_bits(ckpt.get(key, torch.bfloat16), tensor.bfloat16())
            _same_bits(ckpt.get(key), tensor)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page release uses Linux madvise")
def test_converted_pickled_tensors_release_their_mapped_pages(tmp_path):
    size_mib = 64
    torch.save({"w": torch.ones(size_mib << 18)}, tmp_path / "big.pt")  # 64 MiB of float32
    ckpt = open_checkpoint(tmp_path / "big.pt")
    before = _rss_file_kib()
    ckpt._sources["w"].sum()  # map every page in
    assert _rss_file_kib() - before > (size_mib - 4) * 1024
    out = ckpt.get("w", torch.bfloat16)
    assert _rss_file_kib() - before < 4 * 1024
    assert torch.equal(out, torch.ones(size_mib << 18, dtype=torch.bfloat16))


def test_chunks_are_read_into_the_reused_staging_buffer(tmp_path, monkeypatch):
    monkeypatch.setattr(safetensors_reader, "STAGING_BYTES", 4096)
    tensors = {"small": _random((10, 20), torch.bfloat16, 1), "large": _random((2000,), torch.float32, 3)}
    path = tmp_path / "b.safetensors"
    save_file(tensors, str(path))
    f, staging = SafetensorsFile(path), StagingBuffer()
    for key, elements, expected_sizes in (("large", 10_000, [1024, 976]), ("large", 300, [300] * 6 + [200]),
                                          ("small", 10_000, [200])):
        pieces, pointers = [], set()
        for chunk in f.chunks(key, staging, elements):  # at most STAGING_BYTES each, all in the one buffer
            pieces.append(chunk.clone())
            pointers.add(chunk.data_ptr())
        assert [p.numel() for p in pieces] == expected_sizes
        assert len(pointers) == 1
        _same_bits(torch.cat(pieces), tensors[key].reshape(-1))


def test_chunks_of_a_truncated_file_name_it_but_not_the_callers_errors(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.ones(100), "b": torch.ones(4)}, str(path))
    ckpt = open_checkpoint(path)
    with pytest.raises(ValueError, match="caller's own"):
        for _ in ckpt.chunks("b", 2):
            raise ValueError("the caller's own error")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="t.safetensors"):
        list(ckpt.chunks("b", 2))


def test_chunks_of_a_pickled_tensor_are_views_of_it(tmp_path):
    tensor = _random((7, 5), torch.float32, 4)
    torch.save({"w": tensor}, tmp_path / "m.pt")
    ckpt = open_checkpoint(tmp_path / "m.pt")
    pieces = [c.clone() for c in ckpt.chunks("w", 10)]
    assert [p.numel() for p in pieces] == [10, 10, 10, 5]
    torch.testing.assert_close(torch.cat(pieces), tensor.reshape(-1), atol=0, rtol=0)
