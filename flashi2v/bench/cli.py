"""``flashi2v bench leakage``: the conditional-image-leakage benchmark (``docs/leakage_benchmark.md``).

Hook into :mod:`flashi2v.cli` with ``register(sub)``; bad arguments raise :class:`~flashi2v.errors.InputError` with a
one-line message, which the main CLI prints (exit status 2).
"""

from __future__ import annotations

import sys

from ..errors import InputError


def register(subparsers):
    """Add ``bench`` (with its ``leakage`` subcommand) to the main parser's ``subparsers``; returns the ``bench``
    sub-subparsers so that other benchmarks can be added beside it."""
    from .leakage import DEFAULT_ARCH, EVAL_SPLITS, PARADIGMS, REFERENCES

    b = subparsers.add_parser("bench", help="benchmarks (conditional image leakage)", description=(
        "Benchmarks. `bench leakage` trains the three image-to-video paradigms on the procedural world with one "
        "backbone, data and budget, and measures conditional image leakage in and out of domain."))
    b.set_defaults(func=lambda args: _help(b))
    bsub = b.add_subparsers(dest="bench_command")
    p = bsub.add_parser("leakage", help="conditional image leakage: FlashI2V vs concat baselines, in/out of domain",
                        description=(
        "Build the world data (train split -> filter -> latent cache; evaluation splits test, ood_background, "
        "ood_combo, ood_motion), train flashi2v, i2v-concat-mask and i2v-concat-noise with the same backbone, data, "
        "seed and budget (or take --models), export them, generate from each evaluation clip's first frame and "
        "caption, and score against the ground truth: first-frame PSNR, chunk-wise PSNR/SSIM (Figure 7a), object "
        "trajectory error vs the static video, direction agreement, dynamic degree, flicker, colour drift; the "
        "VAE round trip is the PSNR ceiling. Writes results.json, per_clip.json, results.md and plots/*.png. "
        "Resumable: rerunning with the same settings reuses finished stages in --workdir."))
    p.add_argument("--base", help="model folder providing the VAE and text encoder (needed to train)")
    p.add_argument("--workdir", help="working folder for data, runs, models and evaluations "
                   "(default outputs/leakage, or outputs/leakage-quick with --quick)")
    p.add_argument("--output", help="results folder (default WORKDIR/results)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes (8 train clips, 2 per split, 5x32x32, "
                   "a 1-layer dim-32 DiT, 4 steps, 2 sampling steps); explicit options still apply")
    p.add_argument("--paradigms", nargs="+", choices=PARADIGMS, help=f"paradigms to train (default all: {' '.join(PARADIGMS)})")
    p.add_argument("--models", nargs="+", default=[], metavar="NAME=FOLDER",
                   help="evaluate these model folders as given (a paradigm name replaces its training)")
    p.add_argument("--no-train", action="store_true", help="train nothing: evaluate only --models")
    g = p.add_argument_group("data")
    g.add_argument("--train-clips", type=int, help="world train clips (default 1000)")
    g.add_argument("--eval-clips", type=int, help="clips per evaluation split (default 100)")
    g.add_argument("--splits", nargs="+", choices=EVAL_SPLITS, help="evaluation splits (default all four)")
    g.add_argument("--frames", type=int, help="frames per clip, 4k+1 (default 17)")
    g.add_argument("--size", type=int, help="height and width, multiple of 16 (default 128)")
    g.add_argument("--fps", type=float, help="clip frame rate (default 16)")
    g.add_argument("--data-seed", type=int, help="seed of clip 0 of every split (default 0)")
    g.add_argument("--workers", type=int, help="world rendering processes (default: CPU count)")
    g.add_argument("--gt-source", choices=["render", "video"], help="ground truth frames: exact render (default) "
                   "or the decoded MP4")
    g.add_argument("--vae-one-pass", action="store_const", const=True, default=None,
                   help="latent cache: each clip through the VAE in one pass instead of the official chunks (the "
                        "same latents up to float rounding, about twice as fast on a CPU)")
    t = p.add_argument_group("training (identical for every paradigm)")
    t.add_argument("--steps", type=int, help="optimizer steps (default 2000)")
    t.add_argument("--batch", type=int, help="batch size (default 8)")
    t.add_argument("--lr", type=float, help="learning rate (default 2e-4)")
    t.add_argument("--warmup", type=int, help="linear warm-up steps (default 50)")
    t.add_argument("--seed", type=int, help="training seed (default 0)")
    t.add_argument("--text-dropout", type=float, help="probability of the empty prompt (default 0.1)")
    t.add_argument("--ema-decay", type=float, help="EMA decay (default min(0.999, 1 - 10/steps))")
    t.add_argument("--weights", choices=["ema", "raw"], help="exported weights (default ema)")
    t.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default min(steps, 500))")
    t.add_argument("--dim", type=int, help=f"DiT width (default {DEFAULT_ARCH['dim']})")
    t.add_argument("--ffn-dim", type=int, help=f"DiT FFN width (default {DEFAULT_ARCH['ffn_dim']})")
    t.add_argument("--heads", type=int, help=f"attention heads (default {DEFAULT_ARCH['num_heads']})")
    t.add_argument("--layers", type=int, help=f"transformer blocks (default {DEFAULT_ARCH['num_layers']})")
    t.add_argument("--freq-dim", type=int, help=f"time embedding size (default {DEFAULT_ARCH['freq_dim']})")
    t.add_argument("--arch", nargs="+", default=[], metavar="KEY=VALUE", help="other TransformerConfig fields "
                   "(text_len and text_dim default to the base text encoder's)")
    t.add_argument("--train-override", nargs="+", default=[], metavar="[PARADIGM:]SECTION.KEY=VALUE",
                   help="extra TrainConfig overrides for every paradigm, e.g. flow.shift=1.0 clip.mode=none, or for "
                        "one, e.g. flashi2v:model.condition_init=identity 'flashi2v:model.freeze=[learnable_proj]'")
    e = p.add_argument_group("evaluation")
    e.add_argument("--sample-steps", type=int, help="sampling steps (default 20)")
    e.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model folder's)")
    e.add_argument("--shift", type=float, help="sampling time shift (default: the model folder's)")
    e.add_argument("--sample-seed", type=int, help="noise seed of clip 0; clip i uses seed + i (default 0)")
    e.add_argument("--negative-prompt", help="negative prompt (default: the empty prompt)")
    e.add_argument("--gen-batch", type=int, help="clips generated per pipeline call (default 1)")
    e.add_argument("--anchor-first-frame", action="store_const", const=True, default=None,
                   help="pin latent frame 0 to the image while sampling (default: the folder's, off)")
    e.add_argument("--chunks", type=int, help="temporal chunks (default 4)")
    e.add_argument("--include-first", action="store_true", help="score frame 0 (the condition frame) in the first "
                   "chunk and the clip means too (default: it is scored only by the first-frame PSNR)")
    e.add_argument("--flow", choices=["tvl1", "ilk", "none"], help="optical flow of the dynamic degree (default "
                   "tvl1; none skips it)")
    e.add_argument("--references", nargs="*", choices=REFERENCES, help="reference rows (default all three)")
    e.add_argument("--no-ceiling", action="store_true", help="score trajectories on every object tracked in the "
                   "ground truth, also those the VAE's round trip loses (default: only objects the round trip keeps "
                   "trackable)")
    e.add_argument("--track-tol-max", type=float, help="widest per-object colour tolerance of the tracker, RGB "
                   "0..255 (default 100; 40 gives the fixed tolerance)")
    e.add_argument("--save-videos", type=int, help="MP4s kept per model and split (default 2)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads during the run (default: unchanged; 1 is often "
                   "fastest for tiny models on a busy CPU)")
    p.set_defaults(func=cmd_leakage)

    r = bsub.add_parser("reliance", help="how much a model uses its condition image and its prompt (one-step "
                        "predictions, right vs wrong image / prompt)", description=(
        "For items of a latent cache, noise the clean latents to a few sigmas, take one model step and score the clean "
        "prediction on latent frame 0 (the condition frame) and on the other frames as MSE / Var(x0), with the "
        "clip's own image and with another clip's. reliance = frame-0 error with the wrong image minus with the right "
        "one (0: the image is ignored). The same is done for the prompt on frames 1.. (another clip's caption, and "
        "the cache's empty prompt): prompt reliance = wrong-prompt minus right-prompt error. FlashI2V models also "
        "report std(phi(z)) against std(z). See docs/leakage_benchmark.md."))
    r.add_argument("--model", nargs="+", required=True, metavar="FOLDER", help="model folder(s) or transformer folder(s)")
    r.add_argument("--cache", required=True, help="latent cache (`flashi2v data encode`) to take the samples from")
    r.add_argument("--samples", type=int, default=16, help="cache items, spread evenly (default 16)")
    r.add_argument("--sigmas", type=float, nargs="+", help="noise levels in (0, 1] (default 0.98 0.9 0.7 0.5 0.3)")
    r.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    r.add_argument("--swap-words", nargs="+", default=[], metavar="WORD=WORD",
                   help="also score frames 1.. with each caption's words swapped both ways (e.g. left=right up=down; "
                   "only captions the swap changes are sampled; needs a model folder with the cache's text encoder): "
                   "edit reliance = edited minus right error, 0 when the model ignores those words")
    r.add_argument("--json", help="also write the results to this JSON file")
    r.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    r.set_defaults(func=cmd_reliance)
    return bsub


