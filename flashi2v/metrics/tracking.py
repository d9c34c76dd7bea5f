"""Object tracking by colour in a generated video, and comparison with ground-truth trajectories.

Coordinates are ``[x, y]`` in pixels, +x right, +y down. By default the centre of pixel (row ``i``, column ``j``) is
at ``x = j, y = i`` (array-index convention); pass ``pixel_centre=0.5`` to :func:`track_colour` when the ground truth
uses pixel-area coordinates (centre at ``j + 0.5``). See ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ._common import as_video


def _rgb255(rgb) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.shape != (3,):
        raise InputError(f"rgb must have 3 values, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and float(arr.max()) <= 1.0:
        arr = arr * 255.0  # floats in [0, 1]
    arr = arr.astype(np.float64)
    if arr.min() < 0 or arr.max() > 255:
        raise InputError(f"rgb values must be 0..255 (integers) or floats in [0, 1], got {rgb!r}")
    return arr


def _frame255(frame: np.ndarray) -> np.ndarray:
    if np.issubdtype(frame.dtype, np.integer):
        return frame.astype(np.float32)
    return np.clip(frame.astype(np.float32), 0.0, 1.0) * 255.0


def track_colour(
    video,
    rgb,
    tol: float = 40.0,
    *,
    min_pixels: int = 4,
    search_radius: float | None = None,
    start: Sequence[float] | None = None,
    reducer: str = "mean",
    connectivity: int = 8,
    pixel_centre: float = 0.0,
    pixels: list | None = None,
) -> list[tuple[float, float] | None]:
    """Per-frame centroid ``(x, y)`` of the object of colour ``rgb`` in ``video``, or ``None`` where it is not found.

    ``video``: ``[T, H, W, 3]`` uint8 or float in [0, 1]. ``rgb``: 3 integers 0..255, or floats in [0, 1] (floats
    whose maximum exceeds 1 are read as 0..255). In each frame:

    1. pixels whose **Euclidean RGB distance** to ``rgb`` is at most ``tol`` (in 0..255 units) are candidates;
    2. with ``search_radius``, only candidates inside a square window of half-size ``search_radius * (1 + k)``
       around the last found centroid are kept, where ``k`` is the number of frames since it was last found (the
       window grows while the object is lost); before the first detection the window is centred on ``start`` when
       given, otherwise the whole frame is searched;
    3. candidates are grouped into connected components (``connectivity`` 8 or 4) and the **largest** is kept (ties:
       the one closest to the previous centroid); scattered look-alike pixels elsewhere are ignored;
    4. if it has fewer than ``min_pixels`` pixels the frame gives ``None``; otherwise its centroid is the ``mean``
       (or, with ``reducer="median"``, the per-axis median) of its pixel coordinates, plus ``pixel_centre``.

    With a list ``pixels``, each frame also appends the kept component's pixels there, an int array ``[N, 2]`` of
    ``(x, y)`` (array-index convention), or None where nothing was found (for :func:`shape_iou`).
    """
    from scipy import ndimage as ndi

    v = as_video(video, "video")
    target = _rgb255(rgb).astype(np.float32)
    if reducer not in ("mean", "median"):
        raise InputError(f"reducer must be 'mean' or 'median', got {reducer!r}")
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}")
    if tol < 0:
        raise InputError(f"tol must be >= 0, got {tol}")
    structure = np.ones((3, 3), bool) if connectivity == 8 else ndi.generate_binary_structure(2, 1)
    _, h, w, _ = v.shape
    prev = None if start is None else (float(start[0]) - pixel_centre, float(start[1]) - pixel_centre)
    lost = 0
    out: list[tuple[float, float] | None] = []
    for t in range(v.shape[0]):
        d2 = np.sum((_frame255(v[t]) - target) ** 2, axis=-1)
        mask = d2 <= float(tol) ** 2
        if search_radius is not None and prev is not None:
            r = float(search_radius) * (1 + lost)
            x0, x1 = max(0, math.floor(prev[0] - r)), min(w, math.ceil(prev[0] + r) + 1)
            y0, y1 = max(0, math.floor(prev[1] - r)), min(h, math.ceil(prev[1] + r) + 1)
            window = np.zeros_like(mask)
            window[y0:y1, x0:x1] = True
            mask &= window
        found = None
        if mask.any():
            labels, _n = ndi.label(mask, structure=structure)
            sizes = np.bincount(labels.ravel())[1:]
            best = np.flatnonzero(sizes == sizes.max()) + 1
            if len(best) > 1 and prev is not None:
                cents = ndi.center_of_mass(mask, labels, best)
                dist = [math.hypot(cx - prev[0], cy - prev[1]) for cy, cx in cents]
                best = best[[int(np.argmin(dist))]]
            label = int(best[0])
            if sizes[label - 1] >= min_pixels:
                ys, xs = np.nonzero(labels == label)
                red = np.mean if reducer == "mean" else np.median
                found = (float(red(xs)), float(red(ys)))
                if pixels is not None:
                    pixels.append(np.stack([xs, ys], 1).astype(np.int32))
        if found is None and pixels is not None:
            pixels.append(None)
        if found is None:
            out.append(None)
            lost += 1
        else:
            out.append((found[0] + pixel_centre, found[1] + pixel_centre))
            prev, lost = found, 0
    return out


def shape_iou(a, b, *, align: bool = True) -> float:
    """Intersection over union of two pixel sets (int ``[N, 2]`` arrays of ``(x, y)``, e.g. from
    :func:`track_colour`'s ``pixels``), by default after moving ``a`` so that its centroid lands on ``b``'s (a shift
    rounded to whole pixels): how much of an object's *shape* survives, wherever it is. 1 for the same shape
    anywhere (up to the rounding of sub-pixel centroid offsets), 0 for no overlap; NaN when either set is empty or
    None. ``align=False`` compares the sets where they are."""
    if a is None or b is None:
        return float("nan")
    a, b = np.asarray(a, np.int64).reshape(-1, 2), np.asarray(b, np.int64).reshape(-1, 2)
    if not len(a) or not len(b):
        return float("nan")
    if align:
        a = a + np.round(b.mean(0) - a.mean(0)).astype(np.int64)
    lo = np.minimum(a.min(0), b.min(0))
    span = int(max(a.max(0)[0], b.max(0)[0]) - lo[0] + 1)
    key_a = np.unique((a[:, 1] - lo[1]) * span + (a[:, 0] - lo[0]))
    key_b = np.unique((b[:, 1] - lo[1]) * span + (b[:, 0] - lo[0]))
    inter = len(np.intersect1d(key_a, key_b, assume_unique=True))
    return inter / float(len(key_a) + len(key_b) - inter)


def _as_points(points, name: str) -> np.ndarray:
    """A sequence of ``(x, y)`` / ``None`` (or an array ``[T, 2]`` with NaN rows) -> float array ``[T, 2]``."""
    if isinstance(points, np.ndarray) and points.dtype != object:
        arr = points.astype(np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputError(f"{name}: expected [T, 2] points, got shape {arr.shape}")
        return arr
    rows = []
    for p in points:
        if p is None:
            rows.append((np.nan, np.nan))
        else:
            q = np.asarray(p, dtype=np.float64).ravel()
            if q.shape != (2,):
                raise InputError(f"{name}: each point must be (x, y) or None, got {p!r}")
            rows.append((q[0], q[1]))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


@dataclass(frozen=True)
class TrajectoryError:
    """Result of :func:`trajectory_error`; distances in pixels, lower is better.

    * ``mean``: mean Euclidean distance over the ``matched`` frames (both present); NaN when there are none;
    * ``per_frame``: distance per frame, NaN where either centroid is missing;
    * ``matched``: frames where both exist; ``missed``: ground truth visible but nothing tracked (the object
      vanished in the generated video); ``spurious``: tracked although the ground truth says invisible;
      ``gt_visible``: frames with a ground-truth centroid; ``miss_rate = missed / gt_visible``;
    * ``penalised``: mean over all ``gt_visible`` frames where a missed frame counts as ``miss_penalty`` pixels;
      ``None`` when no ``miss_penalty`` was given.
    """

    mean: float
    per_frame: np.ndarray
    matched: int
    missed: int
    spurious: int
    gt_visible: int
    miss_rate: float
    penalised: float | None

    def __float__(self) -> float:
        return float(self.mean)


def trajectory_error(pred_centroids, gt_centroids, *, miss_penalty: float | None = None) -> TrajectoryError:
    """Compare tracked centroids with ground-truth centroids frame by frame (see :class:`TrajectoryError`).

    Both are sequences of ``(x, y)`` or ``None`` per frame (or ``[T, 2]`` arrays with NaN rows), of equal length.
    ``miss_penalty`` (pixels, e.g. the frame diagonal) defines ``penalised``, the error that also punishes an object
    that disappeared in the generated video.
    """
    p = _as_points(pred_centroids, "pred_centroids")
    g = _as_points(gt_centroids, "gt_centroids")
    if len(p) != len(g):
        raise InputError(f"pred_centroids has {len(p)} frames but gt_centroids has {len(g)}")
    hp = ~np.isnan(p).any(axis=1)
    hg = ~np.isnan(g).any(axis=1)
    both = hp & hg
    per_frame = np.full(len(p), np.nan)
    per_frame[both] = np.hypot(*(p[both] - g[both]).T)
    matched, missed, spurious, visible = int(both.sum()), int((hg & ~hp).sum()), int((hp & ~hg).sum()), int(hg.sum())
    mean = float(per_frame[both].mean()) if matched else float("nan")
    penalised = None
    if miss_penalty is not None:
        penalised = float((per_frame[both].sum() + missed * float(miss_penalty)) / visible) if visible else float("nan")
    return TrajectoryError(
        mean=mean,
        per_frame=per_frame,
        matched=matched,
        missed=missed,
        spurious=spurious,
        gt_visible=visible,
        miss_rate=missed / visible if visible else float("nan"),
        penalised=penalised,
    )


@dataclass(frozen=True)
class DirectionAgreement:
    """Result of :func:`motion_direction_agreement`. ``bool(result)`` is ``agrees``.

    ``displacement``: net ``(dx, dy)`` from the first to the last tracked centroid (None with fewer than two);
    ``magnitude``: its length in pixels; ``angle_deg``: angle to the expected direction (0..180, NaN if undefined);
    ``reason``: ``"ok"``, ``"opposite"`` (angle too large), ``"too_small"`` or ``"not_tracked"``.
    """

    agrees: bool
    angle_deg: float
    displacement: tuple[float, float] | None
    magnitude: float
    reason: str

    def __bool__(self) -> bool:
        return bool(self.agrees)


def _expected_direction(direction) -> np.ndarray:
    """``(dx, dy)`` or a per-frame sequence of ``(dx, dy)`` / ``None`` -> one unit vector."""
    try:
        arr = np.asarray(direction, dtype=np.float64)
    except (TypeError, ValueError):  # a sequence containing None
        arr = None
    if arr is not None and arr.shape == (2,):
        vecs = arr[None]
    else:
        vecs = _as_points(arr if arr is not None else direction, "direction_vector")
    vecs = vecs[~np.isnan(vecs).any(axis=1)]
    norms = np.linalg.norm(vecs, axis=1)
    vecs = vecs[norms > 0] / norms[norms > 0, None]
    mean = vecs.mean(axis=0) if len(vecs) else np.zeros(2)
    n = float(np.linalg.norm(mean))
    if not n > 1e-9:
        raise InputError("direction_vector is zero / undefined: no expected motion direction to compare with")
    return mean / n


def motion_direction_agreement(
    pred_centroids, direction_vector, min_displacement: float = 2.0, *, max_angle_deg: float = 45.0
) -> DirectionAgreement:
    """Does the tracked object move the expected way?

    The net displacement is the last minus the first non-``None`` centroid of ``pred_centroids``. It agrees when its
    length is at least ``min_displacement`` pixels and its angle to ``direction_vector`` is at most
    ``max_angle_deg`` (default 45). ``direction_vector`` is ``(dx, dy)`` (+x right, +y down; any length), or a
    per-frame sequence of such vectors / ``None`` (the ground truth's per-frame directions), whose defined entries
    are normalised and averaged. An object tracked in fewer than two frames, or that moved less than
    ``min_displacement``, does not agree.
    """
    expected = _expected_direction(direction_vector)
    pts = _as_points(pred_centroids, "pred_centroids")
    pts = pts[~np.isnan(pts).any(axis=1)]
    if len(pts) < 2:
        return DirectionAgreement(False, float("nan"), None, 0.0, "not_tracked")
    d = pts[-1] - pts[0]
    mag = float(np.hypot(*d))
    disp = (float(d[0]), float(d[1]))
    if mag < min_displacement or mag == 0.0:
        return DirectionAgreement(False, float("nan"), disp, mag, "too_small")
    cos = float(np.clip(np.dot(d / mag, expected), -1.0, 1.0))
    angle = math.degrees(math.acos(cos))
    ok = angle <= max_angle_deg
    return DirectionAgreement(ok, angle, disp, mag, "ok" if ok else "opposite")
