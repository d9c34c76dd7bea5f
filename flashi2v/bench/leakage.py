"""Conditional-image-leakage benchmark (``flashi2v bench leakage``; ``docs/leakage_benchmark.md``).

Concatenation-based image-to-video models tend to copy the condition image: the first frames match it closely, the
video moves little, and the model generalises worse to inputs unlike its training data (FlashI2V, arXiv 2509.25187,
Figure 7a: chunk-wise error over time, in-domain vs out-of-domain). This module measures that on the procedural
world (:mod:`flashi2v.world`), whose clips come with exact ground truth:

1. build the data once: the world's ``train`` split -> ``flashi2v data filter`` -> latent cache, and the evaluation
   splits ``test`` (in-domain), ``ood_background``, ``ood_combo``, ``ood_motion``;
2. train the three paradigms (``flashi2v``, ``i2v-concat-mask``, ``i2v-concat-noise``) with the same backbone, data,
   seed and budget through :class:`flashi2v.train.trainer.Trainer` and export each one to a model folder (or take
   given model folders);
3. generate from every evaluation clip's first frame and caption (fixed seeds) and score the videos against the
   ground truth (:func:`evaluate_model`), next to three references: the ground truth itself, the static video (the
   first frame repeated) and the VAE round trip of the ground truth;
4. write ``results.json``, ``per_clip.json``, ``results.md`` and Figure-7a-style PNG plots.

Every stage is resumable: a rerun with the same settings reuses the datasets, the latent cache, finished training
runs, exported folders and evaluations stored under the working directory.

Reusable pieces: :func:`load_eval_clips` (a world dataset -> :class:`EvalClip` s), :func:`evaluate_model` (any
pipeline or ``clips -> videos`` callable -> :class:`ModelEvaluation`), :func:`evaluate_clip` (one video),
:func:`static_model`, :func:`oracle_model`, :func:`vae_roundtrip_model`, :class:`PipelineModel`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import InputError

PARADIGMS = ("flashi2v", "i2v-concat-mask", "i2v-concat-noise")
EVAL_SPLITS = ("test", "ood_background", "ood_combo", "ood_motion")
IN_DOMAIN_SPLIT = "test"
#: Reference rows evaluated beside the models: the ground truth clip itself, the first frame repeated, and the VAE
#: reconstruction of the ground truth (upper bound for PSNR/SSIM of anything decoded by that VAE).
REFERENCES = ("ground-truth", "static", "vae")
RESULTS_FORMAT = "flashi2v-leakage-benchmark"
RESULTS_VERSION = 1
#: What :func:`evaluate_clip` records; part of an evaluation's fingerprint, so a stored evaluation made before a
#: metric was added or changed is redone rather than reused without it. Bump it with every such change.
METRICS_VERSION = 2  # 2: obj dist (object_distance)

# The default (realistic) backbone: a small Wan DiT that trains on one GPU in minutes and on CPU in hours.
DEFAULT_ARCH = dict(dim=128, ffn_dim=512, num_heads=4, num_layers=4, freq_dim=64)
QUICK_ARCH = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=1, freq_dim=32)


# ======================================================================================================= settings
@dataclass(frozen=True)
class EvalSettings:
    """How generated videos are scored (all sizes relative to ``min(H, W)`` so they scale with the clip size).

    * ``num_chunks`` temporal chunks for the chunk-wise PSNR / SSIM / MSE (Figure 7a). With ``skip_first`` (default)
      frame 0, the condition frame, is left out of the chunks and of the whole-clip PSNR / SSIM / MSE: it is scored
      on its own (first-frame PSNR), and a copied frame 0 (100 dB) would otherwise dominate the first chunk's mean;
    * tracking: an object is the largest connected set of pixels within its colour tolerance (RGB distance, 0..255)
      of its colour under the frame's lighting gain or the first frame's gain (plus its second colour when
      textured), searched in a window of half-size ``search_frac * min(H, W)`` around its last position (starting
      at its ground-truth position in frame 0); fewer than ``min_pixels`` pixels = not found;
    * an object is *trackable* when tracking it in the ground-truth clip itself gives a mean error of at most
      ``trackable_error_frac * min(H, W)`` and a miss rate of at most ``trackable_miss_rate``; only trackable
      objects enter the trajectory and direction metrics (this removes objects whose colour clashes with the
      background or another object, or that are hidden most of the time);
    * the colour tolerance is chosen per object: the largest of ``track_tol``, ``track_tol + track_tol_step``, ...
      up to ``track_tol_max`` at which the object is still trackable in the ground truth (and missed in no more
      frames there than with ``track_tol``). A decoder blurs small
      objects and shifts their colours (the shipped VAE's round trip of the ground truth moves a 10-px object's
      colour by 40-80), so a fixed tight tolerance would score a faithful video as having lost its objects; the
      ground-truth test keeps a wide tolerance from grabbing a background of similar colour.
      ``track_tol_max = track_tol`` gives one fixed tolerance;
    * a missed frame costs ``miss_penalty_frac`` x the frame diagonal in the penalised trajectory error;
    * direction: an object *has a direction* when its ground-truth visible centroid moves at least
      ``min_gt_displacement_frac * min(H, W)`` from its first to its last visible frame; the generated object agrees
      when its own net displacement is at least ``min_displacement_frac * min(H, W)`` and at least
      ``min_displacement_ratio`` x the ground-truth displacement, and within ``max_angle_deg`` of its direction;
    * shape: for each trackable object, the IoU of the pixels the tracker finds in the video with those it finds in
      the ground truth, centroids aligned (:func:`flashi2v.metrics.shape_iou`), averaged over frames 1.. where
      both are found, the ground truth's pixels are the object's true shape (IoU >= ``shape_clean_iou`` with the
      renderer's visibility mask; this drops frames where a look-alike background joins the object's colour mask)
      and the lighting gain is within ``shape_max_gain_change`` of the first frame's (under a fade the colour mask
      of a video that keeps frame 0's brightness takes in the dark background): 1 for an object that keeps its
      shape, near 0 for one smeared into a blob;
    * dynamic degree (VBench rule) with ``dynamic_method`` flow (``tvl1``, ``ilk`` or ``none`` to skip) and
      ``dynamic_fps`` (None: the clip as given);
    * camera direction, for clips whose camera pans: the content's path is the median optical flow
      (``camera_method``, ``none`` to skip; :func:`flashi2v.metrics.camera_shift`); a pan is *measurable* when that
      path of the ground-truth clip itself agrees with the pan, and the generated clip agrees under the object
      rule above (net content motion opposite to the camera, at least ``min_displacement_frac * min(H, W)`` and
      ``min_displacement_ratio`` x the ground truth's, within ``max_angle_deg``); and how far it goes
      (:func:`pan_distance`: the travel along the ground truth's pan over the ground truth's, in all and per chunk).
    """

    num_chunks: int = 4
    skip_first: bool = True
    track_tol: float = 40.0
    track_tol_max: float = 100.0
    track_tol_step: float = 20.0
    search_frac: float = 0.25
    min_pixels: int = 4
    trackable_error_frac: float = 0.05
    trackable_miss_rate: float = 0.25
    miss_penalty_frac: float = 1.0
    min_gt_displacement_frac: float = 0.08
    min_displacement_frac: float = 0.02
    min_displacement_ratio: float = 0.25
    max_angle_deg: float = 45.0
    shape_clean_iou: float = 0.5
    shape_max_gain_change: float = 0.05
    dynamic_method: str = "tvl1"
    dynamic_fps: Optional[float] = None
    camera_method: str = "tvl1"

    def __post_init__(self):
        if self.num_chunks < 1:
            raise InputError(f"num_chunks must be >= 1, got {self.num_chunks}")
        for name in ("dynamic_method", "camera_method"):
            if getattr(self, name) not in ("tvl1", "ilk", "none"):
                raise InputError(f"{name} must be tvl1, ilk or none, got {getattr(self, name)!r}")
        for name in ("track_tol", "track_tol_step", "search_frac", "trackable_error_frac", "miss_penalty_frac",
                     "max_angle_deg"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.track_tol_max < self.track_tol:
            raise InputError(f"track_tol_max ({self.track_tol_max}) must be >= track_tol ({self.track_tol})")
        if not 0.0 < self.shape_clean_iou <= 1.0:
            raise InputError(f"shape_clean_iou must be in (0, 1], got {self.shape_clean_iou}")
        if not self.shape_max_gain_change >= 0.0:
            raise InputError(f"shape_max_gain_change must be >= 0, got {self.shape_max_gain_change}")

    def track_tols(self) -> list[float]:
        """The colour tolerances tried per object, widest first."""
        n = int(math.floor((self.track_tol_max - self.track_tol) / self.track_tol_step + 1e-9))
        return [self.track_tol + k * self.track_tol_step for k in range(n, -1, -1)]


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings shared by every model. ``None`` takes the model folder's default. Clip ``i`` of a split is
    generated with noise seed ``seed + i``. ``negative_prompt`` "" (default) is the empty prompt the models saw
    under text dropout; None uses the folder's (Wan's negative prompt)."""

    num_steps: Optional[int] = 20
    guidance_scale: Optional[float] = None
    shift: Optional[float] = None
    seed: int = 0
    negative_prompt: Optional[str] = ""
    batch_size: int = 1
    anchor_first_frame: Optional[bool] = None  # None: the folder's default (off)


def split_override(text: str) -> tuple[Optional[str], str]:
    """("flashi2v", "model.condition_init=identity") for "flashi2v:model.condition_init=identity", (None, text) for
    an override without a paradigm (a ':' after the '=' is part of the value)."""
    key = text.split("=", 1)[0]
    if ":" in key:
        target, rest = text.split(":", 1)
        return target.strip(), rest
    return None, text


@dataclass
class LeakageConfig:
    """Everything :func:`run_leakage` needs. ``base``: model folder whose VAE and text encoder are used for the
    latent cache, for training samples / export, and for the VAE reference. ``models``: ``{name: model folder}``
    evaluated as given (a name equal to a paradigm replaces its training). Paradigms in ``paradigms`` that are not
    in ``models`` are trained."""

    workdir: str = "outputs/leakage"
    base: Optional[str] = None
    output: Optional[str] = None  # results folder (default WORKDIR/results)
    paradigms: tuple = PARADIGMS
    models: dict = field(default_factory=dict)
    # data
    train_clips: int = 1000
    eval_clips: int = 100
    eval_splits: tuple = EVAL_SPLITS
    num_frames: int = 17
    height: int = 128
    width: int = 128
    fps: float = 16.0
    data_seed: int = 0  # seed of clip 0 of every split (splits are independent scene streams)
    workers: Optional[int] = None  # world rendering processes (default: CPU count)
    gt_source: str = "render"  # ground-truth frames: "render" (exact, from the spec) or "video" (the decoded MP4)
    vae_one_pass: bool = False  # latent cache: each clip through the VAE in one pass (2.2x faster on a CPU, the same
    # latents up to ~2e-6; flashi2v data encode --vae-one-pass) instead of the official chunks
    # training (the same for every paradigm)
    steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-4
    warmup_steps: int = 50
    seed: int = 0
    text_dropout: float = 0.1
    ema_decay: Optional[float] = None  # None: min(0.999, 1 - 10 / steps) (EMA horizon ~ a tenth of the run)
    weights: str = "ema"  # exported weights: ema | raw
    checkpoint_every: Optional[int] = None  # None: min(steps, 500)
    architecture: dict = field(default_factory=lambda: dict(DEFAULT_ARCH))  # TransformerConfig fields
    # extra TrainConfig overrides "section.key=value" for every paradigm, or "PARADIGM:section.key=value" for one
    # (e.g. "flashi2v:model.condition_init=identity": an option of one paradigm only)
    train_overrides: tuple = ()
    # evaluation
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    settings: EvalSettings = field(default_factory=EvalSettings)
    references: tuple = REFERENCES
    ceiling: bool = True  # trajectory / direction only on objects the VAE's round trip keeps trackable
    save_videos: int = 2  # generated MP4s kept per (model, split) for inspection
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch CPU threads during the run (None: unchanged; 1 is fastest on a busy CPU)

    @classmethod
    def quick(cls, **overrides) -> "LeakageConfig":
        """Tiny sizes for a smoke run (a few minutes on a laptop CPU; the numbers mean nothing)."""
        d = dict(train_clips=8, eval_clips=2, num_frames=5, height=32, width=32, fps=8.0, steps=4, batch_size=2,
                 lr=1e-3, warmup_steps=0, architecture=dict(QUICK_ARCH), save_videos=1, workers=1,
                 generation=GenerationSettings(num_steps=2, guidance_scale=1.0))
        d.update(overrides)
        return cls(**d)

    def validate(self) -> None:
        from ..config import MODEL_TYPES

        for name, low in (("train_clips", 1), ("eval_clips", 1), ("steps", 1), ("batch_size", 1), ("num_frames", 5)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"{name} must be an integer >= {low}, got {v!r}")
        if (self.num_frames - 1) % 4:
            raise InputError(f"num_frames must be 4k+1 (5, 9, 17, ...), got {self.num_frames}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 32 or v % 16:
                raise InputError(f"{name} must be a multiple of 16 and >= 32, got {v!r}")
        if self.gt_source not in ("render", "video"):
            raise InputError(f"gt_source must be 'render' or 'video', got {self.gt_source!r}")
        if self.weights not in ("ema", "raw"):
            raise InputError(f"weights must be 'ema' or 'raw', got {self.weights!r}")
        from ..world import SPLITS

        for s in self.eval_splits:
            if s not in SPLITS or s == "train":
                raise InputError(f"unknown evaluation split {s!r}; choose from {', '.join(EVAL_SPLITS)}")
        if not self.eval_splits:
            raise InputError("no evaluation split")
        for p in self.paradigms:
            if p not in MODEL_TYPES or p == "t2v":
                raise InputError(f"unknown paradigm {p!r}; choose from {', '.join(PARADIGMS)}")
        self._check_architecture()
        for o in self.train_overrides:
            target = split_override(o)[0]
            if target is not None and target not in PARADIGMS:
                raise InputError(f"train override {o!r}: {target!r} is not a paradigm; write PARADIGM:section.key="
                                 f"value with one of {', '.join(PARADIGMS)}, or section.key=value for all")
        for r in self.references:
            if r not in REFERENCES:
                raise InputError(f"unknown reference {r!r}; choose from {', '.join(REFERENCES)}")
        for name, folder in self.models.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(name)):
                raise InputError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
            if name in REFERENCES:
                raise InputError(f"model name {name!r} is reserved for a reference row; choose another name")
            if not (Path(folder) / "model_index.json").is_file():
                raise InputError(f"--models {name}={folder}: not a model folder (no model_index.json)")
        to_train = [p for p in self.paradigms if p not in self.models]
        if (to_train or ("vae" in self.references or self.ceiling) and not self.models) and not self.base:
            raise InputError("a base model folder (--base) is needed to train paradigms and for the VAE reference")
        if self.base and not (Path(self.base) / "model_index.json").is_file():
            raise InputError(f"--base {self.base}: not a model folder (no model_index.json)")
        if to_train and self.batch_size > self.train_clips:
            raise InputError(f"batch_size {self.batch_size} exceeds train_clips {self.train_clips}")
        if not to_train and not self.models:
            raise InputError("nothing to evaluate: no paradigm to train and no --models given")

    def _check_architecture(self) -> None:
        """The DiT architecture of every paradigm to train, checked before any stage (``text_dim`` / ``text_len``
        come from the base folder's text encoder when training starts: placeholders here unless given)."""
        from ..config import TransformerConfig
        from ..errors import ConfigError

        for paradigm in [p for p in self.paradigms if p not in self.models]:
            arch = {"text_dim": 1, "text_len": 1, **self.architecture, "model_type": paradigm}
            arch.pop("in_dim", None)  # set from the paradigm
            try:
                TransformerConfig.from_dict(arch)
            except ConfigError as e:
                raise InputError(f"DiT architecture (--dim, --ffn-dim, --heads, --layers, --freq-dim, --arch): {e}"
                                 ) from None

    def to_dict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))


