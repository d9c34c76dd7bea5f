"""Colour drift over time in CIELAB. See ``docs/metrics.md``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._common import as_video, same_shape, to_unit
from .chunks import chunk_bounds


def mean_lab(frames) -> np.ndarray:
    """Mean CIELAB colour ``(L*, a*, b*)`` of frames ``[N, H, W, 3]`` (uint8 or float in [0, 1]): every pixel is
    converted with ``skimage.color.rgb2lab`` (sRGB, D65) and the Lab values are averaged."""
    from skimage.color import rgb2lab

    arr = as_video(frames, "frames", allow_image=True)
    total = np.zeros(3)
    for f in arr:
        total += rgb2lab(to_unit(f)).reshape(-1, 3).mean(axis=0)
    return total / arr.shape[0]


@dataclass(frozen=True)
class ColourDrift:
    """Result of :func:`colour_drift` (CIE76 ΔE = Euclidean distance in L*a*b*; lower is better for all three).

    * ``drift``: ΔE between the mean colour of the first and the last chunk of the generated video;
    * ``reference_drift``: the same for the reference (None without a reference);
    * ``excess``: ``|| (last - first)_generated - (last - first)_reference ||``: the colour change that the
      reference does not have (None without a reference). It is 0 when the video changes colour exactly as the
      reference does, and equals ``drift`` for a static-colour reference;
    * ``first_lab`` / ``last_lab``: the generated video's mean Lab colour in its first / last chunk.
    """

    drift: float
    reference_drift: float | None
    excess: float | None
    first_lab: np.ndarray
    last_lab: np.ndarray

    def __float__(self) -> float:
        return float(self.drift if self.excess is None else self.excess)


def colour_drift(video, reference=None, *, num_chunks: int = 4) -> ColourDrift:
    """Change of the mean CIELAB colour from the first to the last temporal chunk (chunks as in
    :func:`flashi2v.metrics.chunk_bounds`; with ``num_chunks=T`` the first and last frames), absolute and, given a
    ``reference`` video of the same shape, relative to the reference's own change (see :class:`ColourDrift`)."""
    v = as_video(video, "video")
    bounds = chunk_bounds(v.shape[0], num_chunks)
    (s0, e0), (s1, e1) = bounds[0], bounds[-1]
    first, last = mean_lab(v[s0:e0]), mean_lab(v[s1:e1])
    change = last - first
    ref_drift = excess = None
    if reference is not None:
        r = as_video(reference, "reference")
        same_shape(v, r, ("video", "reference"))
        ref_change = mean_lab(r[s1:e1]) - mean_lab(r[s0:e0])
        ref_drift = float(np.linalg.norm(ref_change))
        excess = float(np.linalg.norm(change - ref_change))
    return ColourDrift(
        drift=float(np.linalg.norm(change)),
        reference_drift=ref_drift,
        excess=excess,
        first_lab=first,
        last_lab=last,
    )
