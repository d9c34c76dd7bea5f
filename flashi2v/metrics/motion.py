"""Motion metrics: classical optical flow, VBench-style dynamic degree and temporal flickering.

See ``docs/metrics.md`` for the definitions and how they deviate from VBench (which uses RAFT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ._common import as_video, to_unit

#: Default TV-L1 settings: skimage's defaults except 3 warps (instead of 5). On 128x128 frames this is ~40 % faster
#: (about 50-70 ms per pair). Measured exact on translations up to ~6 px/frame (fine textures) / ~9 px/frame (photos)
#: at 128x128; pass ``num_warp=5`` (or more) for faster motion.
TVL1_DEFAULTS = {"attachment": 15.0, "tightness": 0.3, "num_warp": 3, "num_iter": 10, "tol": 1e-4, "prefilter": False}
#: Default iterative Lucas-Kanade settings (skimage's defaults).
ILK_DEFAULTS = {"radius": 7, "num_warp": 10, "gaussian": False, "prefilter": False}

# VBench dynamic_degree constants (vbench/dynamic_degree.py, DynamicDegree.get_score / set_params / check_move).
VBENCH_TOP_FRACTION = 0.05
VBENCH_THRESHOLD_PX_AT_256 = 6.0
VBENCH_COUNT_PER_16_FRAMES = 4
VBENCH_FPS = 8.0


def _grey(frame: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2gray

    return rgb2gray(to_unit(frame)).astype(np.float32)


def optical_flow(video, *, method: str = "tvl1", **kwargs) -> np.ndarray:
    """Dense optical flow between consecutive frames, float32 ``[T-1, H, W, 2]`` with ``[..., 0] = dx`` (+x right)
    and ``[..., 1] = dy`` (+y down), in pixels: content at ``(x, y)`` in frame ``t`` is at ``(x + dx, y + dy)`` in
    frame ``t + 1``.

    Frames are converted to greyscale (``skimage.color.rgb2gray``, Rec. 709 luma) in [0, 1]. ``method="tvl1"``
    (default) is ``skimage.registration.optical_flow_tvl1`` with :data:`TVL1_DEFAULTS`; ``method="ilk"`` is
    ``skimage.registration.optical_flow_ilk`` (faster, but not regularised: it has outliers in flat regions and at
    sub-pixel shifts of textured content). Extra ``kwargs`` override the settings of the chosen method.
    """
    from skimage.registration import optical_flow_ilk, optical_flow_tvl1

    v = as_video(video, "video")
    if method == "tvl1":
        fn, settings = optical_flow_tvl1, {**TVL1_DEFAULTS, **kwargs}
    elif method == "ilk":
        fn, settings = optical_flow_ilk, {**ILK_DEFAULTS, **kwargs}
    else:
        raise InputError(f"optical flow method must be 'tvl1' or 'ilk', got {method!r}")
    t, h, w, _ = v.shape
    out = np.zeros((max(t - 1, 0), h, w, 2), np.float32)
    prev = _grey(v[0])
    for i in range(1, t):
        cur = _grey(v[i])
        dy, dx = fn(prev, cur, **settings)  # skimage returns (row, col) displacements
        out[i - 1, ..., 0] = dx
        out[i - 1, ..., 1] = dy
        prev = cur
    return out


def check_flow(flow, frames: int, height: int, width: int) -> np.ndarray:
    """``flow`` as an array, if it has the shape of :func:`optical_flow` of ``frames`` frames of ``height`` x
    ``width``; else a one-line :class:`InputError`."""
    arr = np.asarray(flow)
    want = (frames - 1, height, width, 2)
    if arr.shape != want:
        raise InputError(f"flow must have shape {want} (optical_flow of the frames used), got {arr.shape}")
    return arr


def top_fraction_mean(values: np.ndarray, fraction: float = VBENCH_TOP_FRACTION) -> float:
    """Mean of the largest ``int(values.size * fraction)`` values (VBench's ``get_score``; all values if that is 0)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    k = int(flat.size * fraction)
    if k <= 0:
        return float(flat.mean()) if flat.size else 0.0
    return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())


