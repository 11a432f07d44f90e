"""mtv_core.safetensors_reader on fuzzed files: any mix of dtypes and shapes reads back bit-identical."""

import pytest

pytest.importorskip("hypothesis")  # in requirements-dev.txt; absent from some integration environments

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from test_safetensors_reader import ALL_DTYPES, _random, _same_bits  # noqa: E402

from mtv_pack.mtv_core.safetensors_reader import SafetensorsFile  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ALL_DTYPES), st.lists(st.integers(0, 5), max_size=3)),
                min_size=1, max_size=6), st.integers(0, 2**16))
def test_fuzzed_files_round_trip(tmp_path_factory, specs, seed):
    tensors = {f"k{i}.{str(dtype)[6:]}": _random(tuple(shape), dtype, seed + i) for i, (dtype, shape) in enumerate(specs)}
    path = tmp_path_factory.mktemp("fuzz") / "f.safetensors"
    save_file(tensors, str(path))
    f = SafetensorsFile(path)
    for key, tensor in tensors.items():
        _same_bits(f.read(key), tensor)