# ========================================================================================================= clips
@dataclass(eq=False)
class EvalClip:
    """One evaluation clip: ground-truth frames (uint8 ``[T, H, W, 3]``), the caption, and the clip's ground-truth
    entry (the world's scene spec with per-frame visible centroids, see ``docs/world.md``). ``index`` is the clip's
    position in its dataset (it selects the noise seed). ``ceiling``: an optional reference video that decides,
    with the ground truth, which objects are trackable (see :func:`attach_ceiling`)."""

    index: int
    frames: np.ndarray
    caption: str
    gt: dict
    split: str = ""
    ceiling: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    _refs: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def image(self) -> np.ndarray:
        """The condition image: frame 0, uint8 ``[H, W, 3]``."""
        return self.frames[0]

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def load_eval_clips(world_dir, *, limit: Optional[int] = None, source: str = "render",
                    indices: Optional[Sequence[int]] = None) -> list[EvalClip]:
    """The clips of a world dataset (``flashi2v world`` / :func:`flashi2v.world.write_dataset`) as
    :class:`EvalClip` s. ``source="render"`` re-renders the exact frames from the stored spec (no codec loss; the
    default), ``"video"`` decodes the dataset's MP4s. ``limit`` keeps the first clips, ``indices`` picks some."""
    from ..world import load_ground_truth

    if source not in ("render", "video"):
        raise InputError(f"source must be 'render' or 'video', got {source!r}")
    root = Path(world_dir)
    data = load_ground_truth(root)
    entries = list(data["clips"])
    if indices is not None:
        by_index = {int(c["index"]): c for c in entries}
        missing = [i for i in indices if int(i) not in by_index]
        if missing:
            raise InputError(f"{root}: no clips with index {missing[:5]}")
        entries = [by_index[int(i)] for i in indices]
    if limit is not None:
        entries = entries[: int(limit)]
    clips = []
    for e in entries:
        spec = {k: v for k, v in e.items() if k not in ("index", "path")}
        if source == "render":
            from ..world import render

            frames, _ = render(spec, supersample=data.get("render", {}).get("supersample", 4),
                               background_supersample=data.get("render", {}).get("background_supersample", 2))
        else:
            from ..media import read_video

            frames, _ = read_video(root / e["path"])
            frames = frames.numpy() if hasattr(frames, "numpy") else np.asarray(frames)
        clips.append(EvalClip(index=int(e["index"]), frames=np.ascontiguousarray(frames, dtype=np.uint8),
                              caption=str(e.get("caption", "")), gt=spec, split=str(data.get("split", ""))))
    return clips


# ======================================================================================================= models
VideoModel = Callable[[list], list]  # clips -> uint8 [T, H, W, 3] videos (numpy or torch), one per clip


def static_model(clips: list[EvalClip]) -> list[np.ndarray]:
    """The static-video baseline: the condition image repeated for every frame."""
    return [np.repeat(c.image[None], c.num_frames, axis=0) for c in clips]


def oracle_model(clips: list[EvalClip]) -> list[np.ndarray]:
    """The ground truth itself (the best any model can do; calibrates the metrics)."""
    return [c.frames for c in clips]


