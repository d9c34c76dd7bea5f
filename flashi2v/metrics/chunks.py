"""Chunk-wise evaluation over time (FlashI2V, Figure 7a: error per temporal chunk). See ``docs/metrics.md``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ._common import FrameMetric, as_video, same_shape
from .fidelity import PSNR_MAX_DB, mse, psnr, ssim


def chunk_bounds(num_frames: int, num_chunks: int = 4, *, skip_first: bool = False) -> list[tuple[int, int]]:
    """Split frames ``0..num_frames-1`` into ``num_chunks`` contiguous ``(start, stop)`` ranges (stop exclusive).

    Sizes differ by at most one; the **first** ``n % num_chunks`` chunks get the extra frame (the ``numpy.array_split``
    rule), e.g. 17 frames in 4 chunks -> sizes 5, 4, 4, 4 = ``[(0, 5), (5, 9), (9, 13), (13, 17)]``.
    With ``skip_first`` frame 0 (the condition frame of an I2V clip) is left out first: 17 frames -> four chunks of 4
    starting at frame 1.
    """
    if num_chunks < 1:
        raise InputError(f"num_chunks must be >= 1, got {num_chunks}")
    start = 1 if skip_first else 0
    n = num_frames - start
    if n < num_chunks:
        raise InputError(f"cannot split {n} frame(s) into {num_chunks} chunks; use fewer chunks")
    base, extra = divmod(n, num_chunks)
    bounds = []
    for i in range(num_chunks):
        size = base + (1 if i < extra else 0)
        bounds.append((start, start + size))
        start += size
    return bounds


@dataclass(frozen=True)
class ChunkScores:
    """One value per temporal chunk: ``values`` float64 ``[num_chunks]`` and the frame ``bounds`` of each chunk."""

    values: np.ndarray
    bounds: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self):
        return iter(self.values.tolist())


def _scalar(result: Any) -> float:
    if isinstance(result, FrameMetric):
        return float(result.mean)
    if isinstance(result, (int, float, np.floating, np.integer)):
        return float(result)
    try:
        import torch

        if isinstance(result, torch.Tensor):
            result = result.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(result, np.ndarray):
        return float(np.mean(result))
    return float(result)


def chunkwise(
    metric: Callable[..., Any],
    video,
    reference=None,
    num_chunks: int = 4,
    *,
    skip_first: bool = False,
) -> ChunkScores:
    """Evaluate ``metric(video_chunk, reference_chunk)`` (or ``metric(video_chunk)`` when ``reference`` is None) on
    each contiguous temporal chunk given by :func:`chunk_bounds`.

    ``metric`` may return a float, a :class:`FrameMetric` (its ``mean`` is used: the mean of the per-frame values in
    that chunk) or an array/tensor (its mean is used). Videos are ``[T, H, W, 3]`` uint8 or float in [0, 1].
    """
    v = as_video(video, "video")
    ref = None
    if reference is not None:
        ref = as_video(reference, "reference")
        same_shape(v, ref, ("video", "reference"))
    bounds = chunk_bounds(v.shape[0], num_chunks, skip_first=skip_first)
    values = []
    for s, e in bounds:
        r = metric(v[s:e]) if ref is None else metric(v[s:e], ref[s:e])
        values.append(_scalar(r))
    return ChunkScores(values=np.asarray(values, dtype=np.float64), bounds=tuple(bounds))


def chunkwise_psnr(
    video, reference, num_chunks: int = 4, *, skip_first: bool = False, max_db: float | None = PSNR_MAX_DB
) -> ChunkScores:
    """Mean per-frame PSNR (dB, capped at ``max_db``) in each chunk. Higher is better."""
    return chunkwise(lambda a, b: psnr(a, b, max_db=max_db), video, reference, num_chunks, skip_first=skip_first)


def chunkwise_ssim(
    video, reference, num_chunks: int = 4, *, skip_first: bool = False, luminance: bool = False
) -> ChunkScores:
    """Mean per-frame SSIM in each chunk (use ``1 - values`` as the error plotted in Figure 7a). Higher is better."""
    return chunkwise(lambda a, b: ssim(a, b, luminance=luminance), video, reference, num_chunks, skip_first=skip_first)


def chunkwise_mse(video, reference, num_chunks: int = 4, *, skip_first: bool = False) -> ChunkScores:
    """Mean per-frame MSE ([0, 1] scale) in each chunk. Lower is better."""
    return chunkwise(mse, video, reference, num_chunks, skip_first=skip_first)
