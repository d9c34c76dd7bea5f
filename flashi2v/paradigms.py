"""Image-to-video conditioning paradigms behind one interface, dispatched by ``config.model_type``.

Every paradigm trains the same Wan2.1 backbone with plain rectified flow (x_σ = σ·ε + (1 − σ)·x₀, target ε − x₀,
sigmas from the same :class:`~flashi2v.flow_matching.TimeSampler`) and samples with the same Euler/CFG sampler
(guidance over text only); they differ only in how the clean first-frame latent z [B, C, 1, h, w] enters the model:

=====================  =======================================================================================
``t2v``                no image (the Wan2.1-T2V model; ``first_frame_latent`` is ignored)
``flashi2v``           latent shifting x_σ − φ(z) + Fourier features of z (:mod:`flashi2v.method`, delegated)
``i2v-concat-mask``    Wan2.1-I2V: input = [x_σ (C), mask (4: 1 on latent frame 0), z at frame 0 / zeros (C)]
``i2v-concat-noise``   CogVideoX-I2V: input = [x_σ (C), z' = z + σ_aug·ε at frame 0 / zeros (C)],
                       log σ_aug ~ N(−3, 0.5²) per sample in training, a fixed σ_aug (default 0) at inference
=====================  =======================================================================================

See ``docs/paradigms.md`` for the formulas, the references and how each differs from its original.

Usage::

    paradigm = paradigm_for(model)                       # or a TransformerConfig / a model-type string
    out = paradigm.training_loss(model, x0, z, context, generator=g)
    out.loss.backward()
    denoise = paradigm.denoiser(model, z, num_latent_frames)   # (y, t, context) -> velocity
    video_latents = sample_euler(denoise, noise, sigmas, context, negative_context, guidance_scale)

``training_loss`` touches the model only through ``model(...)`` and, for FlashI2V, ``model.project_first_frame``
(module forwards, so FSDP2 hooks run). All its randomness (sigmas, noise, Fourier cutoffs, noise augmentation)
comes from the ``generator`` passed in, or is drawn beforehand by :meth:`Paradigm.draw`, per sample from one
generator each (what the trainer does, so a run does not depend on how samples are batched)::

    draws = paradigm.draw(x0.shape, [g_0, ..., g_{B-1}], time_sampler=ts, device=x0.device)
    out = paradigm.training_loss(model, x0, z, context, draws=draws)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from . import method
from .config import MASK_CHANNELS, MODEL_TYPES, TransformerConfig
from .errors import ConfigError
from .flow_matching import (TimeSampler, draw_sigmas_and_noise, flow_matching_loss, generator_device,
                            interpolate, sigmas_to_timesteps)
from .fourier import sample_ratios

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# CogVideoX-I2V's image noise augmentation: log σ_aug ~ N(−3.0, 0.5²), drawn per sample.
NOISE_AUG_LOG_MEAN = -3.0
NOISE_AUG_LOG_STD = 0.5


@dataclass
class TrainingOutput:
    """One training step's loss and what went into it (for logging and tests)."""

    loss: torch.Tensor
    prediction: torch.Tensor  # the predicted velocity [B, C, T, h, w], float32
    noisy: torch.Tensor  # x_σ as fed in the model's first C channels (FlashI2V: the shifted state x_σ − φ(z))
    sigmas: torch.Tensor  # [B], already shifted
    noise: torch.Tensor  # ε
    condition: Any = None  # ImageCondition (flashi2v), the concatenated channels [B, C_cond, T, h, w], or None (t2v)
    extras: dict = field(default_factory=dict)  # e.g. {"image_noise_sigma": [B]} for i2v-concat-noise


def _check_first_frame(z: torch.Tensor | None, latents_like: torch.Size | Sequence[int] | None = None) -> None:
    if z is None:
        raise ValueError("this is an image-to-video paradigm: pass first_frame_latent [B, C, 1, h, w]")
    if z.ndim != 5 or z.shape[2] != 1:
        raise ValueError(f"first_frame_latent must be [B, C, 1, h, w], got {tuple(z.shape)}")
    if latents_like is not None:
        b, c, _, h, w = latents_like
        if (z.shape[0], z.shape[1], z.shape[3], z.shape[4]) != (b, c, h, w):
            raise ValueError(
                f"first_frame_latent {tuple(z.shape)} does not match the latents {tuple(latents_like)} "
                "(same batch, channels and spatial size, one frame)"
            )


