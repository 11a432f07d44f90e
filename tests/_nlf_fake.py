"""A fake NLF multi-person model for tests, scripted with TorchScript at test time.

It exports ``detect_smpl_batched`` / ``detect_parametric_batched`` with NLF's signature and returns
NLF's output dict (14 keys, one list entry per image, first dim = people). What it "detects" comes
from a scenario table, indexed by a frame id encoded in the image itself:

* red channel mean = frame_id / 255, green = 0.5, blue = 1.0. A frame whose green/blue markers are
  wrong (e.g. channels fed in BGR order, or a 0..255 float image) yields nobody, so channel-order
  and scaling mistakes show up as missing people.
* scenario[frame_id, p] = [present, x, y, w, h, score, root_x, root_y, root_z, person_id].

People are returned in descending score order (like NLF) and filtered by ``detector_threshold``.
The joints are ``root + template`` with depth scaled by tan(27.5 deg) / tan(fov / 2), so the field of
view argument is observable. An all-empty batch returns ``pose`` shaped (0, 24, 3), NLF's quirk.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import torch

NUM_VERTICES = 8
FIELDS = 10


def joint_template() -> torch.Tensor:
    """(24, 3) fixed joint offsets from the root in mm (y down: head above the pelvis)."""
    j = torch.arange(24, dtype=torch.float32)
    return torch.stack([j * 3.0 - 30.0, -j * 20.0 + 200.0, j * 1.0], dim=1)


class FakeNLF(torch.nn.Module):
    def __init__(self, scenario: torch.Tensor, cpu_capable: bool = False):
        super().__init__()
        self.mtv_cpu_capable = cpu_capable  # lets a scripted double run without CUDA (see load_nlf_model)
        self.register_buffer("scenario", scenario.float())
        self.register_buffer("template", joint_template())
        self.register_buffer("num_calls", torch.zeros((), dtype=torch.int64))
        self.register_buffer("max_batch", torch.zeros((), dtype=torch.int64))

    @torch.jit.export
    def detect_parametric_batched(
        self,
        images: torch.Tensor,
        intrinsic_matrix: Optional[torch.Tensor] = None,
        distortion_coeffs: Optional[torch.Tensor] = None,
        extrinsic_matrix: Optional[torch.Tensor] = None,
        world_up_vector: Optional[torch.Tensor] = None,
        default_fov_degrees: float = 55.0,
        internal_batch_size: int = 64,
        antialias_factor: int = 1,
        num_aug: int = 1,
        rot_aug_max_degrees: float = 25.0,
        detector_threshold: float = 0.3,
        detector_nms_iou_threshold: float = 0.7,
        max_detections: int = 150,
        detector_flip_aug: bool = False,
        detector_both_flip_aug: bool = False,
        suppress_implausible_poses: bool = True,
        beta_regularizer: float = 10.0,
        beta_regularizer2: float = 0.0,
        model_name: str = "smpl",
        extra_boxes: Optional[List[torch.Tensor]] = None,
    ) -> Dict[str, List[torch.Tensor]]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError("fake NLF expects N x 3 x H x W images")
        if images.dtype == torch.uint8:
            x = images.float() / 255.0
        else:
            x = images.float()
        self.num_calls += 1
        self.max_batch.copy_(torch.maximum(self.max_batch, torch.tensor(images.shape[0])))
        depth_scale = math.tan(math.radians(27.5)) / math.tan(math.radians(default_fov_degrees / 2.0))
        keys = [
            "boxes", "pose", "betas", "trans", "joints3d", "vertices3d", "joints2d", "vertices2d",
            "joints3d_nonparam", "vertices3d_nonparam", "joints2d_nonparam", "vertices2d_nonparam",
            "joint_uncertainties", "vertex_uncertainties",
        ]
        out: Dict[str, List[torch.Tensor]] = {}
        for k in keys:
            out[k] = []
        total = 0
        for i in range(images.shape[0]):
            r = float(x[i, 0].mean())
            g = float(x[i, 1].mean())
            b = float(x[i, 2].mean())
            frame_id = int(round(r * 255.0))
            rows = torch.zeros((0, 10), dtype=torch.float32, device=images.device)
            if abs(g - 0.5) < 0.02 and abs(b - 1.0) < 0.02 and frame_id < self.scenario.shape[0]:
                table = self.scenario[frame_id]
                keep = (table[:, 0] > 0.5) & (table[:, 5] >= detector_threshold)
                rows = table[keep]
                order = torch.argsort(rows[:, 5], descending=True)
                rows = rows[order]
            n = rows.shape[0]
            total += n
            root = rows[:, 6:9].clone()
            root[:, 2] = root[:, 2] * depth_scale
            joints = root[:, None, :] + self.template[None, :, :]
            out["boxes"].append(rows[:, 1:6])
            out["joints3d_nonparam"].append(joints)
            out["joints3d"].append(joints + 1.0)
            out["joints2d"].append(joints[:, :, :2])
            out["joints2d_nonparam"].append(joints[:, :, :2])
            out["joint_uncertainties"].append(torch.ones(n, 24, device=images.device))
            verts = root[:, None, :].repeat(1, 8, 1)
            out["vertices3d"].append(verts)
            out["vertices3d_nonparam"].append(verts)
            out["vertices2d"].append(verts[:, :, :2])
            out["vertices2d_nonparam"].append(verts[:, :, :2])
            out["vertex_uncertainties"].append(torch.ones(n, 8, device=images.device))
            out["pose"].append(rows[:, 9:10].repeat(1, 72))
            out["betas"].append(rows[:, 9:10].repeat(1, 10) * 0.1)
            out["trans"].append(root / 1000.0)
        if total == 0:
            # NLF's all-empty path shapes pose as (0, J, 3)
            out["pose"] = [torch.zeros((0, 24, 3), device=images.device) for _ in range(images.shape[0])]
        return out

    detect_smpl_batched = detect_parametric_batched


def make_fake_file(path, scenario: np.ndarray, cpu_capable: bool = False) -> str:
    """Script FakeNLF over ``scenario`` (F, P, 10) and save it as a TorchScript file at ``path``.

    ``cpu_capable`` marks the file as runnable without CUDA (the loader then skips its CUDA check).
    """
    module = torch.jit.script(FakeNLF(torch.as_tensor(np.asarray(scenario, dtype=np.float32)), cpu_capable))
    module.save(str(path))
    return str(path)


def frames_for(num_frames: int, height: int = 48, width: int = 64, dtype=np.float32) -> np.ndarray:
    """(T, H, W, 3) RGB frames encoding frame ids 0..T-1 (float 0..1, or uint8 with ``dtype=np.uint8``)."""
    ids = np.arange(num_frames, dtype=np.float64)
    rgb = np.stack([ids / 255.0, np.full_like(ids, 0.5), np.ones_like(ids)], axis=1)
    frames = np.broadcast_to(rgb[:, None, None, :], (num_frames, height, width, 3))
    if dtype == np.uint8:
        return np.round(frames * 255.0).astype(np.uint8)
    return np.ascontiguousarray(frames, dtype=dtype)


def person_row(x, y, w, h, score, root, pid) -> list[float]:
    return [1.0, x, y, w, h, score, root[0], root[1], root[2], float(pid)]


def empty_row() -> list[float]:
    return [0.0] * FIELDS


def scenario(rows_per_frame: list[list[list[float]]], max_people: int | None = None) -> np.ndarray:
    """Pad a per-frame list of person rows into an (F, P, 10) table."""
    p = max_people or max(1, max(len(r) for r in rows_per_frame))
    table = np.zeros((len(rows_per_frame), p, FIELDS), np.float32)
    for f, rows in enumerate(rows_per_frame):
        for i, row in enumerate(rows):
            table[f, i] = row
    return table


def expected_root(row: list[float], fov: float = 55.0) -> np.ndarray:
    scale = math.tan(math.radians(27.5)) / math.tan(math.radians(fov / 2.0))
    return np.array([row[6], row[7], row[8] * scale], np.float32)
