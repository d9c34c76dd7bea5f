"""Training the project's own (small) Wan2.1-architecture VAE from scratch on video clips.

    flashi2v train-vae --config vae.yaml [section.key=value ...]

    cfg = VAETrainConfig.from_yaml("vae.yaml", overrides=["max_steps=300"])
    result = train_vae(cfg)       # -> VAETrainResult(history, eval, vae_dir, latents_mean, latents_std)

What it does (docs/vae_training.md):

* builds a :class:`~flashi2v.vae.WanVAE` of the configured (reduced) size and trains its network
  (:class:`~flashi2v.models.wan_vae.WanVAEModel`) directly (``requires_grad`` on, ``train()`` mode): ``WanVAE.encode``/``decode`` run
  under ``no_grad``, so the loop calls the module's causal chunked encoder, draws the re-parameterised posterior
  sample ``z = mu + sigma * eps`` and runs the chunked decoder itself (:func:`vae_forward`; the decoder output is
  *not* clamped during training, so overshooting pixels still get a gradient);
* loss (:func:`vae_loss`): ``l1 * |x - x'| + mse * (x - x')^2`` (means over pixels), ``first_frame`` times the same
  terms on frame 0 (the I2V condition frame), optional L1 on the frame differences (``temporal``) and on the spatial
  image gradients (``gradient``), and ``kl * KL(q(z|x) || N(0, I))`` (mean over latent elements);
* initialisation (random init only): He-normal conv weights with zero biases (``model.init_scheme``) and the posterior
  log-variance started at ``model.init_logvar = -6`` (sigma ~ 0.05): with diffusers' default init sigma ~ 1 and the
  sampling noise drowns the still tiny latent means (measured: training stalls at ~12 dB);
* AdamW with linear warm-up and cosine decay, gradient-norm clipping, optional EMA of the weights; training on random
  spatial crops (``data.crop_size``) is cheap and safe, temporal crops (``data.crop_frames``) are not (the causal
  caches never see the later latent frames, which then reconstruct badly);
* the data order and all per-step randomness (random crops, posterior noise) are functions of (seed, step), the
  checkpoints (:mod:`flashi2v.train.checkpoint`: DCP, atomic, keep last K) hold model, optimizer, EMA, scheduler, data
  position and RNG, so a resumed run continues exactly like an uninterrupted one;
* at the end: per-channel mean/std of the posterior mean over ``export.stats_clips`` training clips become the VAE's
  ``latents_mean``/``latents_std`` (the DiT then sees ~unit-variance latents, as with the official Wan2.1
  normalisation), the VAE is written atomically to ``output_dir/vae`` (:meth:`WanVAE.save_pretrained`), reloaded, and
  its round-trip PSNR (normalised encode -> decode, all frames and the first frame) is measured on held-out clips
  (``output_dir/eval.json``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from ..errors import ConfigError, InputError
from ..weights.io import atomic_directory, make_dirs
from .config import YAMLConfig, check_minutes, lr_factor
from .stopping import StopRequest

if TYPE_CHECKING:
    from ..vae import WanVAE

log = logging.getLogger("flashi2v.train")

__all__ = [
    "VAETrainConfig",
    "VAETrainResult",
    "VAETrainer",
    "add_vae_parser",
    "build_clip_source",
    "evaluate_roundtrip",
    "latent_stats",
    "psnr",
    "train_vae",
    "vae_forward",
    "vae_loss",
]


# ===================================================================================================== config
@dataclass
class VAEModelConfig:
    """The WanVAE architecture (Wan2.1 layout with fewer channels). ``init``: an optional ``WanVAE.save_pretrained``
    folder to start from (its architecture must match); ``null`` = random initialisation (seeded)."""

    base_dim: int = 16
    z_dim: int = 16
    dim_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 1
    temperal_downsample: tuple = (False, True, True)
    dropout: float = 0.0
    init: str | None = None
    # Random init only: start the posterior log-variance at this value (quant_conv's log-variance rows: weight 0, bias
    # init_logvar). The default (torch's, as in diffusers) init gives sigma ~ 1, whose noise drowns the small initial means and stalls
    # training (measured: 12 dB after 110 steps); -6 (sigma ~ 0.05) trains like a plain autoencoder from step 1.
    init_logvar: float | None = -6.0
    # Random init only: "kaiming" (He-normal conv weights, zero biases; measured to train faster and more smoothly than
    # torch's default) or "default" (PyTorch's default init, as diffusers' AutoencoderKLWan builds it too).
    init_scheme: str = "kaiming"
    # With model.init: "keep" the folder's weights as they are, or "inflate" them (for a VAE trained on single
    # frames): every causal 3-D convolution keeps only its current-frame tap, the encoder's temporal down-sampling
    # averages the two frames it merges and the decoder's up-sampling repeats each frame, so a static clip encodes to
    # identical latent frames at step 0 (see inflate_temporal_convs). "keep" leaves the taps that single frames never
    # trained at their random values: the shipped VAE's latent frames of a static clip are then nearly unrelated.
    temporal_init: str = "keep"

    @property
    def temporal_flags(self) -> tuple:
        return tuple(bool(t) for t in self.temperal_downsample)


@dataclass
class VAEDataConfig:
    """Training clips.

    ``source``: ``auto`` (decide from ``path``), ``lmdb`` (a filtered LMDB from ``flashi2v data filter``, or a folder
    of ``*.lmdb``), ``meta`` (a folder holding ``meta.json`` such as a ``flashi2v world`` output, a meta JSON file, or
    an ``annotations.txt`` of ``root_dir,meta.json`` lines) or ``random`` (smooth random videos; tests, benchmarks).
    Clips are read with :class:`~flashi2v.data.dataset.FlashI2VVideoDataset` at ``height`` x ``width`` and
    ``num_frames`` frames. ``crop_frames``/``crop_size`` (0 = off) train on random windows / square crops of each clip
    (cheaper steps; the VAE is convolutional); statistics and evaluation always use whole clips.
    """

    source: str = "auto"
    path: str | None = None
    height: int = 128
    width: int = 128
    num_frames: int = 17
    train_fps: float = 16.0
    crop_frames: int = 0
    crop_size: int = 0
    batch_size: int = 2
    shuffle: bool = True
    random_samples: int = 64


@dataclass
class VAELossConfig:
    l1: float = 1.0  # mean |x - x'|
    mse: float = 1.0  # mean (x - x')^2
    first_frame: float = 1.0  # extra weight of frame 0's l1 + mse terms (0 = treat it like any frame)
    temporal: float = 0.0  # L1 of the error of the frame differences
    gradient: float = 0.0  # L1 of the error of the horizontal / vertical pixel differences
    kl: float = 1e-4  # weight of the KL divergence, a mean over latent elements
    sample_posterior: bool = True  # decode z = mu + sigma * eps (False: the mean, a plain autoencoder)


@dataclass
class VAEOptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple = (0.9, 0.99)
    eps: float = 1e-8
    warmup_steps: int = 50  # linear warm-up from 0
    schedule: str = "cosine"  # cosine (to min_lr_ratio * lr at max_steps) | constant
    min_lr_ratio: float = 0.1
    decay_steps: int = 0  # length of the cosine decay (0 = max_steps); larger = stop early on a longer schedule
    max_grad_norm: float = 1.0  # 0 = no clipping


@dataclass
class VAEEMAConfig:
    enabled: bool = False
    decay: float = 0.999


@dataclass
class VAEEvalConfig:
    """Held-out round-trip PSNR. ``path``: held-out clips (any data source, e.g. a ``flashi2v world --split test``
    folder); ``null`` holds out the last ``num_clips`` clips of ``data.path`` (they are then not trained on).
    ``every``: also evaluate during training every N steps (0 = only at the end)."""

    path: str | None = None
    num_clips: int = 32
    every: int = 0


@dataclass
class VAEExportConfig:
    stats_clips: int = 64  # training clips whose latents give latents_mean / latents_std
    dtype: str = "fp32"  # dtype of the weights written to output_dir/vae: fp32 | fp16 | bf16
    use_ema: bool = True  # export the EMA weights when ema.enabled


@dataclass
class VAECheckpointConfig:
    every: int = 100
    keep_last: int = 2
    resume: bool = True  # continue from the newest complete checkpoint in output_dir


@dataclass
class VAELogConfig:
    every: int = 10


@dataclass
class VAETrainConfig(YAMLConfig):
    KIND = "VAE training config"

    output_dir: str = "outputs/vae"
    seed: int = 0
    max_steps: int = 1000
    max_minutes: float = 0.0  # wall-clock budget of this invocation (0 = none); see flashi2v.train.stopping
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0 = torch's default; 1 is fastest on a CPU shared with other jobs)
    channels_last: bool = True  # channels-last 3-D layout of the conv weights and batches (faster on CPU)
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    optim: VAEOptimConfig = field(default_factory=VAEOptimConfig)
    ema: VAEEMAConfig = field(default_factory=VAEEMAConfig)
    eval: VAEEvalConfig = field(default_factory=VAEEvalConfig)
    export: VAEExportConfig = field(default_factory=VAEExportConfig)
    checkpoint: VAECheckpointConfig = field(default_factory=VAECheckpointConfig)
    log: VAELogConfig = field(default_factory=VAELogConfig)

    # ------------------------------------------------------------------------------------------------ derived
    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.model.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(bool(t) for t in self.model.temporal_flags)

    def arch_kwargs(self) -> dict:
        m = self.model
        return dict(base_dim=m.base_dim, z_dim=m.z_dim, dim_mult=tuple(int(v) for v in m.dim_mult),
                    num_res_blocks=m.num_res_blocks, temperal_downsample=tuple(m.temporal_flags), dropout=m.dropout)

    # ------------------------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        def positive(name: str, value, allow_zero: bool = False) -> None:
            if value < 0 or (value == 0 and not allow_zero):
                raise ConfigError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value}")

        m, d, lo, o = self.model, self.data, self.loss, self.optim
        positive("max_steps", self.max_steps)
        check_minutes(self.max_minutes)
        positive("model.base_dim", m.base_dim)
        positive("model.z_dim", m.z_dim)
        positive("model.num_res_blocks", m.num_res_blocks)
        if not m.dim_mult or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in m.dim_mult):
            raise ConfigError(f"model.dim_mult must be a non-empty list of positive integers, got {list(m.dim_mult)}")
        if any(not isinstance(v, bool) for v in m.temperal_downsample):
            raise ConfigError(f"model.temperal_downsample must be a list of true/false, got {list(m.temperal_downsample)}")
        if len(m.temperal_downsample) != len(m.dim_mult) - 1:
            raise ConfigError(f"model.temperal_downsample needs {len(m.dim_mult) - 1} flags (one per down-sampling "
                              f"step of dim_mult {list(m.dim_mult)}), got {len(m.temperal_downsample)}")
        if sum(m.temperal_downsample) > 2:
            # the Wan VAE encodes in chunks of 1 + 4 frames: at most two temporal down-samplings
            raise ConfigError(f"model.temperal_downsample may halve time at most twice (the Wan VAE encodes chunks "
                              f"of 4 frames), got {list(m.temperal_downsample)}")
        if m.init_scheme not in ("kaiming", "default"):
            raise ConfigError(f"model.init_scheme must be kaiming or default, got {m.init_scheme!r}")
        if m.temporal_init not in ("keep", "inflate"):
            raise ConfigError(f"model.temporal_init must be keep or inflate, got {m.temporal_init!r}")
        if m.temporal_init == "inflate" and not m.init:
            raise ConfigError("model.temporal_init: inflate needs model.init (the single-frame VAE to inflate); "
                              "set model.init or use temporal_init: keep")
        if m.init_logvar is not None and not -30.0 <= m.init_logvar <= 20.0:
            raise ConfigError(f"model.init_logvar must be in [-30, 20] (or null), got {m.init_logvar}")
        if not 0.0 <= m.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
        if d.source not in ("auto", "lmdb", "meta", "random"):
            raise ConfigError(f"data.source must be auto, lmdb, meta or random, got {d.source!r}")
        if d.source != "random" and not d.path:
            raise ConfigError(f"data.path is required for data.source={d.source} (an LMDB, a world folder or a meta "
                              "JSON); use data.source=random for synthetic clips")
        positive("data.batch_size", d.batch_size)
        positive("data.random_samples", d.random_samples)
        positive("data.train_fps", d.train_fps)
        sf, tf = self.spatial_factor, self.temporal_factor
        for name in ("height", "width"):
            v = getattr(d, name)
            if v <= 0 or v % sf:
                raise ConfigError(f"data.{name} must be a positive multiple of {sf} (the VAE's spatial factor), got {v}")
        if d.num_frames < 1 or (d.num_frames - 1) % tf:
            raise ConfigError(f"data.num_frames must be 1 + {tf}k (1, {1 + tf}, {1 + 2 * tf}, ...), got {d.num_frames}")
        if d.crop_frames and (d.crop_frames < 1 or (d.crop_frames - 1) % tf or d.crop_frames > d.num_frames):
            raise ConfigError(f"data.crop_frames must be 0 (off) or 1 + {tf}k <= data.num_frames ({d.num_frames}), "
                              f"got {d.crop_frames}")
        if d.crop_size and (d.crop_size < 0 or d.crop_size % sf or d.crop_size > min(d.height, d.width)):
            raise ConfigError(f"data.crop_size must be 0 (off) or a multiple of {sf} <= min(height, width) "
                              f"({min(d.height, d.width)}), got {d.crop_size}")
        for name in ("l1", "mse", "first_frame", "temporal", "gradient", "kl"):
            v = getattr(lo, name)
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"loss.{name} must be a finite number >= 0, got {v}")
        if lo.l1 == 0 and lo.mse == 0:
            raise ConfigError("loss.l1 and loss.mse are both 0; give at least one reconstruction term a weight")
        positive("optim.lr", o.lr, allow_zero=True)
        positive("optim.weight_decay", o.weight_decay, allow_zero=True)
        positive("optim.eps", o.eps)
        positive("optim.warmup_steps", o.warmup_steps, allow_zero=True)
        positive("optim.max_grad_norm", o.max_grad_norm, allow_zero=True)
        if len(o.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in o.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {list(o.betas)}")
        if o.schedule not in ("cosine", "constant"):
            raise ConfigError(f"optim.schedule must be cosine or constant, got {o.schedule!r}")
        positive("optim.decay_steps", o.decay_steps, allow_zero=True)
        if not 0.0 <= o.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
        if not 0.0 <= self.ema.decay <= 1.0:
            raise ConfigError(f"ema.decay must be in [0, 1], got {self.ema.decay}")
        positive("eval.num_clips", self.eval.num_clips, allow_zero=True)
        positive("eval.every", self.eval.every, allow_zero=True)
        positive("export.stats_clips", self.export.stats_clips)
        if self.export.dtype not in _DTYPES:
            raise ConfigError(f"export.dtype must be one of {', '.join(_DTYPES)}, got {self.export.dtype!r}")
        positive("checkpoint.every", self.checkpoint.every)
        positive("checkpoint.keep_last", self.checkpoint.keep_last)
        positive("log.every", self.log.every)
        positive("threads", self.threads, allow_zero=True)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ====================================================================================================== data
class ClipSource:
    """Whole clips ``[3, F, H, W]`` in [-1, 1] by index (``load``), deterministic given (seed, epoch, index)."""

    num_samples: int

    def load(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        pass

    def subset(self, indices: list[int]) -> ClipSource:
        return _Subset(self, indices)


class _Subset(ClipSource):
    def __init__(self, base: ClipSource, indices: list[int]):
        self.base, self.indices = base, list(indices)
        self.num_samples = len(self.indices)

    def load(self, index: int) -> torch.Tensor:
        return self.base.load(self.indices[index])

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)


class DatasetClips(ClipSource):
    """Clips of meta dicts read by :class:`~flashi2v.data.dataset.FlashI2VVideoDataset` (skips unusable clips)."""

    def __init__(self, metas: list, *, height: int, width: int, num_frames: int, train_fps: float, seed: int):
        from ..data.dataset import FlashI2VVideoDataset

        metas = [dict(m, cap=m.get("cap") if m.get("cap") is not None else "") if isinstance(m, dict) else m
                 for m in metas]
        self.ds = FlashI2VVideoDataset(metas, height=height, width=width, sample_num_frames=num_frames,
                                       train_fps=train_fps, text_drop_ratio=0.0, seed=seed)
        self.num_samples = len(self.ds)

    def load(self, index: int) -> torch.Tensor:
        return self.ds[index]["video"]

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)

    @property
    def skip_counts(self) -> dict:
        return dict(self.ds.skip_counts)


class RandomClips(ClipSource):
    """Smooth random videos (low-resolution noise, trilinearly up-sampled, slowly drifting): a stand-in dataset for
    tests and speed measurements. Clip ``i`` depends only on (seed, i)."""

    def __init__(self, num_samples: int, num_frames: int, height: int, width: int, seed: int = 0):
        self.num_samples, self.shape, self.seed = int(num_samples), (num_frames, height, width), int(seed)

    def load(self, index: int) -> torch.Tensor:
        from .data import sample_seed

        f, h, w = self.shape
        g = torch.Generator().manual_seed(sample_seed(self.seed, 11, index))
        coarse = torch.randn(1, 3, max(2, f // 4 + 1), max(2, h // 8), max(2, w // 8), generator=g)
        video = torch.nn.functional.interpolate(coarse, size=(f, h, w), mode="trilinear", align_corners=True)[0]
        return torch.tanh(video).contiguous()


def _metas_from_path(path: str, kind: str) -> list:
    """Meta dicts of an LMDB / world folder / meta JSON / annotation file (``kind``: auto, lmdb or meta)."""
    from ..data.lmdb_store import LMDBReader, find_lmdb_dirs
    from ..data.meta import (
        fill_missing_fields,
        load_meta_json,
        needs_probe,
        read_annotations,
    )

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"data path {p} not found (pass a filtered LMDB, a `flashi2v world` folder or a meta JSON)")
    if kind == "auto":
        is_lmdb = p.is_dir() and ((p / "data.mdb").is_file() or any(c.name.endswith(".lmdb") for c in p.iterdir()))
        kind = "lmdb" if is_lmdb else "meta"
    if kind == "lmdb":
        find_lmdb_dirs(p)  # one-line InputError when it is not an LMDB
        metas = list(LMDBReader(p))
    else:
        if p.is_dir():
            if not (p / "meta.json").is_file():
                raise InputError(f"{p} holds neither an LMDB (data.mdb, *.lmdb) nor a meta.json; pass an LMDB from "
                                 "`flashi2v data filter` or a `flashi2v world` folder")
            p = p / "meta.json"
        if p.suffix.lower() == ".txt":
            metas = read_annotations(p)
        else:
            root = p.parent
            metas = []
            for m in load_meta_json(p):
                if isinstance(m, dict) and isinstance(m.get("path"), str) and not os.path.isabs(m["path"]):
                    m = dict(m, path=str(root / m["path"]))
                metas.append(m)
        metas = [fill_missing_fields(m) if isinstance(m, dict) and needs_probe(m) else m for m in metas]
    if not metas:
        raise InputError(f"{path} holds no clips")
    return metas


def build_clip_source(cfg: VAETrainConfig, path: str | None, *, seed_offset: int = 0,
                      num_random: int | None = None) -> ClipSource:
    """The clips of ``path`` (or random clips for ``data.source=random``) at the configured size."""
    d = cfg.data
    if d.source == "random":
        return RandomClips(num_random if num_random is not None else d.random_samples, d.num_frames, d.height,
                           d.width, cfg.seed + seed_offset)
    metas = _metas_from_path(str(path), d.source)
    return DatasetClips(metas, height=d.height, width=d.width, num_frames=d.num_frames, train_fps=d.train_fps,
                        seed=cfg.seed)


# ===================================================================================================== model
def vae_forward(net, video: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None):
    """Differentiable reconstruction by the VAE network ``net`` (``WanVAE.model``): returns ``(recon, mu, logvar)``.

    ``recon`` is not clamped; ``z = mu + exp(logvar / 2) * eps`` with ``eps`` from ``generator`` when ``sample``,
    else ``z = mu``. Same chunking and causal caches as ``WanVAE.encode``/``decode`` (no tiling).
    """
    if getattr(net, "use_tiling", False):
        raise ConfigError("VAE training does not support tiling; disable it")
    h = net.encode_moments(video)  # [B, 2z, T, h, w], with gradients
    mu, logvar = h.chunk(2, dim=1)
    logvar = logvar.clamp(-30.0, 20.0)  # as diffusers' DiagonalGaussianDistribution
    if sample:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
    else:
        z = mu
    return net.decode_latents(z, clamp=False), mu, logvar


def vae_loss(recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             cfg: VAELossConfig) -> tuple[torch.Tensor, dict]:
    """The training loss and its (weighted-sum-free) parts as floats: l1, mse, first (frame 0 l1 + mse), temporal,
    gradient, kl."""
    err = recon.float() - target.float()
    l1, mse = err.abs().mean(), err.square().mean()
    total = cfg.l1 * l1 + cfg.mse * mse
    parts = dict(l1=l1, mse=mse)
    if cfg.first_frame:
        e0 = err[:, :, :1]
        first = cfg.l1 * e0.abs().mean() + cfg.mse * e0.square().mean()
        total = total + cfg.first_frame * first
        parts["first"] = first
    if cfg.temporal and err.shape[2] > 1:
        temporal = (err[:, :, 1:] - err[:, :, :-1]).abs().mean()
        total = total + cfg.temporal * temporal
        parts["temporal"] = temporal
    if cfg.gradient:
        gradient = 0.5 * ((err[..., :, 1:] - err[..., :, :-1]).abs().mean()
                          + (err[..., 1:, :] - err[..., :-1, :]).abs().mean())
        total = total + cfg.gradient * gradient
        parts["gradient"] = gradient
    kl = 0.5 * (mu.float().square() + logvar.float().exp() - 1.0 - logvar.float()).mean()
    parts["kl"] = kl
    if cfg.kl:
        total = total + cfg.kl * kl
    return total, {k: float(v.detach()) for k, v in parts.items()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1] (data range 2, i.e. the PSNR of the [0, 1] images), capped at 100."""
    m = float((a.detach().float().clamp(-1, 1) - b.detach().float()).square().mean())
    return 100.0 if m <= 1e-10 else 10.0 * math.log10(4.0 / m)


