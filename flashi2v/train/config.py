"""Typed training configuration: nested dataclasses loaded from YAML, with dotted command-line overrides.

    cfg = TrainConfig.from_yaml("train.yaml", overrides=["optim.lr=1e-4", "parallel.cp=2"])
    cfg.save(output_dir / "config.yaml")     # the resolved config, beside the checkpoints

Every key is checked: an unknown or mistyped key is a one-line :class:`~flashi2v.errors.ConfigError` naming the
dotted path, never a silently ignored setting. The defaults are the paper's recipe (AdamW lr 2e-5, wd 1e-2,
eps 1e-15; EMA 0.9999; text dropout 0.1; cutoff ratio ~ U[0.05, 0.95]; logit-normal times with dynamic shift).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import ConfigError


# ------------------------------------------------------------------------------------------------ loading
class YAMLConfig:
    """YAML + dotted-override loading for a dataclass of sections (``TrainConfig``, ``VAETrainConfig``).

    Subclasses are dataclasses with a ``validate()`` method; ``KIND`` names them in error messages.
    """

    KIND = "config"

    @classmethod
    def from_dict(cls, d: dict | None, overrides: list[str] | tuple = ()):
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"the {cls.KIND} must be a mapping of sections, got {type(d).__name__}")
        d = copy.deepcopy(dict(d or {}))  # overrides must not modify the caller's mapping
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-4)")
            try:
                parsed = yaml.safe_load(value) if value.strip() else None
            except yaml.YAMLError:
                raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
            _set_dotted(d, key.strip(), parsed)
        cfg = _build(cls, d, "")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: list[str] | tuple = ()):
        d: dict = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"{cls.KIND} {'is a folder' if p.is_dir() else 'not found'}: {p}")
            try:
                d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except UnicodeDecodeError:
                raise ConfigError(f"{p} is not a YAML text file (not UTF-8); pass the {cls.KIND} YAML") from None
            except yaml.YAMLError as e:
                raise ConfigError(f"{p} is not valid YAML ({str(e).splitlines()[0]})") from None
            if not isinstance(d, dict):
                raise ConfigError(f"{p} must contain a mapping of sections, got {type(d).__name__}")
        return cls.from_dict(d, overrides)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def save(self, path: str | Path) -> None:
        from ..weights.io import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))


# ----------------------------------------------------------------------------------------------------- sections
@dataclass
class ModelConfig:
    """What to train. ``init``: ``scratch``, or a model folder / transformer folder / official checkpoint file."""

    init: str = "scratch"
    from_t2v: bool = False  # initialise a FlashI2V (or concat) model from Wan2.1-T2V weights (new branches zero)
    architecture: Optional[dict] = None  # TransformerConfig fields, for init=scratch (or to check a loaded model)
    preset: Optional[str] = None  # a named preset (flashi2v-1.3b, ...) for init=scratch
    pipeline: Optional[str] = None  # model folder whose vae/ and text_encoder/ are used (raw data, samples, export)
    activation_checkpointing: bool = False
    # FlashI2V's φ and Fourier-embedding output convs: "zero" (the paper's; a FlashI2V initialised from T2V weights
    # starts as exactly that T2V model), "xavier" (like every other layer) or "identity" (φ(z) = z exactly, Fourier
    # branch as the paper's). The last two only for init=scratch, where there is no T2V model to preserve and a zero
    # branch starts with no image signal at all.
    condition_init: str = "zero"
    # Parameter-name prefixes to keep fixed at their init / loaded values (e.g. [learnable_proj] with
    # condition_init=identity keeps φ(z) = z). Each prefix must name parameters of the model. Default: none.
    freeze: Optional[list] = None


@dataclass
class DataConfig:
    """Training data: a latent cache (``flashi2v data encode``), a filtered LMDB of videos, or random tensors."""

    source: str = "latent_cache"  # latent_cache | videos | random
    path: Optional[str] = None  # cache folder (latent_cache) or LMDB (videos)
    height: int = 480  # videos / random: sample size
    width: int = 832
    num_frames: int = 49
    train_fps: float = 16.0
    batch_size: int = 1  # per data-parallel rank and micro-step
    num_workers: int = 0
    text_dropout: float = 0.1  # probability of training on the empty prompt
    shuffle: bool = True
    random_samples: int = 1024  # size of the random dataset
    # Train on the first max_samples samples of the cache / LMDB only (None: all). The first N samples of a larger
    # cache built from the same world are the same samples, so a run on a subset of a grown dataset is reproducible.
    max_samples: Optional[int] = None
    # latent_cache: read every shard once into the training device's memory (fast batches for a GPU; needs room for
    # the whole cache, about 0.8 GB per 1000 clips of the default model's 128x128x17 world) instead of opening a
    # shard per sample
    preload: bool = False
    # latent_cache with several captions per sample: the relative weight of each caption position (the k-th caption of
    # every sample) in the per-epoch draw; positions past the list take its last weight. None: uniform. A world cache
    # of `flashi2v world --captions 3 --focused-captions` holds its camera-only caption at position 3, so
    # [1, 1, 1, 6, 1] draws it about half the time (the rest: the three full captions and the per-object ones).
    caption_weights: Optional[list] = None


@dataclass
class OptimConfig:
    lr: float = 2e-5
    weight_decay: float = 1e-2
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-15
    warmup_steps: int = 0  # linear warm-up from 0 (0 = constant lr, the paper's recipe)
    schedule: str = "constant"  # after warm-up: constant (the paper's) | cosine (to min_lr_ratio * lr at max_steps)
    min_lr_ratio: float = 0.1
    decay_steps: int = 0  # length of the cosine decay (0 = max_steps); a run may stop early on a longer schedule
    grad_accum: int = 1
    # Per-module learning-rate multipliers: {parameter-name prefix: factor}, e.g. {learnable_proj: 10} trains φ at
    # 10x the lr (same schedule). Each prefix must name trainable parameters; the rest train at lr. Default: none.
    lr_multipliers: Optional[dict] = None


def check_minutes(value) -> None:
    """``max_minutes`` must be a finite number >= 0 (0: no time limit)."""
    if not _number(value) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"max_minutes must be a number of minutes >= 0 (0 = no time limit), got {value!r}")


def lr_factor(o, max_steps: int):
    """``step -> lr multiplier`` of an optimiser section (``OptimConfig`` or the VAE trainer's): linear warm-up over
    ``o.warmup_steps``, then constant or a cosine decay to ``o.min_lr_ratio`` at ``o.decay_steps`` (0: ``max_steps``).
    Step ``s`` is the number of scheduler steps taken (the lr of optimizer step ``s + 1``)."""
    warm, total = o.warmup_steps, o.decay_steps or max_steps

    def f(s: int) -> float:
        if warm and s < warm:
            return (s + 1) / warm
        if o.schedule == "constant":
            return 1.0
        t = min(1.0, max(0.0, (s - warm) / max(1, total - warm)))
        return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


@dataclass
class ClipConfig:
    """Gradient clipping. ``adaptive``: the official moving-average clipper (threshold avg + k·std)."""

    mode: str = "adaptive"  # adaptive | fixed | none
    max_norm: float = 1.0  # fixed threshold, and the adaptive clipper's initial average
    ema_decay: float = 0.99
    num_std: float = 3.0


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.9999
    every: int = 1  # optimizer steps between updates


@dataclass
class FlowConfig:
    """Training-time distribution of sigma and the Fourier cutoff."""

    distribution: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: Any = "dynamic"  # "dynamic" or a number
    cutoff_ratio: tuple = (0.05, 0.95)
    # > 0: weight the loss towards what moves after the first frame (flow_matching.motion_weights; not in the paper)
    motion_weight: float = 0.0


@dataclass
class ParallelSection:
    dp_replicate: int = 1
    dp_shard: int = -1  # -1: the rest of the world
    cp: int = 1
    param_dtype: str = "auto"  # compute dtype: auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    compile: bool = False
    tf32: bool = False  # CUDA: fp32 matrix products and convolutions on TF32 tensor cores (10-bit mantissa inputs)


@dataclass
class LoRAConfig:
    enabled: bool = False
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["q", "k", "v", "o", "ffn.0", "ffn.2"])


@dataclass
class CheckpointConfig:
    every: int = 1000
    keep_last: int = 3
    resume: bool = True  # continue from the newest complete checkpoint in output_dir


@dataclass
class LogConfig:
    every: int = 10
    tensorboard: bool = True
    sample_every: int = 0  # 0 = never; otherwise write sample videos from the validation pairs
    validation: list = field(default_factory=list)  # [{image: path, prompt: text}, ...]
    sample_steps: int = 20
    sample_guidance: float = 5.0
    sample_ema: bool = True
    # the reliance probe (flashi2v bench reliance) of the current weights on a fixed batch of the latent cache, at
    # step 0 of a fresh run, every probe_every steps (0 = never) and at the last step, appended to
    # OUTPUT_DIR/probe.jsonl: how much the model uses its image, its prompt and, with probe_swap_words (e.g.
    # [left=right, up=down]; needs model.pipeline, whose text encoder re-encodes the edited captions), those words.
    # A few forward passes; the training itself is unchanged by it.
    probe_every: int = 0
    probe_samples: int = 32
    probe_sigmas: list = field(default_factory=lambda: [1.0, 0.98, 0.9])
    probe_swap_words: list = field(default_factory=list)
    probe_ema: bool = True


@dataclass
class TrainConfig(YAMLConfig):
    KIND = "training config"

    output_dir: str = "outputs/train"
    seed: int = 1024
    max_steps: int = 1000  # optimizer steps
    # wall-clock budget of this invocation in minutes (0 = none): stop after the step that leaves no room for another
    # one, save a checkpoint, return normally; rerun to resume (flashi2v.train.stopping, which also handles signals)
    max_minutes: float = 0.0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads per process (0 = torch's default; 1 is fastest on a CPU shared with other jobs)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    # ------------------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        def positive(name: str, value, allow_zero: bool = False) -> None:
            if value < 0 or (value == 0 and not allow_zero):
                raise ConfigError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value}")

        positive("max_steps", self.max_steps)
        check_minutes(self.max_minutes)
        positive("data.batch_size", self.data.batch_size)
        positive("data.num_workers", self.data.num_workers, allow_zero=True)
        positive("optim.lr", self.optim.lr, allow_zero=True)
        positive("optim.grad_accum", self.optim.grad_accum)
        positive("optim.warmup_steps", self.optim.warmup_steps, allow_zero=True)
        positive("threads", self.threads, allow_zero=True)
        positive("optim.decay_steps", self.optim.decay_steps, allow_zero=True)
        if self.optim.schedule not in ("constant", "cosine"):
            raise ConfigError(f"optim.schedule must be constant or cosine, got {self.optim.schedule!r}")
        if not 0.0 <= self.optim.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.optim.min_lr_ratio}")
        positive("checkpoint.every", self.checkpoint.every)
        positive("checkpoint.keep_last", self.checkpoint.keep_last)
        positive("log.every", self.log.every)
        positive("ema.every", self.ema.every)
        self._validate_probe()
        positive("parallel.cp", self.parallel.cp)
        positive("parallel.dp_replicate", self.parallel.dp_replicate)
        if not 0.0 <= self.data.text_dropout <= 1.0:
            raise ConfigError(f"data.text_dropout must be in [0, 1], got {self.data.text_dropout}")
        if self.data.source not in ("latent_cache", "videos", "random"):
            raise ConfigError(f"data.source must be latent_cache, videos or random, got {self.data.source!r}")
        if self.data.source != "random" and not self.data.path:
            raise ConfigError(f"data.path is required for data.source={self.data.source}")
        cw = self.data.caption_weights
        if cw is not None:
            if self.data.source != "latent_cache":
                raise ConfigError("data.caption_weights applies to data.source=latent_cache only")
            if (not isinstance(cw, (list, tuple)) or not all(_number(w) and math.isfinite(w) and w >= 0 for w in cw)
                    or not any(w > 0 for w in cw)):
                raise ConfigError("data.caption_weights must be a list of non-negative numbers, not all zero (one per "
                                  f"caption position, e.g. [1, 1, 1, 6, 1]), got {cw!r}")
        ms = self.data.max_samples
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int) or ms < 1):
            raise ConfigError(f"data.max_samples must be a positive integer or null (all samples), got {ms!r}")
        if ms is not None and self.data.source == "random":
            raise ConfigError("data.max_samples does not apply to data.source=random; set data.random_samples instead")
        if self.data.source == "videos" and not self.model.pipeline:
            raise ConfigError("data.source=videos needs model.pipeline (a model folder with vae/ and text_encoder/)")
        if self.clip.mode not in ("adaptive", "fixed", "none"):
            raise ConfigError(f"clip.mode must be adaptive, fixed or none, got {self.clip.mode!r}")
        if not 0.0 <= self.ema.decay <= 1.0:
            raise ConfigError(f"ema.decay must be in [0, 1], got {self.ema.decay}")
        if self.model.condition_init not in ("zero", "xavier", "identity"):
            raise ConfigError(
                f"model.condition_init must be zero, xavier or identity, got {self.model.condition_init!r}"
            )
        if self.model.condition_init != "zero" and self.model.init != "scratch":
            raise ConfigError(f"model.condition_init={self.model.condition_init} only applies to model.init=scratch "
                              "(a loaded model keeps its weights); remove it or train from scratch")
        if len(self.optim.betas) != 2:
            raise ConfigError(f"optim.betas must have two values, got {self.optim.betas}")
        freeze = self.model.freeze
        if not all(isinstance(q, str) and q for q in freeze or []):  # (that it is a list, the loader checks)
            raise ConfigError(f"model.freeze must be a list of parameter-name prefixes (e.g. [learnable_proj]), "
                              f"got {freeze!r}")
        for prefix, factor in (self.optim.lr_multipliers or {}).items():
            if not isinstance(prefix, str) or not prefix:
                raise ConfigError(f"optim.lr_multipliers keys must be parameter-name prefixes, got {prefix!r}")
            if not _number(factor) or factor <= 0:
                raise ConfigError(f"optim.lr_multipliers.{prefix} must be a positive number, got {factor!r}")
        lo, hi = _pair("flow.cutoff_ratio", self.flow.cutoff_ratio)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"flow.cutoff_ratio must satisfy 0 <= lo <= hi <= 1, got {self.flow.cutoff_ratio}")
        if not isinstance(self.flow.motion_weight, (int, float)) or self.flow.motion_weight < 0:
            raise ConfigError(f"flow.motion_weight must be a number >= 0, got {self.flow.motion_weight!r}")
        if self.flow.shift != "dynamic" and not (isinstance(self.flow.shift, (int, float)) and self.flow.shift > 0):
            raise ConfigError(f"flow.shift must be 'dynamic' or a positive number, got {self.flow.shift!r}")
        if self.parallel.param_dtype not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"parallel.param_dtype must be auto, bf16 or fp32, got {self.parallel.param_dtype!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not isinstance(self.data.preload, bool):
            raise ConfigError(f"data.preload must be true or false, got {self.data.preload!r}")
        if self.data.preload and self.data.source != "latent_cache":
            raise ConfigError(f"data.preload reads a latent cache into memory; data.source is {self.data.source!r} "
                              "(set data.preload: false)")
        if not isinstance(self.parallel.tf32, bool):
            raise ConfigError(f"parallel.tf32 must be true or false, got {self.parallel.tf32!r}")
        if self.model.init == "scratch" and not (self.model.architecture or self.model.preset):
            raise ConfigError("model.init=scratch needs model.architecture (TransformerConfig fields) or model.preset")
        if self.model.from_t2v and self.model.init == "scratch":
            raise ConfigError("model.from_t2v needs model.init pointing at a Wan2.1-T2V checkpoint")
        if self.lora.enabled and self.model.init == "scratch":
            raise ConfigError("LoRA fine-tunes a pretrained model: set model.init to a checkpoint or model folder")
        if self.lora.enabled:
            positive("lora.rank", self.lora.rank)
        for i, pair in enumerate(self.log.validation):
            if not isinstance(pair, dict) or "prompt" not in pair:
                raise ConfigError(f"log.validation[{i}] must be a mapping with 'prompt' (and 'image'), got {pair!r}")


    def _validate_probe(self) -> None:
        lg = self.log
        if lg.probe_every < 0:
            raise ConfigError(f"log.probe_every must be a step count >= 0 (0 = never), got {lg.probe_every}")
        if not lg.probe_every:
            return
        if self.data.source != "latent_cache":
            raise ConfigError(f"log.probe_every needs data.source=latent_cache (the probe scores fixed cache items), "
                              f"got {self.data.source}; set log.probe_every=0")
        if lg.probe_samples < 2:
            raise ConfigError(f"log.probe_samples must be at least 2 (the wrong image is another sample's), "
                              f"got {lg.probe_samples}")
        sig = lg.probe_sigmas
        if not sig or not all(_number(v) and 0 < v <= 1 for v in sig):
            raise ConfigError(f"log.probe_sigmas must be a list of noise levels in (0, 1], got {sig!r}")
        from ..bench.reliance import parse_swaps
        from ..errors import InputError

        try:
            parse_swaps(lg.probe_swap_words, what="log.probe_swap_words")
        except InputError as e:
            raise ConfigError(str(e)) from None
        if lg.probe_swap_words and not self.model.pipeline:
            raise ConfigError("log.probe_swap_words needs model.pipeline (a model folder whose text encoder made the "
                              "latent cache) to encode the edited captions")


# ------------------------------------------------------------------------------------------------- machinery
def _number(value) -> bool:
    """An int or a float (a YAML true/false is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pair(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair [lo, hi], got {value!r}") from None
    return lo, hi


def _set_dotted(d: dict, key: str, value) -> None:
    parts = key.split(".")
    node = d
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls, d: Any, path: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping, got {type(d).__name__} {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        where = f" in section {path!r}" if path else ""
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}{where}; valid: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        kwargs[name] = _coerce(hints[name], value, f"{path}.{name}" if path else name)
    return cls(**kwargs)


def _coerce(tp, value, path: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, path)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, path) if len(args) == 1 else value
    if tp is Any or value is None and tp in (dict, list):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):  # YAML 1.1 reads "2e-5" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{path} must be a finite number, got {value!r}")
        return float(number)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return str(value)
    if tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return tuple(value)
    if tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return list(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
