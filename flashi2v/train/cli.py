"""``flashi2v train`` and ``flashi2v export`` (hooked into :mod:`flashi2v.cli` by :func:`add_train_parsers`)."""

from __future__ import annotations

import time


def add_train_parsers(sub) -> None:
    t = sub.add_parser("train", help="train or fine-tune a model (one process or torchrun)", description=(
        "Train a FlashI2V / concat-I2V / T2V DiT from a YAML config (see docs/training.md). Extra arguments "
        "section.key=value override the YAML (e.g. optim.lr=1e-4 parallel.cp=2). The same command runs under "
        "`torchrun --nproc-per-node N -m flashi2v.cli train ...` for FSDP2 / context parallelism. A run resumes from "
        "the newest complete checkpoint in its output_dir."))
    t.add_argument("--config", help="training YAML (omit to use the defaults plus overrides)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-4 max_steps=100")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="write a model folder from a training checkpoint", description=(
        "Write a model folder (transformer + the run's VAE and text encoder) from the newest complete checkpoint "
        "of a training run (or a given step directory), with the EMA or the raw weights; LoRA adapters are merged."))
    e.add_argument("run", help="training output_dir, or one of its checkpoints/step_* folders")
    e.add_argument("--output", required=True, help="model folder to write")
    e.add_argument("--weights", choices=["ema", "raw"], default="ema", help="EMA (default) or raw weights")
    e.add_argument("--step", type=int, help="export this step instead of the newest")
    e.add_argument("--pipeline", help="model folder whose vae/ and text_encoder/ to include (default: the run's "
                                      "model.pipeline); without one only the transformer folder is written")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)


def cmd_train(args) -> int:
    from .config import TrainConfig
    from .trainer import train

    cfg = TrainConfig.from_yaml(args.config, args.overrides)
    history = train(cfg)
    import os

    if history and int(os.environ.get("RANK", "0")) == 0:
        last = history[-1]
        done = "trained to" if last["step"] >= cfg.max_steps else f"stopped early (of {cfg.max_steps}) at"
        print(f"{done} step {last['step']} (last loss {last['loss']:.4f}); checkpoints in {cfg.output_dir}/checkpoints")
    return 0


def cmd_export(args) -> int:
    from .export import export

    start = time.perf_counter()
    out = export(args.run, args.output, weights=args.weights, step=args.step, pipeline=args.pipeline,
                 overwrite=args.overwrite)
    print(f"wrote {out} ({args.weights} weights) in {time.perf_counter() - start:.1f} s")
    return 0
