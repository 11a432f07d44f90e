"""text_cfg_17b's batched="auto": one forward of the doubled batch where it fits, two halves where it does not."""

import pytest
import torch

from mtv_pack.mtv_core.dit import guidance_17b
from mtv_pack.mtv_core.dit.guidance_17b import cfg_batch_fits, text_cfg_17b
from mtv_pack.mtv_core.dit.tiny_17b import tiny_mvdit17b_config
from mtv_pack.mtv_core.memory import dit17b_activation_bytes


class _Recorder:
    """Stands in for MVDiT17B: records the batch of every call and answers a function of its inputs."""

    def __init__(self, device: str) -> None:
        self.config = tiny_mvdit17b_config()
        self.device, self.dtype, self.batches = torch.device(device), torch.bfloat16, []

    def __call__(self, latents, timestep, context, **kwargs):
        self.batches.append(latents.shape[0])
        return latents * context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)


def _run(model, batched="auto"):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 3, 8, 8, generator=g)
    context, negative = torch.randn(1, 5, 64, generator=g), torch.randn(1, 7, 64, generator=g)
    return text_cfg_17b(model, latents, 500.0, context, negative, 5.0, clip_fea=torch.zeros(1, 257, 1280), y=None,
                        motion_tokens=torch.zeros(1, 72, 8), motion_rope=None, batched=batched)


def test_auto_batches_off_cuda():
    model = _Recorder("cpu")
    out = _run(model)
    assert model.batches == [2]
    split = _Recorder("cpu")
    torch.testing.assert_close(_run(split, batched=False), out)
    assert split.batches == [1, 1]


@pytest.mark.parametrize("free_factor, expected", [(10.0, [2]), (0.5, [1, 1])])
def test_auto_splits_when_the_doubled_batch_does_not_fit(monkeypatch, free_factor, expected):
    model = _Recorder("cuda")
    need = dit17b_activation_bytes(model.config, 3, 8, 8, batch=2, dtype=torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_factor * need), 10 * need))
    assert cfg_batch_fits(model, torch.zeros(1, 16, 3, 8, 8), 2) == (free_factor * guidance_17b.CFG_BATCH_MEMORY_SHARE >= 1)
    _run(model)
    assert model.batches == expected


def test_bad_batched_value_is_refused():
    with pytest.raises(ValueError, match="batched"):
        _run(_Recorder("cpu"), batched="yes")


def test_activation_estimate_scales_with_tokens_and_batch():
    config = tiny_mvdit17b_config()
    one = dit17b_activation_bytes(config, 3, 8, 8, batch=1, dtype=torch.bfloat16)
    feed_forward = 3 * 4 * 4 * (2 * config.dim + 2 * config.ffn_dim) * 2  # tokens x (residual, norm, FFN in/out)
    cross = (config.text_len + 257) * 2 * config.dim * 2  # the text + CLIP keys and values
    assert one == feed_forward + cross
    assert dit17b_activation_bytes(config, 3, 8, 8, batch=2, dtype=torch.float32) == 4 * one
