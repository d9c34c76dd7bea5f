"""Meta JSON reading and video probing for the data filter (official layout, §5.1 of the spec).

An *annotation file* has one ``root_dir,meta.json`` line per source (blank lines and ``#`` comments are skipped). Each
meta JSON is a list of dicts::

    {"path": "clips/a.mp4",              # joined onto root_dir
     "cap": "a dog runs" | ["...", ...],  # required
     "resolution": {"height": 720, "width": 1280},   # optional: probed from the file when missing
     "fps": 24.0,                         # optional: probed
     "num_frames": 121,                   # optional: probed (frames from the start frame on)
     "cut": [start, end],                 # optional: only start is used by the filter (-> start_frame_idx)
     "crop": [x0, x1, y0, y1],            # optional: applied by the dataset after decoding
     "motion": 0.3}                       # optional (default 0)

Unlike the official filter (which raises ``KeyError`` on a missing ``num_frames`` and assumes 24 fps when ``fps`` is
missing), missing ``resolution``/``fps``/``num_frames`` are read from the file with PyAV: :func:`probe_video`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import InputError

PathLike = Union[str, os.PathLike]

#: Fields that :func:`fill_missing_fields` can read off the video file.
PROBED_FIELDS = ("resolution", "fps", "num_frames")


class ProbeError(InputError):
    """A video file cannot be opened or has no usable video stream / frame rate / frame count."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reads from a file."""

    height: int
    width: int
    fps: float
    num_frames: int


# ----------------------------------------------------------------------------------------------------------------
# annotation file -> list of sample dicts
# ----------------------------------------------------------------------------------------------------------------
def _resolve_meta_json(meta: str, ann_path: Path) -> Path:
    """A relative meta JSON path is looked up in the current directory first, then beside the annotation file."""
    p = Path(meta).expanduser()
    if p.is_absolute() or p.exists():
        return p
    beside = ann_path.parent / p
    return beside if beside.exists() else p


def load_meta_json(path: PathLike) -> list:
    """The list of sample dicts stored in one meta JSON file (``InputError`` when missing or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"meta JSON not found: {path} (check the `root_dir,meta.json` line in the annotation file)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"meta JSON {path} is not valid JSON ({' '.join(str(e).split())}); fix or regenerate it") from e
    if not isinstance(data, list):
        raise InputError(f"meta JSON {path} must hold a list of sample dicts, got a {type(data).__name__}")
    return data


def read_annotations(ann_path: PathLike, absolute_paths: bool = True) -> list:
    """Read every sample of every ``root_dir,meta.json`` line of ``ann_path``.

    With ``absolute_paths`` (official ``save_absolute_path``, default) each sample's ``path`` becomes
    ``root_dir/path``; otherwise ``path`` is kept as written. Entries are returned as they are (dicts are shallow
    copies); malformed entries (not a dict, no ``path``) are left for the filter to count. The split is on the *last*
    comma, so root directories may contain commas.
    """
    ann_path = Path(ann_path)
    if not ann_path.is_file():
        raise InputError(f"annotation file not found: {ann_path} (set ann_txt_path to a file of `root_dir,meta.json` lines)")
    samples: list = []
    with open(ann_path, "r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "," not in line:
            raise InputError(f"{ann_path}:{lineno}: expected `root_dir,meta.json`, got {line!r}")
        root, meta = (s.strip() for s in line.rsplit(",", 1))
        if not meta:
            raise InputError(f"{ann_path}:{lineno}: no meta JSON after the comma in {line!r}")
        for item in load_meta_json(_resolve_meta_json(meta, ann_path)):
            if isinstance(item, dict):
                item = dict(item)
                if absolute_paths and isinstance(item.get("path"), str):
                    item["path"] = os.path.join(root, item["path"])
            samples.append(item)
    return samples


# ----------------------------------------------------------------------------------------------------------------
# probing
# ----------------------------------------------------------------------------------------------------------------
def _positive_rate(*rates) -> Optional[Fraction]:
    for r in rates:
        if r is not None and float(r) > 0:
            return Fraction(r)
    return None


def probe_video(path: PathLike) -> VideoInfo:
    """Height, width, fps and frame count of the first video stream of ``path``, read with PyAV.

    fps: the stream's average rate (then guessed / base rate). Frames: the container's frame count; else the stream
    duration × fps; else the container duration × fps; decoding every frame is the last resort. Raises
    :class:`ProbeError` (one line) for a file that cannot be opened or measured.
    """
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("probing videos needs PyAV; install it with `pip install av`") from e
    path = str(path)
    if not os.path.isfile(path):
        raise ProbeError(f"video not found: {path}")
    try:
        container = av.open(path)
    except Exception as e:  # PyAV raises many error classes for bad files
        raise ProbeError(f"cannot open {path}: {' '.join(str(e).split())}") from e
    try:
        if not container.streams.video:
            raise ProbeError(f"{path} has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        height, width = int(ctx.height or 0), int(ctx.width or 0)
        if height <= 0 or width <= 0:
            raise ProbeError(f"{path}: the video stream has no frame size")
        rate = _positive_rate(stream.average_rate, stream.guessed_rate, stream.base_rate)
        if rate is None:
            raise ProbeError(f"{path}: the video stream has no frame rate")
        fps = float(rate)
        n = int(stream.frames or 0)
        if n <= 0 and stream.duration and stream.time_base:
            n = int(round(float(stream.duration * stream.time_base) * fps))
        if n <= 0 and container.duration:
            n = int(round(container.duration / av.time_base * fps))
        if n <= 0:
            n = sum(1 for _ in container.decode(stream))
        if n <= 0:
            raise ProbeError(f"{path}: no frames could be decoded")
        return VideoInfo(height=height, width=width, fps=fps, num_frames=n)
    except ProbeError:
        raise
    except Exception as e:
        raise ProbeError(f"cannot read {path}: {' '.join(str(e).split())}") from e
    finally:
        container.close()


def _missing(sample: dict, key: str) -> bool:
    return sample.get(key) is None


def needs_probe(sample: dict) -> bool:
    """True when ``resolution``, ``fps`` or ``num_frames`` is missing (absent or null)."""
    return any(_missing(sample, k) for k in PROBED_FIELDS)


def fill_missing_fields(sample: dict, probe=probe_video) -> dict:
    """A copy of ``sample`` with missing ``resolution``/``fps``/``num_frames`` filled from the file.

    Fields already present are kept as they are (even if they disagree with the file). A probed ``num_frames`` counts
    the frames from the start frame (``cut[0]``) to the end of the file, or to ``cut[1]`` (exclusive) when given.
    Raises :class:`ProbeError` when probing is needed and fails.
    """
    out = dict(sample)
    if not needs_probe(out):
        return out
    path = out.get("path")
    if not isinstance(path, str):
        raise ProbeError("sample has no `path` string to probe")
    info: VideoInfo = probe(path)
    if _missing(out, "resolution"):
        out["resolution"] = {"height": info.height, "width": info.width}
    if _missing(out, "fps"):
        out["fps"] = info.fps
    if _missing(out, "num_frames"):
        start, end = 0, info.num_frames
        cut = out.get("cut")
        if isinstance(cut, (list, tuple)) and len(cut) >= 1 and _is_number(cut[0]):
            start = int(cut[0])
            if len(cut) >= 2 and _is_number(cut[1]):
                end = min(end, int(math.floor(cut[1])))
        out["num_frames"] = max(0, end - start)
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