def vae_roundtrip_model(vae) -> VideoModel:
    """``clips -> decode(encode(ground truth))`` with a :class:`flashi2v.vae.WanVAE` (the fidelity ceiling of any
    model decoded by that VAE)."""
    import torch

    from ..media import to_uint8_frames

    def run(clips: list[EvalClip]) -> list[np.ndarray]:
        out = []
        for c in clips:
            x = torch.from_numpy(c.frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)[None]
            with torch.no_grad():
                rec = vae.decode(vae.encode(x.to(vae.device)))
            out.append(to_uint8_frames(rec.float().cpu())[0].numpy())
        return out

    return run


class PipelineModel:
    """Wraps a :class:`flashi2v.pipeline.FlashI2VPipeline`: clip ``i`` is generated from its first frame and caption
    at the clip's size with noise seed ``generation.seed + i``. Consecutive clips are batched up to
    ``generation.batch_size`` (the pipeline gives sample ``k`` of a batch the seed ``seed + k``, so batching does
    not change the videos)."""

    def __init__(self, pipe, generation: GenerationSettings = GenerationSettings()):
        self.pipe = pipe
        self.generation = generation

    def resolved(self) -> dict:
        """The sampling settings actually used (folder defaults filled in)."""
        d, g = self.pipe.defaults, self.generation
        return dict(num_steps=d.num_steps if g.num_steps is None else g.num_steps,
                    guidance_scale=d.guidance_scale if g.guidance_scale is None else g.guidance_scale,
                    shift=d.shift if g.shift is None else g.shift, seed=g.seed,
                    negative_prompt=d.negative_prompt if g.negative_prompt is None else g.negative_prompt,
                    cutoff_ratio=d.cutoff_ratio, image_noise_sigma=d.image_noise_sigma,
                    anchor_first_frame=bool(d.anchor_first_frame if g.anchor_first_frame is None
                                            else g.anchor_first_frame))

    def __call__(self, clips: list[EvalClip]) -> list[np.ndarray]:
        r = self.resolved()
        out: list[np.ndarray] = []
        bs = max(1, int(self.generation.batch_size))
        i = 0
        while i < len(clips):
            group = [clips[i]]
            while (len(group) < bs and i + len(group) < len(clips)
                   and clips[i + len(group)].index == group[-1].index + 1
                   and clips[i + len(group)].frames.shape == group[0].frames.shape):
                group.append(clips[i + len(group)])
            t, h, w = group[0].frames.shape[:3]
            res = self.pipe(image=[c.image for c in group], prompt=[c.caption for c in group],
                            negative_prompt=r["negative_prompt"], num_frames=t, height=h, width=w,
                            num_steps=r["num_steps"], shift=r["shift"], guidance_scale=r["guidance_scale"],
                            anchor_first_frame=r["anchor_first_frame"], seed=r["seed"] + group[0].index,
                            progress=False)
            out.extend(f.numpy() for f in res.frames)
            i += len(group)
        return out


# ==================================================================================================== tracking
def _colours(obj: dict, gains: Sequence[float]) -> np.ndarray:
    """The colours the object can show: its colour (and its second colour when textured) under each gain."""
    from ..world.vocab import secondary_rgb

    base = [np.asarray(obj["rgb"], np.float64)]
    if obj.get("texture", "solid") != "solid":
        base.append(np.asarray(secondary_rgb(obj["rgb"]), np.float64))
    cols = {tuple(np.clip(np.round(c * float(g)), 0, 255)) for c in base for g in gains}
    return np.asarray(sorted(cols), np.float32)


def track_object(video: np.ndarray, obj: dict, gains: Sequence[float], settings: EvalSettings,
                 start: Optional[Sequence[float]] = None, tol: Optional[float] = None,
                 pixels: Optional[list] = None) -> list:
    """Per-frame centroid ``(x, y)`` (ground-truth convention: pixel centres at ``j + 0.5``) or None of a world
    object in ``video`` (uint8 ``[T, H, W, 3]``), found by colour (:func:`flashi2v.metrics.track_colour` on the mask
    of pixels within ``tol`` (default ``settings.track_tol``) of any of the object's colours under the frame's gain
    ``gains[t]`` or the first frame's gain). With a list ``pixels``, the found pixels of each frame are appended
    there (``track_colour``'s ``pixels``)."""
    from ..metrics import track_colour

    v = np.asarray(video)
    t_count, h, w = v.shape[:3]
    radius = settings.search_frac * min(h, w)
    prev = None if start is None else (float(start[0]), float(start[1]))
    lost = 0
    out: list = []
    tol2 = float(settings.track_tol if tol is None else tol) ** 2
    for t in range(t_count):
        cols = _colours(obj, (gains[t], gains[0]))
        frame = v[t].astype(np.float32)
        d2 = ((frame[:, :, None, :] - cols[None, None]) ** 2).sum(-1).min(-1)
        mask = np.zeros((1, h, w, 3), np.uint8)
        mask[0][d2 <= tol2] = 255
        found = track_colour(mask, (255, 255, 255), tol=1.0, min_pixels=settings.min_pixels,
                             search_radius=radius * (1 + lost), start=prev, pixel_centre=0.5, pixels=pixels)[0]
        out.append(found)
        if found is None:
            lost += 1
        else:
            prev, lost = found, 0
    return out


def _first_last(points: Sequence) -> Optional[np.ndarray]:
    pts = [p for p in points if p is not None]
    if len(pts) < 2:
        return None
    return np.asarray(pts[-1], np.float64) - np.asarray(pts[0], np.float64)


def _tracks_well(track, gt_c, side: float, diag: float, settings: EvalSettings):
    """(trajectory error of ``track`` against ``gt_c``, whether it meets the trackability criteria)."""
    from ..metrics import trajectory_error

    te = trajectory_error(track, gt_c, miss_penalty=diag)
    ok = bool(te.gt_visible >= 2 and te.matched >= 2 and math.isfinite(te.mean)
              and te.mean <= settings.trackable_error_frac * side and te.miss_rate <= settings.trackable_miss_rate)
    return te, ok


def _visibility(clip: EvalClip) -> np.ndarray:
    """The renderer's per-pixel visible weight of each object, float32 ``[T, N, H, W]`` (cached on the clip)."""
    if "visibility" not in clip._refs:
        from ..world import render

        spec = {k: v for k, v in clip.gt.items() if k not in ("index", "path")}
        clip._refs["visibility"] = render(spec, return_visibility=True)[2]
    return clip._refs["visibility"]


def clip_reference(clip: EvalClip, settings: EvalSettings = EvalSettings()) -> list[dict]:
    """Per object of ``clip``: ground-truth centroids, whether it is trackable and with which colour tolerance (the
    widest at which tracking it works in the ground truth and, when the clip has a ``ceiling`` video (see
    :func:`attach_ceiling`), in that video too), its expected direction (ground-truth net displacement, or None)
    and the static baseline's trajectory error. Cached on the clip per settings."""
    from ..metrics import shape_iou, trajectory_error

    if settings in clip._refs:
        return clip._refs[settings]
    h, w = clip.size
    side = min(h, w)
    diag = math.hypot(h, w) * settings.miss_penalty_frac
    gains = clip.gt.get("lighting", {}).get("gain") or [1.0] * clip.num_frames
    static = static_model([clip])[0]
    refs = []
    for i, obj in enumerate(clip.gt["objects"]):
        gt_c = [None if c is None else (float(c[0]), float(c[1])) for c in obj["centroid"]]
        start = gt_c[0]
        ceiling_te = None
        tols = settings.track_tols()  # widest first; the last is track_tol
        base, base_ok = _tracks_well(track_object(clip.frames, obj, gains, settings, start, tols[-1]), gt_c, side,
                                     diag, settings)
        for tol in tols:  # the last one tried (track_tol) is kept if none works
            own, trackable = (base, base_ok) if tol == tols[-1] else _tracks_well(
                track_object(clip.frames, obj, gains, settings, start, tol), gt_c, side, diag, settings)
            # a wider tolerance must track the ground truth as completely as the base one
            trackable = trackable and (not base_ok or own.missed <= base.missed)
            if trackable and clip.ceiling is not None:
                ceiling_te, trackable = _tracks_well(track_object(clip.ceiling, obj, gains, settings, start, tol),
                                                     gt_c, side, diag, settings)
            if trackable:
                break
        disp = _first_last(gt_c)
        direction = None
        if disp is not None and float(np.hypot(*disp)) >= settings.min_gt_displacement_frac * side:
            direction = (float(disp[0]), float(disp[1]))
        st = trajectory_error(track_object(static, obj, gains, settings, start, tol), gt_c, miss_penalty=diag)
        gt_pixels: list = []  # the object's shape in each ground-truth frame as the tracker sees it, None where that
        if trackable:          # is not its true shape (see EvalSettings: shape)
            track_object(clip.frames, obj, gains, settings, start, tol, pixels=gt_pixels)
            vis = _visibility(clip)[:, i] >= 0.5
            for t, px in enumerate(gt_pixels):
                true = np.stack(np.nonzero(vis[t])[::-1], 1)
                relit = abs(float(gains[t]) / max(float(gains[0]), 1e-6) - 1.0) > settings.shape_max_gain_change
                if px is not None and (relit or not shape_iou(px, true, align=False) >= settings.shape_clean_iou):
                    gt_pixels[t] = None
        refs.append(dict(id=obj["id"], color=obj["color"], shape=obj["shape"], motion=obj["motion"],
                         gt_centroids=gt_c, gt_pixels=gt_pixels, trackable=trackable, track_tol=tol,
                         gt_track_error=_f(own.mean),
                         gt_miss_rate=_f(own.miss_rate),
                         ceiling_track_error=None if ceiling_te is None else _f(ceiling_te.mean),
                         direction=direction, static_traj=st))
    clip._refs[settings] = refs
    return refs


