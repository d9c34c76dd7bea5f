"""The official FlashI2V data filter (``filter_data.py`` / ``WanVideoFilter``), rule by rule.

:func:`filter_samples` applies the rules of :data:`RULES` in order; the first rule that fails drops the sample and is
counted. Survivors are copies of the input dicts (all fields kept, probed fields filled in) with ``start_frame_idx``
added. :func:`run_filter` reads the annotation file, filters, prints the summary table and writes the LMDB.

Differences from the official code (all documented in ``docs/data_filter.md``): missing ``resolution``/``fps``/
``num_frames`` are probed from the file instead of raising ``KeyError``/assuming 24 fps; an empty caption (``""``,
``[]``) counts as no caption; malformed values (a string fps, a non-dict entry) are counted as ``bad_metadata``
instead of crashing; with ``train_fps: null`` and a ``sample_stride``, "too long" uses the stride instead of crashing.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TextIO

import numpy as np

from ..errors import ConfigError, InputError
from .meta import ProbeError, _is_number, fill_missing_fields, probe_video, read_annotations


# ----------------------------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class FilterConfig:
    """Filter settings; the YAML keys are the official ``configs/filter_config.yaml`` names.

    The defaults are the official FlashI2V ones: samples 480×832×49 at 16 fps, at least 720p worth of pixels
    (``min_hxw`` 921600 = 720·1280, scaled up for aspect ratios away from 480/832), h/w in [0.4, 1.2], at most
    5× the sample duration, motion in [0, 1].
    """

    ann_txt_path: Optional[str] = None  #: annotation file of `root_dir,meta.json` lines (required)
    save_path: Optional[str] = None  #: output directory, or a `.lmdb` path (the DB goes next to it)
    save_absolute_path: bool = True  #: join each `path` onto its root_dir
    sample_height: int = 480
    sample_width: int = 832
    sample_num_frames: int = 49
    train_fps: Optional[float] = 16
    sample_stride: Optional[int] = None  #: used only when train_fps is null (official precedence)
    min_hxw: int = 921600
    min_h_div_w_ratio: float = 0.4
    max_h_div_w_ratio: float = 1.2
    too_long_factor: float = 5.0
    min_motion_value: float = 0.0
    max_motion_value: float = 1.0

    def __post_init__(self):
        self.validate()

    @classmethod
    def field_names(cls) -> list:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "FilterConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a mapping of filter settings, got a {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: "
                              f"{', '.join(cls.field_names())}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path) -> "FilterConfig":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"filter config {'is a folder' if path.is_dir() else 'not found'}: {path} "
                              "(pass --config FILE.yaml)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a YAML text file (not UTF-8); pass the filter config YAML") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML ({' '.join(str(e).split())})") from e
        return cls.from_dict({} if data is None else data, source=str(path))

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) for a value of the wrong type or out of range."""

        def num(name, positive=True, integer=False, optional=False):
            v = getattr(self, name)
            if v is None and optional:
                return
            ok = _is_number(v) and (not integer or float(v).is_integer()) and (not positive or v > 0)
            if not ok:
                kind = "a positive integer" if integer and positive else "a positive number" if positive else "a number"
                raise ConfigError(f"{name} must be {kind}{' or null' if optional else ''}, got {v!r}")
            if integer:
                setattr(self, name, int(v))

        for name in ("ann_txt_path", "save_path"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, Path)):
                raise ConfigError(f"{name} must be a path string, got {v!r}")
            if isinstance(v, Path):
                setattr(self, name, str(v))
        if not isinstance(self.save_absolute_path, bool):
            raise ConfigError(f"save_absolute_path must be true or false, got {self.save_absolute_path!r}")
        for name in ("sample_height", "sample_width", "sample_num_frames", "min_hxw"):
            num(name, integer=True)
        num("train_fps", optional=True)
        num("sample_stride", integer=True, optional=True)
        if self.train_fps is None and self.sample_stride is None:
            raise ConfigError("set train_fps (official default 16) or sample_stride; both are null")
        num("too_long_factor")
        num("min_h_div_w_ratio")
        num("max_h_div_w_ratio")
        num("min_motion_value", positive=False)
        num("max_motion_value", positive=False)
        if self.min_h_div_w_ratio > self.max_h_div_w_ratio:
            raise ConfigError(f"min_h_div_w_ratio {self.min_h_div_w_ratio} > max_h_div_w_ratio {self.max_h_div_w_ratio}")
        if self.min_motion_value > self.max_motion_value:
            raise ConfigError(f"min_motion_value {self.min_motion_value} > max_motion_value {self.max_motion_value}")


# ----------------------------------------------------------------------------------------------------------------
# rules: each takes (sample, config) and returns True to keep. They run in RULES order on a sample whose probed
# fields are filled in and whose values passed `bad_metadata`, so later rules may index fields directly.
# ----------------------------------------------------------------------------------------------------------------
def has_caption(s: dict, cfg: FilterConfig) -> bool:
    """``cap`` is a non-empty string, or a list holding at least one non-empty string."""
    cap = s.get("cap")
    if isinstance(cap, str):
        return bool(cap.strip())
    if isinstance(cap, (list, tuple)):
        return any(isinstance(c, str) and c.strip() for c in cap)
    return False


