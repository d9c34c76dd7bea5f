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
An **edited** caption narrows the question to some words: :func:`swap_words` turns "moves left" into "moves right",
and ``edit_reliance`` = edited − right error on frames 1.. says whether the model follows those words (0: it reads
the caption for what it names but ignores them).

At high σ almost nothing of x₀ is left in y, so frame 0 can only be predicted from the image. A model that uses its
image has frame-0 error ≪ 1 with the right image and a large *reliance* (wrong − right); a model that ignores it has
both near the unconditional error. A copying (leaking) model has frame-0 error ≈ 0 at every σ. For FlashI2V models
the probe also reports the size of the latent shift, std(φ(z)) against std(z).
"""

from __future__ import annotations

import math
import re
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
    rest_edited_prompt: float = float("nan")  # frames 1.. with the edited captions (NaN when none were given)

    @property
    def reliance(self) -> float:
        """How much worse frame 0 gets with a wrong image (0: the image is ignored)."""
        return self.frame0_wrong - self.frame0

    @property
    def prompt_reliance(self) -> float:
        """How much worse frames 1.. get with another clip's caption (0: the prompt is ignored)."""
        return self.rest_wrong_prompt - self.rest

    @property
    def edit_reliance(self) -> float:
        """How much worse frames 1.. get with the edited captions (NaN when none were given)."""
        return self.rest_edited_prompt - self.rest


@dataclass
class RelianceResult:
    model_type: str
    samples: int
    latent_var: float
    rows: list[RelianceRow] = field(default_factory=list)
    shift_std: float | None = None  # FlashI2V: std of φ(z)
    latent_std: float | None = None  # std of z
    edit: str | None = None  # what the edited captions changed, e.g. "left<->right, up<->down"

    def to_dict(self) -> dict:
        d = asdict(self)
        for r, row in zip(d["rows"], self.rows):
            r["reliance"] = row.reliance
            r["prompt_reliance"] = row.prompt_reliance
            r["edit_reliance"] = row.edit_reliance
            for k, v in r.items():  # an unmeasured column is null in JSON, not NaN
                if isinstance(v, float) and math.isnan(v):
                    r[k] = None
        return d

    def table(self) -> str:
        lines = [f"model type {self.model_type}, {self.samples} samples, Var(x0) {self.latent_var:.3f}"
                 + (f", std phi(z) {self.shift_std:.3f} vs std z {self.latent_std:.3f}" if self.shift_std is not None
                    else ""),
                 "| sigma | frame 0 | frames 1.. | frame 0, wrong image | frames 1.., wrong image | reliance "
                 "| frames 1.., wrong prompt | frames 1.., empty prompt | prompt reliance |"
                 + (" frames 1.., edited prompt | edit reliance |" if self.edit else ""),
                 "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if self.edit else "")]
        if self.edit:
            lines.insert(1, f"edited captions: {self.edit}")
        for r in self.rows:
            lines.append(f"| {r.sigma:.2f} | {r.frame0:.3f} | {r.rest:.3f} | {r.frame0_wrong:.3f} | "
                         f"{r.rest_wrong:.3f} | {r.reliance:+.3f} | {r.rest_wrong_prompt:.3f} | "
                         f"{_cell(r.rest_empty_prompt)} | {r.prompt_reliance:+.3f} |"
                         + (f" {_cell(r.rest_edited_prompt)} | {r.edit_reliance:+.5f} |" if self.edit else ""))
        return "\n".join(lines)


def _cell(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3f}"


def parse_swaps(pairs, what: str = "--swap-words") -> dict[str, str]:
    """``["left=right", "up=down"]`` -> a two-way, lower-case word map; a malformed pair is a one-line InputError
    that names the setting ``what``."""
    swaps: dict[str, str] = {}
    for pair in pairs:
        a, sep, b = str(pair).partition("=")
        a, b = a.strip().lower(), b.strip().lower()
        if not sep or a == b or not all(re.fullmatch(r"\w[\w-]*", w) for w in (a, b)):
            raise InputError(f"{what} {pair!r}: give two different words as WORD=WORD, e.g. left=right")
        for x, y in ((a, b), (b, a)):
            if swaps.get(x, y) != y:
                raise InputError(f"{what}: {x!r} is paired with both {swaps[x]!r} and {y!r}")
            swaps[x] = y
    return swaps


def swap_words(caption: str, swaps: dict[str, str]) -> str:
    """Swap whole words of ``caption`` in one pass (so left=right turns "left, then right" into "right, then left"),
    case-insensitively, keeping a capital first letter."""
    if not swaps:
        return caption
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, swaps), key=len, reverse=True)) + r")\b", re.I)

    def repl(m):
        word = swaps[m.group(0).lower()]
        return word[:1].upper() + word[1:] if m.group(0)[:1].isupper() else word

    return pattern.sub(repl, caption)


