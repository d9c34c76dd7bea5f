"""Video output (official post-processing, MP4/GIF/PNG writers, grid), video reading, and batch-mode text files.

* :func:`to_uint8_frames` is the official ``decode_latents`` post-processing, bit for bit:
  clamp to [-1, 1] -> (x + 1) / 2 -> x * 255 + 0.5 -> clamp to [0, 255] -> uint8 (truncation), [B,3,F,H,W] ->
  [B,F,H,W,3].
* :func:`write_video` writes MP4 (H.264 / libx264, yuv420p, CRF 20 by default = imageio ``quality=6`` used by the
  official scripts), animated GIF (Pillow) or a folder of PNG frames, always atomically.
* :func:`make_grid` is the official ``save_video_grid`` layout.
* :func:`read_lines` / :func:`read_prompt_image_pairs` read the batch-mode ``prompts.txt`` / ``images.txt`` files.

PyAV and Pillow are imported lazily, so ``import flashi2v.media`` works without them.
"""

from __future__ import annotations

import math
import os
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import InputError
from ..weights.io import check_output_path, remove_path, replace_path

__all__ = [
    "VIDEO_FORMATS",
    "check_output",
    "crf_from_quality",
    "make_grid",
    "read_lines",
    "read_prompt_image_pairs",
    "read_video",
    "resolve_format",
    "to_uint8_frames",
    "write_video",
]

PathLike = Union[str, os.PathLike]
Frames = Union[torch.Tensor, np.ndarray, Iterable[Union[torch.Tensor, np.ndarray]]]

#: Output formats of :func:`write_video`.
VIDEO_FORMATS = ("mp4", "gif", "png")
_H264_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
DEFAULT_CRF = 20  # = imageio-ffmpeg quality 6 (int((1 - 6/10) * 51)), what the official scripts write


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _import_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("reading/writing videos needs PyAV; install it with `pip install av`") from e
    return av


# ----------------------------------------------------------------------------------------------------------------
# Post-processing and grid
# ----------------------------------------------------------------------------------------------------------------


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """Decoded video in [-1, 1] -> uint8 frames, exactly as the official ``decode_latents``.

    ``video`` is ``[B, 3, F, H, W]`` (or ``[3, F, H, W]``); returns CPU uint8 ``[B, F, H, W, 3]`` (or
    ``[F, H, W, 3]``). The arithmetic runs in the input's floating dtype, like the official code (fp32 VAE).
    """
    if not isinstance(video, torch.Tensor) or not video.is_floating_point():
        got = video.dtype if isinstance(video, torch.Tensor) else type(video).__name__
        raise InputError(f"to_uint8_frames expects a floating torch tensor in [-1, 1], got {got}")
    if video.ndim not in (4, 5) or video.shape[-4] != 3:
        raise InputError(f"to_uint8_frames expects [B,3,F,H,W] or [3,F,H,W], got shape {list(video.shape)}")
    squeeze = video.ndim == 4
    v = video.unsqueeze(0) if squeeze else video
    low, high = -1, 1
    v = v.clamp(min=low, max=high)
    v = v.sub(low).div(max(high - low, 1e-5))
    v = v.mul(255).add_(0.5).clamp_(0, 255).permute(0, 2, 3, 4, 1).to("cpu", torch.uint8)
    return v[0] if squeeze else v


