"""Fuzzing reference images: image files through the command line's reader and arrays through the pipeline's
``prepare_reference`` (what ComfyUI's IMAGE tensors reach), in the fuzz worker (see ``tests/_fuzz.py``)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from _fuzz import check
from _fuzz_strategies import Corpus, mutated, scaled
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "LA", "YCbCr"]
_FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM"]


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_seeds() -> Corpus:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray((rng.random((96, 80, 3)) * 255).astype(np.uint8))
    exif = rgb.getexif()
    exif[0x0112] = 6
    deep = Image.fromarray((rng.random((70, 90)) * 65535).astype(np.uint16))
    return Corpus([_encode(rgb, "PNG"), _encode(rgb, "JPEG", exif=exif), _encode(deep, "PNG"), _encode(rgb, "TIFF"),
                   _encode(rgb.convert("P"), "GIF")])


@st.composite
def generated_images(draw) -> bytes:
    mode, fmt = draw(st.sampled_from(_MODES)), draw(st.sampled_from(_FORMATS))
    width, height = draw(st.sampled_from([(1, 1), (63, 200), (64, 64), (80, 96), (64, 3000), (3000, 64), (200, 120)]))
    image = Image.new(mode, (width, height), color=draw(st.integers(0, 255)))
    options = {}
    if draw(st.booleans()):
        exif = image.getexif()
        exif[0x0112] = draw(st.sampled_from([0, 1, 3, 6, 8, 9, 255, 65535]))
        options["exif"] = exif
    try:
        return _encode(image, fmt, **options)
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)  # a mode the format cannot store


@scaled(240)
@given(data=st.data())
def test_fuzz_image_files(fuzz_worker, image_seeds, tmp_path_factory, data):
    blob = data.draw(st.one_of(generated_images(), mutated(image_seeds)))
    path = tmp_path_factory.getbasetemp() / "reference_image"
    path.write_bytes(blob)
    check(fuzz_worker.run("image", path), path)


_PIXELS = st.sampled_from([0.0, 0.5, 1.0, -1.0, 255.0, 65535.0, 1e30, float("nan"), float("inf"), -float("inf")])


@st.composite
def image_arrays(draw) -> np.ndarray:
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.float16, np.int32, np.bool_,
                                  np.complex64, np.int8]))
    shape = draw(st.one_of(
        st.tuples(st.sampled_from([1, 2]), st.sampled_from([64, 80, 5000]), st.sampled_from([64, 70]),
                  st.sampled_from([1, 3, 4])),
        st.tuples(st.sampled_from([63, 64, 100, 4000]), st.sampled_from([64, 90, 4000]), st.sampled_from([1, 3, 4, 5])),
        st.tuples(st.sampled_from([64, 100]), st.sampled_from([64, 77])),
        hnp.array_shapes(min_dims=0, max_dims=5, max_side=4),
    ))
    if np.dtype(dtype).kind in "fc":
        with np.errstate(over="ignore"):  # 1e30 in float16 is inf: one more hostile value
            return np.full(shape, draw(_PIXELS), dtype=dtype)
    return np.full(shape, draw(st.integers(0, 255)), dtype=np.uint8).astype(dtype)


@scaled(240)
@given(array=image_arrays(), as_torch=st.booleans(), size=st.sampled_from([(64, 64), (96, 64), (64, 128)]))
def test_fuzz_reference_arrays(fuzz_worker, tmp_path_factory, array, as_torch, size):
    path = tmp_path_factory.getbasetemp() / "reference_array.npy"
    np.save(path, array)
    verdict = fuzz_worker.run("image_array", path, torch=as_torch and array.dtype != np.uint16, width=size[0],
                              height=size[1])
    # prepare_reference takes an array, not a file: it must answer with an InputError (no file name to give)
    check(verdict, path, names=("reference image",))
