"""The training loop: one entry for one process and for ``torchrun`` (FSDP2 + Ulysses context parallelism).

    flashi2v train --config train.yaml [section.key=value ...]

Order of events (:class:`Trainer`): distributed init and mesh → model (scratch / T2V / FlashI2V checkpoint) →
LoRA → ``parallelize()`` → AdamW, warm-up, clipper, EMA → data → resume from the newest complete checkpoint → loop.
Each optimizer step runs ``optim.grad_accum`` micro-steps; each micro-step draws the per-sample randomness from
generators keyed by (seed, step, micro-step, global slot) (see :mod:`flashi2v.train.data`), so a run is
reproducible across world sizes and a resumed run continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ..config import TransformerConfig, preset
from ..errors import ConfigError
from ..flow_matching import TimeSampler, flow_matching_loss, motion_weights
from ..weights.io import atomic_write_text, make_dirs
from .checkpoint import (load_latest, restore_training_state, rng_state, save_checkpoint, set_rng_state,
                         training_state)
from .clipping import GradClipper
from .config import TrainConfig, lr_factor
from .data import Batch, BatchLoader, DistributedEpochSampler, build_source, sample_seed
from .ema import EMA
from .export import MODEL_CONFIG_NAME
from .stopping import StopRequest

log = logging.getLogger("flashi2v.train")


# ------------------------------------------------------------------------------------------------------- model
def build_model(cfg: TrainConfig, device: torch.device) -> nn.Module:
    """The DiT to train, in float32 on ``device``: from scratch (seeded), from T2V weights, or from a checkpoint."""
    from ..models.flashi2v import build_transformer
    from ..weights.transformer import load_transformer

    m = cfg.model
    fields = dict(m.architecture or {})
    if m.init == "scratch":
        try:
            arch = preset(m.preset, **fields) if m.preset else TransformerConfig(**fields)
        except TypeError as e:
            raise ConfigError(f"model.architecture: {e}") from None
        torch.manual_seed(cfg.seed)
        model = build_transformer(arch, device=device)
        if m.condition_init != "zero":
            if not arch.is_flashi2v:
                raise ConfigError(f"model.condition_init={m.condition_init} needs a flashi2v model, "
                                  f"got {arch.model_type}")
            if m.condition_init == "xavier":
                model.init_condition_branches_xavier()
            else:
                model.init_condition_branches_identity()
        return model
    src = Path(m.init)
    if (src / "model_index.json").is_file():
        src = src / "transformer"
    if not src.exists():
        raise ConfigError(f"model.init {m.init} not found (a model folder, a transformer folder or a checkpoint file)")
    # With a checkpoint, model.architecture may give just the target model_type (e.g. flashi2v from T2V weights)
    # or the full architecture (to pin what the tensor shapes cannot tell, e.g. num_heads).
    model_type = fields.pop("model_type", None)
    arch = None
    if fields or m.preset:
        try:
            arch = preset(m.preset, **fields) if m.preset else TransformerConfig(**fields)
        except TypeError as e:
            raise ConfigError(f"model.architecture: {e}") from None
    model, report = load_transformer(src, config=arch, device=device, dtype=torch.float32, from_t2v=m.from_t2v,
                                     model_type=model_type)
    if m.from_t2v:
        log.info("initialised from T2V weights: %s", report.summary())
    return model


_PREFIX_HINT = "use module names of the model (e.g. learnable_proj, fourier_embedding, blocks.0)"


def name_has_prefix(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` is ``prefix`` or lies under it (``prefix`` names a module: "blocks.1" does not match
    "blocks.10.…")."""
    return name == prefix or name.startswith(prefix.rstrip(".") + ".")


