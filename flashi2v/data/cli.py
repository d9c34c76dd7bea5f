"""``flashi2v data filter``: filter meta JSON annotations into an LMDB (official ``filter_data.py``).

Hook into :mod:`flashi2v.cli` with ``add_data_parser(sub)``; user mistakes raise :class:`~flashi2v.errors.FlashI2VError`
subclasses, which the main CLI prints as one line (exit status 2).
"""

from __future__ import annotations

import sys
import time


def add_data_parser(sub) -> None:
    """Add ``data`` (with its ``filter`` subcommand) to the subparsers ``sub`` of the main parser."""
    p = sub.add_parser("data", help="training data tools (filter meta JSON into an LMDB)", description=(
        "Training data tools. `data filter` applies the official FlashI2V filter rules to the samples of an "
        "annotation file and writes the survivors to an LMDB readable by the training dataset."))
    p.set_defaults(func=lambda args: _print_help(p))
    data_sub = p.add_subparsers(dest="data_command")
    f = data_sub.add_parser("filter", help="filter annotations into filtered_samples_{N}.lmdb", description=(
        "Read the `root_dir,meta.json` lines of the config's ann_txt_path, drop samples by the official rules "
        "(caption, resolution, aspect ratio, size, length, fps, motion, frame count), probe missing resolution/"
        "fps/num_frames from the video files, print a table of drop counts and write the survivors atomically to "
        "save_path/filtered_samples_{N}.lmdb (or filtered_samples_{N}_NAME next to a save_path ending in .lmdb)."))
    f.add_argument("--config", required=True, help="filter YAML (official configs/filter_config.yaml keys)")
    f.add_argument("--output", help="output directory or .lmdb path (overrides save_path)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing output DB of the same name")
    f.set_defaults(func=cmd_data_filter)


def _print_help(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def cmd_data_filter(args) -> int:
    from .filter import FilterConfig, run_filter

    start = time.perf_counter()
    cfg = FilterConfig.from_yaml(args.config)
    if getattr(args, "output", None):
        cfg.save_path = args.output
    result = run_filter(cfg, out=sys.stdout, overwrite=getattr(args, "overwrite", False))
    print(f"wrote {result.output_path} ({result.summary.kept} of {result.summary.total} samples) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0