def attach_ceiling(clips: Sequence[EvalClip], model: VideoModel) -> list[np.ndarray]:
    """Give every clip a *ceiling* video, ``model(clips)`` (normally :func:`vae_roundtrip_model` of the VAE the
    evaluated models decode with), and return those videos. From then on an object is trackable only if tracking it
    also works in its clip's ceiling: an object that the decoder cannot render (a thin ring blurred away, a colour
    shifted past recognition) is lost by every model that uses that decoder, and would make the trajectory and
    direction metrics measure the VAE instead of the model. Every model scored on these clips, the static baseline
    included, is then scored on the same objects."""
    videos = model(list(clips))
    if len(videos) != len(clips):
        raise InputError(f"the ceiling model returned {len(videos)} videos for {len(clips)} clips")
    out = []
    for c, v in zip(clips, videos):
        c.ceiling = _as_uint8_video(v, c.frames.shape)
        c._refs.clear()
        out.append(c.ceiling)
    return out


def ceiling_model(clips: list[EvalClip]) -> list[np.ndarray]:
    """The clips' ceiling videos (see :func:`attach_ceiling`) as a model, e.g. to score the VAE round trip without
    computing it twice."""
    missing = [c.index for c in clips if c.ceiling is None]
    if missing:
        raise InputError(f"clip {missing[0]} has no ceiling video: call attach_ceiling(clips, model) first")
    return [c.ceiling for c in clips]


# ==================================================================================================== metrics
def _f(x) -> Optional[float]:
    """float, or None for NaN / None (JSON-safe)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _as_uint8_video(video, shape) -> np.ndarray:
    try:
        import torch

        if isinstance(video, torch.Tensor):
            video = video.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    v = np.asarray(video)
    if v.dtype != np.uint8:
        if np.issubdtype(v.dtype, np.floating):
            v = np.clip(np.round(v * 255.0), 0, 255).astype(np.uint8)
        else:
            v = np.clip(v, 0, 255).astype(np.uint8)
    if v.shape != tuple(shape):
        raise InputError(f"the model returned a video of shape {v.shape}, expected {tuple(shape)} (uint8 [T,H,W,3])")
    return v


def evaluate_clip(video, clip: EvalClip, settings: EvalSettings = EvalSettings()) -> dict:
    """Every metric of one generated ``video`` (uint8 or float [0, 1], ``[T, H, W, 3]``, same shape as the clip)
    against ``clip``'s ground truth. Returns a JSON-safe dict (NaN -> None); see ``docs/leakage_benchmark.md``."""
    from ..metrics import (chunk_bounds, colour_drift, dynamic_degree, first_frame_psnr, motion_direction_agreement,
                           mse, optical_flow, psnr, shape_iou, ssim, temporal_flicker, trajectory_error)

    v = _as_uint8_video(video, clip.frames.shape)
    gt = clip.frames
    h, w = clip.size
    side = min(h, w)
    diag = math.hypot(h, w) * settings.miss_penalty_frac
    bounds = chunk_bounds(clip.num_frames, settings.num_chunks, skip_first=settings.skip_first)
    first = bounds[0][0]  # 1 with skip_first: frame 0 is scored by first_frame_psnr only
    p = np.concatenate([[np.nan] * first, psnr(v[first:], gt[first:]).per_frame])
    s = np.concatenate([[np.nan] * first, ssim(v[first:], gt[first:]).per_frame])
    m = np.concatenate([[np.nan] * first, mse(v[first:], gt[first:]).per_frame])
    rec: dict[str, Any] = dict(
        index=clip.index, first_frame_psnr=_f(first_frame_psnr(v, clip.image)),
        psnr=_f(p[first:].mean()), ssim=_f(s[first:].mean()), mse=_f(m[first:].mean()),
        chunk_psnr=[_f(p[a:b].mean()) for a, b in bounds], chunk_ssim=[_f(s[a:b].mean()) for a, b in bounds],
        chunk_mse=[_f(m[a:b].mean()) for a, b in bounds],
    )
    gains = clip.gt.get("lighting", {}).get("gain") or [1.0] * clip.num_frames
    objects = []
    for ref, obj in zip(clip_reference(clip, settings), clip.gt["objects"]):
        o: dict[str, Any] = dict(id=ref["id"], color=ref["color"], shape=ref["shape"], motion=ref["motion"],
                                 trackable=ref["trackable"], track_tol=ref["track_tol"],
                                 gt_track_error=ref["gt_track_error"])
        if ref["trackable"]:
            found: list = []
            track = track_object(v, obj, gains, settings, ref["gt_centroids"][0], ref["track_tol"], pixels=found)
            te = trajectory_error(track, ref["gt_centroids"], miss_penalty=diag)
            st = ref["static_traj"]
            # the shape it keeps: IoU with the ground truth's pixels, centroids aligned, on frames 1.. found in both
            ious = [shape_iou(a, b) for a, b in zip(found[1:], ref["gt_pixels"][1:])]
            o.update(traj_error=_f(te.penalised), traj_error_matched=_f(te.mean), miss_rate=_f(te.miss_rate),
                     static_traj_error=_f(st.penalised), static_traj_error_matched=_f(st.mean),
                     shape_iou=_nanmean(ious))
            if ref["direction"] is not None:
                need = max(settings.min_displacement_frac * side,
                           settings.min_displacement_ratio * math.hypot(*ref["direction"]))
                da = motion_direction_agreement(track, ref["direction"], min_displacement=need,
                                                max_angle_deg=settings.max_angle_deg)
                o.update(expected_direction=list(ref["direction"]), direction_agrees=bool(da.agrees),
                         direction_angle=_f(da.angle_deg), displacement=_f(da.magnitude), direction_reason=da.reason)
                od = object_distance(track, ref["gt_centroids"], settings.num_chunks)
                o.update(od)
        objects.append(o)
    rec["objects"] = objects
    flow = None
    if settings.dynamic_method != "none":
        if settings.dynamic_fps is None and settings.camera_method == settings.dynamic_method:
            flow = optical_flow(v, method=settings.dynamic_method)  # shared with the camera metric
        dd = dynamic_degree(v, fps=settings.dynamic_fps, method=settings.dynamic_method, flow=flow)
        rec.update(dynamic=bool(dd.is_dynamic), dynamic_score=_f(np.mean(dd.scores)) if len(dd.scores) else 0.0)
    else:
        rec.update(dynamic=None, dynamic_score=None)
    rec["camera"] = _camera_record(v, clip, settings, flow)
    fl = temporal_flicker(v)
    cd = colour_drift(v, gt, num_chunks=min(settings.num_chunks, clip.num_frames))
    rec.update(flicker_mae=_f(fl.mae), flicker_score=_f(fl.score), colour_drift=_f(cd.drift),
               colour_excess=_f(cd.excess))
    return rec


def camera_reference(clip: EvalClip, settings: EvalSettings = EvalSettings()):
    """The ground-truth clip's camera path (:func:`flashi2v.metrics.camera_shift` with ``settings.camera_method``),
    cached on the clip."""
    from ..metrics import camera_shift

    key = ("camera", settings.camera_method)
    if key not in clip._refs:
        clip._refs[key] = camera_shift(clip.frames, method=settings.camera_method)
    return clip._refs[key]


def measurable_pan(clip: EvalClip, settings: EvalSettings = EvalSettings()):
    """The ground truth's camera path (:func:`camera_reference`) when ``clip``'s camera pans *measurably*: the clip
    pans and that path itself agrees with the pan (at least ``min_gt_displacement_frac`` of the side, within
    ``max_angle_deg``); else None. Only measurable pans are scored (**cam dir**, **cam dist**)."""
    from ..metrics import camera_direction_agreement

    cam = clip.gt.get("camera") or {}
    if settings.camera_method == "none" or cam.get("motion") != "pan" or not cam.get("vector"):
        return None
    ref = camera_reference(clip, settings)
    ok = camera_direction_agreement(ref, cam["vector"], settings.min_gt_displacement_frac * min(clip.size),
                                    max_angle_deg=settings.max_angle_deg)
    return ref if ok.agrees else None


def _camera_record(v: np.ndarray, clip: EvalClip, settings: EvalSettings, flow) -> dict:
    """The camera part of :func:`evaluate_clip`'s record: the ground truth's camera motion and, for a measurable pan,
    whether the video's content moves against it (see :class:`EvalSettings`)."""
    from ..metrics import camera_direction_agreement, camera_shift

    cam = clip.gt.get("camera") or {}
    out: dict[str, Any] = dict(motion=cam.get("motion"), direction=cam.get("direction"))
    if settings.camera_method == "none" or cam.get("motion") != "pan" or not cam.get("vector"):
        return out
    h, w = clip.size
    ref = camera_reference(clip, settings)
    gt_mag = float(np.hypot(*ref.total))
    measurable = measurable_pan(clip, settings) is not None
    out.update(measurable=measurable, gt_displacement=list(ref.total))
    if not measurable:
        return out
    shift = camera_shift(v, flow=flow, method=settings.camera_method)
    need = max(settings.min_displacement_frac * min(h, w), settings.min_displacement_ratio * gt_mag)
    da = camera_direction_agreement(shift, cam["vector"], need, max_angle_deg=settings.max_angle_deg)
    out.update(agrees=bool(da.agrees), angle=_f(da.angle_deg), displacement=list(shift.total), reason=da.reason)
    out.update(pan_distance(shift, ref, settings.num_chunks))
    return out