def make_grid(videos: Union[torch.Tensor, np.ndarray], nrow: Optional[int] = None) -> torch.Tensor:
    """Tile ``N`` videos ``[N, F, H, W, C]`` (uint8) into one ``[F, H', W', C]`` video, like the official grid.

    ``nrow`` defaults to ``ceil(sqrt(N))`` rows and ``ncol = ceil(N / nrow)`` columns; video ``i`` goes to row
    ``i // ncol``, column ``i % ncol``. The canvas is black, ``H' = (H + 1) * nrow + 1`` and
    ``W' = (W + 1) * ncol + 1``, and cell ``(r, c)`` starts at ``((H + 1) * r, (W + 1) * c)``: exactly the official
    layout, which has 1-pixel black lines between cells and 2 black pixels at the bottom/right edge but none at the
    top/left edge. Unused cells stay black.
    """
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(videos)
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5:
        shape = list(videos.shape) if hasattr(videos, "shape") else type(videos).__name__
        raise InputError(f"make_grid expects uint8 videos [N,F,H,W,C], got {shape}")
    if videos.dtype != torch.uint8:
        raise InputError(f"make_grid expects uint8 videos, got {videos.dtype}; convert with to_uint8_frames() first")
    b, t, h, w, c = videos.shape
    if b == 0:
        raise InputError("make_grid got 0 videos; pass at least one")
    if nrow is None:
        nrow = math.ceil(math.sqrt(b))
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow <= 0:
        raise InputError(f"make_grid nrow must be a positive integer, got {nrow!r}")
    ncol = math.ceil(b / nrow)
    padding = 1
    grid = torch.zeros((t, (padding + h) * nrow + padding, (padding + w) * ncol + padding, c), dtype=torch.uint8)
    for i in range(b):
        r, col = i // ncol, i % ncol
        sr, sc = (padding + h) * r, (padding + w) * col
        grid[:, sr : sr + h, sc : sc + w] = videos[i].to("cpu")
    return grid


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------


def crf_from_quality(quality: float) -> int:
    """imageio-ffmpeg's mapping from ``quality`` (0 worst .. 10 best) to libx264 CRF: ``int((1 - q/10) * 51)``."""
    if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not 0 <= quality <= 10:
        raise InputError(f"quality must be a number from 0 (worst) to 10 (best), got {quality!r}")
    return int((1 - quality / 10.0) * 51)


def _fps_fraction(fps) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction, np.integer, np.floating)):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    if not math.isfinite(float(fps)) or float(fps) <= 0:
        raise InputError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps


def _frame_iter(frames: Frames) -> Iterator[np.ndarray]:
    """Yield frames as contiguous uint8 HxWx3 numpy arrays, checking each one (a bad frame fails mid-stream)."""
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        if frames.ndim == 5:
            raise InputError(
                f"write_video expects one video [F,H,W,3], got a batch {list(frames.shape)}; write frames[i] for "
                "each video, or make_grid(frames) for a grid"
            )
        if frames.ndim != 4:
            raise InputError(f"write_video expects frames [F,H,W,3], got shape {list(frames.shape)}")
        if frames.shape[0] == 0:
            raise InputError("write_video got 0 frames; pass at least one frame")
    first_shape = None
    for i, fr in enumerate(frames):
        if isinstance(fr, torch.Tensor):
            fr = fr.detach().to("cpu").numpy()
        if not isinstance(fr, np.ndarray):
            raise InputError(f"frame {i} is a {type(fr).__name__}; frames must be uint8 arrays [H,W,3]")
        if fr.dtype != np.uint8:
            raise InputError(
                f"frame {i} has dtype {fr.dtype}; frames must be uint8 [H,W,3] (use to_uint8_frames() for model "
                "output in [-1, 1])"
            )
        if fr.ndim != 3 or fr.shape[2] != 3 or fr.shape[0] == 0 or fr.shape[1] == 0:
            raise InputError(f"frame {i} has shape {list(fr.shape)}; frames must be uint8 [H,W,3] (RGB, channels last)")
        if first_shape is None:
            first_shape = fr.shape
        elif fr.shape != first_shape:
            raise InputError(
                f"frame {i} has shape {list(fr.shape)} but frame 0 has {list(first_shape)}; all frames must have "
                "the same size"
            )
        yield np.ascontiguousarray(fr)
    if first_shape is None:
        raise InputError("write_video got 0 frames; pass at least one frame")