@dataclass(frozen=True)
class DynamicDegree:
    """Result of :func:`dynamic_degree`. ``bool(result)`` is ``is_dynamic``.

    ``scores``: per frame pair, mean of the top 5 % flow magnitudes (pixels); ``threshold``: the pixel threshold a
    pair must exceed; ``count_required``: pairs needed over it; ``count_over``: pairs over it; ``frame_interval``:
    the temporal subsampling applied before the flow (1 = none).
    """

    is_dynamic: bool
    scores: np.ndarray
    threshold: float
    count_required: int
    count_over: int
    frame_interval: int

    def __bool__(self) -> bool:
        return bool(self.is_dynamic)


def dynamic_degree(video, *, fps: float | None = None, method: str = "tvl1", flow: np.ndarray | None = None,
                   **flow_kwargs) -> DynamicDegree:
    """VBench's ``dynamic_degree`` rule on a classical optical flow (VBench uses RAFT; see ``docs/metrics.md``).

    1. If ``fps`` is given, frames are subsampled like VBench: every ``max(1, round(fps / 8))``-th frame, and the
       threshold factor is ``max(1, 8 / fps)``. With ``fps=None`` (default) the clip is used as it is, factor 1.
    2. Per consecutive pair: flow magnitude, score = mean of the top ``int(0.05 * H * W)`` magnitudes.
    3. ``threshold = factor * 6.0 * min(H, W) / 256``; ``count_required = round(4 * n / 16)`` (Python's
       round-half-to-even) with ``n`` the number of frames used.
    4. Dynamic when the number of pairs with ``score > threshold`` is ``>= count_required`` (and at least one pair
       exists). As in VBench, ``n <= 2`` gives ``count_required = 0`` so any two-frame clip counts as dynamic.

    For 17 frames at 128x128 and ``fps=None``: threshold 3.0 px, 4 of the 16 pairs must exceed it. ``flow``: the
    :func:`optical_flow` of the frames used (after the ``fps`` subsampling), when it is already computed.
    """
    v = as_video(video, "video")
    interval, factor = 1, 1.0
    if fps is not None:
        if not fps > 0:
            raise InputError(f"fps must be > 0, got {fps}")
        interval = max(1, round(fps / VBENCH_FPS))
        factor = max(1.0, VBENCH_FPS / fps)
        v = v[::interval]
    n, h, w, _ = v.shape
    threshold = factor * VBENCH_THRESHOLD_PX_AT_256 * (min(h, w) / 256.0)
    count_required = round(VBENCH_COUNT_PER_16_FRAMES * (n / 16.0))
    flow = optical_flow(v, method=method, **flow_kwargs) if flow is None else check_flow(flow, n, h, w)
    scores = np.array([top_fraction_mean(np.hypot(f[..., 0], f[..., 1])) for f in flow], dtype=np.float64)
    count_over = int((scores > threshold).sum())
    return DynamicDegree(
        is_dynamic=bool(len(scores) > 0 and count_over >= count_required),
        scores=scores,
        threshold=float(threshold),
        count_required=int(count_required),
        count_over=count_over,
        frame_interval=interval,
    )


@dataclass(frozen=True)
class TemporalFlicker:
    """Result of :func:`temporal_flicker`.

    ``mae``: mean absolute difference between consecutive frames in 0..255 units (lower = steadier);
    ``score``: VBench's ``(255 - mae) / 255`` in [0, 1] (higher = steadier, 1 = static); ``per_pair``: MAE per pair.
    """

    mae: float
    score: float
    per_pair: np.ndarray

    def __float__(self) -> float:
        return float(self.score)


def temporal_flicker(video) -> TemporalFlicker:
    """VBench's ``temporal_flickering``: mean absolute error between consecutive frames over all pixels and channels,
    in 0..255 units, averaged over pairs, and the score ``(255 - mae) / 255``. Float input in [0, 1] is scaled by 255
    (not rounded). VBench only applies it to videos of static scenes, where any change is flicker; on a moving scene
    it measures motion as much as flicker. A one-frame video gives mae 0, score 1."""
    v = as_video(video, "video")
    pairs = [float(np.mean(np.abs(to_unit(v[i + 1]) - to_unit(v[i])))) * 255.0 for i in range(v.shape[0] - 1)]
    per_pair = np.asarray(pairs, dtype=np.float64)
    mae = float(per_pair.mean()) if per_pair.size else 0.0
    return TemporalFlicker(mae=mae, score=(255.0 - mae) / 255.0, per_pair=per_pair)
