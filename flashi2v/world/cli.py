"""``flashi2v world``: write a procedural world dataset (docs/world.md).

Hook into :mod:`flashi2v.cli` with ``register(sub)``; bad arguments raise :class:`~flashi2v.errors.InputError` with a
one-line message, which the main CLI prints (exit status 2).
"""

from __future__ import annotations

import os

from ..errors import InputError


def register(subparsers):
    """Add the ``world`` command to the subparsers ``subparsers`` of the main parser; returns its parser."""
    from .splits import SPLITS

    p = subparsers.add_parser("world", help="write a procedural video dataset with exact ground truth", description=(
        "Render clips of the procedural world (photo or texture background under a moving camera, 1-3 moving "
        "shapes, lighting changes) and write them as H.264 MP4s with an official meta JSON, an annotation file for "
        "`flashi2v data filter`, a matching filter.yaml and ground_truth.json (scene spec, per-frame camera, "
        "visible boxes and centroids). Clip i is scene seed+i of the split. Written atomically. Splits: "
        + "; ".join(f"{s.name}: {s.description}" for s in SPLITS.values()) + "."))
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--split", default="train", help=f"one of {', '.join(SPLITS)} (default train)")
    p.add_argument("--num", type=int, default=100, help="number of clips (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first clip (default 0)")
    p.add_argument("--frames", type=int, default=17, help="frames per clip (default 17)")
    p.add_argument("--size", type=int, default=128, help="height and width in pixels, even (default 128)")
    p.add_argument("--height", type=int, help="height (overrides --size)")
    p.add_argument("--width", type=int, help="width (overrides --size)")
    p.add_argument("--fps", type=float, default=16.0, help="frame rate (default 16)")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: CPU count)")
    p.add_argument("--captions", type=int, default=1, help="captions per clip; >1 stores a list (default 1)")
    p.add_argument("--focused-captions", action="store_true",
                   help="also store one caption per element (camera, each object, lighting) in each clip's caption "
                        "list: a training aid for binding motion words to what they move")
    p.add_argument("--crf", type=int, default=None, help="H.264 CRF 0..51 (default 20)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing world dataset at --out")
    p.set_defaults(func=cmd_world)
    return p


def _positive(name: str, value, low: int = 1):
    if value is not None and value < low:
        raise InputError(f"--{name} must be at least {low}, got {value}")


def cmd_world(args) -> int:
    from .splits import SPLITS
    from .writer import write_dataset

    if args.split not in SPLITS:
        raise InputError(f"unknown --split {args.split!r}; choose one of {', '.join(SPLITS)}")
    _positive("num", args.num)
    _positive("seed", args.seed, 0)
    _positive("frames", args.frames, 2)
    _positive("workers", args.workers)
    _positive("captions", args.captions)
    height = args.height if args.height is not None else args.size
    width = args.width if args.width is not None else args.size
    for name, v in (("height", height), ("width", width)):
        if v < 32 or v % 2:
            raise InputError(f"--{name} must be an even number of pixels >= 32 (H.264 yuv420p), got {v}")
    if args.crf is not None and not 0 <= args.crf <= 51:
        raise InputError(f"--crf must be from 0 (lossless) to 51, got {args.crf}")
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    ds = write_dataset(args.out, args.split, args.num, args.seed, num_frames=args.frames, height=height, width=width,
                       fps=args.fps, workers=workers, num_captions=args.captions,
                       focused_captions=args.focused_captions, crf=args.crf,
                       overwrite=args.overwrite, progress=True)
    print(ds.summary())
    return 0