def pan_distance(shift, ref, num_chunks: int = 4) -> dict:
    """How far a video's content travels along the ground truth's pan, as a fraction of the ground truth's travel.

    ``shift`` and ``ref`` are :class:`~flashi2v.metrics.CameraShift` of the video and of the ground truth (the same
    number of frames). Both paths are projected on the direction of the ground truth's net displacement ``u``.
    ``distance_ratio``: the video's net travel along ``u`` over the ground truth's (1 = as far, 0 = no pan, < 0 =
    the wrong way; motion across ``u`` does not count). ``chunk_distance_ratio``: the same for each of
    ``num_chunks`` consecutive groups of frame pairs (``np.array_split``), i.e. the pan's speed in that part of
    the clip relative to the ground truth's (None where the ground truth hardly moves in it).
    ``chunk_along`` / ``gt_chunk_along``: the pixels travelled along ``u`` per chunk, for pooling over clips."""
    total = np.asarray(ref.total, np.float64)
    dist = float(np.hypot(*total))
    if dist <= 0:
        return {}
    u = total / dist
    along, gt_along = shift.steps @ u, ref.steps @ u
    groups = np.array_split(np.arange(len(gt_along)), min(num_chunks, len(gt_along)))  # none empty
    ca = [float(along[g].sum()) for g in groups]
    ga = [float(gt_along[g].sum()) for g in groups]
    return dict(distance_ratio=float(along.sum()) / dist,
                chunk_distance_ratio=[a / b if b > 1e-6 * dist else None for a, b in zip(ca, ga)],
                chunk_along=ca, gt_chunk_along=ga)


def object_distance(track, gt_centroids, num_chunks: int = 4) -> dict:
    """How far a tracked object travels along its ground-truth path, as a fraction of the ground truth's travel.

    ``track`` and ``gt_centroids``: per-frame ``(x, y)`` or None (the same number of frames). Each frame step
    ``t -> t + 1`` where both have a centroid in both frames counts: the video's step is projected on the direction of
    the ground truth's step (so a bounce or a fall is followed step by step; motion across the path does not count).
    ``distance_ratio``: the summed projections over the ground truth's summed step lengths, on those steps (1 = as
    far, 0 = the object stays, < 0 = the wrong way); ``chunk_distance_ratio``: the same for each of ``num_chunks``
    consecutive groups of steps (``np.array_split``, as :func:`pan_distance`), None where the ground truth hardly
    moves in it; ``chunk_along`` / ``gt_chunk_along``: per chunk, the pixels travelled along the path, for pooling;
    ``steps_scored``: how many steps counted. Empty dict when no step counts or the ground truth does not move."""
    from ..metrics.tracking import _as_points

    p, g = _as_points(track, "track"), _as_points(gt_centroids, "gt_centroids")
    if len(p) != len(g):
        raise InputError(f"track has {len(p)} frames but gt_centroids has {len(g)}")
    if len(g) < 2:
        return {}
    ds, dg = np.diff(p, axis=0), np.diff(g, axis=0)
    glen = np.hypot(dg[:, 0], dg[:, 1])
    ok = ~np.isnan(ds).any(axis=1) & ~np.isnan(dg).any(axis=1)
    m = ok & (glen > 0)  # steps the ground truth moves in (the others add nothing either way)
    along = np.zeros(len(dg))
    along[m] = (ds[m] * dg[m]).sum(axis=1) / glen[m]
    glen = np.where(ok, glen, 0.0)
    total = float(glen.sum())
    if not ok.any() or total <= 0:
        return {}
    groups = np.array_split(np.arange(len(dg)), min(num_chunks, len(dg)))  # none empty
    ca = [float(along[i].sum()) for i in groups]
    ga = [float(glen[i].sum()) for i in groups]
    return dict(distance_ratio=float(along.sum()) / total,
                chunk_distance_ratio=[a / b if b > 1e-6 * total else None for a, b in zip(ca, ga)],
                chunk_along=ca, gt_chunk_along=ga, steps_scored=int(ok.sum()))


def _nanmean(values) -> Optional[float]:
    vals = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(vals)) if vals else None


def summarize(records: Sequence[dict]) -> dict:
    """Aggregate per-clip records of :func:`evaluate_clip` over a split. Clip metrics are averaged over clips;
    trajectory metrics over trackable objects; ``direction_rate`` = agreeing / objects with a direction."""
    n = len(records)
    out: dict[str, Any] = dict(n_clips=n)
    for k in ("first_frame_psnr", "psnr", "ssim", "mse", "dynamic_score", "flicker_mae", "flicker_score",
              "colour_drift", "colour_excess"):
        out[k] = _nanmean(r.get(k) for r in records)
    dyn = [r["dynamic"] for r in records if r.get("dynamic") is not None]
    out["dynamic_rate"] = float(np.mean(dyn)) if dyn else None
    for k in ("chunk_psnr", "chunk_ssim", "chunk_mse"):
        arr = np.asarray([[np.nan if x is None else x for x in r[k]] for r in records], np.float64)
        with warnings.catch_warnings():  # an all-NaN chunk gives None, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            out[k] = [_f(x) for x in np.nanmean(arr, 0)] if n else []
            out[k + "_std"] = [_f(x) for x in np.nanstd(arr, 0)] if n else []
    out["chunk_ssim_err"] = [None if x is None else 1.0 - x for x in out["chunk_ssim"]]
    objs = [o for r in records for o in r["objects"]]
    tr = [o for o in objs if o["trackable"]]
    out.update(n_objects=len(objs), n_trackable=len(tr))
    for k in ("traj_error", "traj_error_matched", "miss_rate", "static_traj_error", "static_traj_error_matched",
              "shape_iou"):
        out[k] = _nanmean(o.get(k) for o in tr)
    te, st = out["traj_error"], out["static_traj_error"]
    out["traj_ratio"] = te / st if te is not None and st else None
    with_dir = [o for o in tr if "direction_agrees" in o]
    agree = sum(bool(o["direction_agrees"]) for o in with_dir)
    out.update(n_direction=len(with_dir), n_direction_agree=agree,
               direction_rate=agree / len(with_dir) if with_dir else None)
    by_motion: dict[str, list] = {}
    for o in with_dir:
        a = by_motion.setdefault(o["motion"], [0, 0])
        a[0] += int(bool(o["direction_agrees"]))
        a[1] += 1
    out["direction_by_motion"] = {k: dict(agree=a, total=t, rate=a / t) for k, (a, t) in sorted(by_motion.items())}
    out.update(summarize_object_distances(with_dir))
    pans = [r["camera"] for r in records if (r.get("camera") or {}).get("measurable")]
    cam_agree = sum(bool(c["agrees"]) for c in pans)
    out.update(n_camera_pans=len(pans), n_camera_agree=cam_agree,
               camera_direction_rate=cam_agree / len(pans) if pans else None)
    out.update(summarize_pan_distances(pans))
    return out


def _summarize_distances(items: Sequence[dict]) -> tuple[Optional[float], Optional[list]]:
    """(median ``distance_ratio``, per chunk ``chunk_along`` pooled over ``gt_chunk_along``) over records of
    :func:`pan_distance` or :func:`object_distance`; None without any, or for chunks with different counts."""
    ratios = [c["distance_ratio"] for c in items if c.get("distance_ratio") is not None]
    chunked = [c for c in items if c.get("chunk_along") is not None]
    chunks = None
    if chunked and len({len(c["chunk_along"]) for c in chunked}) == 1:
        a = np.sum([c["chunk_along"] for c in chunked], axis=0)
        g = np.sum([c["gt_chunk_along"] for c in chunked], axis=0)
        chunks = [float(x / y) if y > 0 else None for x, y in zip(a, g)]
    return (float(np.median(ratios)) if ratios else None), chunks


def summarize_pan_distances(pans: Sequence[dict]) -> dict:
    """How far the pans go, over :func:`pan_distance` results (camera records): ``camera_distance_ratio``, the median
    travel ratio, and ``camera_chunk_distance_ratio``, per chunk the travel pooled over clips over the ground
    truth's (None without pans, or when the clips have different chunk counts)."""
    median, chunks = _summarize_distances(pans)
    return dict(camera_distance_ratio=median, camera_chunk_distance_ratio=chunks)


def summarize_object_distances(objects: Sequence[dict]) -> dict:
    """How far the objects go along their ground-truth paths, over :func:`object_distance` results (object records
    of objects with a direction): ``object_distance_ratio``, the median travel ratio, and
    ``object_chunk_distance_ratio``, per chunk the travel pooled over objects over the ground truth's."""
    median, chunks = _summarize_distances(objects)
    return dict(object_distance_ratio=median, object_chunk_distance_ratio=chunks)


@dataclass
class ModelEvaluation:
    """Result of :func:`evaluate_model`: ``summary`` (see :func:`summarize`), per-clip ``records``, ``seconds`` and
    the sampling settings used (``generation``; empty for callables)."""

    summary: dict
    records: list
    seconds: float
    generation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(summary=self.summary, records=self.records, seconds=self.seconds, generation=self.generation)


