"""Input handling shared by the metrics: one video convention, validated once, converted frame by frame.

Accepted video inputs (numpy arrays or torch tensors, any device):

* ``[T, H, W, 3]`` **uint8** (or another integer type with values in 0..255): pixel values 0..255;
* ``[T, H, W, 3]`` **float** (float16/bfloat16/float32/float64) with values in [0, 1] (a tolerance of 1e-3 is
  allowed for rounding, values are then clipped);
* a single frame ``[H, W, 3]`` where a function says so (it becomes ``T = 1``).

Everything is converted to float64 in [0, 1] (uint8 / 255) *per frame or per chunk*, so an 81x480x832 video is never
held in float64 at once. A channels-first array (``[T, 3, H, W]``) is rejected with a hint, and so is float data in
[-1, 1] or 0..255.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

FLOAT_TOLERANCE = 1e-3


def _to_numpy(x: Any) -> np.ndarray:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency of the package
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _check_values(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        raise InputError(f"{name}: boolean arrays are not images; pass uint8 0..255 or float in [0, 1]")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype != np.uint8 and arr.size and (arr.min() < 0 or arr.max() > 255):
            raise InputError(
                f"{name}: integer pixel values must lie in 0..255 (got {arr.min()}..{arr.max()}); "
                "rescale to uint8 first"
            )
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            if np.isnan(arr).any():
                raise InputError(f"{name}: contains NaN")
            if lo < -FLOAT_TOLERANCE or hi > 1 + FLOAT_TOLERANCE:
                in_pm1 = lo >= -1 - FLOAT_TOLERANCE and hi <= 1 + FLOAT_TOLERANCE
                hint = "pass (x + 1) / 2" if in_pm1 else "pass x / 255"
                raise InputError(f"{name}: float pixel values must lie in [0, 1] (got {lo:.3g}..{hi:.3g}); {hint}")
        return arr
    raise InputError(f"{name}: unsupported dtype {arr.dtype}; pass uint8 0..255 or float in [0, 1]")


def as_video(x: Any, name: str = "video", *, allow_image: bool = False) -> np.ndarray:
    """Validate a video and return it as a numpy array ``[T, H, W, 3]`` in its original dtype (no float copy).

    With ``allow_image`` a single ``[H, W, 3]`` frame is accepted and returned as ``[1, H, W, 3]``.
    """
    arr = _to_numpy(x)
    if allow_image and arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        shape = tuple(arr.shape)
        if arr.ndim == 4 and arr.shape[1] == 3:
            raise InputError(
                f"{name}: expected channels-last [T, H, W, 3], got {shape} (channels-first?); "
                "use x.permute(0, 2, 3, 1) / x.transpose(0, 2, 3, 1)"
            )
        want = "[T, H, W, 3] or [H, W, 3]" if allow_image else "[T, H, W, 3]"
        raise InputError(f"{name}: expected an RGB video {want}, got shape {shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise InputError(f"{name}: empty video, shape {tuple(arr.shape)}")
    return _check_values(arr, name)


def as_image(x: Any, name: str = "image") -> np.ndarray:
    """Validate one RGB image: ``[H, W, 3]``, ``[1, H, W, 3]`` or channels-first ``[3, H, W]`` / ``[1, 3, H, W]``
    (the layout of :func:`flashi2v.media.load_image`). Returns ``[H, W, 3]`` in its original dtype."""
    arr = _to_numpy(x)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] != 3 and arr.shape[0] == 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(f"{name}: expected an RGB image [H, W, 3] (or [3, H, W]), got shape {tuple(arr.shape)}")
    return _check_values(arr, name)


def to_unit(arr: np.ndarray) -> np.ndarray:
    """Convert (a slice of) a validated array to float64 in [0, 1]."""
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / 255.0
    return np.clip(arr.astype(np.float64), 0.0, 1.0)


def same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("a", "b")) -> None:
    if a.shape != b.shape:
        raise InputError(f"{names[0]} and {names[1]} differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


@dataclass(frozen=True)
class FrameMetric:
    """A metric computed per frame, with its mean over frames.

    ``per_frame`` is a float64 array ``[T]``; ``mean`` is its arithmetic mean. ``float(result)`` gives the mean.
    """

    per_frame: np.ndarray
    mean: float

    def __float__(self) -> float:
        return float(self.mean)

    def __len__(self) -> int:
        return len(self.per_frame)

    @classmethod
    def of(cls, values) -> FrameMetric:
        v = np.asarray(values, dtype=np.float64)
        return cls(per_frame=v, mean=float(v.mean()) if v.size else float("nan"))
