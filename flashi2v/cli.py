"""``flashi2v`` command line: ``generate`` (image/text -> video), ``convert`` (official files -> model folder) and
``data filter`` (meta JSON -> filtered LMDB).

User mistakes print one line on stderr and exit with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import FlashI2VError, InputError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as a single line (exit 2)."""

    def error(self, message: str):  # noqa: D401
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


# -------------------------------------------------------------------------------------------------- generate
def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate a video from an image and a prompt", description=(
        "Generate a video. Unset options use the model folder's defaults (the paper's: 49 frames, 480x832, 50 "
        "steps, shift 7, guidance 5, cutoff ratio 0.1)."))
    p.add_argument("--model", help="model folder (built by `flashi2v convert` or `flashi2v export`); default: the "
                   "embedded default model (a tiny FlashI2V trained on the procedural world, 17x128x128)")
    p.add_argument("--image", help="condition image (PNG, JPEG, WebP); omit for a text-to-video model")
    p.add_argument("--prompt", help="text prompt")
    p.add_argument("--negative-prompt", help="negative prompt (default: Wan's)")
    p.add_argument("--output", default="output.mp4", help="output file: .mp4 (H.264), .gif, or a folder for PNG frames")
    p.add_argument("--prompts-txt", help="batch mode: one prompt per line (paired with --images-txt)")
    p.add_argument("--images-txt", help="batch mode: one image path per line")
    p.add_argument("--output-dir", default="samples", help="batch mode: where video_{i}.mp4 go")
    p.add_argument("--grid", action="store_true", help="batch mode: also write video_grid.mp4")
    p.add_argument("--num-frames", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--keep-aspect", action="store_true", help="choose height x width near the target area with the image's aspect ratio")
    p.add_argument("--steps", type=int, dest="num_steps")
    p.add_argument("--shift", type=float)
    p.add_argument("--guidance", type=float, dest="guidance_scale")
    p.add_argument("--cutoff-ratio", type=float)
    p.add_argument("--anchor-first-frame", action="store_const", const=True, default=None,
                   help="pin latent frame 0 to the image while sampling, so the first frame is the image's VAE round "
                   "trip (replacement sampling; not part of FlashI2V, off by default)")
    p.add_argument("--seed", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1, help="videos per prompt (seeds seed, seed+1, ...)")
    p.add_argument("--fps", type=int, help="output frame rate (default: the model's, 16)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="DiT compute dtype")
    p.add_argument("--offload", action="store_true", help="keep text encoder and VAE on the CPU while the DiT runs")
    p.add_argument("--vae-official-chunks", action="store_true",
                   help="decode one latent frame at a time as the official code does, even for clips small enough "
                        "for one pass (slower; the same video up to float rounding)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--cp", type=int, default=1, help="under torchrun: context-parallel ranks per video (default 1)")
    p.add_argument("--shard", action="store_true",
                   help="under torchrun: FSDP-shard the DiT and text encoder over all ranks (models too big for one device)")
    p.set_defaults(func=cmd_generate)


def _output_format(path: Path) -> str | None:
    """The format ``_write`` writes ``path`` in (None: by its extension)."""
    return "png" if path.suffix == "" else None


def _write(frames, path: Path, fps: int) -> None:
    from .media import write_video

    write_video(frames, path, fps=fps, format=_output_format(path))


def cmd_generate(args) -> int:
    start = time.perf_counter()
    batch_mode = bool(args.prompts_txt or args.images_txt)
    if batch_mode:
        if args.prompt or args.image:
            raise InputError("use either --prompt/--image or --prompts-txt/--images-txt, not both")
    elif args.prompt is None:
        raise InputError("no prompt: pass --prompt TEXT (or --prompts-txt for batch mode)")
    if args.fps is not None and args.fps <= 0:
        raise InputError(f"--fps must be positive, got {args.fps}")
    for name in ("image",):
        value = getattr(args, name)
        if value is not None and not Path(value).is_file():
            raise InputError(f"--{name} file not found: {value}")
    # an output it cannot write is an error now, not after sampling (batch mode writes .mp4)
    if not batch_mode:
        from .media import check_output, resolve_format

        if args.batch > 1:
            resolve_format(args.output, _output_format(Path(args.output)))
        else:
            check_output(args.output, _output_format(Path(args.output)))
    if batch_mode or args.batch > 1:
        from .weights.io import check_output_path

        out_dir = _batch_outputs(args, batch_mode)[0]
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"{out_dir} is an existing file, not a folder for the videos; choose another "
                             f"{'--output-dir' if batch_mode else '--output'}")
        check_output_path(out_dir)
    if args.model is None:
        from .default_model import default_model_path

        model_dir = default_model_path()
    else:
        model_dir = Path(args.model)
        if not model_dir.is_dir():
            raise InputError(f"--model folder not found: {model_dir} (build one with `flashi2v convert`)")

    from .parallel.inference import launched_distributed

    if args.cp < 1:
        raise InputError(f"--cp must be a positive integer, got {args.cp}")
    distributed = launched_distributed() or args.cp > 1
    layout = None
    if distributed:
        from .parallel.inference import init_inference

        layout = init_inference(args.cp, args.shard)
        if args.device is None:
            args.device = str(layout.device)

    from .pipeline import FlashI2VPipeline

    pipe = FlashI2VPipeline.from_pretrained(model_dir, device=args.device, dtype=args.dtype, offload=args.offload)
    if args.vae_official_chunks:
        pipe.vae.disable_one_pass()
    if batch_mode:
        from .media.video import read_lines, read_prompt_image_pairs

        if pipe.is_i2v:
            if not (args.prompts_txt and args.images_txt):
                raise InputError("batch mode for an image-to-video model needs both --prompts-txt and --images-txt")
            pairs = read_prompt_image_pairs(args.prompts_txt, args.images_txt)
            prompts, images = [p for p, _ in pairs], [str(i) for _, i in pairs]
        else:
            if not args.prompts_txt:
                raise InputError("batch mode needs --prompts-txt")
            prompts, images = read_lines(args.prompts_txt), None
            if not prompts:
                raise InputError(f"{args.prompts_txt} has no prompts")
    else:
        prompts, images = [args.prompt], ([args.image] if args.image else None)

    options = {k: getattr(args, k) for k in ("num_frames", "height", "width", "num_steps", "shift", "guidance_scale",
                                             "cutoff_ratio", "negative_prompt", "anchor_first_frame")}
    fps = args.fps or pipe.defaults.fps
    if layout is not None:
        return _generate_distributed(args, pipe, layout, prompts, images, options, fps, batch_mode, start)
    outputs = []
    for i, prompt in enumerate(prompts):  # one prompt at a time: memory stays that of a single video batch
        out = pipe(image=images[i] if images else None, prompt=prompt, seed=args.seed + i * args.batch,
                   batch=args.batch, keep_aspect=args.keep_aspect, progress=not args.quiet, **options)
        outputs.append(out)

    written: list[Path] = []
    if batch_mode or args.batch > 1:
        from .weights.io import make_dirs

        out_dir, ext = _batch_outputs(args, batch_mode)
        make_dirs(out_dir)
        k = 0
        for out in outputs:
            for frames in out.frames:
                written.append(out_dir / f"video_{k}{ext}")
                _write(frames, written[-1], fps)
                k += 1
        if args.grid:
            import torch

            from .media import make_grid

            all_frames = torch.cat([o.frames for o in outputs])
            if len({tuple(f.shape) for f in all_frames}) == 1:
                written.append(out_dir / "video_grid.mp4")
                _write(make_grid(all_frames), written[-1], fps)
    else:
        written.append(Path(args.output))
        _write(outputs[0].frames[0], written[0], fps)
    f = outputs[0].frames
    where = written[0] if len(written) == 1 else f"{len(written)} files in {written[0].parent}"
    print(f"wrote {where} ({f.shape[1]} frames, {f.shape[2]}x{f.shape[3]}, {fps} fps) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def _batch_outputs(args, batch_mode: bool) -> tuple[Path, str]:
    """Folder and extension of video_{k}: --output-dir / .mp4 in batch mode; else beside --output with its suffix
    (no suffix: PNG frame folders)."""
    if batch_mode:
        return Path(args.output_dir), ".mp4"
    return Path(args.output).with_suffix(""), Path(args.output).suffix


def _generate_distributed(args, pipe, layout, prompts, images, options, fps, batch_mode, start) -> int:
    """torchrun generation: videos (prompt i, copy j, seed = seed + i*batch + j, as in one process) dealt to the
    data-parallel ranks; each CP group makes its videos together; one rank per CP group writes them."""
    from .parallel.inference import distribute_pipeline

    distribute_pipeline(pipe, layout)
    items = [(i, j) for i in range(len(prompts)) for j in range(args.batch)]
    single = not batch_mode and len(items) == 1
    out_dir, ext = _batch_outputs(args, batch_mode)
    paths = [Path(args.output)] if single else [out_dir / f"video_{k}{ext}" for k in range(len(items))]
    shape = None
    for k in layout.assign(len(items)):
        i, j = items[k if k is not None else 0]  # None: a padding video (FSDP ranks must run in lockstep)
        out = pipe(image=images[i] if images else None, prompt=prompts[i], seed=args.seed + i * args.batch + j,
                   batch=1, keep_aspect=args.keep_aspect, progress=not args.quiet and layout.is_main, **options)
        shape = tuple(out.frames.shape[1:4])
        if k is not None and layout.writes:
            paths[k].parent.mkdir(parents=True, exist_ok=True)
            _write(out.frames[0], paths[k], fps)
    layout.barrier()
    if layout.is_main:
        written = list(paths)
        if args.grid and not single:
            from .media import make_grid
            from .media.video import read_video

            import torch

            videos = [read_video(p)[0] for p in paths]
            if len({tuple(v.shape) for v in videos}) == 1:
                written.append(out_dir / "video_grid.mp4")
                _write(make_grid(torch.stack(videos)), written[-1], fps)
        where = written[0] if len(written) == 1 else f"{len(written)} files in {written[0].parent}"
        print(f"wrote {where} ({shape[0]} frames, {shape[1]}x{shape[2]}, {fps} fps) in "
              f"{time.perf_counter() - start:.1f} s on {layout.world_size} processes "
              f"(data parallel {layout.dp_size} x context parallel {layout.world_size // layout.dp_size}"
              f"{', sharded' if layout.sharded else ''})")
    layout.barrier()
    return 0


# --------------------------------------------------------------------------------------------------- convert
def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="build a model folder from official or diffusers files", description=(
        "Build a model folder from official files (diffusion_pytorch_model.safetensors or a FlashI2V .pt, "
        "Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth + tokenizer folder) or diffusers folders. Every component "
        "is loaded strictly and checked against the others before anything is written; the folder is written "
        "atomically."))
    p.add_argument("--transformer", required=True,
                   help="DiT weights: official .safetensors/.pt (FlashI2V, Wan2.1-T2V, MindSpeed names) or a diffusers folder")
    p.add_argument("--from-t2v", action="store_true",
                   help="initialise a FlashI2V model from a Wan2.1-T2V checkpoint (branches at their init; for training)")
    p.add_argument("--model-type", choices=["flashi2v", "i2v-concat-mask", "i2v-concat-noise", "t2v"],
                   help="target model type with --from-t2v (default flashi2v), e.g. a Wan-style concat baseline")
    p.add_argument("--num-heads", type=int, help="attention heads (default: dim / 128, true of all Wan2.1 models)")
    p.add_argument("--vae", required=True, help="Wan2.1_VAE.pth (or .safetensors) or a diffusers VAE folder")
    p.add_argument("--text-encoder", required=True,
                   help="models_t5_umt5-xxl-enc-bf16.pth, a Hugging Face UMT5 folder, or 'minilm' (small encoder)")
    p.add_argument("--tokenizer", help="tokenizer folder for an official umT5 .pth (google/umt5-xxl)")
    p.add_argument("--text-len", type=int, help="text length (default: the transformer's, 512)")
    p.add_argument("--output", required=True, help="model folder to write")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert)