@torch.no_grad()
def latent_stats(vae, clips: ClipSource, indices: list[int], batch_size: int = 4) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of the raw posterior mean over every latent position of the clips."""
    s = s2 = None
    n = 0
    device = vae.device
    for k in range(0, len(indices), batch_size):
        video = torch.stack([clips.load(i) for i in indices[k : k + batch_size]]).to(device)
        mu = vae.encode_raw(video).double()  # [B, z, T, h, w]
        flat = mu.transpose(0, 1).reshape(mu.shape[1], -1)
        s = flat.sum(1) if s is None else s + flat.sum(1)
        s2 = flat.square().sum(1) if s2 is None else s2 + flat.square().sum(1)
        n += flat.shape[1]
    mean = s / n
    std = (s2 / n - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return [float(v) for v in mean], [float(v) for v in std]


@torch.no_grad()
def evaluate_roundtrip(vae, clips: ClipSource, indices: list[int] | None = None, batch_size: int = 4) -> dict:
    """Round-trip PSNR of ``vae.decode(vae.encode(video))`` (the latents the DiT sees): the mean over clips of the
    per-clip PSNR of all frames (``psnr``) and of the first frame (``psnr_first``), plus their minimum."""
    indices = list(range(clips.num_samples)) if indices is None else list(indices)
    per_clip, per_first = [], []
    device = vae.device
    for k in range(0, len(indices), batch_size):
        video = torch.stack([clips.load(i) for i in indices[k : k + batch_size]]).to(device)
        recon = vae.decode(vae.encode(video))
        for b in range(video.shape[0]):
            per_clip.append(psnr(recon[b], video[b]))
            per_first.append(psnr(recon[b, :, :1], video[b, :, :1]))
    if not per_clip:
        return {}
    return dict(psnr=sum(per_clip) / len(per_clip), psnr_first=sum(per_first) / len(per_first),
                psnr_min=min(per_clip), psnr_first_min=min(per_first), num_clips=len(per_clip))


# ===================================================================================================== trainer
@dataclass
class VAETrainResult:
    history: list  # per-step statistics of this process's steps
    eval: dict  # held-out round-trip PSNR of the exported VAE ({} without held-out clips)
    vae_dir: Path | None  # output_dir/vae; None when the run stopped early (no export then)
    latents_mean: list
    latents_std: list
    stopped: str | None = None  # why the run stopped before max_steps (max_minutes, a signal); None: it did not


def _load_fewer_temporal_downsamplings(init: "WanVAE", new: "WanVAE", cfg: "VAETrainConfig") -> "WanVAE":
    """``new`` (the config's architecture with fewer temporal down-samplings, e.g. a 2x-temporal ``[false, true]``
    clip VAE) loaded with the weights of ``init`` (e.g. an image-stage VAE trained with ``[true, true]``). The new
    model's tensors are a subset of ``init``'s (the dropped ones are the unused temporal convolutions of the removed
    down/up-samplings); anything the new model would need but ``init`` lacks is an error, so no weight is left
    uninitialised."""
    src, dst = init.state_dict(), new.state_dict()
    lacking = [k for k in dst if k not in src or src[k].shape != dst[k].shape]
    if lacking:
        raise ConfigError(f"model.init {cfg.model.init} has temperal_downsample={init.config['temperal_downsample']}, "
                          f"which lacks {len(lacking)} tensors of model.temperal_downsample="
                          f"{list(cfg.model.temperal_downsample)} (e.g. {lacking[0]}); a VAE can only be continued "
                          "with the same or fewer temporal down-samplings")
    new.load_state_dict({k: src[k] for k in dst})
    log.info("model.init: temperal_downsample %s -> %s, dropped %d unused temporal-conv tensors",
             list(init.config["temperal_downsample"]), list(cfg.model.temperal_downsample), len(src) - len(dst))
    return new


def inflate_temporal_convs(vae: "WanVAE") -> int:
    """Make a VAE trained on single frames start as that image VAE applied frame by frame ("inflation").

    A single frame reaches only the current-frame (last) tap of each causal 3-D convolution, so training on single
    frames leaves the other taps at their random initial values; a clip VAE continued from it then mixes random
    features of earlier frames into every later latent frame. Here every 3-D convolution keeps only its last tap, the
    encoder's temporal down-sampling (``time_conv``, stride 2 over [previous chunk's last frame, 2 new frames]) averages
    the two new frames, and the decoder's up-sampling ``time_conv`` (``2C`` outputs, one per output frame) copies the
    current frame into both. A static clip then encodes to identical latent frames, each equal to the first frame's,
    and constant latents decode to a static clip. Returns the number of convolutions changed.
    """
    n = 0
    with torch.no_grad():
        for name, mod in vae.model.named_modules():
            if not isinstance(mod, torch.nn.Conv3d) or mod.kernel_size[0] == 1:
                continue
            w = mod.weight
            if name.endswith("time_conv"):
                out_ch, in_ch, kt = w.shape[0], w.shape[1], w.shape[2]
                eye = torch.eye(in_ch, dtype=w.dtype, device=w.device)
                w.zero_()
                if mod.bias is not None:
                    mod.bias.zero_()
                if out_ch == in_ch and mod.stride[0] == 2 and kt == 3:  # encoder: mean of the two new frames
                    w[:, :, 1, 0, 0] = eye / 2
                    w[:, :, 2, 0, 0] = eye / 2
                elif out_ch == 2 * in_ch and mod.stride[0] == 1:  # decoder: both output frames = the current frame
                    w[:in_ch, :, -1, 0, 0] = eye
                    w[in_ch:, :, -1, 0, 0] = eye
                else:
                    raise ConfigError(f"cannot inflate {name} (weight {tuple(w.shape)}, stride {mod.stride}); "
                                      "it is not a Wan VAE temporal resampling; use model.temporal_init: keep")
            else:
                w[:, :, :-1].zero_()
            n += 1
    return n


class VAETrainer:
    def __init__(self, cfg: VAETrainConfig):
        from ..vae import WanVAE
        from .data import DistributedEpochSampler
        from .ema import EMA

        self.cfg = cfg
        self._started = time.monotonic()  # max_minutes counts from here
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is available; use device=cpu (or auto)")
        self.device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
                                   else "cpu")
        self.out = Path(cfg.output_dir)
        self._threads_before = torch.get_num_threads()  # restored when fit() returns
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

        # ---- model (float32, trainable) -------------------------------------------------------------------------
        torch.manual_seed(cfg.seed)
        if cfg.model.init:
            vae = WanVAE.from_pretrained(cfg.model.init, dtype=torch.float32)
            mine = WanVAE(**cfg.arch_kwargs(), latents_mean=vae.config["latents_mean"],
                          latents_std=vae.config["latents_std"])
            for k in ("base_dim", "z_dim", "dim_mult", "num_res_blocks"):
                if vae.config[k] != mine.config[k]:
                    raise ConfigError(f"model.init {cfg.model.init} has {k}={vae.config[k]} but model.{k} is "
                                      f"{mine.config[k]}; make the architecture match the folder")
            if vae.config["temperal_downsample"] != mine.config["temperal_downsample"]:
                vae = _load_fewer_temporal_downsamplings(vae, mine, cfg)
            if cfg.model.temporal_init == "inflate":
                log.info("model.temporal_init: inflated %d temporal convolutions of %s", inflate_temporal_convs(vae),
                         cfg.model.init)
        else:
            vae = WanVAE(**cfg.arch_kwargs())
            if cfg.model.init_scheme == "kaiming":
                with torch.no_grad():
                    for mod in vae.model.modules():
                        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Conv3d)):
                            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                            if mod.bias is not None:
                                mod.bias.zero_()
            if cfg.model.init_logvar is not None:
                with torch.no_grad():
                    vae.model.quant_conv.weight[cfg.model.z_dim :].zero_()
                    vae.model.quant_conv.bias[cfg.model.z_dim :].fill_(cfg.model.init_logvar)
        self.vae = vae.to(self.device)
        self.net = self.vae.model  # flashi2v.models.wan_vae.WanVAEModel
        self.net.requires_grad_(True)
        if cfg.channels_last:
            for mod in self.net.modules():
                if isinstance(mod, torch.nn.Conv3d):
                    mod.weight.data = mod.weight.data.contiguous(memory_format=torch.channels_last_3d)
        self.params = list(self.net.parameters())

        o = cfg.optim
        decay = [p for n, p in self.net.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.net.named_parameters() if p.ndim <= 1]  # biases, RMS-norm gains
        self.optimizer = torch.optim.AdamW(
            [dict(params=decay, weight_decay=o.weight_decay), dict(params=no_decay, weight_decay=0.0)],
            lr=o.lr, betas=tuple(float(b) for b in o.betas), eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg.optim, cfg.max_steps))
        self.ema = EMA(self.net, cfg.ema.decay) if cfg.ema.enabled else None

        # ---- data -------------------------------------------------------------------------------------------------
        d = cfg.data
        source = build_clip_source(cfg, d.path)
        n = source.num_samples
        if cfg.eval.num_clips and cfg.eval.path is None:  # hold out the last clips of the training data
            if n <= cfg.eval.num_clips + d.batch_size:
                raise InputError(f"{d.path or 'the random source'} has {n} clips, too few to hold out eval.num_clips="
                                 f"{cfg.eval.num_clips} and train with batch {d.batch_size}; lower eval.num_clips or "
                                 "set eval.path")
            held = list(range(n - cfg.eval.num_clips, n))
            self.train_clips = source.subset(list(range(n - cfg.eval.num_clips)))
            self.eval_clips: ClipSource | None = source.subset(held)
        else:
            self.train_clips = source
            self.eval_clips = None
            if cfg.eval.num_clips and cfg.eval.path is not None:
                ev = build_clip_source(cfg, cfg.eval.path, seed_offset=1, num_random=cfg.eval.num_clips)
                self.eval_clips = ev.subset(list(range(min(cfg.eval.num_clips, ev.num_samples))))
        self.source = source
        self.sampler = DistributedEpochSampler(self.train_clips.num_samples, d.batch_size, 0, 1, cfg.seed, d.shuffle)
        self.step = 0
        self.last_eval: dict = {}

    # ------------------------------------------------------------------------------------------------ batches
    def next_batch(self) -> torch.Tensor:
        """The training batch of the current step: whole clips in sampler order, then random windows / crops drawn
        from a generator keyed by (seed, step)."""
        from .data import sample_seed

        d = self.cfg.data
        idx = self.sampler.next_indices()
        self.train_clips.set_epoch(self.sampler.epoch)
        video = torch.stack([self.train_clips.load(i) for i in idx])  # [B, 3, F, H, W]
        if d.crop_frames or d.crop_size:
            g = torch.Generator().manual_seed(sample_seed(self.cfg.seed, 3, self.step))
            crops = []
            for v in video:
                _, f, h, w = v.shape
                cf = d.crop_frames or f
                cs_h, cs_w = (d.crop_size, d.crop_size) if d.crop_size else (h, w)
                t0 = int(torch.randint(0, f - cf + 1, (), generator=g))
                y0 = int(torch.randint(0, h - cs_h + 1, (), generator=g))
                x0 = int(torch.randint(0, w - cs_w + 1, (), generator=g))
                crops.append(v[:, t0 : t0 + cf, y0 : y0 + cs_h, x0 : x0 + cs_w])
            video = torch.stack(crops)
        fmt = torch.channels_last_3d if self.cfg.channels_last else torch.contiguous_format
        return video.to(self.device).contiguous(memory_format=fmt)

    # ------------------------------------------------------------------------------------------------ state
    def app_state(self) -> dict:
        from .checkpoint import training_state

        return training_state(self.net, self.optimizer, self.ema)

    def extra_state(self) -> dict:
        from .checkpoint import rng_state

        return dict(step=self.step, data=self.sampler.state_dict(), scheduler=self.scheduler.state_dict(),
                    rng=rng_state(), last_eval=self.last_eval)

    def save(self) -> Path:
        from .checkpoint import save_checkpoint

        path = save_checkpoint(self.out, self.step, self.app_state(), self.extra_state(), self.cfg.checkpoint.keep_last)
        log.info("saved checkpoint %s", path)
        return path

    def resume(self) -> int | None:
        from .checkpoint import load_latest, restore_training_state, set_rng_state

        state = self.app_state()

        def apply(extra: dict) -> None:
            self.step = int(extra["step"])
            self.sampler.load_state_dict(extra["data"])
            self.scheduler.load_state_dict(extra["scheduler"])
            self.last_eval = dict(extra.get("last_eval") or {})
            set_rng_state(extra["rng"])

        step = load_latest(self.out, state, apply)
        if step is not None:
            restore_training_state(self.net, self.optimizer, self.ema, state)
            log.info("resumed from step %d (%s)", step, self.out / "checkpoints")
        return step

    def _check_previous_run(self) -> None:
        """Refuse to resume checkpoints of another architecture (DCP would fail with a shape error)."""
        from .checkpoint import list_checkpoints

        old_cfg = self.out / "config.yaml"
        if not (self.cfg.checkpoint.resume and old_cfg.is_file() and list_checkpoints(self.out)):
            return
        try:
            old = yaml.safe_load(old_cfg.read_text()) or {}
            old_model = dict(old.get("model") or {})
        except (yaml.YAMLError, AttributeError, TypeError):
            return
        new_model = self.cfg.to_dict()["model"]
        keys = ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample")
        diff = [k for k in keys if k in old_model and old_model[k] != new_model[k]]
        if diff:
            changes = ", ".join(f"model.{k}: {old_model[k]} -> {new_model[k]}" for k in diff)
            raise ConfigError(f"{self.out} holds checkpoints of another architecture ({changes}); use a new "
                              "output_dir or checkpoint.resume=false")

    # ------------------------------------------------------------------------------------------------ step
    def train_step(self) -> dict:
        from .data import sample_seed

        cfg = self.cfg
        self.net.train()
        t0 = time.perf_counter()
        video = self.next_batch()
        t_data = time.perf_counter() - t0
        g = torch.Generator().manual_seed(sample_seed(cfg.seed, 5, self.step))
        recon, mu, logvar = vae_forward(self.net, video, sample=cfg.loss.sample_posterior, generator=g)
        loss, parts = vae_loss(recon, video, mu, logvar, cfg.loss)
        loss.backward()
        if cfg.optim.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.max_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        norm = float(norm)
        lr = self.scheduler.get_last_lr()[0]
        if math.isfinite(norm):
            self.optimizer.step()
            self.scheduler.step()
        else:
            log.warning("step %d: non-finite gradient norm, update skipped", self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.net)
        dt = time.perf_counter() - t0
        return dict(step=self.step, loss=float(loss.detach()), **parts, psnr=psnr(recon, video), grad_norm=norm,
                    lr=lr, step_time=dt, data_time=t_data, samples_per_s=video.shape[0] / dt,
                    logvar=float(logvar.detach().mean()), mu_std=float(mu.detach().std()))

    # ------------------------------------------------------------------------------------------------ eval / export
    @torch.no_grad()
    def quick_eval(self) -> dict:
        """Held-out round-trip PSNR of the current (EMA) weights (``WanVAE.encode`` -> ``decode``, posterior mean)."""
        if self.eval_clips is None:
            return {}
        self.net.eval()
        ctx = self.ema.swapped_in(self.net) if self.ema is not None else nullcontext()
        with ctx:
            res = evaluate_roundtrip(self.vae, self.eval_clips)
        self.net.train()
        return res

    @torch.no_grad()
    def export(self):
        """Measure the latent statistics, write ``output_dir/vae`` atomically and return the reloaded VAE."""
        from ..vae import WanVAE

        cfg = self.cfg
        self.net.eval()
        use_ema = self.ema is not None and cfg.export.use_ema
        ctx = self.ema.swapped_in(self.net) if use_ema else nullcontext()
        with ctx:
            n = self.train_clips.num_samples
            k = min(cfg.export.stats_clips, n)
            idx = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})
            self.train_clips.set_epoch(0)
            mean, std = latent_stats(self.vae, self.train_clips, idx)
            final_vae = WanVAE(**cfg.arch_kwargs(), latents_mean=mean, latents_std=std)
            final_vae.model.load_state_dict({k2: v.detach().cpu() for k2, v in self.net.state_dict().items()})
        final_vae.to(_DTYPES[cfg.export.dtype])
        target = self.out / "vae"
        with atomic_directory(target, overwrite=True) as tmp:
            final_vae.save_pretrained(tmp)
        self.net.train()
        log.info("wrote %s (%d clips for the latent statistics; mean |mean| %.3f, mean std %.3f)", target, len(idx),
                 sum(abs(v) for v in mean) / len(mean), sum(std) / len(std))
        return WanVAE.from_pretrained(target, dtype=torch.float32, device=self.device), mean, std

    # ------------------------------------------------------------------------------------------------ loop
    def fit(self) -> VAETrainResult:
        """Train to ``max_steps`` (resuming when configured); the process's torch thread count is restored after."""
        try:
            return self._fit()
        finally:
            torch.set_num_threads(self._threads_before)

    def _fit(self) -> VAETrainResult:
        cfg = self.cfg
        self._check_previous_run()
        make_dirs(self.out)
        cfg.save(self.out / "config.yaml")
        if cfg.checkpoint.resume:
            self.resume()
        n_par = sum(p.numel() for p in self.params)
        d = cfg.data
        crop = (f"{d.crop_frames or d.num_frames}x{d.crop_size or d.height}x{d.crop_size or d.width}")
        print(f"training WanVAE({self.vae.extra_repr()}): {n_par / 1e6:.3f}M parameters "
              f"({n_par * 4 / 2**20:.2f} MiB fp32, {n_par * 2 / 2**20:.2f} MiB fp16) on {self.device}; "
              f"{self.train_clips.num_samples} training clips, batch {d.batch_size} of {crop}; "
              f"{self.eval_clips.num_samples if self.eval_clips is not None else 0} held-out clips; "
              f"steps {self.step} -> {cfg.max_steps}", flush=True)
        if d.crop_frames and d.crop_frames < d.num_frames:
            log.warning("data.crop_frames=%d < data.num_frames=%d: the causal caches are then never trained on the "
                        "later latent frames; measured to reconstruct the frames beyond the crop badly (15 dB vs 20 "
                        "dB), prefer crop_frames=0 and spatial crops (crop_size)", d.crop_frames, d.num_frames)
        history = []
        metrics_path = self.out / "metrics.jsonl"
        window: list = []
        stopped = None
        with StopRequest(cfg.max_minutes, self._started) as stop:
            while self.step < cfg.max_steps:
                stats = self.train_step()
                history.append(stats)
                window.append(stats)
                stopped = stop.check() if self.step < cfg.max_steps else None
                end = self.step == cfg.max_steps or stopped is not None
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step != cfg.max_steps:
                    self.last_eval = self.quick_eval()
                    stats["eval"] = self.last_eval
                    if self.last_eval:
                        print(f"step {self.step}: held-out PSNR {self.last_eval['psnr']:.2f} dB (first frame "
                              f"{self.last_eval['psnr_first']:.2f} dB)", flush=True)
                if self.step % cfg.log.every == 0 or end:
                    self.log_stats(window)
                    with open(metrics_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(_plain_stats(stats)) + "\n")
                    window = []
                if self.step % cfg.checkpoint.every == 0 or end:
                    self.save()
                if stopped is not None:
                    print(f"stopped at step {self.step} of {cfg.max_steps}: {stopped}; checkpoint saved, no VAE "
                          "exported; run the same command again to resume", flush=True)
                    return VAETrainResult(history, {}, None, [], [], stopped=stopped)
        vae, mean, std = self.export()
        result_eval = {}
        if self.eval_clips is not None:
            result_eval = evaluate_roundtrip(vae, self.eval_clips)
            print(f"held-out round trip ({result_eval['num_clips']} clips): PSNR {result_eval['psnr']:.2f} dB, "
                  f"first frame {result_eval['psnr_first']:.2f} dB", flush=True)
        from ..weights.io import atomic_write_text

        atomic_write_text(self.out / "eval.json", json.dumps(dict(step=self.step, **result_eval, latents_mean=mean,
                                                                  latents_std=std), indent=1) + "\n")
        return VAETrainResult(history, result_eval, self.out / "vae", mean, std)

    def log_stats(self, window: list) -> None:
        """One console line: the means over the steps since the last line (loss, its parts, PSNR, time)."""
        s = window[-1]
        keys = ("loss", "psnr", "step_time", "l1", "mse", "first", "temporal", "gradient", "kl")
        avg = {k: sum(w[k] for w in window) / len(window) for k in keys if k in s}
        sps = self.cfg.data.batch_size * len(window) / max(1e-9, sum(w["step_time"] for w in window))
        parts = "  ".join(f"{k} {avg[k]:.4g}" for k in keys[3:] if k in avg)
        skipped = getattr(self.source, "skip_counts", None)
        print(f"step {s['step']}/{self.cfg.max_steps}  loss {avg['loss']:.4f} ({parts})  psnr {avg['psnr']:.2f} dB  "
              f"grad_norm {s['grad_norm']:.3g}  lr {s['lr']:.3g}  {avg['step_time']:.2f} s/step  {sps:.2f} samples/s"
              + (f"  skipped clips {skipped}" if skipped else ""), flush=True)