def valid_resolution(s: dict, cfg: FilterConfig) -> bool:
    """``resolution`` is a dict with positive numeric ``height`` and ``width``."""
    r = s.get("resolution")
    if not isinstance(r, dict):
        return False
    h, w = r.get("height"), r.get("width")
    return _is_number(h) and _is_number(w) and h > 0 and w > 0


def _hw(s: dict):
    return s["resolution"]["height"], s["resolution"]["width"]


def in_ratio_band(s: dict, cfg: FilterConfig) -> bool:
    """``min_h_div_w_ratio <= h/w <= max_h_div_w_ratio``."""
    h, w = _hw(s)
    return cfg.min_h_div_w_ratio <= h / w <= cfg.max_h_div_w_ratio


def min_area(cfg: FilterConfig, h: float, w: float) -> int:
    """⌈min_hxw · max(r/r₀, r₀/r)⌉ with r = h/w and r₀ = sample_height/sample_width."""
    r, r0 = h / w, cfg.sample_height / cfg.sample_width
    return math.ceil(cfg.min_hxw * max(r / r0, r0 / r))


def large_enough(s: dict, cfg: FilterConfig) -> bool:
    """h·w ≥ :func:`min_area` (the further the aspect ratio is from the sample's, the more pixels are needed)."""
    h, w = _hw(s)
    return h * w >= min_area(cfg, h, w)


def frame_interval(fps: float, cfg: FilterConfig) -> float:
    """Source frames per training frame: 1 if |fps − train_fps| < 0.1 else fps/train_fps (or ``sample_stride``)."""
    if cfg.train_fps is None:
        return float(cfg.sample_stride)
    return 1.0 if abs(fps - cfg.train_fps) < 0.1 else fps / cfg.train_fps


def not_too_long(s: dict, cfg: FilterConfig) -> bool:
    """num_frames ≤ too_long_factor · (sample_num_frames · fps / train_fps) (· sample_stride without train_fps)."""
    if cfg.train_fps is None:
        limit = cfg.too_long_factor * cfg.sample_num_frames * cfg.sample_stride
    else:
        limit = cfg.too_long_factor * (cfg.sample_num_frames * s["fps"] / cfg.train_fps)
    return s["num_frames"] <= limit


def fps_high_enough(s: dict, cfg: FilterConfig) -> bool:
    """frame interval ≥ 1, i.e. the video is not slower than train_fps (always true in sample_stride mode)."""
    return cfg.train_fps is None or frame_interval(s["fps"], cfg) >= 1.0


def in_motion_band(s: dict, cfg: FilterConfig) -> bool:
    """``min_motion_value <= motion <= max_motion_value`` (a missing motion counts as 0)."""
    m = s.get("motion", 0.0)
    m = 0.0 if m is None else m
    return cfg.min_motion_value <= m <= cfg.max_motion_value


def start_frame(s: dict) -> int:
    """``cut[0]``, or 0 without a cut."""
    cut = s.get("cut")
    return int(cut[0]) if isinstance(cut, (list, tuple)) and cut else 0


def frame_indices(s: dict, cfg: FilterConfig) -> np.ndarray:
    """arange(start, start + num_frames, interval) truncated to int (the frames the dataset can sample)."""
    start = start_frame(s)
    return np.arange(start, start + s["num_frames"], frame_interval(s["fps"], cfg)).astype(int)


def long_enough(s: dict, cfg: FilterConfig) -> bool:
    """At least ``sample_num_frames`` frame indices."""
    return len(frame_indices(s, cfg)) >= cfg.sample_num_frames


def _valid_values(s: dict) -> bool:
    """``path`` is a string, fps/num_frames are positive numbers, cut/motion (when given) are numeric."""
    if not isinstance(s.get("path"), str):
        return False
    if not (_is_number(s.get("fps")) and s["fps"] > 0 and _is_number(s.get("num_frames")) and s["num_frames"] >= 0):
        return False
    cut = s.get("cut")
    if cut is not None and not (isinstance(cut, (list, tuple)) and cut and _is_number(cut[0]) and cut[0] >= 0):
        return False
    m = s.get("motion")
    return m is None or _is_number(m)


@dataclass(frozen=True)
class Rule:
    name: str
    check: Callable[[dict, FilterConfig], bool]
    description: str


#: The rules in the order they are applied; ``bad_metadata`` probes missing fields first (see :func:`filter_samples`).
RULES = (
    Rule("no_caption", has_caption, "no caption (cap missing or empty)"),
    Rule("bad_metadata", lambda s, c: _valid_values(s), "unprobeable file or malformed path/fps/num_frames/cut/motion"),
    Rule("bad_resolution", valid_resolution, "no or invalid resolution"),
    Rule("aspect_ratio", in_ratio_band, "h/w outside [min_h_div_w_ratio, max_h_div_w_ratio]"),
    Rule("too_small", large_enough, "h*w below min_hxw scaled by the aspect mismatch"),
    Rule("too_long", not_too_long, "more than too_long_factor x the sample duration"),
    Rule("fps_too_low", fps_high_enough, "fps below train_fps (frame interval < 1)"),
    Rule("motion", in_motion_band, "motion outside [min_motion_value, max_motion_value]"),
    Rule("too_short", long_enough, "fewer than sample_num_frames frames after resampling"),
)


