"""Full-reference fidelity metrics: MSE, PSNR and SSIM, per frame. See ``docs/metrics.md``.

All inputs follow :mod:`flashi2v.metrics._common`: uint8 ``[T, H, W, 3]`` (0..255) or float in [0, 1], numpy or torch;
single frames ``[H, W, 3]`` are accepted as ``T = 1``. Values are computed on the [0, 1] scale in float64, so a
uint8 video and the same video as float ``/ 255`` give identical numbers.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ._common import FrameMetric, as_image, as_video, same_shape, to_unit

#: Per-frame PSNR cap in dB (identical frames have MSE 0 and an infinite PSNR). Pass ``max_db=None`` for ``inf``.
PSNR_MAX_DB = 100.0

# Wang et al. 2004 SSIM constants.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(a, b):
    a = as_video(a, "a", allow_image=True)
    b = as_video(b, "b", allow_image=True)
    same_shape(a, b)
    return a, b


def mse(a, b) -> FrameMetric:
    """Mean squared error per frame on the [0, 1] scale (averaged over H, W and the 3 channels). Lower is better."""
    a, b = _pair(a, b)
    return FrameMetric.of([np.mean((to_unit(a[t]) - to_unit(b[t])) ** 2) for t in range(a.shape[0])])


def _psnr_from_mse(m: float, data_range: float, max_db: float | None) -> float:
    if m <= 0.0:
        return math.inf if max_db is None else float(max_db)
    value = 10.0 * math.log10(data_range**2 / m)
    return value if max_db is None else min(value, float(max_db))


def psnr(a, b, data_range: float = 1.0, *, max_db: float | None = PSNR_MAX_DB) -> FrameMetric:
    """Peak signal-to-noise ratio per frame, ``10 log10(data_range^2 / MSE)`` in dB, and its mean over frames.

    ``a`` and ``b``: videos ``[T, H, W, 3]`` (or frames ``[H, W, 3]``) of the same shape, uint8 or float in [0, 1].
    ``data_range`` is the peak value **on the [0, 1] scale** the inputs are converted to (1.0 = full scale, which is
    exactly PSNR of uint8 data with peak 255). Each frame's PSNR is capped at ``max_db`` (default 100 dB) so
    identical frames give 100 rather than ``inf``; ``max_db=None`` returns ``inf`` for them (and the mean is then
    ``inf``). The mean is the mean of the (capped) per-frame values. Higher is better.
    """
    if not data_range > 0:
        raise InputError(f"data_range must be > 0, got {data_range}")
    m = mse(a, b)
    return FrameMetric.of([_psnr_from_mse(float(v), data_range, max_db) for v in m.per_frame])


def first_frame_psnr(video, image, data_range: float = 1.0, *, max_db: float | None = PSNR_MAX_DB) -> float:
    """PSNR (dB) between the first frame of ``video`` and the condition ``image``: how faithfully an I2V model
    reproduces its input at frame 0. ``image`` may be ``[H, W, 3]``, ``[1, H, W, 3]`` or channels-first
    ``[3, H, W]`` (as returned by :func:`flashi2v.media.load_image`). Higher is better; capped like :func:`psnr`."""
    v = as_video(video, "video", allow_image=True)
    img = as_image(image, "image")
    same_shape(v[0], img, ("video frame 0", "image"))
    return float(psnr(v[0], img, data_range, max_db=max_db).mean)


def _gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    return k / k.sum()


def _ssim_frames(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """Mean SSIM per frame of float64 arrays [N, H, W, C] (valid region, mean over pixels and channels)."""
    from scipy.ndimage import correlate1d

    k = _gaussian_kernel()
    r = (SSIM_WINDOW - 1) // 2

    def filt(z):  # separable Gaussian; the border it pads is cropped, leaving the "valid" region only
        return correlate1d(correlate1d(z, k, axis=1), k, axis=2)[:, r:-r, r:-r]

    ux, uy = filt(x), filt(y)
    uxx, uyy, uxy = filt(x * x), filt(y * y), filt(x * y)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


def ssim(a, b, *, luminance: bool = False, data_range: float = 1.0, batch: int = 8) -> FrameMetric:
    """Structural similarity per frame (Wang et al. 2004) and its mean over frames. Higher is better (1 = identical).

    Gaussian window of 11 taps with sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample) covariances, computed
    on the [0, 1] scale with ``data_range`` 1. The SSIM map is evaluated where the whole window fits (a 5-pixel
    border is excluded) and averaged. By default SSIM is computed **on each RGB channel separately** and the
    three channel means are averaged: exactly ``skimage.metrics.structural_similarity(a, b, channel_axis=-1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=...)`` per frame. With
    ``luminance=True`` it is computed once on the BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` instead.

    Frames must be at least 11x11. ``batch`` frames are processed at a time (memory only).
    """
    a, b = _pair(a, b)
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise InputError(f"ssim needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {a.shape[1]}x{a.shape[2]}")
    luma = np.array([0.299, 0.587, 0.114])
    out = []
    step = max(1, int(batch))
    for s in range(0, a.shape[0], step):
        x, y = to_unit(a[s : s + step]), to_unit(b[s : s + step])
        if luminance:
            x, y = (x @ luma)[..., None], (y @ luma)[..., None]
        out.append(_ssim_frames(x, y, data_range))
    return FrameMetric.of(np.concatenate(out))