@torch.no_grad()
def image_reliance(model, latents: torch.Tensor, first_frame_latents: torch.Tensor, context: torch.Tensor,
                   sigmas: Sequence[float] = DEFAULT_SIGMAS, seed: int = 0, paradigm=None,
                   empty_context: torch.Tensor | None = None,
                   edited_context: torch.Tensor | None = None, edit: str | None = None) -> RelianceResult:
    """The probe on clean latents [B, C, T, h, w], their first-frame latents [B, C, 1, h, w] and text states
    [B, L, D] (B ≥ 2: the wrong image and the wrong prompt are the next sample's); ``empty_context`` [L, D], the
    empty prompt's states, adds that column, and ``edited_context`` [B, L, D] (each sample's caption edited, e.g. by
    :func:`swap_words`, described by ``edit``) the edit columns. Runs in float32 on the model's device."""
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
    if edited_context is not None and tuple(edited_context.shape) != tuple(context.shape):
        raise InputError(f"edited_context must be {tuple(context.shape)}, got {tuple(edited_context.shape)}")
    b, t = x0.shape[0], x0.shape[2]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(dev)
    var = float(x0.var())
    right = paradigm.denoiser(model, z, t)
    wrong = paradigm.denoiser(model, z.roll(1, dims=0), t)
    result = RelianceResult(paradigm.model_type, b, var,
                            edit=(edit or "edited captions") if edited_context is not None else None)
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
        prompts = [ctx.roll(1, dims=0),
                   None if empty_context is None else empty_context.to(ctx).expand_as(ctx),
                   None if edited_context is None else edited_context.to(ctx)]
        for c in prompts:
            if c is None:
                errs.append(float("nan"))
                continue
            e = (y - s * right(y, sigmas_to_timesteps(sig), c).float() - x0).pow(2)
            errs.append(float(e[:, :, 1:].mean()) / var)
        result.rows.append(RelianceRow(float(s), *errs))
    return result


def reliance_from_cache(model_folder, cache_dir, samples: int = 16, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                        seed: int = 0, device: str = "cpu", swaps: dict[str, str] | None = None) -> RelianceResult:
    """The probe for a model folder on ``samples`` items of a latent cache (``flashi2v data encode``), spread evenly
    over the cache (the same items for every model). The batch is built like the trainer's (text states fitted to
    the model's ``text_len``, a cache of another ``text_dim`` refused)."""
    from ..precision import resolve_device
    from ..train.data import LatentCacheSource
    from ..weights.transformer import load_transformer

    if samples < 2:
        raise InputError(f"--samples must be at least 2, got {samples}")
    device = str(resolve_device(device))
    folder = Path(model_folder)
    src = folder / "transformer" if (folder / "model_index.json").is_file() else folder
    if not src.exists():
        raise InputError(f"{folder} is not a model folder or transformer folder")
    try:
        model, _ = load_transformer(src, device=device, dtype=torch.float32)
    except CheckpointError as e:
        raise InputError(str(e)) from None
    source = LatentCacheSource(cache_dir, model.config.text_len, model.config.text_dim)
    batch = probe_batch(source, samples, swaps, where=str(cache_dir))
    edited = None
    if swaps:
        encoder = model_text_encoder(folder, device)
        edited = edited_text_states(encoder, source, batch, swaps, model.config.text_dim,
                                    where=f"{folder} and {cache_dir}")
    return image_reliance(model, batch.latents, batch.first_frame_latents, batch.text_emb, sigmas, seed,
                          empty_context=batch.empty_text_emb, edited_context=edited, edit=describe_swaps(swaps))


def describe_swaps(swaps: dict[str, str] | None) -> str | None:
    """``{left: right, right: left}`` -> "left<->right" (None for no swaps)."""
    return ", ".join(f"{a}<->{b}" for a, b in swaps.items() if a < b) if swaps else None


def probe_batch(source, samples: int, swaps: dict[str, str] | None = None, where: str = "the latent cache"):
    """``samples`` items of a latent-cache source (:class:`flashi2v.train.data.LatentCacheSource`) spread evenly over
    it, as one CPU batch with the captions the trainer draws in epoch 0; with ``swaps``, only items whose caption the
    swap changes. The same items for every model, so probes of different models or training steps compare."""
    pool = list(range(source.num_samples))
    if swaps:  # only samples whose (epoch-0) caption the swap changes
        pool = [i for i, c in enumerate(source.captions(0)) if c != swap_words(c, swaps)]
        if len(pool) < 2:
            raise InputError(f"{len(pool)} caption(s) of {where} contain a word of the swap "
                             f"({describe_swaps(swaps)}); the probe needs at least 2")
    n = min(samples, len(pool))
    if n < 2:
        raise InputError(f"{where} has {source.num_samples} sample(s); the probe needs at least 2")
    return source.batch([pool[int(i * len(pool) / n)] for i in range(n)], torch.device("cpu"))


def edited_text_states(encoder, source, batch, swaps: dict[str, str], text_dim: int,
                       where: str = "the model and the cache") -> torch.Tensor:
    """The text states [B, L, D] of ``batch``'s captions with ``swaps`` applied, encoded by ``encoder`` and fitted
    like the cache's. The encoder must reproduce the cache's own states of the unedited captions (else an edit would
    be confounded with a change of encoder): an InputError says so."""
    if encoder.dim != text_dim:
        raise InputError(f"the text encoder of {where} gives {encoder.dim}-d states, the transformer expects "
                         f"{text_dim}")

    def encode(captions):
        emb, _ = encoder.encode(captions)
        return torch.stack([source._fit(e.float().cpu()) for e in emb])

    again = encode(batch.captions)
    if not torch.allclose(again, batch.text_emb.float().cpu(), rtol=1e-3, atol=1e-3):
        raise InputError(f"the text encoder of {where} does not reproduce the cache's text states; "
                         "swapped words need the encoder the cache was made with")
    return encode([swap_words(c, swaps) for c in batch.captions])


def model_text_encoder(folder: Path, device: str):
    """The text encoder of model folder ``folder`` (named by its index); a one-line InputError when it has none."""
    from ..pipeline import INDEX_NAME
    from ..text import load_text_encoder
    from ..weights.io import read_json_object

    index = folder / INDEX_NAME
    if not index.is_file():
        raise InputError(f"the word swap needs a model folder with a text encoder; {folder} has no {INDEX_NAME}")
    try:
        name = read_json_object(index).get("text_encoder", "text_encoder")
    except CheckpointError as e:
        raise InputError(str(e)) from None
    if not (folder / name).is_dir():
        raise InputError(f"the word swap needs a model folder with a text encoder; {folder / name} is missing")
    return load_text_encoder(folder / name, device=device)
