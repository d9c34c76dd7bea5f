"""Global camera motion of a video: how far its content moves from frame to frame.

A camera that pans right makes the content move left: :func:`camera_shift` measures the content's motion (the
median of the dense optical flow of each pair of frames, so moving objects that cover less than half the frame do
not move it), and :func:`camera_direction_agreement` compares its opposite with the camera's expected direction.
Coordinates as in :mod:`flashi2v.metrics.tracking`: ``[x, y]`` in pixels, +x right, +y down. See
``docs/metrics.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ._common import as_video
from .motion import check_flow, optical_flow
from .tracking import DirectionAgreement, motion_direction_agreement


@dataclass(frozen=True)
class CameraShift:
    """``steps`` ``[T-1, 2]``: the content's translation ``(dx, dy)`` from each frame to the next, in pixels (the
    median flow); ``path`` ``[T, 2]``: their running sum from ``(0, 0)`` at frame 0."""

    steps: np.ndarray
    path: np.ndarray

    @property
    def total(self) -> tuple[float, float]:
        """Net translation of the content from the first frame to the last."""
        return float(self.path[-1, 0]), float(self.path[-1, 1])


def camera_shift(video, *, flow: np.ndarray | None = None, method: str = "tvl1") -> CameraShift:
    """The content's frame-to-frame translation of ``video`` (``[T, H, W, 3]``, uint8 or float in [0, 1]): per pair
    of frames, the per-axis median of :func:`flashi2v.metrics.optical_flow` (``method``). Pass ``flow``
    (``[T-1, H, W, 2]``, that function's output for this video) to reuse a flow already computed. A pan gives a
    uniform flow and its median is the pan; zoom and rotation give flows that cancel around the centre (median
    near 0)."""
    v = as_video(video)
    t, h, w, _ = v.shape
    flow = optical_flow(v, method=method) if flow is None else check_flow(flow, t, h, w)
    steps = np.median(flow.reshape(t - 1, -1, 2), axis=1).astype(np.float64)
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    return CameraShift(steps=steps, path=path)


def camera_direction_agreement(video_or_shift, camera_vector, min_displacement: float = 2.0, *,
                               max_angle_deg: float = 45.0) -> DirectionAgreement:
    """Does the camera of ``video_or_shift`` (a video, or its :class:`CameraShift`) move along ``camera_vector``
    ``(dx, dy)`` (the camera's own direction, e.g. ``(1, 0)`` for a pan right)? Its content must then move the
    opposite way, by at least ``min_displacement`` pixels in total and within ``max_angle_deg`` of that: the rule of
    :func:`flashi2v.metrics.motion_direction_agreement` applied to the content's path. The displacement reported
    is the content's."""
    content = -np.asarray(camera_vector, dtype=np.float64)
    if content.shape != (2,):
        raise InputError(f"camera_vector must be (dx, dy), got {camera_vector!r}")
    shift = video_or_shift if isinstance(video_or_shift, CameraShift) else camera_shift(video_or_shift)
    return motion_direction_agreement(shift.path, tuple(content), min_displacement, max_angle_deg=max_angle_deg)
