"""Writing a world dataset: H.264 MP4 clips, the official meta JSON, an annotation file, the ground truth JSON and a
matching filter config, built in a hidden temporary folder and renamed into place when complete.

Layout of ``out_dir``::

    videos/000000.mp4 ...     H.264 (libx264, yuv420p), exactly num_frames frames of height x width at fps
    meta.json                 official meta JSON: [{"path", "cap", "resolution", "fps", "num_frames"}, ...]
    annotations.txt           one line "<abs out_dir>,<abs out_dir>/meta.json" for `flashi2v data filter`
    ground_truth.json         header + "clips": one entry per clip (the rendered scene spec + visible ground truth)
    filter.yaml               filter config sized for these clips (ann_txt_path set; pass --output)

Clip ``i`` is scene ``seed + i`` of the split, so a dataset is a pure function of its arguments (the MP4 bytes depend
on the libx264 build; the decoded frames of a given build do not change between runs).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import numbers
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import InputError
from ..weights.io import make_temp_dir, remove_path, replace_path
from .scene import check_seed, sample_scene, validate_clip_size
from .splits import get_split

GT_FORMAT = "flashi2v-world-ground-truth"
GT_VERSION = 1
SUPERSAMPLE = 4
BACKGROUND_SUPERSAMPLE = 2


@dataclass
class WorldDataset:
    """What :func:`write_dataset` wrote."""

    root: Path
    split: str
    num_clips: int
    seed: int
    num_frames: int
    height: int
    width: int
    fps: float
    seconds: float

    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    @property
    def annotation_path(self) -> Path:
        return self.root / "annotations.txt"

    @property
    def ground_truth_path(self) -> Path:
        return self.root / "ground_truth.json"

    @property
    def filter_config_path(self) -> Path:
        return self.root / "filter.yaml"

    def summary(self) -> str:
        rate = self.num_clips / self.seconds if self.seconds > 0 else float("inf")
        return (f"wrote {self.root} ({self.num_clips} {self.split} clips, seeds {self.seed}..{self.seed + self.num_clips - 1}, "
                f"{self.num_frames}x{self.height}x{self.width} at {self.fps:g} fps) in {self.seconds:.1f} s "
                f"({rate:.1f} clips/s)")


def _pos_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _make_clip(job: tuple):
    """Render and encode one clip; returns (meta entry, ground-truth entry)."""
    from ..media.video import write_video
    from .render import render

    index, seed, split, T, H, W, fps, num_captions, focused, crf, preset, root, rel = job
    scene = sample_scene(seed, split, num_frames=T, height=H, width=W, fps=fps, num_captions=num_captions,
                         focused=focused)
    frames, gt = render(scene, supersample=SUPERSAMPLE, background_supersample=BACKGROUND_SUPERSAMPLE)
    write_video(frames, Path(root) / rel, fps=fps, crf=crf, preset=preset)
    cap = gt["caption"]
    if num_captions > 1 or focused:
        cap = list(gt["captions"]) + scene.get("focused_captions", [])
    meta = {"path": rel, "cap": cap, "resolution": {"height": H, "width": W}, "fps": fps, "num_frames": T}
    entry = {"index": index, "path": rel}
    entry.update(gt)
    return meta, entry


def _ground_truth_text(header: dict, clips: list) -> str:
    """The ground-truth JSON with one clip per line."""
    head = json.dumps(header, indent=1)
    body = ",\n".join(json.dumps(c, separators=(",", ":")) for c in clips)
    return head[:-2] + ',\n "clips": [\n' + body + "\n]}\n"


def write_dataset(out_dir: Union[str, os.PathLike], split: str = "train", num_clips: int = 100, seed: int = 0, *,
                  num_frames: int = 17, height: int = 128, width: int = 128, fps: float = 16, workers: int = 1,
                  num_captions: int = 1, focused_captions: bool = False, crf: Optional[int] = None,
                  preset: str = "medium", overwrite: bool = False, progress: bool = False) -> WorldDataset:
    """Render clips ``seed .. seed + num_clips - 1`` of ``split`` into ``out_dir`` (atomically).

    ``workers`` processes render and encode in parallel (the output does not depend on it). ``num_captions > 1``
    stores a list of captions per clip in the meta JSON (the dataset picks one at random). ``focused_captions`` appends
    :func:`~flashi2v.world.captions.focused_captions` to that list (camera, each object, lighting: one thing each), so
    full captions are ``num_captions / (num_captions + 1 + objects + lighting)`` of the draws. ``crf``/``preset`` go to
    :func:`flashi2v.media.write_video` (default CRF 20, preset medium). An existing ``out_dir`` is an error unless
    ``overwrite`` (then it must be an earlier world dataset or empty; it is replaced only on success).
    """
    start = time.perf_counter()
    sp = get_split(split)
    seed = check_seed(seed)
    num_clips = _pos_int("num_clips", num_clips)
    workers = _pos_int("workers", workers)
    num_captions = _pos_int("num_captions", num_captions)
    num_frames, height, width, fps = validate_clip_size(num_frames, height, width, fps)
    if fps.is_integer():
        fps = float(int(fps))
    final = Path(os.path.abspath(os.path.expanduser(os.fspath(out_dir))))
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise InputError(f"{final} already exists; delete it, choose another --out, or pass --overwrite")
        if not final.is_dir() or (any(final.iterdir()) and not (final / "ground_truth.json").is_file()):
            raise InputError(f"refusing to overwrite {final}: it is not a world dataset (no ground_truth.json)")
    tmp = make_temp_dir(final.with_name(f".{final.name}.{uuid.uuid4().hex[:10]}.partial"), final)
    digits = max(6, len(str(num_clips - 1)))
    jobs = [(i, seed + i, sp.name, num_frames, height, width, fps, num_captions, bool(focused_captions), crf, preset,
             str(tmp), f"videos/{i:0{digits}d}.mp4") for i in range(num_clips)]
    metas, clips = [], []
    try:
        (tmp / "videos").mkdir()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=num_clips, unit="clip", desc=f"world {sp.name}", disable=None, leave=False)
        try:
            threads = None
            if workers == 1:  # in this process; one torch thread is ~2x faster for these small ops
                import torch

                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                results = map(_make_clip, jobs)
                pool = None
            else:
                methods = mp.get_all_start_methods()
                ctx = mp.get_context("fork" if "fork" in methods else "spawn")
                pool = ctx.Pool(min(workers, num_clips), initializer=_init_worker)
                results = pool.imap(_make_clip, jobs, chunksize=max(1, min(8, num_clips // (4 * workers))))
            try:
                for meta, entry in results:
                    metas.append(meta)
                    clips.append(entry)
                    if bar is not None:
                        bar.update(1)
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.join()
                if threads is not None:
                    torch.set_num_threads(threads)
        finally:
            if bar is not None:
                bar.close()
        (tmp / "meta.json").write_text(json.dumps(metas, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "annotations.txt").write_text(f"{final},{final / 'meta.json'}\n", encoding="utf-8")
        header = {
            "format": GT_FORMAT, "version": GT_VERSION, "split": sp.name, "held_out": sp.held_out,
            "split_description": sp.description, "seed": seed, "num_clips": num_clips, "num_frames": num_frames,
            "height": height, "width": width, "fps": fps,
            "render": {"supersample": SUPERSAMPLE, "background_supersample": BACKGROUND_SUPERSAMPLE},
            "coordinates": "pixels; +x right, +y down; pixel (col c, row r) covers [c,c+1)x[r,r+1), its centre is "
                           "(c+0.5, r+0.5); bbox [x0,y0,x1,y1] with x1,y1 exclusive; camera center in canvas pixels, "
                           "angle in degrees (clockwise camera roll positive)",
        }
        (tmp / "ground_truth.json").write_text(_ground_truth_text(header, clips), encoding="utf-8")
        from ..data.index import filter_yaml

        (tmp / "filter.yaml").write_text(filter_yaml(final / "annotations.txt", num_frames, height, width, fps,
                                                     "this world dataset"), encoding="utf-8")
        replace_path(tmp, final)
    except BaseException:
        remove_path(tmp)
        raise
    return WorldDataset(root=final, split=sp.name, num_clips=num_clips, seed=seed, num_frames=num_frames,
                        height=height, width=width, fps=fps, seconds=time.perf_counter() - start)


def load_ground_truth(path: Union[str, os.PathLike]) -> dict:
    """Read a dataset's ``ground_truth.json`` (or the dataset folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / "ground_truth.json"
    if not p.is_file():
        raise InputError(f"world ground truth not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p} is not valid JSON ({' '.join(str(e).split())})") from e
    if not isinstance(data, dict) or data.get("format") != GT_FORMAT:
        raise InputError(f"{p} is not a world ground-truth file (format {GT_FORMAT!r} expected)")
    return data
