"""FlashI2V in one file: latent shifting + Fourier guidance (arXiv 2509.25187).

The image condition enters a Wan2.1 text-to-video DiT in two ways, both computed from the clean first-frame latent z:

1. **Latent shifting.** A learnable projection φ(z) (two small convs, zero at init) is *subtracted* from the
   flow-matching state. Training:  x_σ = σ·ε + (1 − σ)·x₀ − φ(z),  target v = ε − x₀  (φ does not depend on σ, so the
   velocity is unchanged). Sampling integrates the unshifted state y from pure noise and always feeds the model
   y − φ(z); after the last step y is the clean latent. No channel concatenation, so the model cannot copy the image
   ("conditional image leakage") — it must *explain* it through the flow.
2. **Fourier guidance.** The high-frequency magnitude of z (:mod:`flashi2v.fourier`), repeated over time, is
   embedded by a second patch embedding and added to the patch tokens (inside :class:`FlashI2VTransformer`).

Everything else — the DiT, the sigma schedule, the Euler sampler, classifier-free guidance over text — is plain Wan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .flow_matching import TimeSampler, draw_sigmas_and_noise, flow_matching_loss, interpolate, sigmas_to_timesteps
from .fourier import high_frequency_features
from .models.flashi2v import FlashI2VTransformer

# The paper's settings: cutoff ratio 0.1 at inference, drawn from U[0.05, 0.95] per sample in training.
INFERENCE_CUTOFF_RATIO = 0.1
TRAINING_CUTOFF_RATIO = (0.05, 0.95)


@dataclass
class ImageCondition:
    """What FlashI2V derives from the first-frame latent, computed once per video."""

    shift: torch.Tensor  # φ(z) [B, C, 1, h, w], float32
    fourier_features: torch.Tensor  # [B, C, T, h, w], repeated over the T latent frames, model dtype
    cutoff_radius: torch.Tensor  # [B], the Fourier cutoff used for each sample (for logging)

    def repeat(self, n: int) -> "ImageCondition":
        """The same condition for n copies of the batch (e.g. the conditional and unconditional CFG branches)."""
        if n == 1:
            return self
        return ImageCondition(
            self.shift.repeat(n, 1, 1, 1, 1), self.fourier_features.repeat(n, 1, 1, 1, 1), self.cutoff_radius.repeat(n)
        )


def image_condition(
    model: FlashI2VTransformer,
    first_frame_latent: torch.Tensor,
    num_latent_frames: int,
    cutoff_ratio: float | Sequence[float] | None = INFERENCE_CUTOFF_RATIO,
    cutoff_radius: float | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ImageCondition:
    """φ(z) and the Fourier features of the clean first-frame latent z [B, C, 1, h, w].

    ``cutoff_ratio`` (float, or (lo, hi) drawn per sample) or an explicit ``cutoff_radius`` choose the high-pass
    cutoff. φ keeps its gradient (it is trained); the Fourier features carry none.
    """
    if first_frame_latent.ndim != 5 or first_frame_latent.shape[2] != 1:
        raise ValueError(f"first_frame_latent must be [B, C, 1, h, w], got {tuple(first_frame_latent.shape)}")
    hf = high_frequency_features(
        first_frame_latent[:, :, 0],
        ratio=None if cutoff_radius is not None else cutoff_ratio,
        cutoff=cutoff_radius,
        generator=generator,
    )
    features = hf.features.unsqueeze(2).repeat(1, 1, num_latent_frames, 1, 1).to(model.patch_embedding.weight.dtype)
    return ImageCondition(model.project_first_frame(first_frame_latent), features, hf.cutoff_radius)


# ---------------------------------------------------------------------------------------------------- training
@dataclass
class TrainingOutput:
    loss: torch.Tensor
    prediction: torch.Tensor
    noisy: torch.Tensor  # x_σ, the shifted state the model saw
    sigmas: torch.Tensor  # [B]
    noise: torch.Tensor
    condition: ImageCondition


def training_loss(
    model: FlashI2VTransformer,
    latents: torch.Tensor,
    first_frame_latent: torch.Tensor,
    context: torch.Tensor,
    sigmas: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    cutoff_ratio: float | Sequence[float] = TRAINING_CUTOFF_RATIO,
    time_sampler: TimeSampler | None = None,
    generator: torch.Generator | None = None,
) -> TrainingOutput:
    """One FlashI2V flow-matching loss on clean latents x₀ [B, C, T, h, w] and their first frame z [B, C, 1, h, w].

    ``sigmas`` [B] are *already shifted* (unlike the official ``q_sample``, which shifts explicit sigmas again);
    when omitted they are drawn by ``time_sampler`` (logit-normal + dynamic shift by default). ``noise`` defaults to
    N(0, I) in float32. Both are drawn where ``generator`` lives and moved to the latents' device.
    """
    cond = image_condition(model, first_frame_latent, latents.shape[2], cutoff_ratio, generator=generator)
    sigmas, noise = draw_sigmas_and_noise(latents.shape, sigmas, noise, time_sampler, generator, latents.device)
    x_t = interpolate(latents.float(), noise, sigmas, shift_latent=cond.shift)
    pred = model(x_t, sigmas_to_timesteps(sigmas.float()), context, fourier_features=cond.fourier_features)
    return TrainingOutput(flow_matching_loss(pred, latents, noise), pred, x_t, sigmas, noise, cond)


# --------------------------------------------------------------------------------------------------- inference
class FlashI2VDenoiser:
    """Wraps a FlashI2V model for sampling: the sampler integrates the unshifted state y, the model sees y − φ(z).

    φ(z) and the Fourier features are computed once on construction and reused at every step (and for both CFG
    branches). Call signature ``(y, t, context) -> velocity``, the contract of :mod:`flashi2v.samplers`.
    """

    def __init__(
        self,
        model: FlashI2VTransformer,
        first_frame_latent: torch.Tensor,
        num_latent_frames: int,
        cutoff_ratio: float = INFERENCE_CUTOFF_RATIO,
        cutoff_radius: float | torch.Tensor | None = None,
    ):
        self.model = model
        with torch.no_grad():
            self.condition = image_condition(
                model, first_frame_latent, num_latent_frames, cutoff_ratio, cutoff_radius
            )

    def __call__(self, y: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b = self.condition.shift.shape[0]
        if y.shape[0] % b:
            raise ValueError(f"state batch {y.shape[0]} is not a multiple of the condition batch {b}")
        cond = self.condition.repeat(y.shape[0] // b)
        return self.model(y.float() - cond.shift, t, context, fourier_features=cond.fourier_features)
