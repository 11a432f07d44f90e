import pytest

from mtv_pack.mtv_core.windows import plan_windows


@pytest.mark.parametrize("n", [49, 50, 52, 53, 88, 89, 90, 97, 129, 130, 200, 584])
def test_windows_cover_used_frames_with_valid_overlaps(n):
    plan = plan_windows(n)
    assert plan.used_frames <= n < plan.used_frames + 4
    assert (plan.used_frames - 1) % 4 == 0
    assert plan.starts[0] == 0
    assert plan.starts[-1] + plan.window == plan.used_frames
    for i in range(1, len(plan.starts)):
        overlap = plan.overlap_before(i)
        assert 9 <= overlap < plan.window
        assert (overlap - 1) % 4 == 0


def test_single_window_and_exact_two_windows():
    assert plan_windows(49).starts == (0,)
    assert plan_windows(89).starts == (0, 40)
    assert plan_windows(89).overlap_before(1) == 9


def test_too_short_or_bad_layout_raises():
    with pytest.raises(ValueError, match="shorter than one window"):
        plan_windows(48)
    with pytest.raises(ValueError, match="4k\\+1"):
        plan_windows(100, window=48)
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(100, min_overlap=8)
