"""``flashi2v data index | filter | encode``: videos with captions -> meta JSON (:mod:`.index`) -> filtered LMDB
(official ``filter_data.py``) -> latent cache.

Hook into :mod:`flashi2v.cli` with ``add_data_parser(sub)``; user mistakes raise :class:`~flashi2v.errors.FlashI2VError`
subclasses, which the main CLI prints as one line (exit status 2).
"""

from __future__ import annotations

import sys
import time


def add_data_parser(sub) -> None:
    """Add ``data`` (with its ``filter`` subcommand) to the subparsers ``sub`` of the main parser."""
    p = sub.add_parser("data", help="training data tools (index videos, filter meta JSON into an LMDB, encode)",
                       description=(
        "Training data tools. `data index` turns a folder of videos with captions into a meta JSON and a filter "
        "config; `data filter` applies the official FlashI2V filter rules to the samples of an "
        "annotation file and writes the survivors to an LMDB readable by the training dataset; `data encode` "
        "precomputes VAE latents, first-frame latents and text embeddings of such an LMDB into resumable shards."))
    p.set_defaults(func=lambda args: _print_help(p))
    data_sub = p.add_subparsers(dest="data_command")
    i = data_sub.add_parser("index", help="a folder of videos with captions -> meta JSON + filter config",
                            description=(
        "Find the video files under VIDEOS (recursively), pair each with its caption(s) (a .txt beside it with the "
        "same stem, one caption per line; or --captions), probe size, fps and frame count with PyAV, and write "
        "OUTPUT/meta.json, OUTPUT/annotations.txt and OUTPUT/filter.yaml sized for the training clips: the input of "
        "`flashi2v data filter --config OUTPUT/filter.yaml`. Videos without a caption or that cannot be read are "
        "left out and counted."))
    i.add_argument("videos", help="folder holding the video files (.mp4 .mov .mkv .webm .avi .m4v)")
    i.add_argument("--output", required=True, help="dataset folder to write (new or empty)")
    i.add_argument("--captions", help="CSV with path,caption columns (paths relative to VIDEOS; one row per caption) "
                                      "or a JSON object {path: caption or [captions]}; default: sidecar .txt files")
    i.add_argument("--height", type=int, default=480, help="training clip height (default 480)")
    i.add_argument("--width", type=int, default=832, help="training clip width (default 832)")
    i.add_argument("--num-frames", type=int, default=49, help="training clip frames, 1 + 4k (default 49)")
    i.add_argument("--train-fps", type=float, default=16.0, help="frame rate clips are resampled to (default 16)")
    i.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    i.set_defaults(func=cmd_data_index)
    f = data_sub.add_parser("filter", help="filter annotations into filtered_samples_{N}.lmdb", description=(
        "Read the `root_dir,meta.json` lines of the config's ann_txt_path, drop samples by the official rules "
        "(caption, resolution, aspect ratio, size, length, fps, motion, frame count), probe missing resolution/"
        "fps/num_frames from the video files, print a table of drop counts and write the survivors atomically to "
        "save_path/filtered_samples_{N}.lmdb (or filtered_samples_{N}_NAME next to a save_path ending in .lmdb)."))
    f.add_argument("--config", required=True, help="filter YAML (official configs/filter_config.yaml keys)")
    f.add_argument("--output", help="output directory or .lmdb path (overrides save_path)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing output DB of the same name")
    f.set_defaults(func=cmd_data_filter)
    e = data_sub.add_parser("encode", help="precompute VAE latents and text embeddings into a latent cache", description=(
        "Run every sample of a filtered LMDB through the training dataset (text dropout 0) and store its VAE "
        "latents, its first-frame latent (encoded alone) and its caption embedding (trimmed to its length) in "
        "shard_{k:06d}.safetensors files of --shard-size samples, plus the embedding of the empty prompt and a "
        "manifest.json. Resumable: rerun the same command to continue an interrupted run. Read it back with "
        "flashi2v.data.latent_cache.LatentCacheDataset."))
    e.add_argument("--lmdb", required=True, help="filtered LMDB (or folder of them) from `flashi2v data filter`")
    e.add_argument("--model", required=True, help="model folder with vae/ and text_encoder/ (model_index.json)")
    e.add_argument("--output", required=True, help="cache folder (created, or resumed with the same arguments)")
    e.add_argument("--height", type=int, default=480, help="sample height (default 480)")
    e.add_argument("--width", type=int, default=832, help="sample width (default 832)")
    e.add_argument("--num-frames", type=int, default=49, help="frames per sample, 1 + 4k (default 49)")
    e.add_argument("--train-fps", type=float, default=16.0, help="frame rate clips are resampled to (default 16)")
    e.add_argument("--shard-size", type=int, default=64, help="samples per shard file (default 64)")
    e.add_argument("--seed", type=int, default=0, help="seed of the frame-window draws (default 0)")
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    e.add_argument("--workers", type=int, default=1,
                   help="processes encoding shards in parallel (CPU; default 1); the cache is the same either way")
    e.add_argument("--vae-one-pass", action="store_true",
                   help="encode each clip in one pass over time instead of the official chunks (the same latents up "
                        "to float rounding, faster; part of the cache's identity)")
    e.set_defaults(func=cmd_data_encode)


def _print_help(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def cmd_data_index(args) -> int:
    from .index import index_videos

    res = index_videos(args.videos, args.output, captions=args.captions, height=args.height, width=args.width,
                       num_frames=args.num_frames, train_fps=args.train_fps, overwrite=args.overwrite)
    print(res.summary())
    print(f"next: flashi2v data filter --config {res.folder / 'filter.yaml'} --output {res.folder / 'filtered'}")
    return 0


def cmd_data_encode(args) -> int:
    from .latent_cache import encode_cache

    start = time.perf_counter()
    m = encode_cache(args.lmdb, args.model, args.output, height=args.height, width=args.width,
                     num_frames=args.num_frames, train_fps=args.train_fps, shard_size=args.shard_size, seed=args.seed,
                     device=args.device, log=lambda msg: print(msg, flush=True), workers=args.workers,
                     vae_one_pass=args.vae_one_pass)
    skipped = ", ".join(f"{k}: {v}" for k, v in m["skip_counts"].items()) or "none"
    print(f"wrote {args.output} ({m['num_samples']} of {m['num_source_samples']} samples in {m['num_shards']} shards; "
          f"skipped {skipped}) in {time.perf_counter() - start:.1f} s")
    return 0


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
