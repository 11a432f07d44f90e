"""The tokenizer's normalisation statistics ship with the pack and equal upstream's files."""

import numpy as np

from mtv_pack.mtv_core.motion.stats import DATA_DIR, denormalize, load_stats, normalize


def test_shipped_stats_equal_reference(reference):
    mean, std = load_stats()
    for name, shipped in (("mean", mean), ("std", std)):
        expected = np.load(reference / "motion" / f"{name}.npy")
        assert shipped.dtype == np.float32 and shipped.shape == (24, 3)
        assert np.array_equal(shipped, expected)
        assert (DATA_DIR / f"{name}.npy").read_bytes() == (reference / "motion" / f"{name}.npy").read_bytes()
    assert not mean.flags.writeable  # callers cannot corrupt the cached copy


def test_normalize_round_trip_and_formula():
    mean, std = load_stats()
    joints = mean[None] + std[None] * np.linspace(-2, 2, 5, dtype=np.float32)[:, None, None]
    normalized = normalize(joints)
    np.testing.assert_allclose(normalized, np.broadcast_to(np.linspace(-2, 2, 5)[:, None, None], (5, 24, 3)), atol=1e-5)
    np.testing.assert_allclose(denormalize(normalized), joints, atol=1e-3)