def resolve_format(path: Union[str, os.PathLike], format: Optional[str] = None) -> str:
    """The format :func:`write_video` writes ``path`` in (``mp4``, ``gif`` or ``png`` frames), or a one-line
    InputError for an output it cannot write; lets a caller check an output path before the work that fills it."""
    path = Path(path)
    if format is not None:
        fmt = str(format).lower().lstrip(".")
        if fmt in ("mp4", "gif", "png"):
            return fmt
        raise InputError(f"format={format!r} is not supported; use one of {', '.join(VIDEO_FORMATS)}")
    suffix = path.suffix.lower()
    if suffix in _H264_CONTAINERS:
        return "mp4"
    if suffix == ".gif":
        return "gif"
    if suffix == "" or path.is_dir():
        return "png"
    if suffix == ".png":
        raise InputError(
            f"output '{path}' is a single .png file; to write PNG frames give a folder path (e.g. "
            f"'{path.with_suffix('')}') or pass format='png'"
        )
    raise InputError(
        f"output '{path}' has unsupported extension '{suffix}'; use .mp4 (also .mov, .mkv, .m4v), .gif, or a folder "
        "path for PNG frames"
    )


def check_output(path: Union[str, os.PathLike], format: Optional[str] = None) -> str:
    """:func:`resolve_format` plus the checks :func:`write_video` makes of the place it writes to (an existing folder
    for a video file, an existing file or a folder of other files for PNG frames, a parent that is a file or not
    writable): one-line InputError, nothing created. Returns the format."""
    path = Path(os.fspath(path)).expanduser()
    fmt = resolve_format(path, format)
    if path.exists() and fmt != "png" and path.is_dir():
        raise InputError(f"output '{path}' is an existing folder; give a file path such as '{path / 'video.mp4'}'")
    if fmt == "png" and path.exists() and not path.is_dir():
        raise InputError(f"output '{path}' is an existing file; PNG frames need a folder path")
    if fmt == "png" and path.is_dir():
        others = [p.name for p in path.iterdir() if not _is_frame_file(p.name)]
        if others:
            raise InputError(
                f"output folder '{path}' already contains other files (e.g. '{others[0]}'); choose an empty or new "
                "folder for the PNG frames"
            )
    check_output_path(path)
    return fmt


def _temp_sibling(final: Path, suffix: str = "") -> Path:
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:10]}.part{suffix}")


def _write_h264(frames: Iterator[np.ndarray], tmp: Path, container_fmt: str, fps: Fraction, crf: int, preset: str):
    av = _import_av()
    first = next(frames)
    h, w = first.shape[:2]
    eh, ew = h + (h % 2), w + (w % 2)  # yuv420p needs even sizes: pad by repeating the last row/column

    def padded(a: np.ndarray) -> np.ndarray:
        if (eh, ew) != (h, w):
            a = np.pad(a, ((0, eh - h), (0, ew - w), (0, 0)), mode="edge")
        return a

    container = av.open(str(tmp), mode="w", format=container_fmt)
    finished = False
    try:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": preset})
        stream.width, stream.height, stream.pix_fmt = ew, eh, "yuv420p"

        def encode(a):
            vf = av.VideoFrame.from_ndarray(padded(a), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)

        encode(first)
        for a in frames:
            encode(a)
        for packet in stream.encode():
            container.mux(packet)
        finished = True
    finally:
        try:
            container.close()
        except Exception:
            if finished:  # otherwise keep the original error (e.g. a bad frame), not the close() failure
                raise


def _gif_durations_ms(n: int, fps: Fraction) -> List[int]:
    # GIF stores delays in 1/100 s. Spread the rounding so that the total duration matches n / fps (16 fps -> 60, 70,
    # 60, 70 ... ms instead of a constant 60 ms = 16.7 fps).
    cs = [round((i + 1) * 100 / fps) for i in range(n)]
    return [10 * (b - a) for a, b in zip([0] + cs[:-1], cs)]


