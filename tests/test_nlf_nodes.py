"""NLF nodes (standalone io) with a fake NLF TorchScript module on CPU."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _nlf_fake import frames_for, make_fake_file, person_row, scenario

from mtv_pack.mtv_core.motion.sequence import JointSequence
from mtv_pack.mtv_core.nlf import NLFDeviceError, NLFModelNotFoundError, TrackedBoxes, load_nlf_model
from mtv_pack.nodes import nlf as nlf_nodes
from mtv_pack.nodes.nlf import MTVExtractSMPL, MTVLoadNLFModel


def walk(num_frames):
    return [[person_row(10 + 2 * f, 4, 16, 36, 0.9, (f * 20.0, 100.0, 3000.0), 1)] for f in range(num_frames)]


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MTV_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / "nlf").mkdir(parents=True)
    return tmp_path / "models"


@pytest.fixture
def fake_model(tmp_path):
    path = make_fake_file(tmp_path / "nlf_s_multi_fake.torchscript", scenario(walk(6)))
    return load_nlf_model(path, device="cpu", requires_cuda=False)


def test_nlf_node_schemas():
    for node in (MTVLoadNLFModel, MTVExtractSMPL):
        schema = node.define_schema()
        assert schema.category == "MTVCrafter/NLF"
        assert all(inp.tooltip for inp in schema.inputs)
    extract = {i.id: i for i in MTVExtractSMPL.define_schema().inputs}
    assert extract["images"].optional and extract["video"].optional
    assert extract["fps"].default == 0.0 and extract["fov_degrees"].default == 55.0
    assert extract["person_policy"].options["options"] == ["largest", "highest_score", "leftmost", "index"]
    outputs = [o.io_type for o in MTVExtractSMPL.define_schema().outputs]
    assert outputs == ["MTV_JOINTS", "MTV_BOXES", "IMAGE"]


def test_nlf_loader_lists_files_or_the_expected_name(models_dir):
    options = {i.id: i for i in MTVLoadNLFModel.define_schema().inputs}["model_name"].options["options"]
    assert options == ["nlf_l_multi_0.3.2.torchscript"]
    (models_dir / "nlf" / "nlf_s_multi_0.2.2.torchscript").write_bytes(b"x")
    options = {i.id: i for i in MTVLoadNLFModel.define_schema().inputs}["model_name"].options["options"]
    assert options == ["nlf_s_multi_0.2.2.torchscript"]


def test_nlf_loader_missing_file_message(models_dir):
    with pytest.raises(NLFModelNotFoundError) as info:
        MTVLoadNLFModel.execute(model_name="nlf_l_multi_0.3.2.torchscript")
    msg = str(info.value)
    assert "'nlf_l_multi_0.3.2.torchscript'" in msg
    assert str(models_dir / "nlf") in msg
    assert "https://github.com/isarandi/nlf/releases" in msg and "non-commercial" in msg


def test_nlf_loader_node_loads_file_and_extraction_needs_cuda(models_dir, monkeypatch):
    make_fake_file(models_dir / "nlf" / "nlf_l_multi_test.torchscript", scenario(walk(3)))
    model = MTVLoadNLFModel.execute(model_name="nlf_l_multi_test.torchscript").result[0]
    assert model.name == "nlf_l_multi_test.torchscript" and model.requires_cuda
    monkeypatch.setattr(nlf_nodes, "torch_device", lambda: torch.device("cpu"))
    with pytest.raises(NLFDeviceError, match="CUDA GPU"):
        MTVExtractSMPL.execute(nlf_model=model, images=torch.from_numpy(frames_for(3)))


def test_nlf_extract_node_images(fake_model):
    frames = torch.from_numpy(frames_for(6))
    joints, boxes, preview = MTVExtractSMPL.execute(nlf_model=fake_model, images=frames, batch_size=4).result
    assert isinstance(joints, JointSequence) and joints.joints_mm.shape == (6, 24, 3)
    assert joints.fps == 20.0 and joints.meta["fps_source"] == "default"
    assert joints.valid.all() and joints.meta["nlf_model"] == "nlf_s_multi_fake.torchscript"
    assert isinstance(boxes, TrackedBoxes) and boxes.boxes_xywh.shape == (6, 4) and boxes.image_size == (48, 64)
    assert preview.shape == (6, 48, 64, 3) and preview.dtype == torch.float32
    assert (preview - frames).abs().amax() > 0.1  # the skeleton is drawn over the frames


def test_nlf_extract_node_video_input_and_fps(fake_model):
    decoded = []

    def get_components():
        decoded.append(True)
        return SimpleNamespace(images=torch.from_numpy(frames_for(6)), frame_rate=Fraction(30000, 1001))

    video = SimpleNamespace(get_components=get_components, get_frame_rate=lambda: Fraction(30000, 1001))
    joints = MTVExtractSMPL.execute(nlf_model=fake_model, video=video, preview=False).result[0]
    assert joints.fps == pytest.approx(29.97, abs=1e-3) and joints.meta["fps_source"] == "video"
    joints, _, preview = MTVExtractSMPL.execute(nlf_model=fake_model, video=video, fps=12.5, preview=False).result
    assert joints.fps == 12.5 and joints.meta["fps_source"] == "widget"
    assert preview.shape == (1, 64, 64, 3)
    # images win over the video's frames, the video still gives the rate (read without decoding it)
    decoded.clear()
    both = MTVExtractSMPL.execute(nlf_model=fake_model, images=torch.from_numpy(frames_for(4)), video=video,
                                  preview=False).result[0]
    assert both.num_frames == 4 and both.fps == pytest.approx(29.97, abs=1e-3)
    assert not decoded


def test_nlf_extract_node_unknown_video_rate_uses_default(fake_model):
    # ComfyUI's VIDEO reports exactly 1 fps when the container carries no rate at all.
    video = SimpleNamespace(get_components=None, get_frame_rate=lambda: Fraction(1))
    joints = MTVExtractSMPL.execute(nlf_model=fake_model, images=torch.from_numpy(frames_for(3)), video=video,
                                    preview=False).result[0]
    assert joints.fps == 20.0 and joints.meta["fps_source"] == "default"


def test_nlf_extract_node_needs_frames(fake_model):
    with pytest.raises(ValueError, match="either 'images'"):
        MTVExtractSMPL.execute(nlf_model=fake_model)


def test_nlf_extract_node_preview_downscaled(tmp_path):
    path = make_fake_file(tmp_path / "f.torchscript", scenario(walk(2)))
    model = load_nlf_model(path, device="cpu", requires_cuda=False)
    big = np.repeat(np.repeat(frames_for(2), 16, axis=1), 16, axis=2)  # 768 x 1024
    preview = MTVExtractSMPL.execute(nlf_model=model, images=torch.from_numpy(big)).result[2]
    assert preview.shape == (2, 384, 512, 3)
