"""The exact recipe of the shipped default model: ``python -m flashi2v.default_model.recipe --work DIR --profile gpu``.

Without ``--profile gpu`` the CPU recipe runs (``--profile cpu``, everything on a 2-core CPU in about 2.5 h): it
reproduces an older default model (patch 1x4x4, ``recipe/dit.yaml``), not the shipped one.

Stages (each reuses its output when it is already there, so an interrupted run continues):

=========  ==========================================================================================================
world      ``flashi2v world``: 1000 ``train`` clips and 100 held-out ``test`` clips, seed 0, 17 x 128 x 128 at 16 fps
           -> ``DIR/data/{train,test}`` (the layout ``flashi2v bench leakage --workdir DIR`` reuses)
vae_image  ``flashi2v train-vae --config recipe/vae_image.yaml``: the VAE on single frames of ``data/train``
           -> ``DIR/vae_image/vae``
vae        ``flashi2v train-vae --config recipe/vae.yaml model.init=DIR/vae_image/vae``: fine-tuned on whole clips
           (held-out round-trip PSNR on ``data/test``) -> ``DIR/vae/vae``
base       a model folder ``DIR/base``: that VAE, MiniLM (package reference, ``text_len`` of the DiT config) and a
           random DiT of the recipe's architecture (only its VAE and text encoder are used)
filter     ``flashi2v data filter`` with the world's ``filter.yaml`` -> ``DIR/data/filtered``
cache      ``flashi2v data encode`` (VAE latents, first-frame latents, MiniLM states) -> ``DIR/data/latents``
train      ``flashi2v train --config recipe/dit_gpu.yaml`` (the CPU profile: ``dit.yaml``) on the cache
           -> ``DIR/runs/flashi2v``; a profile with continuation phases (``Profile.dit_continue``) then trains each
           of them from the previous phase's EMA weights packaged in fp16 (``DIR/phases/K/package``)
           -> ``DIR/runs/flashi2v_phaseK``
export     ``flashi2v export`` (EMA weights of the last phase) -> ``DIR/export``
package    :func:`flashi2v.default_model.package_model` (fp16) -> ``--package`` (default: ``DIR/package``; the
           shipped copy is ``flashi2v/default_model/model``) plus the training logs in ``DIR/recipe_logs``
evaluate   the quality bars on the 100 held-out clips (:func:`flashi2v.bench.evaluate_model`) -> ``DIR/eval.json``
=========  ==========================================================================================================

``--stages a,b`` runs some stages; ``--set vae.max_steps=10 --set dit.max_steps=10`` overrides config keys (prefixes
``vae_image.``, ``vae.``, ``dit.``; the shipped model uses none). ``--focused-captions`` and ``--text-layer 5`` give
every phase that does not set its own those data (trained from scratch that way, the variant was not shipped:
docs/default_model.md). ``--profile gpu`` (:data:`PROFILES`) is the shipped model's recipe: inflated VAE, the DiT on
10000 clips on CUDA from ``recipe/dit_gpu.yaml``, continued from its fp16 EMA weights with
``recipe/dit_gpu_continue.yaml``, then with ``recipe/dit_gpu_text.yaml`` on the same clips' focused captions encoded
by MiniLM's layer 5 (:class:`Phase`). ``--set dit.max_minutes=N`` (or ``vae.``) gives each training run a wall-clock
budget: a run that stops on it, or on SIGTERM / SIGUSR1 / Ctrl-C, saves a checkpoint and the recipe exits with
status 3 before any later stage; the same command goes on from there. All seeds are
fixed; on another machine the floating-point results differ in the last bits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import RECIPE_DIR

STAGES = ("world", "vae_image", "vae", "base", "filter", "cache", "train", "export", "package", "evaluate")
TRAIN_CLIPS, TEST_CLIPS, SEED = 1000, 100, 0
FRAMES, SIZE, FPS = 17, 128, 16.0
#: Sampling settings stored as the shipped model's defaults (and used by the evaluation).
DEFAULTS = dict(num_frames=FRAMES, height=SIZE, width=SIZE, num_steps=20, shift=3.0, guidance_scale=3.0,
                cutoff_ratio=0.1, fps=16, negative_prompt="")


@dataclass(frozen=True)
class Phase:
    """One DiT phase: its config file in recipe/ and the data it trains on. ``focused_captions`` and
    ``text_hidden_layer`` of None take the recipe's own (``--focused-captions``, ``--text-layer``); a phase that sets
    others gets its own world captions (``data/train_dit_focused``: the same clips), MiniLM layer (``base_text{L}``)
    and latent cache (``data/latents_dit_focused_text{L}``)."""

    config: str
    focused_captions: bool | None = None
    text_hidden_layer: int | None = None


@dataclass(frozen=True)
class Profile:
    """Where and how much: the CPU recipe (this 2-core machine, ~2.5 h) or the GPU one (one CUDA device for the
    latent cache and the DiT; its VAE stages are the CPU recipe's with ``temporal_init: inflate``)."""

    dit_config: str  # file in recipe/
    vae_image_overrides: tuple = ()  # applied before --set vae_image.*
    vae_overrides: tuple = ()  # applied before --set vae.*
    dit_train_clips: int | None = None  # None: the DiT trains on data/train; else on data/train_dit, this many clips
    cache_device: str | None = "cpu"  # None: CUDA when available
    #: phases trained after ``dit_config``, in order (a file in recipe/, or a :class:`Phase` with its own data):
    #: each starts from the previous phase's EMA weights as they would be shipped (fp16), with a fresh optimizer and
    #: learning-rate schedule
    dit_continue: tuple = ()

    @property
    def dit_phases(self) -> tuple[Phase, ...]:
        return tuple(p if isinstance(p, Phase) else Phase(p) for p in (self.dit_config, *self.dit_continue))


PROFILES = {
    "cpu": Profile("dit.yaml"),
    "gpu": Profile("dit_gpu.yaml", vae_image_overrides=("threads=2",),
                   vae_overrides=("model.temporal_init=inflate", "threads=2"),
                   dit_train_clips=10000, cache_device=None,
                   dit_continue=("dit_gpu_continue.yaml",
                                 Phase("dit_gpu_text.yaml", focused_captions=True, text_hidden_layer=5))),
}


def log(msg: str) -> None:
    print(f"[recipe {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Recipe:
    def __init__(self, work: str | os.PathLike, *, package: str | os.PathLike | None = None, workers: int = 2,
                 overrides: list[str] = (), train_clips: int = TRAIN_CLIPS, test_clips: int = TEST_CLIPS,
                 frames: int = FRAMES, size: int = SIZE, focused_captions: bool = False, text_hidden_layer: int = -1,
                 profile: str = "cpu", dit_train_clips: int | None = None, eval_device: str = "cpu"):
        """The shipped model uses the defaults with ``profile="gpu"``; smaller ``train_clips`` / ``test_clips`` /
        ``frames`` / ``size`` (with ``--set`` overrides for the step counts) give a fast smoke run of every stage (the
        tests do this).
        ``focused_captions`` writes the world with three full captions plus one per element per clip
        (``flashi2v world --captions 3 --focused-captions``); ``text_hidden_layer`` picks MiniLM's layer for the base
        folder (-1: the last). Both apply to the phases whose :class:`Phase` does not set its own.
        ``profile`` picks :data:`PROFILES` (``dit_train_clips`` overrides its DiT data size, for smoke runs);
        ``eval_device`` runs the evaluation's sampling there (the shipped numbers are from ``cpu``)."""
        from ..errors import InputError

        if profile not in PROFILES:
            raise InputError(f"unknown recipe profile {profile!r}; choose from {', '.join(PROFILES)}")
        self.profile_name, self.profile = profile, PROFILES[profile]
        self.dit_train_clips = dit_train_clips if dit_train_clips is not None else self.profile.dit_train_clips
        self.work = Path(work).resolve()
        self.train_clips, self.test_clips, self.frames, self.size = train_clips, test_clips, frames, size
        self.focused_captions, self.text_hidden_layer = bool(focused_captions), int(text_hidden_layer)
        self.defaults = dict(DEFAULTS, num_frames=frames, height=size, width=size)
        self.package_dir = Path(package).resolve() if package else self.work / "package"
        self.workers = int(workers)
        self.eval_device = str(eval_device)
        self.overrides: dict[str, list[str]] = {"vae_image": [], "vae": [], "dit": []}
        for o in overrides:
            prefix, _, rest = o.partition(".")
            if prefix not in self.overrides or not rest:
                raise InputError(f"--set {o}: prefix the key with vae_image., vae. or dit. (e.g. dit.max_steps=10)")
            self.overrides[prefix].append(rest)

    # ------------------------------------------------------------------------------------------------- paths
    data = property(lambda self: self.work / "data")
    vae_image_run = property(lambda self: self.work / "vae_image")
    vae_run = property(lambda self: self.work / "vae")
    export_dir = property(lambda self: self.work / "export")
    # the DiT's phases (Profile.dit_phases): phase 0 trains in runs/flashi2v, phase k > 0 in runs/flashi2v_phase{k}
    # from phases/{k-1}/package (phase k-1's EMA weights packaged in fp16); ``run`` is the last phase's, exported
    num_phases = property(lambda self: len(self.profile.dit_phases))
    run = property(lambda self: self.phase_run(self.num_phases - 1))

    def phase_run(self, phase: int) -> Path:
        return self.work / "runs" / ("flashi2v" if phase == 0 else f"flashi2v_phase{phase}")

    def phase_package(self, phase: int) -> Path:
        return self.work / "phases" / str(phase) / "package"
    # the DiT's data: the VAE's clips (CPU profile) or a larger draw of the same world (GPU profile)
    dit_suffix = property(lambda self: "" if self.dit_train_clips is None else "_dit")
    # phase 0's data, text encoder and cache (``phase_*(k)``: phase k's, which may differ, see :class:`Phase`)
    dit_data = property(lambda self: self.phase_data(0))
    filtered = property(lambda self: self.phase_filtered(0))
    latents = property(lambda self: self.phase_latents(0))
    base_dir = property(lambda self: self.phase_base(0))

    def phase_text(self, phase: int) -> tuple[bool, int]:
        """(focused captions, MiniLM hidden layer) of phase ``phase``'s data."""
        ph = self.profile.dit_phases[phase]
        return (self.focused_captions if ph.focused_captions is None else bool(ph.focused_captions),
                self.text_hidden_layer if ph.text_hidden_layer is None else int(ph.text_hidden_layer))

    def _caption_suffix(self, phase: int) -> str:
        focused = self.phase_text(phase)[0]
        return "" if focused == self.focused_captions else ("_focused" if focused else "_plain")

    def _text_suffix(self, phase: int) -> str:
        layer = self.phase_text(phase)[1]
        return "" if layer == self.text_hidden_layer else f"_text{layer}"

    def phase_data(self, phase: int) -> Path:
        return self.data / f"train{self.dit_suffix}{self._caption_suffix(phase)}"

    def phase_filtered(self, phase: int) -> Path:
        return self.data / f"filtered{self.dit_suffix}{self._caption_suffix(phase)}"

    def phase_latents(self, phase: int) -> Path:
        return self.data / f"latents{self.dit_suffix}{self._caption_suffix(phase)}{self._text_suffix(phase)}"

    def phase_base(self, phase: int) -> Path:
        return self.work / f"base{self._text_suffix(phase)}"

    def vae_config(self, stage: str = "vae"):
        from ..train.vae_trainer import VAETrainConfig

        run = self.vae_image_run if stage == "vae_image" else self.vae_run
        extra = [] if stage == "vae_image" else [f"model.init={self.vae_image_run / 'vae'}"]
        size = self._size_overrides()
        if size:
            size = [f"data.height={self.size}", f"data.width={self.size}", f"data.crop_size={min(64, self.size)}"]
            size += [] if stage == "vae_image" else [f"data.num_frames={self.frames}"]
        return VAETrainConfig.from_yaml(RECIPE_DIR / f"{stage}.yaml", [
            f"output_dir={run}", f"data.path={self.data / 'train'}", f"eval.path={self.data / 'test'}", *extra,
            *size, *getattr(self.profile, f"{stage}_overrides"), *self.overrides[stage]])

    def dit_config(self, *extra: str, phase: int = 0):
        """The config of DiT phase ``phase`` (phase 0: recipe/dit_gpu.yaml or dit.yaml; later ones:
        ``Profile.dit_continue``) with this run's paths, sizes, ``--set dit.*`` overrides (every phase gets them),
        then, after phase 0, the previous phase's packaged weights as ``model.init``, then ``extra`` overrides."""
        from ..train.config import TrainConfig

        init = [] if phase == 0 else [f"model.init={self.phase_package(phase - 1)}", "model.condition_init=zero"]
        return TrainConfig.from_yaml(RECIPE_DIR / self.profile.dit_phases[phase].config, [
            f"output_dir={self.phase_run(phase)}", f"data.path={self.phase_latents(phase)}",
            f"model.pipeline={self.phase_base(phase)}",
            *self._size_overrides(), *self.overrides["dit"], *init, *extra])

    def _size_overrides(self) -> list[str]:
        if (self.frames, self.size) == (FRAMES, SIZE):
            return []
        return [f"data.height={self.size}", f"data.width={self.size}", f"data.num_frames={self.frames}"]

    # ------------------------------------------------------------------------------------------------ stages
    def world(self) -> None:
        from ..world import write_dataset

        folders = {self.data / "train": ("train", self.train_clips, self.focused_captions),
                   self.data / "test": ("test", self.test_clips, self.focused_captions)}
        for k in range(self.num_phases):  # clips 0..n-1 of the train split: data/train, or a superset of it
            folders.setdefault(self.phase_data(k), ("train", self.dit_train_clips or self.train_clips,
                                                    self.phase_text(k)[0]))
        for folder, (split, n, focused) in folders.items():
            if (folder / "ground_truth.json").is_file():
                log(f"world: reusing {folder}")
                continue
            ds = write_dataset(folder, split, n, SEED, num_frames=self.frames, height=self.size,
                               width=self.size, fps=FPS, workers=self.workers,
                               num_captions=3 if focused else 1, focused_captions=focused)
            log(ds.summary())

    def vae_image(self) -> None:
        self.vae(stage="vae_image")

    def vae(self, stage: str = "vae") -> None:
        from ..train.vae_trainer import train_vae

        run = self.vae_image_run if stage == "vae_image" else self.vae_run
        if (run / "eval.json").is_file():
            log(f"{stage}: reusing {run / 'vae'}")
            return
        res = train_vae(self.vae_config(stage))
        if res.stopped:
            raise RecipeStopped(f"{stage}: {res.stopped}")
        log(f"{stage}: held-out round trip {json.dumps(res.eval)}")

    def base(self) -> None:
        import torch

        from ..config import TransformerConfig
        from ..models.flashi2v import build_transformer
        from ..pipeline import FlashI2VPipeline, GenerationDefaults
        from ..text import MiniLMTextEncoder
        from ..vae import WanVAE

        for base, layer in {self.phase_base(k): self.phase_text(k)[1] for k in range(self.num_phases)}.items():
            if (base / "model_index.json").is_file():
                log(f"base: reusing {base}")
                continue
            arch = dict(self.dit_config().model.architecture)
            torch.manual_seed(SEED)
            dit = build_transformer(TransformerConfig(**arch))
            text = MiniLMTextEncoder.from_package(text_len=int(arch["text_len"]), hidden_layer=layer)
            text.weights_source = "package"
            vae = WanVAE.from_pretrained(self.vae_run / "vae", dtype=torch.float32)
            FlashI2VPipeline(dit, vae, text, GenerationDefaults(**self.defaults)).save_pretrained(base, overwrite=True)
            log(f"base: wrote {base}")

    def filter(self, phase: int | None = None) -> Path:
        """Filter every phase's DiT data (or only phase ``phase``'s); returns the last LMDB."""
        from ..data.filter import filter_once

        for k in range(self.num_phases) if phase is None else (phase,):
            lmdb, counts = filter_once(self.phase_data(k) / "filter.yaml", self.phase_filtered(k))
            log(f"filter: {'reusing' if counts is None else 'kept {kept}/{total}'.format(**counts)} -> {lmdb}")
        return lmdb

    def cache(self) -> None:
        from ..data.latent_cache import encode_cache

        done = set()
        for k in range(self.num_phases):
            if self.phase_latents(k) in done:
                continue
            done.add(self.phase_latents(k))
            m = encode_cache(self.filter(k), self.phase_base(k), self.phase_latents(k), height=self.size,
                             width=self.size, num_frames=self.frames, train_fps=FPS, seed=SEED,
                             device=self.profile.cache_device, workers=self.workers, log=log)
            log(f"cache: {self.phase_latents(k).name}: {m['num_samples']} samples, latents {m['latent_shape']}")

    def train(self) -> None:
        """Every DiT phase in turn; a finished phase resumes at its last step (nothing to do), an interrupted one
        where its newest checkpoint left off."""
        from . import package_model
        from ..train.trainer import Trainer

        for phase in range(self.num_phases):
            if phase > 0 and not self._phase_package_is_current(phase - 1):
                tmp = self.phase_package(phase - 1).parent / "export"
                self._export(phase - 1, tmp)
                package_model(tmp, self.phase_package(phase - 1), dtype="fp16", defaults=self.defaults)
                shutil.rmtree(tmp)
                log(f"train: phase {phase} starts from {self.phase_package(phase - 1)}")
            trainer = Trainer(self.dit_config(phase=phase))
            hist = trainer.fit()
            if trainer.stop_reason:  # a later phase must not start from this one's unfinished weights
                raise RecipeStopped(f"train: phase {phase} at step {trainer.step}: {trainer.stop_reason}")
            if hist:
                log(f"train: phase {phase} ({self.profile.dit_phases[phase].config}) final loss "
                    f"{hist[-1]['loss']:.4f}")

    def _phase_package_is_current(self, phase: int) -> bool:
        """Whether ``phases/{phase}/package`` holds the newest checkpoint of that phase's run (a run trained further
        since, e.g. with more ``max_steps``, is packaged again)."""
        from ..train.checkpoint import list_checkpoints

        index = self.phase_package(phase) / "model_index.json"
        ckpts = list_checkpoints(self.phase_run(phase))
        if not index.is_file() or not ckpts:
            return False
        return json.loads(index.read_text()).get("trained", {}).get("checkpoint") == ckpts[0][1].name  # newest first

    def _export(self, phase: int, dst: Path) -> None:
        """Phase ``phase``'s EMA weights with the VAE and text encoder it trained with (its base folder)."""
        from ..train.export import export

        export(self.phase_run(phase), dst, weights="ema", pipeline=str(self.phase_base(phase)), overwrite=True)

    def export(self) -> None:
        self._export(self.num_phases - 1, self.export_dir)
        log(f"export: wrote {self.export_dir}")

    def package(self) -> None:
        from . import package_model

        vae_eval = json.loads((self.vae_run / "eval.json").read_text())
        phases = [dict(config=f"recipe/{ph.config}", steps=self.dit_config(phase=k).max_steps,
                       init="scratch" if k == 0 else f"phase {k - 1}'s EMA weights in fp16",
                       focused_captions=self.phase_text(k)[0], text_hidden_layer=self.phase_text(k)[1])
                  for k, ph in enumerate(self.profile.dit_phases)]
        prof = "" if self.profile_name == "cpu" else f" --profile {self.profile_name}"
        info = dict(recipe=f"python -m flashi2v.default_model.recipe --work WORK{prof} (flashi2v/default_model/recipe.py)",
                    profile=self.profile_name, vae_configs=["recipe/vae_image.yaml", "recipe/vae.yaml"],
                    vae_overrides=dict(vae_image=list(self.profile.vae_image_overrides),
                                       vae=list(self.profile.vae_overrides)),
                    dit_config=f"recipe/{self.profile.dit_config}",
                    seed=SEED,
                    data=dict(world_train_clips=self.train_clips, world_test_clips=self.test_clips, world_seed=SEED,
                              dit_train_clips=self.dit_train_clips or self.train_clips,
                              frames=self.frames, size=self.size, fps=FPS,
                              focused_captions=self.focused_captions),
                    text_hidden_layer=self.phase_text(self.num_phases - 1)[1],  # the shipped text encoder's
                    dit_steps=sum(ph["steps"] for ph in phases),
                    dit_phases=phases,
                    vae_eval=vae_eval)
        package_model(self.export_dir, self.package_dir, dtype="fp16", info=info, defaults=self.defaults)
        logs = self.work / "recipe_logs"
        logs.mkdir(exist_ok=True)
        for src, name in ((self.vae_image_run / "metrics.jsonl", "vae_image_metrics.jsonl"),
                          (self.vae_run / "metrics.jsonl", "vae_metrics.jsonl"),
                          (self.vae_run / "eval.json", "vae_eval.json"),
                          *((self.phase_run(k) / f"{what}.jsonl", f"dit{f'_phase{k}' if k else ''}_{what}.jsonl")
                            for k in range(self.num_phases) for what in ("metrics", "probe"))):
            if src.is_file():
                shutil.copyfile(src, logs / name)
        size = sum(p.stat().st_size for p in self.package_dir.rglob("*") if p.is_file())
        log(f"package: wrote {self.package_dir} ({size / 2**20:.1f} MiB); logs in {logs}")

    def evaluate(self, folder: str | os.PathLike | None = None, limit: int | None = None) -> dict:
        from ..bench.leakage import (EvalSettings, GenerationSettings, attach_ceiling, ceiling_model, evaluate_model,
                                     load_eval_clips, static_model, vae_roundtrip_model)
        from ..pipeline import FlashI2VPipeline

        folder = Path(folder or self.package_dir)
        clips = load_eval_clips(self.data / "test", limit=limit)
        settings = EvalSettings()
        pipe = FlashI2VPipeline.from_pretrained(folder, device=self.eval_device)
        # trajectories are scored on the objects that the model's own (fp32) VAE keeps trackable: the round trip of
        # the ground truth is the ceiling of every video this VAE decodes (see bench.leakage.attach_ceiling)
        attach_ceiling(clips, vae_roundtrip_model(pipe.vae))
        gen = GenerationSettings(num_steps=None, negative_prompt=None, batch_size=4)  # the folder's defaults
        if self.workers > 1 and len(clips) > 1:
            model = _evaluate_in_parallel(pipe, folder, clips, settings, gen, self.workers, self.eval_device)
        else:
            model = evaluate_model(pipe, clips, settings, generation=gen, log=log)
        vae_ev = evaluate_model(ceiling_model, clips, settings)  # the round trip above
        static = evaluate_model(static_model, clips, settings)
        m, v, s = model.summary, vae_ev.summary, static.summary
        bars = dict(
            first_frame_psnr=m["first_frame_psnr"], vae_first_frame_psnr=v["first_frame_psnr"],
            first_frame_ok=bool(m["first_frame_psnr"] >= 22.0 and m["first_frame_psnr"] >= v["first_frame_psnr"] - 3.0),
            traj_error=m["traj_error"], static_traj_error=s["traj_error"],
            traj_ok=bool(m["traj_error"] is not None and m["traj_error"] < 0.5 * s["traj_error"]),
            direction_rate=m["direction_rate"], direction_ok=bool((m["direction_rate"] or 0.0) >= 0.8),
            vae_traj_error=v["traj_error"], vae_direction_rate=v["direction_rate"],
            camera_direction_rate=m["camera_direction_rate"], vae_camera_direction_rate=v["camera_direction_rate"],
            object_distance_ratio=m["object_distance_ratio"], vae_object_distance_ratio=v["object_distance_ratio"],
            camera_distance_ratio=m["camera_distance_ratio"], vae_camera_distance_ratio=v["camera_distance_ratio"],
            n_camera_pans=m["n_camera_pans"], n_objects=m["n_objects"],
            n_trackable=m["n_trackable"], n_direction=m["n_direction"], n_clips=len(clips),
            seconds_per_clip=model.seconds / len(clips))
        out = dict(bars=bars, model=m, vae=v, static=static.summary, generation=model.generation,
                   model_folder=str(folder))
        from ..weights.io import atomic_write_text

        atomic_write_text(self.work / "eval.json", json.dumps(out, indent=1, default=float) + "\n")
        log("evaluate: " + json.dumps(bars))
        return out


def _evaluate_part(folder: str, clips: list, settings, gen, device: str = "cpu") -> list:
    """Worker of :func:`_evaluate_in_parallel`: generate (on ``device``) and score ``clips`` (with the parent's
    ceilings, so the same objects are trackable) on 1 thread."""
    import torch

    from ..bench.leakage import evaluate_model
    from ..pipeline import FlashI2VPipeline

    torch.set_num_threads(1)
    pipe = FlashI2VPipeline.from_pretrained(folder, device=device)
    return evaluate_model(pipe, clips, settings, generation=gen).records


def _evaluate_in_parallel(pipe, folder, clips, settings, gen, workers: int, device: str = "cpu"):
    """:func:`flashi2v.bench.evaluate_model` of the model folder ``folder`` (loaded here as ``pipe``) on ``clips``
    (ceilings attached), split over ``workers`` processes that are sent their share of the clips. Clip ``i`` is
    sampled with seed ``gen.seed + i`` whichever process makes it, so the videos are a serial run's up to the last
    float bits (batching and thread count differ)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from ..bench.leakage import ModelEvaluation, PipelineModel, summarize

    start = time.perf_counter()
    args = [(str(folder), clips[k::workers], settings, gen, device) for k in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        parts = list(ex.map(_evaluate_part, *zip(*args)))
    records = sorted((r for p in parts for r in p), key=lambda r: r["index"])
    log(f"  {len(records)} clips on {workers} processes")
    return ModelEvaluation(summary=summarize(records), records=records, seconds=time.perf_counter() - start,
                           generation=PipelineModel(pipe, gen).resolved())


class RecipeStopped(Exception):
    """A training stage stopped before its last step (``max_minutes`` or a stop signal, see
    :mod:`flashi2v.train.stopping`); the later stages must not run on its unfinished weights."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flashi2v.default_model.recipe", description=__doc__.split("\n")[0])
    p.add_argument("--work", required=True, help="working folder (data, runs, exports)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--package", help="where the package stage writes the model folder (default WORK/package)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes for world rendering, latent encoding and the evaluation")
    p.add_argument("--eval-device", default="cpu",
                   help="evaluate stage: where the samples are generated (cpu, as for the shipped numbers; cuda, cuda:N)")
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES),
                   help="gpu: the shipped model's recipe (DiT and latent cache on CUDA, 10000 DiT clips, "
                        "recipe/dit_gpu.yaml, dit_gpu_continue.yaml, then dit_gpu_text.yaml); cpu (default): "
                        "everything on a 2-core CPU, an older default model")
    p.add_argument("--focused-captions", action="store_true",
                   help="world stage: 3 full captions plus one per element per clip, for the phases that do not "
                        "set their own (the shipped model's third phase does)")
    p.add_argument("--text-layer", type=int, default=-1,
                   help="base stage: MiniLM hidden layer for the text states of the phases that do not set their "
                        "own (default -1, the last; the shipped model's third phase uses 5)")
    p.add_argument("--set", action="append", default=[], metavar="vae.KEY=VALUE|dit.KEY=VALUE",
                   help="override a key of recipe/vae_image.yaml, vae.yaml or the profile's DiT config (repeatable)")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    from ..errors import FlashI2VError

    try:
        r = Recipe(args.work, package=args.package, workers=args.workers, overrides=args.set,
                   focused_captions=args.focused_captions, text_hidden_layer=args.text_layer, profile=args.profile,
                   eval_device=args.eval_device)
        for s in STAGES:
            if s in stages:
                log(f"stage {s}")
                getattr(r, s)()
    except FlashI2VError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RecipeStopped as e:
        print(f"recipe stopped in stage {e}; its checkpoint is saved, run the same command again to go on",
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
