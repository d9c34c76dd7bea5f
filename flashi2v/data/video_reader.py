"""Frame-exact video reading with PyAV for training data.

:func:`read_frames` decodes only what a training sample needs: it seeks to the keyframe at or before the first wanted
frame, decodes forward, converts to RGB only the frames that are returned, and stops as soon as the last wanted frame
is reached. :func:`probe` returns ``(num_frames, fps, height, width)`` of the (upright) video.

Frame index of a decoded frame
    ``index = round((pts - start_time) * time_base * average_rate)`` (all exact fractions). For a constant-frame-rate
    file this is the n-th frame, the same numbering as a full decode or decord. Requested index ``k`` returns the
    **last decoded frame whose index is <= k** ("the frame on screen at time k / fps"): in a variable-frame-rate
    file a gap (a frame held longer) repeats the held frame and a burst (two frames in one slot) keeps the later one,
    so the output is always evenly spaced in time.

Rotation
    The display-matrix side data (what phones write, and what ffmpeg turns the old ``rotate`` tag into) is honoured:
    frames are rotated by multiples of 90 degrees so the output is upright, as a player shows it. Flips in the matrix
    are not applied (PyAV exposes only the angle).

Errors
    Every failure raises a :class:`ClipError` subclass whose ``reason`` says why, so a dataset can skip the clip and
    count the reasons: ``missing``, ``corrupt``, ``truncated``, ``fps_mismatch``, ``too_short``.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import InputError

__all__ = [
    "ClipError",
    "CorruptVideoError",
    "FpsMismatchError",
    "MissingFileError",
    "TooShortError",
    "TruncatedVideoError",
    "probe",
    "read_frames",
]

PathLike = Union[str, os.PathLike]

#: Container fps and the expected fps may differ by at most this much (the official WanVideoProcessor check).
FPS_TOLERANCE = 0.1


class ClipError(InputError):
    """A training clip cannot be used. ``reason`` is a short machine-readable tag (used as a counter key)."""

    reason = "error"

    def __init__(self, message: str, reason: Optional[str] = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MissingFileError(ClipError):
    """The video file does not exist (or is a folder)."""

    reason = "missing"


class CorruptVideoError(ClipError):
    """The file cannot be opened or decoded (not a video, broken header, bad data, no video stream)."""

    reason = "corrupt"


class TruncatedVideoError(ClipError):
    """The file ends before frames its header promises (e.g. a partially downloaded file)."""

    reason = "truncated"


class FpsMismatchError(ClipError):
    """The container frame rate differs from the expected (meta) frame rate by more than 0.1."""

    reason = "fps_mismatch"


class TooShortError(ClipError):
    """The video (or the meta entry) has fewer frames than the sample needs."""

    reason = "too_short"


def _import_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("reading videos needs PyAV; install it with `pip install av`") from e
    return av


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _check_path(path: PathLike) -> Path:
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise MissingFileError(f"video file '{p}' does not exist")
    if p.is_dir():
        raise MissingFileError(f"video path '{p}' is a folder, not a video file")
    return p


def _open(av, p: Path):
    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise CorruptVideoError(f"cannot open video '{p}': {_one_line(e)}") from e
    if not container.streams.video:
        container.close()
        raise CorruptVideoError(f"video file '{p}' has no video stream")
    return container


def _rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        return Fraction(0)
    return Fraction(rate)


def _frame_index(pts: Optional[int], start: int, time_base: Fraction, rate: Fraction) -> Optional[int]:
    if pts is None:
        return None
    return int(round((pts - start) * time_base * rate))


def _count_frames(stream, container) -> int:
    n = int(stream.frames or 0)
    if n > 0:
        return n
    # Containers without a frame count in the header (e.g. some MKV/WebM): count packets without decoding.
    container.seek(0)
    n = sum(1 for pkt in container.demux(stream) if pkt.size)
    container.seek(0)
    return n


def _upright(frame_hwc: np.ndarray, rotation: int) -> np.ndarray:
    k = int(round(rotation / 90.0)) % 4  # counter-clockwise quarter turns (display-matrix convention)
    return np.rot90(frame_hwc, k=k, axes=(0, 1)) if k else frame_hwc


def _frame_rotation(frame) -> int:
    try:
        return int(round(frame.rotation or 0))
    except Exception:  # pragma: no cover - older PyAV without VideoFrame.rotation
        return 0


def _check_fps(p: Path, fps: float, expected_fps: Optional[float]) -> None:
    if expected_fps is not None and abs(fps - float(expected_fps)) > FPS_TOLERANCE:
        raise FpsMismatchError(
            f"video '{p}' has {fps:.3f} fps in its container but {float(expected_fps):.3f} fps was expected "
            f"(difference > {FPS_TOLERANCE}); fix the fps in the meta file"
        )


def probe(path: PathLike) -> Tuple[int, float, int, int]:
    """``(num_frames, fps, height, width)`` of the first video stream; height/width are upright (after rotation).

    The frame count comes from the header (or a packet count when the header has none); the rotation is read from
    the first decoded frame. Raises :class:`ClipError` subclasses (``missing``, ``corrupt``).
    """
    av = _import_av()
    p = _check_path(path)
    container = _open(av, p)
    try:
        stream = container.streams.video[0]
        fps = float(_rate(stream))
        try:
            n = _count_frames(stream, container)
            first = next(container.decode(stream), None)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise CorruptVideoError(f"cannot decode video '{p}': {_one_line(e)}") from e
        if first is None:
            raise CorruptVideoError(f"video file '{p}' contains no decodable frames")
        h, w = first.height, first.width
        if (int(round(_frame_rotation(first) / 90.0)) % 2) == 1:
            h, w = w, h
        return n, fps, h, w
    finally:
        container.close()


def read_frames(
    path: PathLike,
    indices: Sequence[int],
    *,
    expected_fps: Optional[float] = None,
    threads: int = 1,
) -> torch.Tensor:
    """Decode exactly the frames ``indices`` (any order, repeats allowed) and return uint8 ``[N, 3, H, W]`` RGB.

    The tensor is a channels-last view of the decoded ``[N, H, W, 3]`` pixels (no extra copy); call
    ``.contiguous()`` if you need the standard layout.

    ``expected_fps``: if given, the container fps must be within 0.1 of it (:class:`FpsMismatchError`).
    ``threads``: decoder threads (1 = like the official decord reader with one thread per DataLoader worker;
    0 = FFmpeg's automatic choice).

    Raises :class:`MissingFileError`, :class:`CorruptVideoError`, :class:`TruncatedVideoError` (the stream ends or
    breaks before the last requested frame although the header has it), :class:`FpsMismatchError`,
    :class:`TooShortError` (an index is beyond the video's frame count) and :class:`InputError` (bad ``indices``).
    """
    av = _import_av()
    idx = np.asarray(list(indices), dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0:
        raise InputError(f"indices must be a non-empty list of frame numbers, got {list(indices)!r}")
    if int(idx.min()) < 0:
        raise InputError(f"frame indices must be >= 0, got {int(idx.min())}")
    p = _check_path(path)
    container = _open(av, p)
    try:
        return _read(av, container, p, idx, expected_fps, threads)
    finally:
        container.close()


def _read(av, container, p: Path, idx: np.ndarray, expected_fps, threads: int) -> torch.Tensor:
    stream = container.streams.video[0]
    rate = _rate(stream)
    if rate <= 0:
        raise CorruptVideoError(f"video '{p}' states no frame rate")
    _check_fps(p, float(rate), expected_fps)
    total = int(stream.frames or 0)
    wanted = sorted(set(int(i) for i in idx))
    first_k, last_k = wanted[0], wanted[-1]
    if total > 0 and last_k >= total:
        raise TooShortError(f"video '{p}' has {total} frames but frame {last_k} was requested")

    stream.thread_type = "AUTO" if threads != 1 else "SLICE"
    stream.thread_count = max(0, int(threads))
    tb = Fraction(stream.time_base)
    start = int(stream.start_time or 0)
    file_size = p.stat().st_size

    got = _decode_range(av, container, stream, p, wanted, tb, start, rate, file_size, total, seek=first_k > 0)
    if got is None:  # the seek landed after the first wanted frame (bad index): decode from the beginning
        got = _decode_range(av, container, stream, p, wanted, tb, start, rate, file_size, total, seek=False)
    frames = np.stack([got[int(i)] for i in idx])  # [N, H, W, 3]
    # A channels-last view (no copy); the resize in the dataset makes it contiguous when it needs to.
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def _decode_range(av, container, stream, p, wanted: List[int], tb, start, rate, file_size, total: int, seek: bool):
    """Map each wanted index to an upright RGB array.

    ``None`` (caller retries without seeking) if a seek overshot the first wanted frame or found nothing to decode.
    """
    first_k, last_k = wanted[0], wanted[-1]
    if seek:
        # A little before the first wanted frame's timestamp, so rounding never puts us past it.
        target = start + int((Fraction(first_k) - Fraction(1, 2)) / rate / tb)
        container.seek(max(target, start), stream=stream, backward=True, any_frame=False)
    else:
        container.seek(0)  # also flushes the decoder after an earlier pass
    out: Dict[int, np.ndarray] = {}
    pending = list(wanted)  # ascending, not yet assigned
    prev = None  # (index, av frame) of the last decoded frame with index <= next pending
    prev_rgb = None
    last_pkt_end = 0
    decoded = 0

    def rgb(frame):
        a = frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(_upright(a, _frame_rotation(frame)))

    def assign_until(limit_exclusive: int):
        """Give every pending index < limit the previous frame."""
        nonlocal prev_rgb
        while pending and pending[0] < limit_exclusive:
            if prev is None:
                return False
            if prev_rgb is None:
                prev_rgb = rgb(prev[1])
            out[pending.pop(0)] = prev_rgb
        return True

    done = False
    try:
        for packet in container.demux(stream):
            if packet.pos is not None and packet.pos >= 0:
                last_pkt_end = max(last_pkt_end, packet.pos + packet.size)
            for frame in packet.decode():
                decoded += 1
                k = _frame_index(frame.pts if frame.pts is not None else frame.dts, start, tb, rate)
                if k is None:
                    k = (prev[0] + 1) if prev is not None else 0
                if prev is None and k > first_k:
                    if seek:
                        return None
                    # The stream starts after the first wanted slot (VFR start): hold the first frame backwards.
                    prev, prev_rgb = (k, frame), None
                assign_until(k)
                if k > last_k:
                    done = True
                    break
                if prev is None or prev[1] is not frame:
                    prev, prev_rgb = (k, frame), None
            if done:
                break
    except (av.error.FFmpegError, OSError, ValueError) as e:
        if seek and not decoded:
            return None  # nothing decodable after the seek point: retry from the start to find out why
        if prev is not None and pending and prev[0] >= pending[-1]:
            assign_until(pending[-1] + 1)
        if not pending:
            return out
        if decoded and last_pkt_end >= file_size:
            raise TruncatedVideoError(
                f"video '{p}' is cut off: decoding stopped after frame {prev[0] if prev else 0} "
                f"({_one_line(e)}); frame {last_k} was requested"
            ) from e
        raise CorruptVideoError(f"cannot decode video '{p}': {_one_line(e)}") from e
    if pending and prev is not None and prev[0] >= pending[-1]:
        assign_until(pending[-1] + 1)
    if pending and seek and not decoded:
        return None
    if pending:
        if not decoded:
            raise CorruptVideoError(f"video '{p}' contains no decodable frames")
        # The last frame stays on screen only for its own slot, not beyond.
        msg = f"video '{p}' ends at frame {prev[0]} but frame {pending[-1]} was requested"
        raise (TruncatedVideoError(msg) if total > 0 else TooShortError(msg))
    return out