@dataclass
class Draws:
    """The random inputs of one training step, drawn before it (:meth:`Paradigm.draw`)."""

    sigmas: torch.Tensor  # [B] float32, already shifted
    noise: torch.Tensor  # ε [B, C, T, h, w] float32
    cutoff_ratio: torch.Tensor | None = None  # [B] flashi2v: the Fourier magnitude ratio of each sample
    aug_sigma: torch.Tensor | None = None  # [B] i2v-concat-noise: σ_aug of each sample
    aug_noise: torch.Tensor | None = None  # [B, C, 1, h, w] i2v-concat-noise: ε_aug

    def to(self, device) -> "Draws":
        return Draws(*(None if v is None else v.to(device) for v in vars(self).values()))

    @staticmethod
    def cat(parts: Sequence["Draws"]) -> "Draws":
        names = list(vars(parts[0]))
        return Draws(**{n: None if getattr(parts[0], n) is None else torch.cat([getattr(p, n) for p in parts])
                        for n in names})


# ------------------------------------------------------------------------------------------------ interface
class Paradigm:
    """How the first-frame latent conditions the model; one subclass per ``model_type``."""

    model_type: str = ""
    uses_image: bool = True

    def training_loss(
        self,
        model,
        latents: torch.Tensor,
        first_frame_latent: torch.Tensor | None,
        context: torch.Tensor,
        *,
        sigmas: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        time_sampler: TimeSampler | None = None,
        generator: torch.Generator | None = None,
        draws: Draws | None = None,
    ) -> TrainingOutput:
        """The flow-matching loss on clean latents x₀ [B, C, T, h, w] given their first frame z [B, C, 1, h, w].

        ``sigmas`` [B] are *already shifted*; when omitted they are drawn by ``time_sampler`` (logit-normal +
        dynamic shift by default). ``noise`` defaults to N(0, I) in float32, drawn from ``generator``. Or pass
        ``draws`` (:meth:`draw`) and none of sigmas / noise / generator.
        """
        raise NotImplementedError

    def draw(
        self,
        latent_shape: Sequence[int],
        generators: torch.Generator | Sequence[torch.Generator] | None = None,
        *,
        time_sampler: TimeSampler | None = None,
        device: torch.device | str | None = None,
    ) -> Draws:
        """Draw a step's randomness for latents of ``latent_shape`` [B, C, T, h, w], returned on ``device``.

        ``generators``: one generator (or None: the global RNG) for the whole batch, in the order ``training_loss``
        uses it (so ``training_loss(draws=draw(shape, g))`` equals ``training_loss(generator=g)``), or a list of B
        generators, sample i drawing everything it needs from generators[i] alone.
        """
        shape = tuple(int(v) for v in latent_shape)
        ts = time_sampler or TimeSampler()
        if generators is None or isinstance(generators, torch.Generator):
            return self._draw(shape, generators, ts, device)
        gens = list(generators)
        if len(gens) != shape[0]:
            raise ValueError(f"got {len(gens)} generators for a batch of {shape[0]}")
        return Draws.cat([self._draw((1, *shape[1:]), g, ts, device) for g in gens])

    def _draw(self, shape, generator, time_sampler, device) -> Draws:
        sigmas, noise = draw_sigmas_and_noise(shape, None, None, time_sampler, generator, device)
        return Draws(sigmas, noise)

    @staticmethod
    def _resolve(latents, sigmas, noise, time_sampler, generator, draws, draw_fn) -> Draws:
        if draws is None:
            return draw_fn()
        if sigmas is not None or noise is not None or generator is not None:
            raise ValueError("pass either draws or sigmas / noise / generator, not both")
        if draws.noise.shape != latents.shape:
            raise ValueError(f"draws are for latents {tuple(draws.noise.shape)}, got {tuple(latents.shape)}")
        return draws.to(latents.device)

    def denoiser(self, model, first_frame_latent: torch.Tensor | None, num_latent_frames: int, **opts) -> Denoiser:
        """A ``(y, t, context) -> velocity`` callable for :func:`flashi2v.samplers.sample_euler`; the image
        condition is prepared once and reused for every step and both CFG branches."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_type!r})"


# ---------------------------------------------------------------------------------------------------- t2v
class T2VParadigm(Paradigm):
    """Plain Wan2.1 text-to-video: no image condition (``first_frame_latent`` is ignored)."""

    model_type = "t2v"
    uses_image = False

    def training_loss(self, model, latents, first_frame_latent, context, *, sigmas=None, noise=None,
                      time_sampler=None, generator=None, draws=None) -> TrainingOutput:
        d = self._resolve(latents, sigmas, noise, time_sampler, generator, draws, lambda: Draws(
            *draw_sigmas_and_noise(latents.shape, sigmas, noise, time_sampler, generator, latents.device)))
        sigmas, noise = d.sigmas, d.noise
        x_t = interpolate(latents.float(), noise, sigmas)
        pred = model(x_t, sigmas_to_timesteps(sigmas.float()), context)
        return TrainingOutput(flow_matching_loss(pred, latents, noise), pred, x_t, sigmas, noise)

    def denoiser(self, model, first_frame_latent=None, num_latent_frames=None, **opts) -> Denoiser:
        if opts:
            raise TypeError(f"the t2v paradigm takes no denoiser options, got {sorted(opts)}")
        return model


# ------------------------------------------------------------------------------------------------ flashi2v
class FlashI2VParadigm(Paradigm):
    """FlashI2V (:mod:`flashi2v.method`): latent shifting + Fourier guidance; everything is delegated to method.py.

    ``train_cutoff_ratio``: the Fourier cutoff ratio, a float or a (lo, hi) range drawn per sample (paper: U[0.05,
    0.95]); ``inference_cutoff_ratio``: the sampling default (paper: 0.1).
    """

    model_type = "flashi2v"

    def __init__(
        self,
        train_cutoff_ratio: float | Sequence[float] = method.TRAINING_CUTOFF_RATIO,
        inference_cutoff_ratio: float = method.INFERENCE_CUTOFF_RATIO,
    ):
        self.train_cutoff_ratio = train_cutoff_ratio
        self.inference_cutoff_ratio = inference_cutoff_ratio

    def training_loss(self, model, latents, first_frame_latent, context, *, sigmas=None, noise=None,
                      time_sampler=None, generator=None, draws=None) -> TrainingOutput:
        """``method.training_loss`` (bit for bit); with ``draws``, their sigmas, noise and per-sample cutoff ratios."""
        _check_first_frame(first_frame_latent)
        ratio = self.train_cutoff_ratio
        if draws is not None:
            d = self._resolve(latents, sigmas, noise, time_sampler, generator, draws, None)
            sigmas, noise, ratio = d.sigmas, d.noise, d.cutoff_ratio
            if ratio is None:
                raise ValueError("draws for flashi2v need cutoff_ratio (use this paradigm's draw)")
        out = method.training_loss(
            model, latents, first_frame_latent, context, sigmas=sigmas, noise=noise,
            cutoff_ratio=ratio, time_sampler=time_sampler, generator=generator,
        )
        return TrainingOutput(out.loss, out.prediction, out.noisy, out.sigmas, out.noise, out.condition,
                              {"cutoff_radius": out.condition.cutoff_radius})

    def _draw(self, shape, generator, time_sampler, device) -> Draws:
        # method.training_loss's order: the cutoff ratios (where the generator lives), sigmas, noise
        ratios = sample_ratios(self.train_cutoff_ratio, shape[0], generator)
        sigmas, noise = draw_sigmas_and_noise(shape, None, None, time_sampler, generator, device)
        return Draws(sigmas, noise, cutoff_ratio=ratios.to(device))

    def denoiser(self, model, first_frame_latent, num_latent_frames, *, cutoff_ratio: float | None = None,
                 cutoff_radius: float | torch.Tensor | None = None) -> method.FlashI2VDenoiser:
        _check_first_frame(first_frame_latent)
        ratio = self.inference_cutoff_ratio if cutoff_ratio is None else cutoff_ratio
        return method.FlashI2VDenoiser(model, first_frame_latent, num_latent_frames, ratio, cutoff_radius)


# ---------------------------------------------------------------------------------------- concat baselines
class ConcatDenoiser:
    """Concatenates fixed conditioning channels [B, C_cond, T, h, w] to the state at every call (repeated over
    the CFG branches): ``model(cat([y, condition], dim=1), t, context)``."""

    def __init__(self, model, condition: torch.Tensor):
        self.model = model
        self.condition = condition

    def __call__(self, y: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b = self.condition.shape[0]
        if y.shape[0] % b:
            raise ValueError(f"state batch {y.shape[0]} is not a multiple of the condition batch {b}")
        cond = self.condition.repeat(y.shape[0] // b, 1, 1, 1, 1)
        return self.model(torch.cat([y.float(), cond.to(device=y.device)], dim=1), t, context)


class _ConcatParadigm(Paradigm):
    """Plain flow matching; the model input is ``cat([x_σ, condition], dim=1)`` with a clean-image condition."""

    def conditioning(self, first_frame_latent: torch.Tensor, num_latent_frames: int, **kw) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def model_input(state: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """[x_σ (C), condition (C_cond)] over channels, float32."""
        return torch.cat([state.float(), condition.float()], dim=1)

    @staticmethod
    def pad_over_time(z: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
        """z [B, C, 1, h, w] at latent frame 0, zeros on frames 1..T−1 -> [B, C, T, h, w] float32."""
        b, c, _, h, w = z.shape
        out = z.new_zeros((b, c, num_latent_frames, h, w), dtype=torch.float32)
        out[:, :, :1] = z.float()
        return out

    def _loss(self, model, latents, condition, context, sigmas, noise) -> tuple:
        x_t = interpolate(latents.float(), noise, sigmas)
        pred = model(self.model_input(x_t, condition), sigmas_to_timesteps(sigmas.float()), context)
        return flow_matching_loss(pred, latents, noise), pred, x_t


class ConcatMaskParadigm(_ConcatParadigm):
    """Wan2.1-I2V style: input = [x_σ (C), mask (4), y (C)] -> in_dim = 2C + 4 (36 for C = 16).

    mask: 1 in all 4 channels on latent frame 0, 0 on the other frames (Wan's 4 channels are the 4 pixel frames
    folded into one latent frame; with first-frame conditioning they are all 1 at latent frame 0 and all 0 after).
    y: the clean first-frame latent z on latent frame 0 and zeros on the other frames (Wan encodes the image
    followed by black frames with the VAE instead; see docs/paradigms.md). No noise on y.
    """

    model_type = "i2v-concat-mask"

    def __init__(self, mask_channels: int = MASK_CHANNELS):
        if mask_channels != MASK_CHANNELS:
            raise ConfigError(f"i2v-concat-mask uses {MASK_CHANNELS} mask channels (in_dim = 2C + 4), got {mask_channels}")
        self.mask_channels = mask_channels

    def mask(self, first_frame_latent: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
        """[B, 4, T, h, w] float32: ones on latent frame 0, zeros elsewhere."""
        b, _, _, h, w = first_frame_latent.shape
        m = torch.zeros((b, self.mask_channels, num_latent_frames, h, w), device=first_frame_latent.device)
        m[:, :, 0] = 1.0
        return m

    def conditioning(self, first_frame_latent: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
        """[mask (4), z padded with zeros over time (C)] -> [B, 4 + C, T, h, w] float32 (no gradient to z)."""
        _check_first_frame(first_frame_latent)
        z = first_frame_latent.detach()
        return torch.cat([self.mask(z, num_latent_frames), self.pad_over_time(z, num_latent_frames)], dim=1)

    def training_loss(self, model, latents, first_frame_latent, context, *, sigmas=None, noise=None,
                      time_sampler=None, generator=None, draws=None) -> TrainingOutput:
        _check_first_frame(first_frame_latent, latents.shape)
        d = self._resolve(latents, sigmas, noise, time_sampler, generator, draws, lambda: Draws(
            *draw_sigmas_and_noise(latents.shape, sigmas, noise, time_sampler, generator, latents.device)))
        sigmas, noise = d.sigmas, d.noise
        cond = self.conditioning(first_frame_latent, latents.shape[2])
        loss, pred, x_t = self._loss(model, latents, cond, context, sigmas, noise)
        return TrainingOutput(loss, pred, x_t, sigmas, noise, cond)

    def denoiser(self, model, first_frame_latent, num_latent_frames) -> ConcatDenoiser:
        return ConcatDenoiser(model, self.conditioning(first_frame_latent, num_latent_frames))


class ConcatNoiseParadigm(_ConcatParadigm):
    """CogVideoX-I2V style: input = [x_σ (C), z' padded with zeros over time (C)] -> in_dim = 2C (32 for C = 16).

    Noise augmentation z' = z + σ_aug·ε_aug. Training: log σ_aug ~ N(``aug_log_mean``, ``aug_log_std``²) per sample
    (CogVideoX: N(−3.0, 0.5²), i.e. σ_aug ≈ 0.05, 90% in [0.02, 0.11]); inference: the fixed
    ``inference_aug_sigma`` (default 0: the clean latent). CogVideoX adds the noise to the *pixels* before the VAE;
    we add it to the cached latent (see docs/paradigms.md).
    """

    model_type = "i2v-concat-noise"

    def __init__(
        self,
        aug_log_mean: float = NOISE_AUG_LOG_MEAN,
        aug_log_std: float = NOISE_AUG_LOG_STD,
        inference_aug_sigma: float = 0.0,
    ):
        if aug_log_std < 0:
            raise ConfigError(f"aug_log_std must be >= 0, got {aug_log_std}")
        if inference_aug_sigma < 0:
            raise ConfigError(f"inference_aug_sigma must be >= 0, got {inference_aug_sigma}")
        self.aug_log_mean = float(aug_log_mean)
        self.aug_log_std = float(aug_log_std)
        self.inference_aug_sigma = float(inference_aug_sigma)

    def draw_aug_sigmas(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """σ_aug = exp(N(mean, std²)) [batch] float32, from ``generator``."""
        n = torch.randn(batch, device=device, dtype=torch.float32, generator=generator)
        return torch.exp(n * self.aug_log_std + self.aug_log_mean)

    def conditioning(
        self,
        first_frame_latent: torch.Tensor,
        num_latent_frames: int,
        aug_sigma: float | torch.Tensor = 0.0,
        aug_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """z' = z + σ_aug·ε (per-sample σ_aug: scalar or [B]) padded with zeros over time -> [B, C, T, h, w] float32.

        ε is ``aug_noise`` or drawn from ``generator`` (only when some σ_aug > 0). No gradient to z.
        """
        _check_first_frame(first_frame_latent)
        z = first_frame_latent.detach().float()
        s = torch.as_tensor(aug_sigma, dtype=torch.float32, device=z.device).reshape(-1)
        if s.numel() not in (1, z.shape[0]):
            raise ValueError(f"aug_sigma must be a scalar or one value per sample ({z.shape[0]}), got {s.numel()}")
        if aug_noise is not None or bool((s != 0).any()):
            if aug_noise is None:
                aug_noise = torch.randn(z.shape, device=z.device, dtype=torch.float32, generator=generator)
            elif aug_noise.shape != z.shape:
                raise ValueError(f"aug_noise must have the shape of z {tuple(z.shape)}, got {tuple(aug_noise.shape)}")
            z = z + s.reshape(-1, 1, 1, 1, 1) * aug_noise.float()
        return self.pad_over_time(z, num_latent_frames)

    def _draw_aug(self, z_shape, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        dev = generator_device(generator, device)
        aug = self.draw_aug_sigmas(z_shape[0], dev, generator).to(device)
        eps = torch.randn(z_shape, device=dev, dtype=torch.float32, generator=generator).to(device)
        return aug, eps

    def _draw(self, shape, generator, time_sampler, device) -> Draws:
        sigmas, noise = draw_sigmas_and_noise(shape, None, None, time_sampler, generator, device)
        aug, eps = self._draw_aug((shape[0], shape[1], 1, shape[3], shape[4]), generator, device)
        return Draws(sigmas, noise, aug_sigma=aug, aug_noise=eps)

    def training_loss(self, model, latents, first_frame_latent, context, *, sigmas=None, noise=None,
                      time_sampler=None, generator=None, draws=None) -> TrainingOutput:
        """Randomness from ``generator`` in this order: sigmas, noise (as t2v / concat-mask), σ_aug, ε_aug."""
        _check_first_frame(first_frame_latent, latents.shape)

        def draw_now() -> Draws:
            s, n = draw_sigmas_and_noise(latents.shape, sigmas, noise, time_sampler, generator, latents.device)
            aug, eps = self._draw_aug(first_frame_latent.shape, generator, latents.device)
            return Draws(s, n, aug_sigma=aug, aug_noise=eps)

        d = self._resolve(latents, sigmas, noise, time_sampler, generator, draws, draw_now)
        if d.aug_sigma is None or d.aug_noise is None:
            raise ValueError("draws for i2v-concat-noise need aug_sigma and aug_noise (use this paradigm's draw)")
        cond = self.conditioning(first_frame_latent, latents.shape[2], d.aug_sigma, d.aug_noise)
        loss, pred, x_t = self._loss(model, latents, cond, context, d.sigmas, d.noise)
        return TrainingOutput(loss, pred, x_t, d.sigmas, d.noise, cond, {"image_noise_sigma": d.aug_sigma})

    def denoiser(self, model, first_frame_latent, num_latent_frames, *, aug_sigma: float | None = None,
                 aug_noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> ConcatDenoiser:
        """``aug_sigma`` defaults to ``inference_aug_sigma``; with σ_aug > 0 the noise is ``aug_noise`` or drawn
        from ``generator`` (once: the same z' for every step)."""
        s = self.inference_aug_sigma if aug_sigma is None else aug_sigma
        if not isinstance(s, torch.Tensor) and s < 0:
            raise ValueError(f"aug_sigma must be >= 0, got {s}")
        return ConcatDenoiser(model, self.conditioning(first_frame_latent, num_latent_frames, s, aug_noise, generator))


# ------------------------------------------------------------------------------------------------ dispatch
PARADIGMS: dict[str, type[Paradigm]] = {
    "t2v": T2VParadigm,
    "flashi2v": FlashI2VParadigm,
    "i2v-concat-mask": ConcatMaskParadigm,
    "i2v-concat-noise": ConcatNoiseParadigm,
}
assert set(PARADIGMS) == set(MODEL_TYPES)


def paradigm_for(config_or_model: TransformerConfig | str | Any, **hyperparameters) -> Paradigm:
    """The paradigm of a model type (a :class:`TransformerConfig`, a model with ``.config``, or the type name).

    Hyperparameters by type: flashi2v ``train_cutoff_ratio=(0.05, 0.95), inference_cutoff_ratio=0.1``;
    i2v-concat-noise ``aug_log_mean=-3.0, aug_log_std=0.5, inference_aug_sigma=0.0``; t2v and i2v-concat-mask none.
    A hyperparameter of another paradigm is ignored (so one training config can name them all); a name that no
    paradigm knows raises :class:`ConfigError`.
    """
    obj = config_or_model
    if isinstance(obj, str):
        model_type = obj
    else:
        config = obj if isinstance(obj, TransformerConfig) else getattr(obj, "config", None)
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"paradigm_for needs a TransformerConfig, a model with .config or a model type, got {type(obj)}")
        model_type = config.model_type
    if model_type not in PARADIGMS:
        raise ConfigError(f"unknown model type {model_type!r}; choose one of {sorted(PARADIGMS)}")
    known = {t: _hyperparameter_names(c) for t, c in PARADIGMS.items()}
    unknown = sorted(set(hyperparameters) - set().union(*known.values()))
    if unknown:
        raise ConfigError(
            f"unknown paradigm hyperparameters {unknown}; known: "
            + "; ".join(f"{t}: {', '.join(n) or 'none'}" for t, n in known.items())
        )
    mine = {k: v for k, v in hyperparameters.items() if k in known[model_type]}
    return PARADIGMS[model_type](**mine)


def _hyperparameter_names(cls: type) -> list[str]:
    import inspect

    if cls.__init__ is object.__init__:
        return []
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


__all__ = [
    "ConcatDenoiser", "ConcatMaskParadigm", "ConcatNoiseParadigm", "Draws", "FlashI2VParadigm", "NOISE_AUG_LOG_MEAN",
    "NOISE_AUG_LOG_STD", "PARADIGMS", "Paradigm", "T2VParadigm", "TrainingOutput", "paradigm_for",
]
