"""Fourier guidance features: the high-frequency magnitude of the first-frame latent (official ``HighFrequencyExtractor``).

Given z [B, C, h, w]:

1. F = fftshift(fft2(z)) over (h, w), in float32.
2. Radius of every frequency from the centre (where fftshift puts DC): r = sqrt((x - w//2)^2 + (y - h//2)^2).
3. Spectral magnitude averaged over channels, accumulated from the centre outwards; the cutoff radius is the radius
   at which the cumulative magnitude reaches ``ratio`` of the total (``ratio`` is a fraction of cumulative
   *magnitude*, not power). A ratio may be fixed, or drawn per sample from [lo, hi] (training).
4. High-pass mask r >= cutoff (the cutoff ring is kept), inverse FFT, magnitude sqrt(re^2 + im^2 + 1e-12).

The result has the shape of z and is computed without gradient, like the official extractor.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

_EPS = 1e-12


class FourierFeatures(NamedTuple):
    features: torch.Tensor  # [B, C, h, w] (or [B, C, 1, h, w] if the input had a time axis)
    cutoff_radius: torch.Tensor  # [B] float32, the radius each sample was high-passed at
    ratio: torch.Tensor | None  # [B] the magnitude ratio used per sample (None for an explicit cutoff)


def radius_grid(h: int, w: int, device=None) -> torch.Tensor:
    """Distance of each (y, x) from the fftshift centre (h//2, w//2), float32 [h, w]."""
    y = torch.arange(h, device=device, dtype=torch.float32) - h // 2
    x = torch.arange(w, device=device, dtype=torch.float32) - w // 2
    return torch.sqrt(x[None, :] ** 2 + y[:, None] ** 2)


def sample_ratios(
    ratio: float | Sequence[float], batch: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample magnitude ratios [B] (float32, clamped to [0, 1]).

    A float is used for every sample, a tensor [B] gives each sample its own (kept on its device); a pair (lo, hi)
    draws lo + (hi - lo) * U(0, 1) per sample with ``torch.rand`` from ``generator``, on the generator's device (the
    global RNG draws on the CPU, like the official code). Nothing is copied between devices: a CUDA training step
    that draws its ratios there never waits for the GPU here.
    """
    if isinstance(ratio, torch.Tensor):  # explicit per-sample ratios (e.g. drawn per sample by the trainer)
        r = ratio.detach().float().reshape(-1)
        if r.numel() == 1:
            r = r.expand(batch).clone()
        if r.numel() != batch:
            raise ValueError(f"got {r.numel()} ratios for a batch of {batch}")
    elif isinstance(ratio, (int, float)):
        r = torch.full((batch,), float(ratio))
    else:
        lo, hi = (float(v) for v in ratio)
        if hi < lo:
            raise ValueError(f"ratio range must be (lo, hi) with lo <= hi, got {(lo, hi)}")
        dev = generator.device if generator is not None else None  # drawn (and kept) where the generator lives
        r = lo + (hi - lo) * torch.rand(batch, generator=generator, device=dev)
    return r.clamp(0.0, 1.0)


def cutoff_radius(magnitude: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """The radius where the cumulative channel-mean magnitude [B, h, w] first reaches ``ratios`` [B] of its total."""
    b, h, w = magnitude.shape
    r = radius_grid(h, w, magnitude.device).flatten()
    sorted_r, order = torch.sort(r, stable=True)
    cum = torch.cumsum(magnitude.flatten(1)[:, order], dim=1)
    target = ratios.to(cum) * cum[:, -1]
    k = (cum < target[:, None]).sum(dim=1).clamp(0, h * w - 1)
    return sorted_r[k]


@torch.no_grad()
def high_frequency_features(
    z: torch.Tensor,
    ratio: float | Sequence[float] | None = 0.1,
    cutoff: float | torch.Tensor | None = None,
    return_abs: bool = True,
    generator: torch.Generator | None = None,
) -> FourierFeatures:
    """High-pass the first-frame latent ``z`` ([B, C, h, w] or [B, C, 1, h, w]) in the 2-D Fourier domain.

    Exactly one of ``ratio`` (float, or (lo, hi) for a per-sample random ratio) and ``cutoff`` (an explicit radius,
    scalar or [B]) selects the cutoff. Returns the features (magnitude, or the real part if ``return_abs=False``),
    in z's dtype, and the cutoff radius used for each sample.
    """
    squeeze_time = z.ndim == 5
    if squeeze_time:
        if z.shape[2] != 1:
            raise ValueError(f"expected a single-frame latent [B, C, 1, h, w], got {tuple(z.shape)}")
        z = z[:, :, 0]
    if z.ndim != 4:
        raise ValueError(f"expected a latent [B, C, h, w], got {tuple(z.shape)}")
    if (ratio is None) == (cutoff is None):
        raise ValueError("give exactly one of ratio and cutoff")
    b, _, h, w = z.shape
    freq = torch.fft.fftshift(torch.fft.fft2(z.float(), dim=(-2, -1)), dim=(-2, -1))
    if cutoff is not None:
        ratios = None
        radius = torch.as_tensor(cutoff, dtype=torch.float32, device=z.device).expand(b).clone()
    else:
        ratios = sample_ratios(ratio, b, generator)
        magnitude = torch.sqrt(freq.real**2 + freq.imag**2 + _EPS).mean(dim=1)
        radius = cutoff_radius(magnitude, ratios.to(z.device))
    mask = radius_grid(h, w, z.device)[None, None] >= radius.to(z.device)[:, None, None, None]
    hf = torch.fft.ifft2(torch.fft.ifftshift(freq * mask, dim=(-2, -1)), dim=(-2, -1))
    out = torch.sqrt(hf.real**2 + hf.imag**2 + _EPS) if return_abs else hf.real
    out = out.to(z.dtype)
    if squeeze_time:
        out = out.unsqueeze(2)
    return FourierFeatures(out, radius, ratios)