def _plain_stats(s: dict) -> dict:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in s.items()}


def train_vae(cfg: VAETrainConfig) -> VAETrainResult:
    """Train (or resume) a VAE as described by ``cfg``; see the module docstring."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    return VAETrainer(cfg).fit()


# ======================================================================================================= CLI
def add_vae_parser(sub) -> Any:
    """Register ``flashi2v train-vae --config vae.yaml [section.key=value ...]`` on the subparsers ``sub``."""
    p = sub.add_parser("train-vae", help="train the small Wan-architecture VAE on video clips", description=(
        "Train a (small) Wan2.1-architecture causal 3-D VAE from scratch on the clips of a filtered LMDB or a "
        "`flashi2v world` folder (see docs/vae_training.md). Extra arguments section.key=value override the YAML "
        "(e.g. max_steps=300 model.base_dim=16). A run resumes from the newest complete checkpoint in output_dir and "
        "ends by writing output_dir/vae (with measured latent mean/std) and its held-out round-trip PSNR."))
    p.add_argument("--config", help="VAE training YAML (omit to use the defaults plus overrides)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.path=/data/world max_steps=300")
    p.set_defaults(func=cmd_train_vae)
    return p


def cmd_train_vae(args) -> int:
    cfg = VAETrainConfig.from_yaml(args.config, args.overrides)
    res = train_vae(cfg)
    if res.stopped:  # the trainer said where it stopped and how to resume
        return 0
    msg = f"wrote {res.vae_dir}"
    if res.eval:
        msg += (f"; held-out round-trip PSNR {res.eval['psnr']:.2f} dB (first frame {res.eval['psnr_first']:.2f} dB, "
                f"{res.eval['num_clips']} clips)")
    print(msg)
    return 0
