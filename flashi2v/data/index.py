"""``flashi2v data index``: a folder of videos with captions -> the meta JSON, annotation file and filter config that
``flashi2v data filter`` reads (the first step of training on your own videos).

    flashi2v data index VIDEOS --output DATASET [--captions captions.csv] [--height 128 --width 128 --num-frames 17]

Every video file under ``VIDEOS`` (recursively; .mp4 .mov .mkv .webm .avi .m4v) is probed with PyAV (size, fps,
frame count) and paired with its caption(s):

- by default a sidecar text file beside the video with the same stem (``clips/a.mp4`` -> ``clips/a.txt``); each
  non-empty line is one caption (several become a list, from which training draws one per epoch);
- or ``--captions FILE``: a CSV with a header holding ``path`` and ``caption`` columns (one row per caption, paths
  relative to ``VIDEOS``), or a JSON object ``{path: caption or [captions]}``.

A video without a caption or that cannot be read is left out and listed; a caption naming no video is an error, as is
a folder with nothing to index. ``DATASET`` gets ``meta.json`` (paths relative to ``VIDEOS``), ``annotations.txt``
(one ``VIDEOS,meta.json`` line) and ``filter.yaml`` sized for the training clips, written into a temporary folder
that is renamed when complete.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from ..errors import InputError
from ..weights.io import atomic_directory
from .meta import ProbeError, VideoInfo, probe_video

PathLike = Union[str, os.PathLike]
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclass
class IndexResult:
    folder: Path  # the written dataset folder
    indexed: int  # videos written to meta.json
    found: int  # video files found
    no_caption: list = field(default_factory=list)  # relative paths left out for want of a caption
    unreadable: list = field(default_factory=list)  # (relative path, why) left out because probing failed

    def summary(self) -> str:
        parts = [f"indexed {self.indexed} of {self.found} videos -> {self.folder}"]
        if self.no_caption:
            parts.append(f"{len(self.no_caption)} without a caption (first: {self.no_caption[0]})")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable (first: {self.unreadable[0][1]})")
        return "; ".join(parts)


def filter_yaml(ann: Path, num_frames: int, height: int, width: int, fps: float, what: str) -> str:
    """A ``flashi2v data filter`` config for training clips of ``num_frames`` x ``height`` x ``width`` at ``fps``
    from the annotation file ``ann``: the official rules, with the size and aspect-ratio bounds opened to the target
    (a source must hold at least ``height * width`` pixels; aspect ratios 0.4..1.2 and the target's are kept)."""
    r = height / width
    return (
        f"# `flashi2v data filter` config sized for {what}:\n"
        "#   flashi2v data filter --config filter.yaml --output OUT_DIR\n"
        f"ann_txt_path: {json.dumps(str(ann))}\n"
        f"sample_height: {height}\nsample_width: {width}\nsample_num_frames: {num_frames}\ntrain_fps: {fps:g}\n"
        f"min_hxw: {height * width}\nmin_h_div_w_ratio: {min(0.4, r):g}\nmax_h_div_w_ratio: {max(1.2, r):g}\n"
    )


def find_videos(root: Path) -> list[Path]:
    """Video files under ``root`` (recursively, hidden folders skipped), sorted by relative path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in filenames if f.lower().endswith(VIDEO_SUFFIXES) and not f.startswith(".")]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _clean(captions) -> list[str]:
    return [c.strip() for c in captions if isinstance(c, str) and c.strip()]


def read_captions(path: Path) -> dict[str, list[str]]:
    """``{relative path: [captions]}`` from a CSV (``path`` and ``caption`` columns) or a JSON object."""
    if not path.is_file():
        raise InputError(f"--captions {path} {'is a folder' if path.is_dir() else 'not found'}; pass a CSV with "
                         "path,caption columns or a JSON object")
    out: dict[str, list[str]] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"--captions {path} is not valid JSON ({e}); write {{\"path\": \"caption\"}}") from None
        if not isinstance(data, dict):
            raise InputError(f"--captions {path} must hold a JSON object {{path: caption or [captions]}}")
        for k, v in data.items():
            if not (v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(c, str) for c in v))):
                raise InputError(f"--captions {path}: the caption of {k!r} must be a string or a list of strings, "
                                 f"got {v!r}")
            out[Path(k).as_posix()] = _clean([v] if isinstance(v, str) else (v or []))
        return out
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if "path" not in cols or "caption" not in cols:
                raise InputError(f"--captions {path}: the CSV header must name a path and a caption column, got "
                                 f"{', '.join(cols) or 'none'}")
            for row in reader:
                p = (row.get("path") or "").strip()
                if p:
                    out.setdefault(Path(p).as_posix(), []).extend(_clean([row.get("caption")]))
    except UnicodeDecodeError:
        raise InputError(f"--captions {path} is not UTF-8 text; save the CSV as UTF-8") from None
    return out


def index_videos(videos: PathLike, output: PathLike, *, captions: Optional[PathLike] = None, height: int = 480,
                 width: int = 832, num_frames: int = 49, train_fps: float = 16.0, overwrite: bool = False,
                 probe: Callable[[str], VideoInfo] = probe_video) -> IndexResult:
    """Index the videos under ``videos`` into the dataset folder ``output`` (see the module docstring)."""
    root = Path(videos).expanduser().resolve()
    out = Path(output).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"video folder {root} {'is a file' if root.exists() else 'not found'}; pass the folder that "
                         "holds your video files")
    if num_frames < 1 or (num_frames - 1) % 4:
        raise InputError(f"--num-frames must be 1 + 4k (17, 33, 49, ...), got {num_frames}")
    if height < 16 or width < 16 or height % 16 or width % 16:
        raise InputError(f"--height and --width must be multiples of 16, got {height} x {width}")
    if not 0 < train_fps < float("inf"):
        raise InputError(f"--train-fps must be positive and finite, got {train_fps}")
    if "," in str(out):  # the annotation line is split on its last comma
        raise InputError(f"--output {out} has a comma in its path, which an annotation line cannot hold; rename it")
    if out == root or root in out.parents:
        raise InputError(f"--output {out} is inside the video folder; write the dataset folder elsewhere")
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file; pass a folder for the dataset")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} exists and is not empty; pass another --output or --overwrite")
    table = read_captions(Path(captions).expanduser()) if captions is not None else None

    files = find_videos(root)
    if not files:
        raise InputError(f"no video files ({' '.join(VIDEO_SUFFIXES)}) under {root}")
    rel = [f.relative_to(root).as_posix() for f in files]
    if table is not None:
        unknown = sorted(set(table) - set(rel))
        if unknown:
            raise InputError(f"--captions names {len(unknown)} video(s) not under {root} (first: {unknown[0]}); "
                             "paths must be relative to the video folder")
    metas, no_caption, unreadable = [], [], []
    for f, r in zip(files, rel):
        if table is not None:
            caps = table.get(r, [])
        else:
            side = f.with_suffix(".txt")
            caps = _clean(side.read_text(encoding="utf-8", errors="replace").splitlines()) if side.is_file() else []
        if not caps:
            no_caption.append(r)
            continue
        try:
            info = probe(str(f))
        except ProbeError as e:
            unreadable.append((r, str(e)))
            continue
        metas.append({"path": r, "cap": caps[0] if len(caps) == 1 else caps,
                      "resolution": {"height": info.height, "width": info.width}, "fps": info.fps,
                      "num_frames": info.num_frames})
    result = IndexResult(out, len(metas), len(files), no_caption, unreadable)
    if not metas:
        raise InputError(f"nothing to index under {root}: {result.summary().split('; ', 1)[-1]}; give each video a "
                         "caption (a .txt beside it, or --captions)")

    with atomic_directory(out, overwrite=True) as tmp:  # emptiness (or --overwrite) was checked above
        (tmp / "meta.json").write_text(json.dumps(metas, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "annotations.txt").write_text(f"{root},{out / 'meta.json'}\n", encoding="utf-8")
        (tmp / "filter.yaml").write_text(filter_yaml(out / "annotations.txt", num_frames, height, width, train_fps,
                                                     f"the videos of {root}"), encoding="utf-8")
    return result