def _load_text_encoder(args, text_len: int):
    from .text import MiniLMTextEncoder, UMT5TextEncoder

    src = args.text_encoder
    if src.lower() == "minilm":
        return MiniLMTextEncoder.from_package(text_len=text_len)
    path = Path(src)
    if path.is_dir():
        return UMT5TextEncoder.from_hf(path, tokenizer_path=args.tokenizer or path, text_len=text_len)
    if not path.is_file():
        raise InputError(f"--text-encoder not found: {path}")
    if not args.tokenizer:
        raise InputError("an official umT5 .pth needs --tokenizer FOLDER (google/umt5-xxl from the Wan2.1 folder)")
    return UMT5TextEncoder.from_official(path, args.tokenizer, text_len=text_len)


def _load_vae(src: str):
    from .vae import WanVAE

    path = Path(src)
    if path.is_dir():
        return WanVAE.from_diffusers_folder(path)
    if not path.is_file():
        raise InputError(f"--vae not found: {path}")
    from .weights import read_state_dict

    sd = read_state_dict(path)
    # the channel width and latent size are read off the tensors (the real Wan2.1 VAE: 96 and 16)
    arch = {}
    if "encoder.conv1.weight" in sd and "conv2.weight" in sd:
        arch = dict(base_dim=int(sd["encoder.conv1.weight"].shape[0]), z_dim=int(sd["conv2.weight"].shape[0]))
    return WanVAE.from_official_state_dict(sd, **arch)