# ----------------------------------------------------------------------------------------------------------------
# filtering and summary
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class FilterSummary:
    """How many samples each rule dropped (in rule order) and how many were kept."""

    total: int = 0
    kept: int = 0
    dropped: dict = field(default_factory=lambda: {r.name: 0 for r in RULES})

    def table(self) -> str:
        width = max(len(r.name) for r in RULES) + 2
        lines = [f"{'rule':<{width}}{'dropped':>10}", "-" * (width + 10)]
        lines += [f"{name:<{width}}{n:>10}" for name, n in self.dropped.items()]
        lines += ["-" * (width + 10), f"{'kept':<{width}}{self.kept:>10}", f"{'total':<{width}}{self.total:>10}"]
        return "\n".join(lines)


def check_sample(sample, cfg: FilterConfig, probe=probe_video):
    """(name of the first failing rule or None, the prepared sample dict or None)."""
    if not isinstance(sample, dict):
        return "bad_metadata", None
    if not has_caption(sample, cfg):
        return "no_caption", None
    try:
        s = fill_missing_fields(sample, probe=probe)
    except ProbeError:
        return "bad_metadata", None
    for rule in RULES:
        if not rule.check(s, cfg):
            return rule.name, None
    s["start_frame_idx"] = start_frame(s)
    return None, s


def filter_samples(samples, cfg: FilterConfig, probe=probe_video):
    """Apply :data:`RULES` to ``samples``; returns (survivors, :class:`FilterSummary`). Inputs are not modified."""
    summary = FilterSummary()
    kept = []
    for sample in samples:
        summary.total += 1
        reason, s = check_sample(sample, cfg, probe=probe)
        if reason is None:
            kept.append(s)
        else:
            summary.dropped[reason] += 1
    summary.kept = len(kept)
    return kept, summary


@dataclass
class FilterResult:
    summary: FilterSummary
    output_path: Path  #: the written `filtered_samples_{N}...lmdb` directory


def run_filter(cfg: FilterConfig, out: Optional[TextIO] = None, overwrite: bool = False) -> FilterResult:
    """Read ``cfg.ann_txt_path``, filter, print the summary table to ``out`` (stdout) and write the LMDB.

    Raises :class:`ConfigError` without an annotation file or output path and :class:`InputError` when nothing
    survives (the table is printed first; nothing is written).
    """
    from .lmdb_store import write_filtered_samples

    out = sys.stdout if out is None else out
    if not cfg.ann_txt_path:
        raise ConfigError("no annotation file: set ann_txt_path in the filter config")
    if not cfg.save_path:
        raise ConfigError("no output path: set save_path in the filter config or pass --output")
    samples = read_annotations(cfg.ann_txt_path, absolute_paths=cfg.save_absolute_path)
    kept, summary = filter_samples(samples, cfg)
    print(summary.table(), file=out)
    if not kept:
        raise InputError(f"no sample passed the filter ({summary.total} read; see the table above); nothing written — "
                         "check the meta JSON or relax the filter config")
    path = write_filtered_samples(kept, cfg.save_path, overwrite=overwrite)
    return FilterResult(summary=summary, output_path=path)


FILTER_MARKER = "lmdb.json"


def filter_once(config_yaml: str | Path, save_dir: str | Path) -> tuple[Path, Optional[dict]]:
    """Filter a dataset described by ``config_yaml`` (e.g. a ``flashi2v world`` folder's ``filter.yaml``) into
    ``save_dir`` unless an earlier call already did: ``save_dir/lmdb.json`` records the LMDB written and the counts.
    Returns ``(lmdb path, {"kept", "total"})`` after filtering, or ``(lmdb path, None)`` when the earlier result is
    reused (used by the leakage benchmark and the default-model recipe)."""
    import io
    import json

    from ..weights.io import atomic_write_text

    save_dir = Path(save_dir)
    marker = save_dir / FILTER_MARKER
    if marker.is_file():
        try:
            lmdb = Path(json.loads(marker.read_text())["lmdb"])
        except (OSError, ValueError, KeyError, TypeError):
            lmdb = None
        if lmdb is not None and lmdb.exists():
            return lmdb, None
    cfg = FilterConfig.from_yaml(config_yaml)
    cfg.save_path = str(save_dir)
    res = run_filter(cfg, out=io.StringIO(), overwrite=True)
    counts = dict(kept=res.summary.kept, total=res.summary.total)
    atomic_write_text(marker, json.dumps(dict(lmdb=str(res.output_path), **counts), indent=1) + "\n")
    return Path(res.output_path), counts
