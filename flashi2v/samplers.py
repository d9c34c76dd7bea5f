"""Samplers: pure functions of (model, state, sigmas, ...), k-diffusion style.

``model(x, t, context) -> velocity`` is any callable with that contract: a :class:`~flashi2v.models.wan.WanTransformer`
for text-to-video, or a :class:`~flashi2v.method.FlashI2VDenoiser` for image-to-video. The ODE state is kept in
float32 whatever the model's dtype.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from .flow_matching import sigmas_to_timesteps

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def guided_velocity(
    model: ModelFn,
    x: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    negative_context: torch.Tensor | None,
    guidance_scale: float,
    batched: bool = True,
) -> torch.Tensor:
    """Classifier-free guidance v = v_uncond + g * (v_cond - v_uncond) in float32 (a single branch if g <= 1).

    With ``batched`` (default) both branches run as one forward over the concatenated batch; otherwise as two.
    """
    if guidance_scale <= 1.0 or negative_context is None:
        return model(x, t, context).float()
    if batched and negative_context.shape[1:] == context.shape[1:]:
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([context, negative_context.to(context.dtype)]))
        cond, uncond = both.float().chunk(2)
    else:
        cond = model(x, t, context).float()
        uncond = model(x, t, negative_context).float()
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def sample_euler(
    model: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    context: torch.Tensor,
    negative_context: torch.Tensor | None = None,
    guidance_scale: float = 5.0,
    batched_cfg: bool = True,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    constraint: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Integrate dx/dσ = v from sigmas[0] (noise) to sigmas[-1] (data) with Euler steps.

    x: initial state (noise) [B, C, T, h, w]; sigmas: [N + 1] decreasing. ``constraint(x_next, sigma_next)``, when
    given, replaces every new state (e.g. :func:`first_frame_anchor`). ``callback`` receives a dict with
    ``i, sigma, sigma_next, x (state before the step), velocity, x_next`` after each step. Returns the float32 state.
    """
    x = x.float()
    sigmas = sigmas.to(device=x.device, dtype=torch.float32)
    b = x.shape[0]
    for i in tqdm(range(len(sigmas) - 1), disable=not progress, desc="sampling", leave=False):
        t = sigmas_to_timesteps(sigmas[i]).expand(b)
        v = guided_velocity(model, x, t, context, negative_context, guidance_scale, batched_cfg)
        x_next = x + v * (sigmas[i + 1] - sigmas[i])
        if constraint is not None:
            x_next = constraint(x_next, sigmas[i + 1])
        if callback is not None:
            callback(dict(i=i, sigma=sigmas[i], sigma_next=sigmas[i + 1], x=x, velocity=v, x_next=x_next))
        x = x_next
    return x


def first_frame_anchor(z: torch.Tensor, noise: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``constraint`` for :func:`sample_euler` that pins latent frame 0 to the condition image (replacement
    sampling, as Wan2.2's TI2V model does for its first frame): after every step frame 0 of the state is set to
    ``σ·ε₀ + (1 − σ)·z``, the point of the straight flow-matching path from its own initial noise ``ε₀`` to the clean
    image latent ``z`` [B, C, 1, h, w]. Frame 0 at each step is then exactly what training showed the model at that
    σ, and the last state's frame 0 is ``z``: the video's first frame is the VAE round trip of the image. The other
    frames are still the model's. This is a sampling-time constraint, not part of FlashI2V (whose first frame comes
    from the model alone)."""
    if z.dim() != 5 or z.shape[2] != 1 or z.shape[:2] != noise.shape[:2] or z.shape[3:] != noise.shape[3:]:
        raise ValueError(f"z must be [B, C, 1, h, w] matching the noise {tuple(noise.shape)}, got {tuple(z.shape)}")
    eps0, z = noise[:, :, :1].float(), z.float()

    def apply(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, :, :1] = sigma * eps0 + (1.0 - sigma) * z
        return x

    return apply