def _write_gif(frames: Iterator[np.ndarray], tmp: Path, fps: Fraction) -> None:
    from PIL import Image

    images = [Image.fromarray(a, mode="RGB") for a in frames]
    durations = _gif_durations_ms(len(images), fps)
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False
    )


_FRAME_NAME = "frame_{:05d}.png"


def _write_png_dir(frames: Iterator[np.ndarray], tmp_dir: Path) -> None:
    from PIL import Image

    tmp_dir.mkdir()
    for i, a in enumerate(frames):
        Image.fromarray(a, mode="RGB").save(tmp_dir / _FRAME_NAME.format(i), format="PNG", compress_level=4)


def _is_frame_file(name: str) -> bool:
    return name.startswith("frame_") and name.endswith(".png") and name[6:-4].isdigit()


def write_video(
    frames: Frames,
    path: PathLike,
    fps: float = 16,
    *,
    format: Optional[str] = None,
    crf: Optional[int] = None,
    quality: Optional[float] = None,
    preset: str = "medium",
) -> Path:
    """Write uint8 RGB frames ``[F, H, W, 3]`` (tensor, array, or any iterable of ``[H, W, 3]`` frames) to ``path``.

    Format (from ``format`` or the extension):

    * ``.mp4`` (also ``.mov``, ``.mkv``, ``.m4v``): H.264 (libx264), yuv420p, constant frame rate ``fps``. Quality is
      ``crf`` (0 = lossless .. 51 = worst; default 20, the official ``quality=6``) or imageio-style ``quality``
      (0..10, mapped by :func:`crf_from_quality`); not both. yuv420p needs even sizes, so an odd height/width is
      padded by one row/column that repeats the last one (the file is then 1 pixel larger; nothing is cropped or
      rescaled).
    * ``.gif``: animated GIF via Pillow (256-colour adaptive palette per frame, loops forever). GIF delays are in
      1/100 s, so they are spread (16 fps -> 60/70 ms alternating) to keep the total duration. Pillow merges
      identical consecutive frames into one longer frame.
    * a path with no extension, an existing folder, or ``format="png"``: a folder of ``frame_00000.png``, ...

    The output is written atomically: to a hidden temporary sibling (``.<name>.<random>.part``) that is renamed to
    the final name only after the last frame was written, so a failure (bad frame, full disk, Ctrl-C) never leaves a
    half-written file under the final name, and an existing file is replaced only on success. A PNG folder that
    already exists may only contain ``frame_*.png`` files; it is swapped for the new one. Missing parent folders are
    created. Returns the final path.
    """
    path = Path(os.fspath(path)).expanduser()
    fmt = resolve_format(path, format)
    fps_frac = _fps_fraction(fps)
    if crf is not None and quality is not None:
        raise InputError("give either crf or quality for the video, not both")
    if quality is not None:
        crf = crf_from_quality(quality)
    if crf is None:
        crf = DEFAULT_CRF
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= int(crf) <= 51:
        raise InputError(f"crf must be an integer from 0 (lossless) to 51 (worst), got {crf!r}")
    it = _frame_iter(frames)

    check_output(path, fmt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the output folder '{path.parent}': {_one_line(e)}") from e

    tmp = _temp_sibling(path, path.suffix if fmt != "png" else "")
    try:
        if fmt == "mp4":
            container_fmt = _H264_CONTAINERS.get(path.suffix.lower(), "mp4")
            _write_h264(it, tmp, container_fmt, fps_frac, int(crf), preset)
        elif fmt == "gif":
            _write_gif(it, tmp, fps_frac)
        else:
            _write_png_dir(it, tmp)
        replace_path(tmp, path)
    except BaseException as e:
        remove_path(tmp)
        if isinstance(e, (InputError, KeyboardInterrupt, SystemExit)):
            raise
        if isinstance(e, OSError) or type(e).__module__.startswith("av"):
            raise InputError(f"could not write video '{path}': {_one_line(e)}") from e
        raise
    return path


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------


def read_video(path: PathLike, *, max_frames: Optional[int] = None) -> Tuple[torch.Tensor, float]:
    """Decode a video file (MP4, MOV, MKV, WebM, GIF, ...) with PyAV.

    Returns ``(frames, fps)``: uint8 RGB ``[F, H, W, 3]`` (at most ``max_frames`` frames) and the stream's average
    frame rate (falls back to the guessed rate; 0.0 if the file states none).
    """
    av = _import_av()
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise InputError(f"video file '{path}' does not exist; check the path")
    if path.is_dir():
        raise InputError(f"video path '{path}' is a folder, not a video file")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise InputError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise InputError(f"video file '{path}' has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            out = []
            for frame in container.decode(stream):
                out.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(out) >= max_frames:
                    break
    except InputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"could not read video '{path}': not a valid or complete video file ({_one_line(e)})") from e
    if not out:
        raise InputError(f"video file '{path}' contains no decodable frames")
    frames = torch.from_numpy(np.stack(out))
    return frames, float(rate) if rate else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Batch-mode text files
# ----------------------------------------------------------------------------------------------------------------


def read_lines(path: PathLike) -> List[str]:
    """Read a one-item-per-line text file (UTF-8, optional BOM, any line endings).

    Each line is stripped of surrounding whitespace (as the official ``line.strip()``); empty lines at the end of
    the file are dropped; empty lines elsewhere are kept as ``""`` so that line ``i`` of two files still pairs (the
    caller decides whether they are allowed). Unlike the official loader there is no 100-line cap.
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise InputError(f"text file '{path}' does not exist; check the path")
    if path.is_dir():
        raise InputError(f"'{path}' is a folder; give a text file with one entry per line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"text file '{path}' is not UTF-8 text ({_one_line(e)}); save it as UTF-8") from e
    except OSError as e:
        raise InputError(f"could not read text file '{path}': {_one_line(e)}") from e
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_prompt_image_pairs(
    prompts_txt: PathLike, images_txt: PathLike, *, check_exists: bool = True
) -> List[Tuple[str, Path]]:
    """Pair ``prompts.txt`` and ``images.txt`` line by line (the official batch mode).

    Both files are read with :func:`read_lines`. They must have the same number of entries and no empty line in the
    middle (an empty line would silently shift every later pair). Relative image paths are resolved against the
    folder that holds ``images.txt`` (the official code resolves them against the current directory), ``~`` is
    expanded, and with ``check_exists`` every image must exist. Returns ``[(prompt, image_path), ...]``.
    """
    prompts_txt = Path(os.fspath(prompts_txt)).expanduser()
    images_txt = Path(os.fspath(images_txt)).expanduser()
    prompts = read_lines(prompts_txt)
    images = read_lines(images_txt)
    for name, items, kind in ((prompts_txt, prompts, "a prompt"), (images_txt, images, "an image path")):
        if not items:
            raise InputError(f"'{name}' is empty; write {kind} on each line")
        for i, item in enumerate(items):
            if not item:
                raise InputError(
                    f"'{name}' line {i + 1} is empty; lines pair prompts with images by number, so remove the blank "
                    f"line or write {kind} there"
                )
    if len(prompts) != len(images):
        raise InputError(
            f"'{prompts_txt}' has {len(prompts)} prompts but '{images_txt}' has {len(images)} image paths; they are "
            "paired by line, so give exactly one image per prompt"
        )
    base = Path(os.path.abspath(images_txt.parent))
    pairs = []
    for i, (prompt, image) in enumerate(zip(prompts, images)):
        p = Path(image).expanduser()
        if not p.is_absolute():
            p = base / p
        if check_exists and not p.is_file():
            raise InputError(
                f"'{images_txt}' line {i + 1}: image '{image}' (resolved to '{p}') does not exist; paths are relative "
                "to the folder of the images file"
            )
        pairs.append((prompt, p))
    return pairs