def param_groups(model: torch.nn.Module, lr: float, multipliers: dict | None) -> list[dict]:
    """AdamW parameter groups: the trainable parameters at ``lr``, and those whose name starts with a prefix of
    ``multipliers`` ({prefix: factor}) at ``factor * lr`` (the longest matching prefix wins). Wrapper segments added by
    compile / activation checkpointing are ignored in names. A prefix that matches no trainable parameter is a
    ConfigError, never a silently ignored setting."""
    multipliers = dict(multipliers or {})
    order = sorted(multipliers, key=len, reverse=True)
    groups: dict = {None: []}
    groups.update({k: [] for k in order})
    for name, q in model.named_parameters():
        if not q.requires_grad:
            continue
        clean = name.replace("_orig_mod.", "").replace("_checkpoint_wrapped_module.", "")
        key = next((k for k in order if name_has_prefix(clean, k)), None)
        groups[key].append(q)
    empty = [k for k in order if not groups[k]]
    if empty:
        raise ConfigError(f"optim.lr_multipliers: no trainable parameter's name starts with "
                          f"{', '.join(map(repr, empty))}; {_PREFIX_HINT}")
    out = [dict(params=groups[None], lr=lr)] if groups[None] else []
    out += [dict(params=groups[k], lr=lr * float(multipliers[k])) for k in order]
    return out


def freeze(model: torch.nn.Module, prefixes: list | None) -> list[str]:
    """Turn off gradients for the parameters whose name is, or lies under, one of ``prefixes`` (``model.freeze``,
    validated by the config); returns their names. A prefix that matches nothing is a ConfigError, never a silently
    ignored setting."""
    names = [n for n, _ in model.named_parameters()]
    frozen: set[str] = set()
    for p in prefixes or []:
        hit = {n for n in names if name_has_prefix(n, p)}
        if not hit:
            raise ConfigError(f"model.freeze: no parameter's name starts with {p!r}; {_PREFIX_HINT}")
        frozen |= hit
    for n, q in model.named_parameters():
        if n in frozen:
            q.requires_grad_(False)
    return [n for n in names if n in frozen]


def check_latent_shape(config: TransformerConfig, latent_shape) -> None:
    """Raise ConfigError at start-up, not at the first step, when the data's latents [C, T, h, w] cannot go through
    the model: wrong channel count, a size the patch does not divide, more latent frames than a frame embedding has."""
    c, t, h, w = latent_shape
    if c != config.out_dim:
        raise ConfigError(f"the data's latents have {c} channels but the model predicts {config.out_dim}; "
                          "use the VAE the model was built for, or set model.architecture out_dim")
    for name, size, patch in (("frames", t, config.patch_size[0]), ("height", h, config.patch_size[1]),
                              ("width", w, config.patch_size[2])):
        if size % patch:
            raise ConfigError(f"the data's latent {name} ({size}) is not divisible by the model's patch size "
                              f"{tuple(config.patch_size)}; change data.height / data.width / data.num_frames")
    if config.frame_embedding and t > config.frame_embedding:
        raise ConfigError(f"the data has {t} latent frames but model.architecture frame_embedding covers "
                          f"{config.frame_embedding}; set frame_embedding >= {t} or train on fewer frames")


