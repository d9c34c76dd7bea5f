"""Rectified-flow maths: sigma schedules, time shifting, training times, interpolation and loss.

Convention (Wan / FlashI2V): sigma = 1 is pure noise, sigma = 0 is data; x_sigma = sigma * eps + (1 - sigma) * x0;
the model predicts the velocity v = eps - x0; timesteps passed to the DiT are 1000 * sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NUM_TRAIN_TIMESTEPS = 1000

# Resolution-dependent ("dynamic") shift: mu = k * image_seq_len + b, shift = exp(mu) (FLUX/SD3 rule, official defaults).
BASE_IMAGE_SEQ_LEN = 256
MAX_IMAGE_SEQ_LEN = 4096
BASE_SHIFT = 0.5
MAX_SHIFT = 1.15


def shift_sigmas(sigmas: torch.Tensor, shift: float | torch.Tensor) -> torch.Tensor:
    """shifted(sigma) = s * sigma / (1 + (s - 1) * sigma). s > 1 spends more steps at high noise."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def inference_sigmas(num_steps: int, shift: float = 7.0, device=None) -> torch.Tensor:
    """num_steps + 1 sigmas from 1 to 0: linspace(1, 0) then the fixed shift (float32). 4 steps, shift 7 ->
    [1.0, 0.9545, 0.875, 0.7, 0.0]."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift_sigmas(torch.linspace(1.0, 0.0, num_steps + 1, device=device), shift)


def sigmas_to_timesteps(sigmas: torch.Tensor) -> torch.Tensor:
    return sigmas * NUM_TRAIN_TIMESTEPS


def image_seq_len(latent_h: int, latent_w: int) -> int:
    """Tokens per frame for the dynamic shift: latent h * w // 4 (time is ignored, like the official code)."""
    return latent_h * latent_w // 4


def dynamic_shift_mu(
    seq_len: int,
    base_seq_len: int = BASE_IMAGE_SEQ_LEN,
    max_seq_len: int = MAX_IMAGE_SEQ_LEN,
    base_shift: float = BASE_SHIFT,
    max_shift: float = MAX_SHIFT,
) -> float:
    k = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - k * base_seq_len
    return seq_len * k + b


def dynamic_shift(seq_len: int, **kwargs) -> float:
    """shift = exp(mu(seq_len)); 480x832 (60x104 latents, 1560 tokens) -> 2.0559."""
    return math.exp(dynamic_shift_mu(seq_len, **kwargs))


@dataclass
class TimeSampler:
    """Training-time distribution: ``logit_normal`` (sigmoid of N(mean, std)) or ``uniform``, then a shift.

    ``shift="dynamic"`` uses :func:`dynamic_shift` of the batch's latent size (the FlashI2V training recipe);
    a number uses that fixed shift (1.0 = none).
    """

    distribution: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float | str = "dynamic"

    def __post_init__(self) -> None:
        if self.distribution not in ("logit_normal", "uniform"):
            raise ValueError(f"distribution must be 'logit_normal' or 'uniform', got {self.distribution!r}")
        if not (self.shift == "dynamic" or (isinstance(self.shift, (int, float)) and self.shift > 0)):
            raise ValueError(f"shift must be 'dynamic' or a positive number, got {self.shift!r}")

    def draw_u(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pre-shift times u in (0, 1), [batch] float32."""
        if self.distribution == "logit_normal":
            n = torch.randn(batch, device=device, generator=generator)
            return torch.sigmoid(n * self.logit_std + self.logit_mean)
        return torch.rand(batch, device=device, generator=generator)

    def shift_for(self, latent_shape: tuple[int, ...]) -> float:
        if self.shift == "dynamic":
            return dynamic_shift(image_seq_len(latent_shape[-2], latent_shape[-1]))
        return float(self.shift)

    def apply_shift(self, u: torch.Tensor, latent_shape: tuple[int, ...]) -> torch.Tensor:
        return shift_sigmas(u, self.shift_for(latent_shape))

    def __call__(self, latent_shape, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Shifted sigmas [B] for a batch of latents of ``latent_shape`` [B, C, T, h, w]."""
        return self.apply_shift(self.draw_u(latent_shape[0], device, generator), latent_shape)


def generator_device(generator: torch.Generator | None, device=None) -> torch.device:
    """Where a draw from ``generator`` happens: the generator's own device (a CPU generator can serve CUDA latents),
    or ``device`` for the global RNG."""
    return generator.device if generator is not None else torch.device(device or "cpu")


def draw_sigmas_and_noise(shape, sigmas, noise, time_sampler, generator, device):
    """The training draws, in this order: shifted sigmas [B] (if not given, from ``time_sampler`` or the default
    :class:`TimeSampler`), then noise N(0, I) float32 of ``shape`` (if not given). Both are drawn where ``generator``
    lives and moved to ``device``."""
    dev = generator_device(generator, device)
    if sigmas is None:
        sigmas = (time_sampler or TimeSampler())(shape, dev, generator).to(device)
    if noise is None:
        noise = torch.randn(shape, device=dev, dtype=torch.float32, generator=generator).to(device)
    return sigmas, noise


def interpolate(
    x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor, shift_latent: torch.Tensor | None = None
) -> torch.Tensor:
    """x_sigma = sigma * noise + (1 - sigma) * x0 [- shift_latent], computed in float32, returned in x0's dtype.

    ``shift_latent`` is FlashI2V's φ(z) [B, C, 1, h, w] (broadcast over time); None gives the plain T2V state.
    """
    s = sigmas.float().reshape(-1, *([1] * (x0.ndim - 1)))
    x = s * noise.float() + (1 - s) * x0.float()
    if shift_latent is not None:
        x = x - shift_latent.float()
    return x.to(x0.dtype)


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_sigma / d sigma = noise - x0 (unchanged by the latent shift, which does not depend on sigma)."""
    return noise.float() - x0.float()


def flow_matching_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Plain MSE between the predicted and the true velocity, mean over all elements (weight 1 for every sigma).
    ``weights`` (e.g. :func:`motion_weights`), broadcast over the velocity, make it the mean of w · error²."""
    err = (pred.float() - velocity_target(x0, noise)) ** 2
    return torch.mean(err if weights is None else weights * err)


def motion_weights(x0: torch.Tensor, strength: float, eps: float = 1e-2) -> torch.Tensor:
    """Loss weights [B, 1, T, h, w] that favour where a clip differs from its first frame (not in the paper).

    d = mean over channels of |x0_t − x0_0|, divided by its mean over frames 1.. of the same clip (so a camera pan,
    which changes everything, is weighted about evenly, and a small moving object on a still background stands
    out); w = 1 + strength · d, then scaled so that every clip's weights average 1. ``strength`` 0 gives ones.
    A clip with a single frame, or one that does not change (mean d below ``eps``), gets even weights.
    """
    if strength < 0:
        raise ValueError(f"motion weight strength must be >= 0, got {strength}")
    b, _, t = x0.shape[:3]
    if strength == 0 or t < 2:
        return torch.ones((b, 1, *x0.shape[2:]), device=x0.device, dtype=torch.float32)
    x = x0.float()
    d = (x - x[:, :, :1]).abs().mean(1, keepdim=True)
    d = d / d[:, :, 1:].mean((2, 3, 4), keepdim=True).clamp_min(eps)
    w = 1 + strength * d
    return w / w.mean((1, 2, 3, 4), keepdim=True)

