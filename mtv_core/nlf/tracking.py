"""Choosing the person to follow and tracking them across frames, then filling the gaps.

NLF has no notion of identity: its per-frame list is ordered by detector score, so "person 0"
can jump between people. Here a policy picks the person(s) in the first frame where they exist,
and later (and earlier) frames are associated to the track by box overlap with a constant-velocity
prediction, falling back to the 3D distance of the pelvis when the boxes do not overlap.
Frames where the track has no detection are filled by linear interpolation between the nearest
observed frames (held at the ends) and marked invalid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..motion.io import fill_invalid
from .errors import NoPersonDetectedError
from .extract import FrameDetections

logger = logging.getLogger(__name__)

PERSON_POLICIES = ("largest", "highest_score", "leftmost", "index")
# How far prediction extrapolates (frames) and how far the root gate grows over a gap.
_MAX_EXTRAPOLATION = 5
_MAX_GATE_GROWTH = 10


@dataclass
class TrackedBoxes:
    """One person's box per frame (the ``MTV_BOXES`` wire value).

    Attributes:
        boxes_xywh: (T, 4) float32 ``[x, y, w, h]`` pixels, top-left corner + size; filled where not observed.
        scores: (T,) float32 detector score, 0 where not observed.
        valid: (T,) bool, True where the person was detected in that frame.
        image_size: (height, width) of the frames.
        track_id: which tracked person this is (0 = the one the policy chose).
    """

    boxes_xywh: np.ndarray
    scores: np.ndarray
    valid: np.ndarray
    image_size: tuple[int, int]
    track_id: int = 0

    def __len__(self) -> int:
        return int(self.boxes_xywh.shape[0])

    def xyxy(self) -> np.ndarray:
        """(T, 4) ``[x0, y0, x1, y1]`` pixels."""
        b = self.boxes_xywh
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


@dataclass
class PersonTrack:
    """One tracked person over the whole clip.

    Attributes:
        track_id: 0 for the person the policy chose, then in order of appearance.
        detection_index: (T,) int, index into that frame's detections, -1 where not observed.
        joints_mm: (T, 24, 3) float32 camera-frame mm, gaps filled.
        boxes: the person's boxes.
        smpl: None or ``pose`` (T, 72), ``betas`` (T, 10), ``trans`` (T, 3) metres, gaps filled.
    """

    track_id: int
    detection_index: np.ndarray
    joints_mm: np.ndarray
    boxes: TrackedBoxes
    smpl: dict[str, np.ndarray] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        return self.detection_index >= 0


def rank_people(boxes: np.ndarray, policy: str) -> list[int]:
    """Order a frame's detections (n, 5) ``[x, y, w, h, score]`` by ``policy``, best first."""
    if policy not in PERSON_POLICIES:
        raise ValueError(f"unknown person policy '{policy}'; choose one of {', '.join(PERSON_POLICIES)}")
    n = boxes.shape[0]
    if policy == "index":
        return list(range(n))
    if policy == "largest":
        key = -(boxes[:, 2] * boxes[:, 3])
    elif policy == "highest_score":
        key = -boxes[:, 4]
    else:  # leftmost: box centre x
        key = boxes[:, 0] + boxes[:, 2] / 2
    return [int(i) for i in np.argsort(key, kind="stable")]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between (m, 4) and (n, 4) xywh boxes -> (m, n)."""
    a0, a1 = a[:, None, :2], a[:, None, :2] + a[:, None, 2:4]
    b0, b1 = b[None, :, :2], b[None, :, :2] + b[None, :, 2:4]
    wh = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.clip(a[:, 2] * a[:, 3], 0, None)[:, None]
    area_b = np.clip(b[:, 2] * b[:, 3], 0, None)[None, :]
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


class _TrackState:
    """Last observations of a track, for constant-velocity prediction."""

    def __init__(self, frame: int, box: np.ndarray, root: np.ndarray):
        self.frames = [frame]
        self.boxes = [box[:4].astype(np.float64)]
        self.roots = [root.astype(np.float64)]

    def observe(self, frame: int, box: np.ndarray, root: np.ndarray) -> None:
        self.frames = [self.frames[-1], frame]
        self.boxes = [self.boxes[-1], box[:4].astype(np.float64)]
        self.roots = [self.roots[-1], root.astype(np.float64)]

    def predict(self, frame: int) -> tuple[np.ndarray, np.ndarray, int]:
        gap = abs(frame - self.frames[-1])
        box, root = self.boxes[-1], self.roots[-1]
        if len(self.frames) == 2 and self.frames[1] != self.frames[0]:
            step = min(gap, _MAX_EXTRAPOLATION) * np.sign(frame - self.frames[-1])
            dt = self.frames[1] - self.frames[0]
            box = box + (self.boxes[1] - self.boxes[0]) / dt * step
            root = root + (self.roots[1] - self.roots[0]) / dt * step
        return box, root, gap


def _associate(
    states: list[_TrackState], frame: int, dets_boxes: np.ndarray, dets_roots: np.ndarray,
    min_iou: float, max_root_distance_mm: float,
) -> dict[int, int]:
    """Greedy one-to-one matching of tracks to this frame's detections. Returns {track: detection}."""
    if not states or dets_boxes.shape[0] == 0:
        return {}
    pairs = []
    for t, state in enumerate(states):
        box, root, gap = state.predict(frame)
        iou = box_iou(box[None], dets_boxes[:, :4])[0]
        dist = np.linalg.norm(dets_roots - root[None], axis=1)
        gate = max_root_distance_mm * min(max(gap, 1), _MAX_GATE_GROWTH)
        for d in range(dets_boxes.shape[0]):
            if iou[d] >= min_iou or dist[d] <= gate:
                pairs.append(((1.0 - iou[d]) + dist[d] / 1000.0, t, d))
    matches: dict[int, int] = {}
    used: set[int] = set()
    for _, t, d in sorted(pairs):
        if t not in matches and d not in used:
            matches[t] = d
            used.add(d)
    return matches


