"""How much an image-to-video model *uses* its condition image: ``flashi2v bench reliance``.

A sampled video can fail for many reasons; this probe isolates one. For clean training latents x₀ and fixed noise ε
it builds the noisy state y = σ·ε + (1 − σ)·x₀ at a few σ, asks the model for one velocity v̂ (through its
paradigm's denoiser, so FlashI2V sees y − φ(z) and its Fourier features, a concat model its condition channels),
and scores the one-step clean prediction x̂₀ = y − σ·v̂ on latent frame 0 (the condition frame) and on the other
frames, as MSE / Var(x₀):

* with the **right** image, and
* with a **wrong** image (the batch's first-frame latents rolled by one: another clip's image, same text and noise).

The same probe asks how much the model uses its **prompt**: frames 1.. with the right image and another clip's
caption (rolled the same way), and with the empty prompt when one is given (a latent cache stores it). The
caption is what says where the objects go, so a model that follows it predicts the later frames better with the
right caption than with a wrong or empty one; ``prompt_reliance`` = wrong-prompt − right-prompt error there.

At high σ almost nothing of x₀ is left in y, so frame 0 can only be predicted from the image. A model that uses its
image has frame-0 error ≪ 1 with the right image and a large *reliance* (wrong − right); a model that ignores it has
both near the unconditional error. A copying (leaking) model has frame-0 error ≈ 0 at every σ. For FlashI2V models
the probe also reports the size of the latent shift, std(φ(z)) against std(z).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..errors import CheckpointError, InputError
from ..flow_matching import sigmas_to_timesteps
from ..paradigms import paradigm_for

DEFAULT_SIGMAS = (0.98, 0.9, 0.7, 0.5, 0.3)


@dataclass
class RelianceRow:
    sigma: float
    frame0: float  # MSE / Var(x0) of the one-step x̂0 on latent frame 0, right image
    rest: float  # the same on latent frames 1..T-1
    frame0_wrong: float  # frame 0 with another clip's image
    rest_wrong: float
    rest_wrong_prompt: float = float("nan")  # frames 1.. with the right image and another clip's caption
    rest_empty_prompt: float = float("nan")  # frames 1.. with the empty prompt (NaN when none was given)

    @property
    def reliance(self) -> float:
        """How much worse frame 0 gets with a wrong image (0: the image is ignored)."""
        return self.frame0_wrong - self.frame0

    @property
    def prompt_reliance(self) -> float:
        """How much worse frames 1.. get with another clip's caption (0: the prompt is ignored)."""
        return self.rest_wrong_prompt - self.rest


@dataclass
class RelianceResult:
    model_type: str
    samples: int
    latent_var: float
    rows: list[RelianceRow] = field(default_factory=list)
    shift_std: float | None = None  # FlashI2V: std of φ(z)
    latent_std: float | None = None  # std of z

    def to_dict(self) -> dict:
        d = asdict(self)
        for r, row in zip(d["rows"], self.rows):
            r["reliance"] = row.reliance
            r["prompt_reliance"] = row.prompt_reliance
            for k, v in r.items():  # an unmeasured column is null in JSON, not NaN
                if isinstance(v, float) and math.isnan(v):
                    r[k] = None
        return d

    def table(self) -> str:
        lines = [f"model type {self.model_type}, {self.samples} samples, Var(x0) {self.latent_var:.3f}"
                 + (f", std phi(z) {self.shift_std:.3f} vs std z {self.latent_std:.3f}" if self.shift_std is not None
                    else ""),
                 "| sigma | frame 0 | frames 1.. | frame 0, wrong image | frames 1.., wrong image | reliance "
                 "| frames 1.., wrong prompt | frames 1.., empty prompt | prompt reliance |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.sigma:.2f} | {r.frame0:.3f} | {r.rest:.3f} | {r.frame0_wrong:.3f} | "
                         f"{r.rest_wrong:.3f} | {r.reliance:+.3f} | {r.rest_wrong_prompt:.3f} | "
                         f"{_cell(r.rest_empty_prompt)} | {r.prompt_reliance:+.3f} |")
        return "\n".join(lines)


def _cell(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3f}"