def count_tokens(config: TransformerConfig, latent_shape) -> int:
    pt, ph, pw = config.patch_size
    _, t, h, w = latent_shape
    return (t // pt) * (h // ph) * (w // pw)


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self._started = time.monotonic()  # max_minutes counts from here: set-up and resuming are part of the budget
        self.stop_reason: Optional[str] = None  # why the last fit() stopped before max_steps (None: it did not)
        self._threads_before = torch.get_num_threads()  # restored when fit() returns, or here if set-up fails
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            self._set_up(cfg)
        except BaseException:
            torch.set_num_threads(self._threads_before)
            raise

    def _set_up(self, cfg: TrainConfig) -> None:
        from ..parallel import ParallelConfig, build_mesh, dp_rank, dp_size, init_distributed, parallelize
        from ..paradigms import paradigm_for

        info = init_distributed()
        self.rank, self.world = info.rank, info.world_size
        if cfg.device == "cuda" and info.device.type != "cuda":
            raise ConfigError("device=cuda but no CUDA device is available; use device=cpu (or auto)")
        self.device = torch.device("cpu") if cfg.device == "cpu" else info.device
        if self.device.type == "cuda":  # process-wide, like the thread count; fit() does not restore it
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.parallel.tf32
        self.is_main = self.rank == 0
        self.out = Path(cfg.output_dir)
        p = cfg.parallel
        dtype = p.param_dtype if p.param_dtype != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.pcfg = ParallelConfig(dp_replicate=p.dp_replicate, dp_shard=p.dp_shard, cp=p.cp,
                                   activation_checkpointing=cfg.model.activation_checkpointing,
                                   param_dtype=dtype, compile=p.compile)
        # One process in fp32 needs no mesh (plain tensors, no FSDP); bf16 needs FSDP's mixed precision even alone.
        single = self.world == 1 and self.pcfg.param_dtype == "fp32"
        self.mesh = None if single else build_mesh(self.pcfg, self.world, self.device.type)
        self.dp_rank, self.dp_size = dp_rank(self.mesh), dp_size(self.mesh)

        model = build_model(cfg, self.device)
        self.model_config: TransformerConfig = model.config
        freeze(model, cfg.model.freeze)
        if cfg.lora.enabled:
            from .lora import add_lora

            add_lora(model, cfg.lora)
        self.model = parallelize(model, self.mesh, self.pcfg)
        self.paradigm = paradigm_for(self.model_config, train_cutoff_ratio=tuple(cfg.flow.cutoff_ratio))
        self.time_sampler = TimeSampler(cfg.flow.distribution, cfg.flow.logit_mean, cfg.flow.logit_std, cfg.flow.shift)

        self.params = [q for q in self.model.parameters() if q.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o.lr, o.lr_multipliers), lr=o.lr, betas=tuple(o.betas),
                                           eps=o.eps, weight_decay=o.weight_decay, foreach=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(o, cfg.max_steps))
        self.clipper = GradClipper(cfg.clip.mode, cfg.clip.max_norm, cfg.clip.ema_decay, cfg.clip.num_std)
        self.ema = EMA(self.model, cfg.ema.decay) if cfg.ema.enabled else None

        self.source = build_source(cfg, self.model_config, self.device)
        self.sampler = DistributedEpochSampler(self.source.num_samples, cfg.data.batch_size, self.dp_rank, self.dp_size,
                                               cfg.seed, cfg.data.shuffle)
        self.loader = BatchLoader(self.source, self.sampler, self.device, cfg.data.num_workers)
        self.step = 0
        check_latent_shape(self.model_config, self.source.latent_shape)
        self.tokens_per_sample = count_tokens(self.model_config, self.source.latent_shape)
        self._tb = None
        self._sampler_pipe = None
        self._probe = self._probe_inputs() if cfg.log.probe_every else None

    # -------------------------------------------------------------------------------------------- state
    def app_state(self) -> dict:
        return training_state(self.model, self.optimizer, self.ema)

    def extra_state(self) -> dict:
        return dict(step=self.step, data=self.loader.state_dict(), clipper=self.clipper.state_dict(),
                    scheduler=self.scheduler.state_dict(), rng=rng_state(), world_size=self.world)

    def save(self) -> Path:
        path = save_checkpoint(self.out, self.step, self.app_state(), self.extra_state(), self.cfg.checkpoint.keep_last)
        if self.is_main:
            log.info("saved checkpoint %s", path)
        return path

    def resume(self) -> Optional[int]:
        state = self.app_state()

        def apply(extra: dict) -> None:
            self.step = int(extra["step"])
            self.loader.load_state_dict(extra["data"])
            self.clipper.load_state_dict(extra["clipper"])
            self.scheduler.load_state_dict(extra["scheduler"])
            set_rng_state(extra["rng"])

        step = load_latest(self.out, state, apply)
        if step is not None:
            restore_training_state(self.model, self.optimizer, self.ema, state)
            if self.is_main:
                log.info("resumed from step %d (%s)", step, self.out / "checkpoints")
        return step

    # ---------------------------------------------------------------------------------------------- step
    def micro_step(self, batch: Batch, micro: int) -> torch.Tensor:
        """The loss of one micro-batch (already divided by grad_accum) after its backward pass."""
        cfg = self.cfg
        b = batch.latents.shape[0]
        first_slot = (micro * self.dp_size + self.dp_rank) * b  # the sample's place in this step's global batch
        # per-sample generators on the training device: a CUDA run draws its noise there (a CPU generator would
        # make ~10M normals per step on the host); a CPU run draws exactly what it always did
        gens = [torch.Generator(self.device).manual_seed(sample_seed(cfg.seed, self.step, first_slot + i))
                for i in range(b)]
        drop = torch.stack([torch.rand((), generator=g, device=self.device) for g in gens]) < cfg.data.text_dropout
        context = torch.where(drop[:, None, None], batch.empty_text_emb[None].to(batch.text_emb.dtype),
                              batch.text_emb)
        draws = self.paradigm.draw(batch.latents.shape, gens, time_sampler=self.time_sampler, device=self.device)
        out = self.paradigm.training_loss(self.model, batch.latents, batch.first_frame_latents, context, draws=draws)
        loss = out.loss
        if cfg.flow.motion_weight:
            w = motion_weights(batch.latents, float(cfg.flow.motion_weight))
            loss = flow_matching_loss(out.prediction, batch.latents, out.noise, w)
        (loss / cfg.optim.grad_accum).backward()
        return loss.detach()

    def train_step(self, batches) -> dict:
        self.model.train()
        t0 = time.perf_counter()
        losses = []
        for micro in range(self.cfg.optim.grad_accum):
            losses.append(self.micro_step(next(batches), micro))
        clip = self.clipper(self.params)
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
        if clip.finite:
            self.optimizer.step()
            self.scheduler.step()
        else:
            log.warning("step %d: non-finite gradient norm, update skipped", self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.ema is not None and self.step % self.cfg.ema.every == 0:
            self.ema.update(self.model)
        loss = torch.stack(losses).mean()
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(loss)
            loss /= self.world
        dt = time.perf_counter() - t0
        samples = self.cfg.data.batch_size * self.cfg.optim.grad_accum * self.dp_size
        return dict(loss=float(loss), grad_norm=clip.norm, clip_threshold=clip.threshold, clipped=clip.clipped,
                    lr=lr, step_time=dt, samples_per_s=samples / dt,
                    tokens_per_s=samples * self.tokens_per_sample / dt, memory_gb=self.memory_gb())

    def memory_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return rss / 2**20

    # ---------------------------------------------------------------------------------------------- loop
    def fit(self) -> list[dict]:
        """Train to ``max_steps`` (resuming when configured); the process's torch thread count is restored after."""
        try:
            return self._fit()
        finally:
            torch.set_num_threads(self._threads_before)

    def _fit(self) -> list[dict]:
        cfg = self.cfg
        if self.is_main:
            make_dirs(self.out)
            cfg.save(self.out / "config.yaml")
            atomic_write_text(self.out / MODEL_CONFIG_NAME, json.dumps(self.model_config.to_dict(), indent=2) + "\n")
        if cfg.checkpoint.resume:
            self.resume()
        if self.is_main:
            n = sum(p.numel() for p in self.model.parameters())
            log.info("training %s (%.2fM parameters, %d trainable tensors) on %d process(es): dp %d x cp %d, "
                     "batch %d x accum %d, %d tokens/sample, from step %d to %d", self.model_config.model_type,
                     n / 1e6, sum(p.requires_grad for p in self.model.parameters()), self.world, self.dp_size,
                     self.pcfg.cp, cfg.data.batch_size, cfg.optim.grad_accum, self.tokens_per_sample, self.step,
                     cfg.max_steps)
            c = self.model_config
            if c.unseen_latent_dims:
                per_patch = c.dim + c.unseen_latent_dims  # latent_channels * prod(patch_size)
                log.warning("model.architecture: the patch embedding maps %d latent numbers per patch (%d channels x "
                            "patch %s) to dim %d, so at least %d directions of the noise are invisible to the model and "
                            "stay in every sample; use dim >= %d or a smaller patch_size", per_patch,
                            c.latent_channels, "x".join(map(str, c.patch_size)), c.dim, c.unseen_latent_dims, per_patch)
        history = []
        if self._probe is not None and self.step == 0:
            self.write_probe()
        self.stop_reason = None
        stop = StopRequest(cfg.max_minutes, self._started, group_size=self.world, device=self.device)
        with stop:
            while self.step < cfg.max_steps:
                stats = self.train_step(self.loader)
                stats["step"] = self.step
                history.append(stats)
                reason = stop.check() if self.step < cfg.max_steps else None
                end = self.step == cfg.max_steps or reason is not None
                if self.step % cfg.log.every == 0 or end:
                    self.log_stats(stats)
                if cfg.log.sample_every and self.step % cfg.log.sample_every == 0:
                    self.write_samples()
                if self._probe is not None and (self.step % cfg.log.probe_every == 0 or end):
                    self.write_probe()
                if self.step % cfg.checkpoint.every == 0 or end:
                    self.save()
                if reason is not None:
                    self.stop_reason = reason
                    if self.is_main:
                        print(f"stopped at step {self.step} of {cfg.max_steps}: {reason}; checkpoint saved, run the "
                              "same command again to resume", flush=True)
                    break
        self.loader.close()
        if self._tb is not None:
            self._tb.close()
        return history

    # ------------------------------------------------------------------------------------------- logging
    def log_stats(self, s: dict) -> None:
        if not self.is_main:
            return
        skipped = getattr(self.source, "skip_counts", None)
        msg = (f"step {s['step']}/{self.cfg.max_steps}  loss {s['loss']:.4f}  grad_norm {s['grad_norm']:.3g}"
               f"{' (clipped)' if s['clipped'] else ''}  lr {s['lr']:.3g}  {s['samples_per_s']:.2f} samples/s  "
               f"{s['tokens_per_s']:.0f} tokens/s  mem {s['memory_gb']:.2f} GB")
        if skipped:
            msg += f"  skipped clips {skipped}"
        print(msg, flush=True)
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:  # every logged step, machine-readable
            f.write(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                                for k, v in s.items()}) + "\n")
        tb = self.tensorboard()
        if tb is not None:
            for k in ("loss", "grad_norm", "clip_threshold", "lr", "samples_per_s", "tokens_per_s", "memory_gb"):
                if math.isfinite(s[k]):
                    tb.add_scalar(f"train/{k}", s[k], s["step"])
            tb.flush()

    def tensorboard(self):
        """Rank 0's TensorBoard writer (``output_dir/tensorboard``), made on first use; None without
        ``log.tensorboard``."""
        if not self.cfg.log.tensorboard:
            return None
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"))
        return self._tb

    def write_samples(self) -> None:
        """Videos of the validation (image, prompt) pairs with the current (EMA) weights; every rank takes part in
        the forwards (the model may be sharded), rank 0 writes ``samples/step_{step}/video_{i}.mp4``."""
        from contextlib import nullcontext

        from ..media import write_video
        from ..pipeline import FlashI2VPipeline, GenerationDefaults
        from ..text import load_text_encoder
        from ..vae import WanVAE

        cfg = self.cfg
        if not cfg.log.validation or not cfg.model.pipeline:
            return
        if self._sampler_pipe is None:  # the training model with the run's frozen VAE and text encoder
            folder = Path(cfg.model.pipeline)
            vae = WanVAE.from_pretrained(folder / "vae", dtype=torch.float32, device=self.device)
            te = load_text_encoder(folder / "text_encoder", device=self.device)
            self._sampler_pipe = FlashI2VPipeline(self.model, vae, te, GenerationDefaults())
        pipe = self._sampler_pipe
        d = cfg.data
        ctx = self.ema.swapped_in(self.model) if (self.ema is not None and cfg.log.sample_ema) else nullcontext()
        out_dir = self.out / "samples" / f"step_{self.step:09d}"
        self.model.eval()
        with ctx, torch.no_grad():
            for i, pair in enumerate(cfg.log.validation):
                video = pipe(image=pair.get("image"), prompt=pair["prompt"], num_frames=d.num_frames, height=d.height,
                             width=d.width, num_steps=cfg.log.sample_steps, guidance_scale=cfg.log.sample_guidance,
                             seed=cfg.seed + i, progress=False)
                if self.is_main:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    write_video(video.frames[0], out_dir / f"video_{i}.mp4", fps=int(d.train_fps))
        self.model.train()
        if self.is_main:
            log.info("wrote %d sample videos to %s", len(cfg.log.validation), out_dir)

    # --------------------------------------------------------------------------------------------- probe
    def _probe_inputs(self) -> dict:
        """The reliance probe's fixed inputs (``log.probe_*``), made once at start-up so that a bad setting fails
        before the first step: the cache items (:func:`flashi2v.bench.reliance.probe_batch`, the same for every run
        on this cache) and, with swap words, their edited captions' text states."""
        from ..bench.reliance import describe_swaps, edited_text_states, model_text_encoder, parse_swaps, probe_batch
        from ..errors import InputError

        lg, where = self.cfg.log, f"the latent cache {self.cfg.data.path}"
        swaps = parse_swaps(lg.probe_swap_words, what="log.probe_swap_words")
        try:
            batch = probe_batch(self.source, lg.probe_samples, swaps, where=where)
            edited = None
            if swaps:
                folder = Path(self.cfg.model.pipeline)
                encoder = model_text_encoder(folder, str(self.device))
                edited = edited_text_states(encoder, self.source, batch, swaps, self.model_config.text_dim,
                                            where=f"{folder} and {where}")
                del encoder
        except InputError as e:
            raise ConfigError(f"log.probe_*: {e}") from None
        return dict(batch=batch, edited=edited, edit=describe_swaps(swaps))

    def write_probe(self) -> dict:
        """:func:`flashi2v.bench.reliance.image_reliance` of the current (EMA, with ``log.probe_ema``) weights on the
        fixed probe batch, with the paradigm's sampling settings and noise seeded by the run's seed, so a probe of
        the exported model with ``flashi2v bench reliance`` on the same items gives the same numbers. Every rank
        takes part in the forwards (the model may be sharded); rank 0 appends ``{"step": ..., ...}`` to
        ``probe.jsonl``. Uses no global random state: training continues exactly as without it."""
        from contextlib import nullcontext

        from ..bench.reliance import image_reliance

        lg, p = self.cfg.log, self._probe
        b = p["batch"]
        use_ema = self.ema is not None and lg.probe_ema
        ctx = self.ema.swapped_in(self.model) if use_ema else nullcontext()
        was_training = self.model.training
        self.model.eval()
        with ctx:
            res = image_reliance(self.model, b.latents, b.first_frame_latents, b.text_emb, lg.probe_sigmas,
                                 seed=self.cfg.seed, empty_context=b.empty_text_emb, edited_context=p["edited"],
                                 edit=p["edit"])
        self.model.train(was_training)
        out = dict(step=self.step, ema=use_ema, **res.to_dict())
        if self.is_main:
            with open(self.out / "probe.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(out) + "\n")
            r = res.rows[0]
            msg = (f"probe step {self.step} sigma {r.sigma:g}: frame 0 {r.frame0:.3f} (reliance {r.reliance:+.3f}), "
                   f"frames 1.. {r.rest:.3f} (prompt reliance {r.prompt_reliance:+.4f}")
            print(msg + (f", edit reliance {r.edit_reliance:+.5f})" if p["edit"] else ")"), flush=True)
            tb = self.tensorboard()
            if tb is not None:
                for row in res.rows:
                    for k in ("reliance", "prompt_reliance", "edit_reliance"):
                        v = getattr(row, k)
                        if math.isfinite(v):
                            tb.add_scalar(f"probe/{k}@{row.sigma:g}", v, self.step)
                tb.flush()
        return out


def train(cfg: TrainConfig) -> list[dict]:
    """Run a training job described by ``cfg`` (see :class:`TrainConfig`); returns the per-step statistics."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        import torch.distributed as dist

        if trainer.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