def cmd_convert(args) -> int:
    start = time.perf_counter()
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists; pass --overwrite or choose another --output")
    from .weights.io import check_output_path

    check_output_path(out)
    for flag in ("transformer", "vae"):
        if not Path(getattr(args, flag)).exists():
            raise InputError(f"--{flag} not found: {getattr(args, flag)}")
    for flag in ("num_heads", "text_len"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")

    from .pipeline import FlashI2VPipeline, GenerationDefaults
    from .weights import load_transformer

    if args.model_type and not args.from_t2v:
        raise InputError("--model-type converts Wan2.1-T2V weights: add --from-t2v")
    transformer, report = load_transformer(args.transformer, from_t2v=args.from_t2v, num_heads=args.num_heads,
                                           model_type=args.model_type)
    print(f"transformer: {report.summary()}", file=sys.stderr)
    vae = _load_vae(args.vae)
    print(f"vae: loaded {sum(1 for _ in vae.parameters())} tensors from {args.vae}", file=sys.stderr)
    text_len = args.text_len if args.text_len is not None else transformer.config.text_len
    text_encoder = _load_text_encoder(args, text_len)
    print(f"text encoder: {type(text_encoder).__name__}, {text_encoder.dim}-d, text_len {text_encoder.text_len}",
          file=sys.stderr)
    pipe = FlashI2VPipeline(transformer, vae, text_encoder, GenerationDefaults())  # checks the parts fit together
    pipe.save_pretrained(out, overwrite=args.overwrite)
    print(f"wrote {out} ({transformer.config.model_type}, {transformer.num_parameters() / 1e6:.1f}M DiT parameters) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flashi2v", description="FlashI2V image-to-video generation")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"flashi2v {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_generate(sub)
    _add_convert(sub)
    from .data.cli import add_data_parser

    add_data_parser(sub)
    from .train.cli import add_train_parsers

    add_train_parsers(sub)
    from .train.vae_trainer import add_vae_parser

    add_vae_parser(sub)
    from .world.cli import register as add_world_parser

    add_world_parser(sub)
    from .bench.cli import register as add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # --debug may appear anywhere on the line
    debug = "--debug" in argv
    args = parser.parse_args([a for a in argv if a != "--debug"])
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        return args.func(args)
    except FlashI2VError as e:
        if debug:
            raise
        print(f"flashi2v {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        if debug:
            raise
        print(f"flashi2v {args.command}: error: out of memory; try --offload, fewer --num-frames or a smaller "
              "--height/--width", file=sys.stderr)
        return EXIT_USER_ERROR
    except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError
        if debug or "out of memory" not in str(e).lower():
            raise
        print(f"flashi2v {args.command}: error: out of memory; try --offload, --dtype bf16, fewer --num-frames or "
              "a smaller --height/--width", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