def evaluate_model(model, clips: Sequence[EvalClip], settings: EvalSettings = EvalSettings(), *,
                   generation: GenerationSettings = GenerationSettings(), save_dir=None, save_videos: int = 0,
                   fps: Optional[float] = None, log: Optional[Callable[[str], None]] = None) -> ModelEvaluation:
    """Generate a video for every clip and score it (:func:`evaluate_clip`), then aggregate (:func:`summarize`).

    ``model`` is a :class:`~flashi2v.pipeline.FlashI2VPipeline` (sampled with ``generation``), a model folder path,
    or any callable ``clips -> videos`` (uint8 ``[T, H, W, 3]`` each), e.g. :func:`static_model`. With ``save_dir``
    the first ``save_videos`` videos are written there as ``{index:06d}.mp4`` (for inspection).
    """
    start = time.perf_counter()
    gen: dict = {}
    if isinstance(model, (str, os.PathLike)):
        from ..pipeline import FlashI2VPipeline

        model = FlashI2VPipeline.from_pretrained(model)
    if not callable(model) or hasattr(model, "transformer"):
        model = PipelineModel(model, generation)
    if isinstance(model, PipelineModel):
        gen = model.resolved()
    records = []
    clips = list(clips)
    bs = max(1, generation.batch_size) if isinstance(model, PipelineModel) else 1
    for i in range(0, len(clips), bs):
        group = clips[i : i + bs]
        videos = model(group)
        if len(videos) != len(group):
            raise InputError(f"the model returned {len(videos)} videos for {len(group)} clips")
        for j, (c, v) in enumerate(zip(group, videos)):
            v = _as_uint8_video(v, c.frames.shape)
            if save_dir is not None and i + j < save_videos:
                from ..media import write_video

                Path(save_dir).mkdir(parents=True, exist_ok=True)
                write_video(v, Path(save_dir) / f"{c.index:06d}.mp4", fps=fps or c.gt.get("fps", 16))
            records.append(evaluate_clip(v, c, settings))
        if log is not None:
            log(f"  {len(records)}/{len(clips)} clips")
    return ModelEvaluation(summary=summarize(records), records=records, seconds=time.perf_counter() - start,
                           generation=gen)