@torch.no_grad()
def image_reliance(model, latents: torch.Tensor, first_frame_latents: torch.Tensor, context: torch.Tensor,
                   sigmas: Sequence[float] = DEFAULT_SIGMAS, seed: int = 0, paradigm=None,
                   empty_context: torch.Tensor | None = None) -> RelianceResult:
    """The probe on clean latents [B, C, T, h, w], their first-frame latents [B, C, 1, h, w] and text states
    [B, L, D] (B ≥ 2: the wrong image and the wrong prompt are the next sample's); ``empty_context`` [L, D], the
    empty prompt's states, adds that column. Runs in float32 on the model's device."""
    if latents.ndim != 5 or latents.shape[2] < 2:
        raise InputError(f"latents must be [B, C, T, h, w] with T >= 2, got {tuple(latents.shape)}")
    if latents.shape[0] < 2:
        raise InputError("the probe needs at least 2 samples (the wrong image is another sample's)")
    if first_frame_latents.shape != latents[:, :, :1].shape:
        raise InputError(f"first_frame_latents must be {tuple(latents[:, :, :1].shape)}, "
                         f"got {tuple(first_frame_latents.shape)}")
    bad = [s for s in sigmas if not 0.0 < float(s) <= 1.0]
    if bad or not sigmas:
        raise InputError(f"sigmas must be in (0, 1], got {list(sigmas)}")
    paradigm = paradigm or paradigm_for(model)
    if not paradigm.uses_image:
        raise InputError(f"a {paradigm.model_type} model has no image condition to probe")
    dev = next(model.parameters()).device
    x0 = latents.float().to(dev)
    z = first_frame_latents.float().to(dev)
    ctx = context.to(dev, next(model.parameters()).dtype)
    if context.shape[0] != latents.shape[0]:
        raise InputError(f"context must have one row per sample ({latents.shape[0]}), got {context.shape[0]}")
    if empty_context is not None and tuple(empty_context.shape) != tuple(context.shape[1:]):
        raise InputError(f"empty_context must be {tuple(context.shape[1:])}, got {tuple(empty_context.shape)}")
    b, t = x0.shape[0], x0.shape[2]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(dev)
    var = float(x0.var())
    right = paradigm.denoiser(model, z, t)
    wrong = paradigm.denoiser(model, z.roll(1, dims=0), t)
    result = RelianceResult(paradigm.model_type, b, var)
    if hasattr(model, "project_first_frame"):
        result.shift_std, result.latent_std = float(model.project_first_frame(z).std()), float(z.std())
    for s in sigmas:
        sig = torch.full((b,), float(s), device=dev)
        y = s * eps + (1 - s) * x0
        errs = []
        for den in (right, wrong):
            x0_hat = y - s * den(y, sigmas_to_timesteps(sig), ctx).float()
            e = (x0_hat - x0).pow(2)
            errs += [float(e[:, :, 0].mean()) / var, float(e[:, :, 1:].mean()) / var]
        prompts = [ctx.roll(1, dims=0)]
        if empty_context is not None:
            prompts.append(empty_context.to(ctx).expand_as(ctx))
        for c in prompts:
            e = (y - s * right(y, sigmas_to_timesteps(sig), c).float() - x0).pow(2)
            errs.append(float(e[:, :, 1:].mean()) / var)
        errs += [float("nan")] * (6 - len(errs))
        result.rows.append(RelianceRow(float(s), *errs))
    return result


def reliance_from_cache(model_folder, cache_dir, samples: int = 16, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                        seed: int = 0, device: str = "cpu") -> RelianceResult:
    """The probe for a model folder on ``samples`` items of a latent cache (``flashi2v data encode``), spread evenly
    over the cache (the same items for every model). The batch is built like the trainer's (text states fitted to
    the model's ``text_len``, a cache of another ``text_dim`` refused)."""
    from ..train.data import LatentCacheSource
    from ..weights.transformer import load_transformer

    if samples < 2:
        raise InputError(f"--samples must be at least 2, got {samples}")
    folder = Path(model_folder)
    src = folder / "transformer" if (folder / "model_index.json").is_file() else folder
    if not src.exists():
        raise InputError(f"{folder} is not a model folder or transformer folder")
    try:
        model, _ = load_transformer(src, device=device, dtype=torch.float32)
    except CheckpointError as e:
        raise InputError(str(e)) from None
    source = LatentCacheSource(cache_dir, model.config.text_len, model.config.text_dim)
    n = min(samples, source.num_samples)
    if n < 2:
        raise InputError(f"{cache_dir} has {source.num_samples} sample(s); the probe needs at least 2")
    batch = source.batch([int(i * source.num_samples / n) for i in range(n)], torch.device("cpu"))
    return image_reliance(model, batch.latents, batch.first_frame_latents, batch.text_emb, sigmas, seed,
                          empty_context=batch.empty_text_emb)
