"""Real NLF model on a CUDA GPU: runs only with ``MTV_NLF_FILE`` set to an NLF TorchScript file and a GPU.

Optional ``MTV_NLF_VIDEO``: a short video showing one person, for the 3D sanity checks.
Skipped (never passed) otherwise: NLF's TorchScript does not run on CPU.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.nlf import NoPersonDetectedError, detect_people, extract_smpl_motion, load_nlf_model

NLF_FILE = os.environ.get("MTV_NLF_FILE", "")
pytestmark = [
    pytest.mark.skipif(not NLF_FILE or not os.path.isfile(NLF_FILE), reason="MTV_NLF_FILE not set to an NLF file"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="NLF needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def real_model():
    return load_nlf_model(NLF_FILE, device="cuda", warm_up=True)


def test_nlf_real_black_frames_have_nobody(real_model):
    det = detect_people(real_model, np.zeros((3, 256, 320, 3), np.float32), batch_size=2, device="cuda",
                        keep_smpl_params=True)
    assert list(det.people_per_frame) == [0, 0, 0]
    assert all(p.shape == (0, 72) for p in det.smpl["pose"])
    tensors = list(real_model.module.parameters()) + list(real_model.module.buffers())
    assert tensors and all(t.device.type == "cpu" for t in tensors)  # parked on the offload device
    with pytest.raises(NoPersonDetectedError):
        extract_smpl_motion(real_model, np.zeros((2, 256, 256, 3), np.uint8), device="cuda")


@pytest.mark.skipif(not os.path.isfile(os.environ.get("MTV_NLF_VIDEO", "")), reason="MTV_NLF_VIDEO not set")
def test_nlf_real_video_person_is_plausible(real_model):
    from mtv_pack.mtv_core.video import read_video

    frames_u8, fps = read_video(os.environ["MTV_NLF_VIDEO"])
    frames_u8 = frames_u8[:16]
    motion = extract_smpl_motion(real_model, frames_u8, fps=fps, batch_size=4, device="cuda", keep_smpl_params=True)
    seq = motion.sequences[0]
    assert seq.valid.mean() > 0.5
    joints = seq.joints_mm[seq.valid]
    assert 500 < np.median(joints[:, 0, 2]) < 15000  # pelvis depth in mm
    assert np.median(joints[:, 15, 1] - joints[:, 0, 1]) < -200  # head above pelvis, y down
    h, w = frames_u8.shape[1:3]
    b = motion.boxes[0].boxes_xywh[seq.valid]
    assert (b[:, 2:] > 0).all() and (b[:, 0] < w).all() and (b[:, 1] < h).all()
    trans = motion.tracks[0].smpl["trans"][seq.valid]
    assert np.median(np.abs(trans[:, 2] * 1000.0 - joints[:, 0, 2])) < 300  # trans is metres
    as_float = extract_smpl_motion(real_model, frames_u8.astype(np.float32) / 255.0, fps=fps, batch_size=16,
                                   device="cuda")
    np.testing.assert_allclose(as_float.sequences[0].joints_mm[seq.valid], joints, atol=30.0)  # fp16 model