def fill_gaps(values: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Linear interpolation over time (axis 0) of unobserved frames; leading/trailing gaps hold the nearest value."""
    observed = np.asarray(observed, dtype=bool)
    if not observed.any():
        raise NoPersonDetectedError("cannot fill a track that was never observed")
    return fill_invalid(np.asarray(values, dtype=np.float32), observed)


def _root(joints: np.ndarray) -> np.ndarray:
    return joints[:, 0, :] if joints.shape[0] else np.zeros((0, 3), np.float32)


def track_people(
    detections: FrameDetections,
    *,
    policy: str = "largest",
    person_index: int = 0,
    max_people: int = 1,
    min_iou: float = 0.1,
    max_root_distance_mm: float = 500.0,
) -> list[PersonTrack]:
    """Pick and track people through ``detections``.

    Args:
        policy: how people are ranked in the start frame: ``largest`` box area, ``highest_score``,
            ``leftmost`` box centre, or ``index`` (NLF's own order).
        person_index: rank (0 = first) of the person to follow under ``policy``. The start frame is
            the first frame with more than ``person_index`` people.
        max_people: how many people to track (the chosen one first; people appearing later start
            new tracks while fewer than ``max_people`` exist).
        min_iou: a detection continues a track when its box IoU with the track's predicted box
            reaches this ...
        max_root_distance_mm: ... or its pelvis is within this distance of the predicted pelvis
            (per frame of gap, up to 10 frames).

    Returns:
        ``PersonTrack`` list, the chosen person first. Raises NoPersonDetectedError when no frame
        has anyone, ValueError when no frame has ``person_index + 1`` people.
    """
    if person_index < 0:
        raise ValueError(f"person_index must be >= 0, got {person_index}")
    if max_people < 1:
        raise ValueError(f"max_people must be >= 1, got {max_people}")
    rank_people(np.zeros((0, 5)), policy)  # validates the policy name
    counts = detections.people_per_frame
    num_frames = detections.num_frames
    if num_frames == 0 or counts.max(initial=0) == 0:
        raise NoPersonDetectedError(
            f"NLF found no person in any of the {num_frames} frames (detector threshold "
            f"{detections.detector_threshold:g}). Check the video shows a person, or lower the detection threshold."
        )
    if counts.max() <= person_index:
        raise ValueError(
            f"person_index {person_index} asks for person #{person_index + 1}, but at most {counts.max()} "
            "people were detected in any frame"
        )
    start = int(np.flatnonzero(counts > person_index)[0])
    ranked = rank_people(detections.boxes[start], policy)[person_index : person_index + max_people]

    assign = np.full((max_people, num_frames), -1, dtype=np.int64)
    roots = [_root(j) for j in detections.joints_mm]
    for t, d in enumerate(ranked):
        assign[t, start] = d

    def run(frames: range, spawn: bool) -> None:
        states = [_TrackState(start, detections.boxes[start][d], roots[start][d]) for d in ranked]
        for f in frames:
            boxes, f_roots = detections.boxes[f], roots[f]
            matches = _associate(states, f, boxes, f_roots, min_iou, max_root_distance_mm)
            for t, d in matches.items():
                assign[t, f] = d
                states[t].observe(f, boxes[d], f_roots[d])
            if spawn and len(states) < max_people and boxes.shape[0] > len(matches):
                free = [d for d in rank_people(boxes, policy) if d not in matches.values()]
                for d in free[: max_people - len(states)]:
                    assign[len(states), f] = d
                    states.append(_TrackState(f, boxes[d], f_roots[d]))

    run(range(start + 1, num_frames), spawn=True)
    run(range(start - 1, -1, -1), spawn=False)  # the initial people, back to frame 0

    tracks = []
    for t in range(max_people):
        if not (assign[t] >= 0).any():
            break
        tracks.append(_build_track(detections, t, assign[t]))
    logger.info(
        "tracked %d person(s) from frame %d (policy %s, index %d); chosen person seen in %d/%d frames",
        len(tracks), start, policy, person_index, int(tracks[0].valid.sum()), num_frames,
    )
    return tracks


def _build_track(detections: FrameDetections, track_id: int, det_index: np.ndarray) -> PersonTrack:
    num_frames = det_index.shape[0]
    observed = det_index >= 0
    joints = np.zeros((num_frames, 24, 3), np.float32)
    boxes = np.zeros((num_frames, 4), np.float32)
    scores = np.zeros(num_frames, np.float32)
    for f in np.flatnonzero(observed):
        d = det_index[f]
        joints[f] = detections.joints_mm[f][d]
        boxes[f] = detections.boxes[f][d, :4]
        scores[f] = detections.boxes[f][d, 4]
    smpl = None
    if detections.smpl is not None:
        smpl = {}
        for key, per_frame in detections.smpl.items():
            width = next(p.shape[1] for p, d in zip(per_frame, det_index) if d >= 0)
            arr = np.zeros((num_frames, width), np.float32)
            for f in np.flatnonzero(observed):
                arr[f] = per_frame[f][det_index[f]]
            smpl[key] = fill_gaps(arr, observed)
    return PersonTrack(
        track_id=track_id,
        detection_index=det_index,
        joints_mm=fill_gaps(joints, observed),
        boxes=TrackedBoxes(
            boxes_xywh=fill_gaps(boxes, observed), scores=scores, valid=observed.copy(),
            image_size=detections.image_size, track_id=track_id,
        ),
        smpl=smpl,
    )