# ================================================================================================ the pipeline
def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _f(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def _write_json(path: Path, data) -> None:
    from ..weights.io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_jsonable(data), indent=1, allow_nan=False) + "\n")


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class _Stages:
    """The resumable stages of :func:`run_leakage` (one instance per run)."""

    def __init__(self, cfg: LeakageConfig, log: Callable[[str], None]):
        self.cfg, self.log = cfg, log
        self.work = Path(cfg.workdir).resolve()
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []

    # ------------------------------------------------------------------------------------------------ helpers
    def _timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)

    def device(self) -> Optional[str]:
        return None if self.cfg.device == "auto" else self.cfg.device

    # --------------------------------------------------------------------------------------------------- data
    def world(self, split: str, num: int) -> Path:
        from ..world import load_ground_truth, write_dataset

        c = self.cfg
        path = self.work / "data" / split
        want = dict(split=split, num_clips=num, seed=c.data_seed, num_frames=c.num_frames, height=c.height,
                    width=c.width, fps=float(c.fps))
        if (path / "ground_truth.json").is_file():
            head = load_ground_truth(path)
            have = {k: (float(head.get(k)) if k == "fps" else head.get(k)) for k in want}
            if have != want:
                diff = "; ".join(f"{k}: {have[k]!r} -> {want[k]!r}" for k in want if have[k] != want[k])
                raise InputError(f"{path} holds a world dataset with other settings ({diff}); use a new --workdir")
            self.reused.append(f"data/{split}")
            return path
        t0 = time.perf_counter()
        ds = write_dataset(path, split, num, c.data_seed, num_frames=c.num_frames, height=c.height, width=c.width,
                           fps=c.fps, workers=c.workers or os.cpu_count() or 1)
        self._timed("data", t0)
        self.log(ds.summary())
        return path

    def filtered(self, train_dir: Path) -> Path:
        from ..data.filter import filter_once

        t0 = time.perf_counter()
        lmdb, counts = filter_once(train_dir / "filter.yaml", self.work / "data" / "filtered")
        if counts is None:
            self.reused.append("filter")
            return lmdb
        self._timed("filter", t0)
        self.log(f"filtered {counts['kept']}/{counts['total']} train clips -> {lmdb}")
        return lmdb

    def cache(self, lmdb: Path) -> Path:
        from ..data.latent_cache import encode_cache, manifest_config

        c = self.cfg
        out = self.work / "data" / "latents"
        man = _read_json(out / "manifest.json") if (out / "manifest.json").is_file() else None
        want = dict(lmdb=str(lmdb.resolve()), model=str(Path(c.base).resolve()), height=c.height, width=c.width,
                    num_frames=c.num_frames, train_fps=float(c.fps), seed=c.data_seed, vae_one_pass=c.vae_one_pass)
        have = manifest_config(man) if man else {}
        if man and man.get("complete") and all(have.get(k) == v for k, v in want.items()):
            self.reused.append("latent cache")
            return out
        t0 = time.perf_counter()
        import torch

        on_gpu = (self.device() or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        m = encode_cache(lmdb, c.base, out, height=c.height, width=c.width, num_frames=c.num_frames,
                         train_fps=float(c.fps), seed=c.data_seed, device=self.device(),
                         workers=1 if on_gpu else (c.workers or os.cpu_count() or 1), vae_one_pass=c.vae_one_pass)
        self._timed("latent_cache", t0)
        self.log(f"latent cache: {m['num_samples']} samples, latents {m['latent_shape']} -> {out}")
        return out

    # ---------------------------------------------------------------------------------------------- training
    def architecture(self, paradigm: str) -> dict:
        from ..config import required_in_dim

        c = self.cfg
        arch = dict(c.architecture)
        te = _read_json(Path(c.base) / _index(c.base).get("text_encoder", "text_encoder") / "config.json") or {}
        arch.setdefault("text_dim", int(te.get("dim", 4096)))
        arch.setdefault("text_len", int(te.get("text_len", 512)))
        arch["model_type"] = paradigm
        arch["in_dim"] = required_in_dim(paradigm, int(arch.get("out_dim", 16)))
        return arch

    def train_config(self, paradigm: str, cache: Path):
        from ..train.config import TrainConfig

        c = self.cfg
        steps = c.steps
        ema = c.ema_decay if c.ema_decay is not None else max(0.0, min(0.999, 1.0 - 10.0 / steps))
        d = dict(
            output_dir=str(self.work / "runs" / paradigm), seed=c.seed, max_steps=steps,
            device="cpu" if c.device == "cpu" else ("cuda" if c.device.startswith("cuda") else "auto"),
            model=dict(init="scratch", architecture=self.architecture(paradigm), pipeline=str(Path(c.base).resolve())),
            data=dict(source="latent_cache", path=str(cache), height=c.height, width=c.width,
                      num_frames=c.num_frames, train_fps=float(c.fps), batch_size=c.batch_size,
                      text_dropout=c.text_dropout),
            optim=dict(lr=c.lr, warmup_steps=c.warmup_steps),
            ema=dict(enabled=True, decay=ema),
            checkpoint=dict(every=c.checkpoint_every or min(steps, 500), keep_last=2, resume=True),
            log=dict(every=max(1, steps // 20), tensorboard=False),
        )
        mine = [o for target, o in map(split_override, c.train_overrides) if target in (None, paradigm)]
        return TrainConfig.from_dict(d, mine)

    @staticmethod
    def _identity(d: dict) -> dict:
        d = json.loads(json.dumps(d))
        for k in ("output_dir", "max_steps", "device", "log", "checkpoint"):
            d.pop(k, None)
        d.get("data", {}).pop("path", None)
        d.get("data", {}).pop("num_workers", None)
        d.get("model", {}).pop("pipeline", None)
        return d

    def train(self, paradigm: str, cache: Path) -> tuple[Path, int]:
        from ..train.checkpoint import list_checkpoints
        from ..train.config import TrainConfig

        cfg = self.train_config(paradigm, cache)
        run = Path(cfg.output_dir)
        steps = cfg.max_steps
        if (run / "config.yaml").is_file():
            old = TrainConfig.from_yaml(run / "config.yaml").to_dict()
            a, b = self._identity(old), self._identity(cfg.to_dict())
            if a != b:
                diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
                raise InputError(f"{run} holds a training run with other settings (sections {', '.join(diff)}); "
                                 "use a new --workdir")
        found = dict(list_checkpoints(run))
        if steps in found:
            self.reused.append(f"train {paradigm}")
            return run, steps
        if found and max(found) > steps:
            raise InputError(f"{run} was trained past step {steps} (newest checkpoint {max(found)}) and keeps no "
                             f"checkpoint at step {steps}; use a new --workdir or --steps {max(found)}")
        from ..train.trainer import Trainer

        t0 = time.perf_counter()
        self.log(f"training {paradigm}: {steps} steps, batch {cfg.data.batch_size}, lr {cfg.optim.lr:g} -> {run}")
        hist = Trainer(cfg).fit()
        self._timed(f"train/{paradigm}", t0)
        if hist:
            self.log(f"trained {paradigm}: final loss {hist[-1]['loss']:.4f} in {time.perf_counter() - t0:.1f} s")
        return run, steps

    def export(self, paradigm: str, run: Path, step: int) -> Path:
        from ..train.export import export

        c = self.cfg
        folder = self.work / "models" / paradigm
        idx = _read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else None
        tr = (idx or {}).get("trained", {})
        if (idx and tr.get("checkpoint") == f"step_{step:09d}" and tr.get("weights") == c.weights
                and Path(tr.get("run", "")).resolve() == run.resolve()):
            self.reused.append(f"export {paradigm}")
            return folder
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # DCP's "assuming ... single process" notice
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            export(run, folder, weights=c.weights, step=step, pipeline=c.base, overwrite=True)
        self._timed("export", t0)
        return folder

    # ------------------------------------------------------------------------------------------------- eval
    def evaluate(self, name: str, split: str, clips: list[EvalClip], model_factory: Callable[[], Any],
                 fingerprint: dict, cache: dict) -> dict:
        c = self.cfg
        path = self.work / "eval" / name / f"{split}.json"
        fp = _jsonable(dict(fingerprint, split=split, metrics=METRICS_VERSION,
                            settings=dataclasses.asdict(c.settings), clips=[cl.index for cl in clips],
                            gt_source=c.gt_source, data_seed=c.data_seed, size=[c.num_frames, c.height, c.width]))
        old = _read_json(path) if path.is_file() else None
        if old and old.get("fingerprint") == fp:
            self.reused.append(f"eval {name}/{split}")
            return old
        if "model" not in cache:
            cache["model"] = model_factory()
        t0 = time.perf_counter()
        ev = evaluate_model(cache["model"], clips, c.settings, generation=c.generation,
                            save_dir=self.work / "eval" / name / "videos" / split, save_videos=c.save_videos,
                            fps=c.fps)
        self._timed(f"eval/{name}", t0)
        res = dict(fingerprint=fp, **ev.to_dict())
        _write_json(path, res)
        s = ev.summary
        self.log(f"evaluated {name} on {split}: {len(clips)} clips in {ev.seconds:.1f} s (PSNR "
                 f"{_fmt(s['psnr'])}, first frame {_fmt(s['first_frame_psnr'])}, traj {_fmt(s['traj_error'])} px)")
        return _read_json(path)


def _fmt(x, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def _index(folder) -> dict:
    return _read_json(Path(folder) / "model_index.json") or {}


def _folder_fingerprint(folder) -> dict:
    folder = Path(folder).resolve()
    files = []
    for p in sorted((folder / _index(folder).get("transformer", "transformer")).rglob("*")):
        if p.is_file():
            st = p.stat()
            files.append([str(p.relative_to(folder)), st.st_size, st.st_mtime_ns])
    return dict(folder=str(folder), index=_index(folder), files=files)


def run_leakage(cfg: LeakageConfig, log: Optional[Callable[[str], None]] = None) -> dict:
    """Run the whole benchmark (see the module docstring); returns the content of ``results.json``."""
    log = log or (lambda msg: print(msg, flush=True))
    cfg.validate()
    if cfg.threads:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(int(cfg.threads))
        try:
            return _run(cfg, log)
        finally:
            torch.set_num_threads(old)
    return _run(cfg, log)


def _run(cfg: LeakageConfig, log: Callable[[str], None]) -> dict:
    t_start = time.perf_counter()
    st = _Stages(cfg, log)
    out = Path(cfg.output).resolve() if cfg.output else st.work / "results"
    models: dict[str, str] = {name: str(Path(f).resolve()) for name, f in cfg.models.items()}
    to_train = [p for p in cfg.paradigms if p not in models]
    for p in to_train:  # a bad --train-override is an error now, not after the data stages
        st.train_config(p, st.work / "data" / "latents")
    st.work.mkdir(parents=True, exist_ok=True)

    # ---- data and models
    eval_dirs = {s: st.world(s, cfg.eval_clips) for s in cfg.eval_splits}
    train_info: dict[str, dict] = {}
    if to_train:
        train_dir = st.world("train", cfg.train_clips)
        lmdb = st.filtered(train_dir)
        cache = st.cache(lmdb)
        for p in to_train:
            run, step = st.train(p, cache)
            models[p] = str(st.export(p, run, step))
            train_info[p] = dict(run=str(run), step=step, config=st.train_config(p, cache).to_dict())
    order = [p for p in PARADIGMS if p in models] + [n for n in models if n not in PARADIGMS]

    # ---- evaluation
    vae_folder = cfg.base or models[order[0]]
    vf = Path(vae_folder).resolve() / _index(vae_folder).get("vae", "vae")
    vae_fp = dict(vae=str(vf), files=[[p.name, p.stat().st_size, p.stat().st_mtime_ns]
                                      for p in sorted(vf.glob("*")) if p.is_file()])

    def vae_roundtrip():
        import torch

        from ..vae import WanVAE

        dev = st.device() or ("cuda" if torch.cuda.is_available() else "cpu")
        return vae_roundtrip_model(WanVAE.from_pretrained(vf, dtype=torch.float32, device=dev))

    clips = {}
    t0 = time.perf_counter()
    for s, d in eval_dirs.items():
        clips[s] = load_eval_clips(d, source=cfg.gt_source)
    st._timed("load_clips", t0)
    ceiling_fp: dict = {}
    if cfg.ceiling:  # which objects are trackable depends on the VAE's round trip (see attach_ceiling)
        t0 = time.perf_counter()
        roundtrip = vae_roundtrip()
        for s in cfg.eval_splits:
            attach_ceiling(clips[s], roundtrip)
        st._timed("ceiling", t0)
        ceiling_fp = dict(ceiling=vae_fp)
    results: dict[str, dict[str, dict]] = {}
    generation_used: dict[str, dict] = {}
    for name in order:
        folder = models[name]
        loaded: dict = {}  # the pipeline, loaded on the first split that is not reused

        def factory(folder=folder):
            from ..pipeline import FlashI2VPipeline

            return FlashI2VPipeline.from_pretrained(folder, device=st.device())

        fp = dict(model=_folder_fingerprint(folder), generation=dataclasses.asdict(cfg.generation), **ceiling_fp)
        results[name] = {}
        for s in cfg.eval_splits:
            r = st.evaluate(name, s, clips[s], factory, fp, loaded)
            results[name][s] = r["summary"]
            generation_used[name] = r.get("generation", {})
    refs: dict[str, dict[str, dict]] = {}
    for ref in cfg.references:
        loaded = {}
        if ref == "ground-truth":
            factory, fp = (lambda: oracle_model), dict(reference=ref, **ceiling_fp)
        elif ref == "static":
            factory, fp = (lambda: static_model), dict(reference=ref, **ceiling_fp)
        else:
            factory = (lambda: ceiling_model) if cfg.ceiling else vae_roundtrip
            fp = dict(reference=ref, **vae_fp, **ceiling_fp)
        refs[ref] = {}
        for s in cfg.eval_splits:
            refs[ref][s] = st.evaluate(ref, s, clips[s], factory, fp, loaded)["summary"]

    # ---- report
    all_rows = {**results, **refs}
    drops = ood_drops(all_rows, cfg.eval_splits)
    report = dict(
        format=RESULTS_FORMAT, version=RESULTS_VERSION, config=cfg.to_dict(), models=models,
        model_order=order, references=list(cfg.references), splits=list(cfg.eval_splits),
        in_domain_split=IN_DOMAIN_SPLIT if IN_DOMAIN_SPLIT in cfg.eval_splits else None,
        generation=generation_used, training=train_info, results=results, reference_results=refs, drops=drops,
        timings=dict(st.timings, total=round(time.perf_counter() - t_start, 3)), reused=st.reused,
        environment=dict(python=platform.python_version(), torch=_torch_version(), machine=platform.machine(),
                         cpus=os.cpu_count()),
    )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "results.json", report)
    per_clip = {name: {s: _read_json(st.work / "eval" / name / f"{s}.json")["records"] for s in cfg.eval_splits}
                for name in list(order) + list(cfg.references)}
    _write_json(out / "per_clip.json", per_clip)
    plots = write_plots(report, out, per_clip)
    report["plots"] = [str(p) for p in plots]
    md = results_markdown(report)
    (out / "results.md").write_text(md, encoding="utf-8")
    _write_json(out / "results.json", report)
    log("")
    log(main_table(report))
    log(f"\nwrote {out / 'results.json'}, {out / 'results.md'} and {len(plots)} plots in "
        f"{report['timings']['total']:.1f} s")
    return report


def _torch_version() -> str:
    import torch

    return torch.__version__


# ================================================================================================== reporting
#: (key, column title, format) of the main table.
MAIN_COLUMNS = (
    ("first_frame_psnr", "FF-PSNR", ".2f"), ("psnr", "PSNR", ".2f"), ("ssim", "SSIM", ".3f"),
    ("chunk_ssim_err[0]", "1-SSIM c1", ".3f"), ("chunk_ssim_err[-1]", "1-SSIM cN", ".3f"),
    ("traj_error", "traj px", ".2f"), ("static_traj_error", "static px", ".2f"), ("miss_rate", "miss", ".2f"),
    ("direction_rate", "dir", ".2f"), ("object_distance_ratio", "obj dist", ".2f"),
    ("camera_direction_rate", "cam dir", ".2f"), ("camera_distance_ratio", "cam dist", ".2f"),
    ("shape_iou", "shape IoU", ".2f"),
    ("dynamic_rate", "dynamic", ".2f"),
    ("flicker_mae", "flicker", ".2f"), ("colour_excess", "ΔE excess", ".2f"),
)
#: (key, column title) of the in-domain -> OOD drop table (value = OOD - in-domain).
DROP_KEYS = (("first_frame_psnr", "ΔFF-PSNR"), ("psnr", "ΔPSNR"), ("ssim", "ΔSSIM"),
             ("chunk_ssim_err[-1]", "Δ(1-SSIM) cN"), ("traj_error", "Δtraj px"), ("direction_rate", "Δdir"),
             ("camera_direction_rate", "Δcam dir"), ("dynamic_rate", "Δdynamic"))


def _get(summary: dict, key: str):
    if key.endswith("]"):
        name, idx = key[:-1].split("[")
        vals = summary.get(name) or []
        return vals[int(idx)] if vals else None
    return summary.get(key)


def ood_drops(rows: Mapping[str, Mapping[str, dict]], splits: Sequence[str]) -> dict:
    """``{model: {ood_split: {key: OOD value - in-domain value}}}`` for the keys of :data:`DROP_KEYS`, plus
    ``"mean"`` over the OOD splits. Empty without the in-domain split."""
    if IN_DOMAIN_SPLIT not in splits:
        return {}
    ood = [s for s in splits if s != IN_DOMAIN_SPLIT]
    out: dict = {}
    for name, per in rows.items():
        base = per[IN_DOMAIN_SPLIT]
        d: dict = {}
        for s in ood:
            d[s] = {}
            for key, _ in DROP_KEYS:
                a, b = _get(per[s], key), _get(base, key)
                d[s][key] = None if a is None or b is None else a - b
        if ood:
            d["mean"] = {key: _nanmean(d[s][key] for s in ood) for key, _ in DROP_KEYS}
        out[name] = d
    return out


def _row_names(report: dict) -> list[tuple[str, str]]:
    return [(n, n) for n in report["model_order"]] + [(r, f"({r})") for r in report["references"]]


def main_table(report: dict) -> str:
    """The per model x split table (Markdown)."""
    from ..metrics import markdown_table

    rows = []
    for name, label in _row_names(report):
        src = report["results"].get(name) or report["reference_results"].get(name)
        for s in report["splits"]:
            summ = src[s]
            row = {"model": label, "split": s}
            for key, title, fmt in MAIN_COLUMNS:
                v = _get(summ, key)
                row[title] = None if v is None else format(v, fmt)
            rows.append(row)
    return markdown_table(rows, ["model", "split"] + [t for _, t, _ in MAIN_COLUMNS])


def motion_chunk_table(report: dict) -> str:
    """Per model, split and kind of motion (objects, camera pans), the pooled travel ratio per temporal chunk
    (``object_chunk_distance_ratio``, ``camera_chunk_distance_ratio``) as Markdown; "" when no summary has one."""
    from ..metrics import markdown_table

    rows = []
    for name, label in _row_names(report):
        src = report["results"].get(name) or report["reference_results"].get(name)
        for s in report["splits"]:
            for what, key in (("objects", "object_chunk_distance_ratio"),
                              ("camera pans", "camera_chunk_distance_ratio")):
                vals = src[s].get(key)
                if vals:
                    rows.append([label, s, what] + [None if v is None else float(v) for v in vals])
    if not rows:
        return ""
    n = max(len(r) for r in rows) - 3
    rows = [r + [None] * (n + 3 - len(r)) for r in rows]
    return markdown_table(rows, ["model", "split", "what"] + [f"chunk {i + 1}" for i in range(n)], floatfmt=".2f")


def results_markdown(report: dict) -> str:
    """The full ``results.md``: settings, main table, chunk-wise tables, OOD drops, direction per motion, timings."""
    from ..metrics import markdown_table

    c = report["config"]
    g = report.get("generation", {})
    lines = ["# Conditional image leakage benchmark", ""]
    lines.append(f"Clips: {c['num_frames']} frames, {c['height']}x{c['width']} at {c['fps']:g} fps; "
                 f"{c['eval_clips']} clips per evaluation split, {c['train_clips']} training clips "
                 f"(data seed {c['data_seed']}). Ground truth: {c['gt_source']}.")
    if report.get("training"):
        arch = next(iter(report["training"].values()))["config"]["model"]["architecture"]
        arch_s = ", ".join(f"{k} {arch[k]}" for k in ("dim", "ffn_dim", "num_heads", "num_layers") if k in arch)
        lines.append(f"Training (every paradigm): {c['steps']} steps, batch {c['batch_size']}, lr {c['lr']:g}, "
                     f"seed {c['seed']}, {c['weights']} weights; backbone {arch_s}.")
    if g:
        one = next(iter(g.values()))
        lines.append(f"Sampling: {one.get('num_steps')} steps, guidance {one.get('guidance_scale')}, "
                     f"shift {one.get('shift')}, seed {one.get('seed')} + clip index.")
    lines += ["", "Models: " + ", ".join(f"`{n}` ({report['models'][n]})" for n in report["model_order"]) + ". "
              "References in parentheses: the ground truth itself, the static video (first frame repeated) and the "
              "VAE round trip of the ground truth.", ""]
    lines += ["## Per model and split", "",
              "FF-PSNR: first generated frame vs the input image (dB; very high = the image is copied). PSNR/SSIM: "
              "vs the ground-truth clip. 1-SSIM c1/cN: first/last temporal chunk. traj px: penalised centroid "
              "error of trackable objects (a lost object counts as the frame diagonal); static px: the same for the "
              "static video. dir: share of moving objects whose net displacement follows the ground truth. "
              "obj dist: median over those objects of their travel along the ground truth's path, as a fraction of "
              "the truth's (1 = as far, 0 = stays). cam dir / cam dist: the same two for the content of clips whose "
              "camera pans. "
              "shape IoU: how much of each trackable object's shape survives (its pixels against the ground "
              "truth's, centroids aligned; 1 = intact). "
              "dynamic: VBench dynamic-degree rate. flicker: mean abs frame difference (0..255). ΔE excess: colour "
              "change not in the ground truth.", "", main_table(report), ""]
    k = len(next(iter(next(iter(report["results"].values())).values()))["chunk_psnr"]) if report["results"] else 0
    if k:
        for key, title, fmt in (("chunk_ssim_err", "Chunk-wise 1 - SSIM (Figure 7a; lower is better)", ".4f"),
                                ("chunk_psnr", "Chunk-wise PSNR (dB; higher is better)", ".2f")):
            rows = []
            for name, label in _row_names(report):
                src = report["results"].get(name) or report["reference_results"].get(name)
                for s in report["splits"]:
                    vals = src[s][key]
                    rows.append([label, s] + [None if v is None else float(v) for v in vals])
            lines += [f"## {title}", "", markdown_table(rows, ["model", "split"] + [f"chunk {i + 1}" for i in range(k)],
                                                        floatfmt=fmt), ""]
    motion = motion_chunk_table(report)
    if motion:
        lines += ["## Motion kept per chunk (leakage along time)", "",
                  "How far the objects (along their ground-truth paths) and the panning camera's content travel in "
                  "each temporal chunk, as a fraction of the ground truth's travel there, pooled over objects / "
                  "clips (**obj dist** and **cam dist** per chunk). 1 = as far as the truth; a ratio that falls "
                  "over the chunks = motion that starts and stops, the later frames keeping the image.", "",
                  motion, ""]
    if report.get("drops"):
        rows = []
        for name, label in _row_names(report):
            for s, vals in report["drops"][name].items():
                rows.append([label, s] + [vals[key] for key, _ in DROP_KEYS])
        lines += ["## In-domain -> out-of-domain change (OOD minus `test`)", "",
                  "Negative ΔPSNR/ΔSSIM/Δdir and positive Δ(1-SSIM)/Δtraj mean the model does worse out of domain. "
                  "Compare each paradigm's change with the references' (which measure how much harder the split is "
                  "in itself).", "",
                  markdown_table(rows, ["model", "OOD split"] + [t for _, t in DROP_KEYS], floatfmt=".3f"), ""]
    rows = []
    for name, label in _row_names(report):
        src = report["results"].get(name) or report["reference_results"].get(name)
        for s in report["splits"]:
            bm = src[s].get("direction_by_motion", {})
            if bm:
                rows.append([label, s, ", ".join(f"{m} {v['agree']}/{v['total']}" for m, v in bm.items()),
                             src[s]["n_trackable"], src[s]["n_objects"]])
    if rows:
        lines += ["## Direction agreement per motion", "",
                  markdown_table(rows, ["model", "split", "agree/total by motion", "trackable", "objects"]), ""]
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"![{Path(p).stem}](plots/{Path(p).name})" for p in report["plots"]] + [""]
    t = report.get("timings", {})
    lines += ["## Timings (s)", "", ", ".join(f"{k} {v:.1f}" for k, v in t.items()), ""]
    return "\n".join(lines)


def write_plots(report: dict, out: Path, per_clip: Mapping[str, Mapping[str, list]]) -> list[Path]:
    """Figure-7a-style PNGs (one panel per split, one line per model, mean ± std over clips): chunk-wise 1 - SSIM,
    MSE and PSNR."""
    from ..metrics import plot_chunkwise

    paths = []
    names = _row_names(report)
    for key, fname, ylabel, transform in (
        ("chunk_ssim", "chunkwise_1-ssim.png", "1 - SSIM", lambda v: 1.0 - v),
        ("chunk_mse", "chunkwise_mse.png", "MSE", lambda v: v),
        ("chunk_psnr", "chunkwise_psnr.png", "PSNR (dB)", lambda v: v),
    ):
        data: dict = {}
        for s in report["splits"]:
            data[s] = {}
            for name, label in names:
                if name == "ground-truth":
                    continue  # zero error / capped PSNR: flattens the axes
                recs = per_clip[name][s]
                arr = [[np.nan if x is None else transform(x) for x in r[key]] for r in recs]
                data[s][label] = arr
        paths.append(plot_chunkwise(data, out / "plots" / fname, ylabel=ylabel,
                                    title=f"{ylabel} per temporal chunk"))
    return paths + write_motion_plots(report, out)


def write_motion_plots(report: dict, out: Path) -> list[Path]:
    """PNGs of the motion kept per temporal chunk (one panel per split, one line per model and reference; the
    pooled ``object_chunk_distance_ratio`` / ``camera_chunk_distance_ratio``): ``chunkwise_object_motion.png`` and
    ``chunkwise_camera_motion.png``, each only when some summary has that ratio."""
    from ..metrics import plot_chunkwise

    paths = []
    for key, fname, ylabel in (("object_chunk_distance_ratio", "chunkwise_object_motion.png", "object travel / truth"),
                               ("camera_chunk_distance_ratio", "chunkwise_camera_motion.png", "pan travel / truth")):
        data: dict = {}
        for s in report["splits"]:
            for name, label in _row_names(report):
                src = report["results"].get(name) or report["reference_results"].get(name)
                vals = src.get(s, {}).get(key)
                if vals:
                    data.setdefault(s, {})[label] = [np.nan if v is None else float(v) for v in vals]
        if data:
            paths.append(plot_chunkwise(data, out / "plots" / fname, ylabel=ylabel,
                                        title=f"{ylabel} per temporal chunk"))
    return paths