def cmd_reliance(args) -> int:
    import json
    from pathlib import Path

    from .reliance import DEFAULT_SIGMAS, parse_swaps, reliance_from_cache

    swaps = parse_swaps(args.swap_words)
    if args.json:  # a results file it cannot write is an error now, not after the models ran
        from ..weights.io import check_output_path

        if Path(args.json).is_dir():
            raise InputError(f"--json {args.json} is a folder; give a file path such as "
                             f"{Path(args.json) / 'reliance.json'}")
        check_output_path(args.json)
    out = {}
    for folder in args.model:
        res = reliance_from_cache(folder, args.cache, samples=args.samples, sigmas=args.sigmas or DEFAULT_SIGMAS,
                                  seed=args.seed, device=args.device, swaps=swaps)
        print(f"## {folder}\n{res.table()}\n", flush=True)
        out[folder] = res.to_dict()
    if args.json:
        from ..weights.io import atomic_write_text, make_dirs

        make_dirs(Path(args.json).parent)
        atomic_write_text(Path(args.json), json.dumps(out, indent=1))
    return 0


def _help(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _pairs(items, what: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InputError(f"{what} {item!r} must look like NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


def config_from_args(args):
    """A :class:`~flashi2v.bench.leakage.LeakageConfig` from parsed arguments (``--quick`` sets the base values,
    explicit options override)."""
    import dataclasses

    import yaml

    from .leakage import DEFAULT_ARCH, QUICK_ARCH, LeakageConfig

    cfg = LeakageConfig.quick() if args.quick else LeakageConfig()
    over: dict = {}
    simple = dict(base="base", workdir="workdir", output="output", train_clips="train_clips",
                  eval_clips="eval_clips", frames="num_frames", fps="fps", data_seed="data_seed", workers="workers",
                  gt_source="gt_source", vae_one_pass="vae_one_pass", steps="steps", batch="batch_size", lr="lr",
                  warmup="warmup_steps",
                  seed="seed", text_dropout="text_dropout", ema_decay="ema_decay", weights="weights",
                  checkpoint_every="checkpoint_every", save_videos="save_videos", device="device",
                  threads="threads")
    for a, f in simple.items():
        v = getattr(args, a, None)
        if v is not None:
            over[f] = v
    if "workdir" not in over:
        over["workdir"] = "outputs/leakage-quick" if args.quick else "outputs/leakage"
    if args.size is not None:
        over["height"] = over["width"] = args.size
    if args.splits:
        over["eval_splits"] = tuple(args.splits)
    if args.paradigms:
        over["paradigms"] = tuple(args.paradigms)
    if args.no_train:
        over["paradigms"] = ()
    if args.references is not None:
        over["references"] = tuple(args.references)
    over["models"] = _pairs(args.models, "--models")
    if args.train_override:
        over["train_overrides"] = tuple(args.train_override)
    arch = dict(QUICK_ARCH if args.quick else DEFAULT_ARCH)
    for a, f in (("dim", "dim"), ("ffn_dim", "ffn_dim"), ("heads", "num_heads"), ("layers", "num_layers"),
                 ("freq_dim", "freq_dim")):
        v = getattr(args, a)
        if v is not None:
            arch[f] = v
    for k, v in _pairs(args.arch, "--arch").items():
        arch[k] = yaml.safe_load(v)
    over["architecture"] = arch
    gen = {}
    for a, f in (("sample_steps", "num_steps"), ("guidance", "guidance_scale"), ("shift", "shift"),
                 ("sample_seed", "seed"), ("negative_prompt", "negative_prompt"), ("gen_batch", "batch_size"),
                 ("anchor_first_frame", "anchor_first_frame")):
        v = getattr(args, a)
        if v is not None:
            gen[f] = v
    if gen:
        over["generation"] = dataclasses.replace(cfg.generation, **gen)
    ev = {}
    if args.chunks is not None:
        ev["num_chunks"] = args.chunks
    if args.include_first:
        ev["skip_first"] = False
    if args.flow is not None:
        ev["dynamic_method"] = args.flow
    if args.track_tol_max is not None:
        ev["track_tol_max"] = args.track_tol_max
    if args.no_ceiling:
        over["ceiling"] = False
    if ev:
        over["settings"] = dataclasses.replace(cfg.settings, **ev)
    return dataclasses.replace(cfg, **over)


def check_leakage_args(args) -> None:
    """One-line errors, before any stage runs, for options that would otherwise stop the run late (after the data or
    training stages) or with a traceback: non-finite numbers, sampling steps < 1, an unusable device or folder."""
    import math
    from pathlib import Path

    from ..precision import resolve_device
    from ..weights.io import check_output_path

    for flag in ("fps", "lr", "text_dropout", "ema_decay", "guidance", "shift", "track_tol_max"):
        v = getattr(args, flag, None)
        if v is not None and not math.isfinite(v):
            raise InputError(f"--{flag.replace('_', '-')} must be a finite number, got {v}")
    if args.shift is not None and args.shift <= 0:
        raise InputError(f"--shift must be > 0, got {args.shift}")
    for flag in ("sample_steps", "gen_batch"):
        v = getattr(args, flag, None)
        if v is not None and v < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be a positive integer, got {v}")
    if args.device not in (None, "auto"):
        resolve_device(args.device)
    for flag in ("workdir", "output"):
        v = getattr(args, flag, None)
        if v is not None:
            if Path(v).exists() and not Path(v).is_dir():
                raise InputError(f"--{flag} {v} is a file; pass a folder")
            check_output_path(v)


def cmd_leakage(args) -> int:
    from .leakage import run_leakage

    check_leakage_args(args)
    run_leakage(config_from_args(args))
    return 0

