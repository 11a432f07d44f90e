"""First-block step caching: off = identical, threshold 0 = identical, large threshold skips, runs never mix."""

import numpy as np
import pytest
import torch
from conftest import reference_dir

from mtv_pack.mtv_core.dit.guidance_17b import text_cfg_17b
from mtv_pack.mtv_core.dit.rope_17b import motion_rope_17b
from mtv_pack.mtv_core.dit.sampler_7b import denoise_7b
from mtv_pack.mtv_core.dit.step_cache import FirstBlockCache, step_caching
from mtv_pack.mtv_core.dit.tiny import random_state_dict_7b, tiny_mvdit7b_config
from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, tiny_mvdit17b_config
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B
from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    config = tiny_mvdit7b_config()
    m = MVDiT7B(config)
    m.load_state_dict(random_state_dict_7b(config, seed=5))
    return m.eval()


def _denoise(model, steps=6, **kwargs):
    g = torch.Generator().manual_seed(0)
    latents, ref = torch.randn(1, 13, 16, 4, 4, generator=g), torch.randn(1, 13, 16, 4, 4, generator=g)
    motion = torch.randn(1, 13 * 24, 128, generator=g)
    mean = np.random.default_rng(0).normal(0, 200, (24, 3)).astype(np.float32)
    return denoise_7b(model, latents, ref, motion, num_steps=steps, guidance=3.0, joint_mean_mm=mean,
                      generator=torch.Generator().manual_seed(0), **kwargs)


def test_threshold_zero_or_none_changes_nothing(model):
    plain = _denoise(model)
    assert torch.equal(_denoise(model, cache_threshold=None), plain)
    assert torch.equal(_denoise(model, cache_threshold=0.0), plain)
    assert model.step_cache is None


def test_large_threshold_skips_all_but_the_first_step_and_is_removed_afterwards(model):
    calls = []
    handle = model.transformer_blocks[-1].register_forward_hook(lambda *a: calls.append(1))
    try:
        with step_caching(model, 1e9) as cache:
            _denoise(model, steps=5)
            assert (cache.calls, cache.hits) == (5, 4)
            _denoise(model, steps=3)  # a new run: its first step is computed again
            assert (cache.calls, cache.hits) == (8, 6)
    finally:
        handle.remove()
    assert len(calls) == 2 and model.step_cache is None


def test_moderate_threshold_stays_close(model):
    plain = _denoise(model, steps=10)
    with step_caching(model, 1.0) as cache:  # random tiny weights: residuals change a lot per step
        cached = _denoise(model, steps=10)
    assert 0 < cache.hits < cache.calls
    assert 0 < (cached - plain).abs().max() < 0.2 * plain.abs().max()


def test_shape_change_recomputes():
    cache = FirstBlockCache(1e9)
    blocks = [torch.nn.Identity(), torch.nn.Identity()]
    seen = []

    def call(block, h):
        seen.append(h.shape)
        return block(h) + 1

    cache.begin(900)
    cache.run(blocks, torch.zeros(2, 3), call)
    cache.begin(800)
    cache.run(blocks, torch.zeros(4, 3), call)  # another batch: nothing reused
    assert cache.hits == 0 and len(seen) == 4
    with pytest.raises(ValueError, match="threshold"):
        FirstBlockCache(-1.0)


def test_mvdit17b_uses_the_cache():
    config = tiny_mvdit17b_config()
    m = MVDiT17B(config)
    m.load_state_dict(random_state_dict_17b(config, seed=3))
    m.eval()
    g = torch.Generator().manual_seed(0)
    kwargs = dict(clip_fea=torch.randn(1, 257, 1280, generator=g), y=torch.randn(1, 20, 2, 4, 6, generator=g),
                  motion_tokens=torch.randn(1, 48, 192, generator=g),
                  motion_rope=motion_rope_17b(2, np.load(reference_dir() / "motion" / "mean.npy")))
    latents, context = torch.randn(1, 16, 2, 4, 6, generator=g), torch.randn(1, 5, 64, generator=g)
    with torch.no_grad():
        plain = [text_cfg_17b(m, latents, t, context, None, 1.0, **kwargs) for t in (900.0, 850.0)]
        with step_caching(m, 1e9) as cache:
            cached = [text_cfg_17b(m, latents, t, context, None, 1.0, **kwargs) for t in (900.0, 850.0)]
    assert (cache.calls, cache.hits) == (2, 1)
    assert torch.equal(cached[0], plain[0]) and not torch.equal(cached[1], plain[1])
