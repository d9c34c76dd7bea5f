"""Image-to-video training dataset (the official ``FlashI2VDataset`` video path, spec §5.2, without its bugs).

Per sample (all randomness from a per-sample generator seeded by ``(seed, epoch, index)``, so a sample is
reproducible and independent of DataLoader worker layout):

1. caption: a random choice if ``cap`` is a list; replaced by ``""`` with probability ``text_drop_ratio`` (0.1).
   No text cleaning or tokenisation here (the text encoder side does that).
2. frame indices: ``interval = 1 if |fps - train_fps| < 0.1 else fps / train_fps``;
   ``arange(start_frame_idx, start_frame_idx + num_frames, interval)`` truncated to int (as the official filter).
3. a random window of ``sample_num_frames`` consecutive entries, start uniform over **all** valid starts
   ``0 .. n - sample_num_frames`` (the official ``TemporalRandomCrop`` never picks the last one, spec §12.8).
4. decode exactly those frames (:func:`flashi2v.data.video_reader.read_frames`; the container fps must match the
   meta fps within 0.1), optional crop ``[x0, x1, y0, y1]``, the official uint8 bicubic-antialias resize + centre crop
   to the bucket's size, ``/255``, ``2x - 1``; video ``[3, F, H, W]`` and the condition ``first_frame = video[:, :1]``.

A clip that cannot be used (missing, corrupt, truncated, fps mismatch, too short, bad meta) is skipped: the dataset
tries the next indices in order (only ones in the same bucket, so batches still stack), at most ``max_attempts``
clips, then raises. It never retries forever (the official code retries random indices forever, spec §12.12). Skips
are counted per reason in ``skip_counts`` (per process: each DataLoader worker has its own copy) and logged once per
reason.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..media.image import center_crop_resize, to_model_range, validate_size
from .buckets import Buckets, meta_size
from .video_reader import ClipError, TooShortError, read_frames

__all__ = ["FlashI2VVideoDataset", "frame_indices", "meta_captions"]

logger = logging.getLogger(__name__)

#: |fps - train_fps| below this keeps every frame (official rule).
FPS_SAME_TOLERANCE = 0.1
#: The official filter's default fps when a meta entry has none.
DEFAULT_META_FPS = 24.0


def frame_indices(fps: float, train_fps: float, start: int, num_frames: int) -> np.ndarray:
    """The official resampling: frame numbers of the clip at ``train_fps``.

    ``interval = 1`` if ``|fps - train_fps| < 0.1`` else ``fps / train_fps``;
    ``arange(start, start + num_frames, interval).astype(int)``. Raises :class:`ClipError` (reason ``low_fps``) if
    ``fps`` is below ``train_fps`` (interval < 1; the official filter drops such clips).
    """
    fps, train_fps = float(fps), float(train_fps)
    interval = 1.0 if abs(fps - train_fps) < FPS_SAME_TOLERANCE else fps / train_fps
    if interval < 1:
        raise ClipError(f"clip fps {fps:g} is below train_fps {train_fps:g}; it cannot be resampled", "low_fps")
    return np.arange(start, start + num_frames, interval).astype(np.int64)


def meta_captions(meta: Dict[str, Any]) -> List[str]:
    """Every caption of a meta entry: ``cap`` as a one-item list, or the list itself (:class:`ClipError` if neither)."""
    cap = meta.get("cap")
    caps = list(cap) if isinstance(cap, (list, tuple)) else [cap]
    if not caps:
        raise ClipError("meta entry has an empty caption list", "bad_meta")
    for c in caps:
        if not isinstance(c, str):
            raise ClipError(f"meta entry has no caption string (cap={cap!r})", "bad_meta")
    return caps


class FlashI2VVideoDataset(Dataset):
    """Torch dataset over meta dicts (``path``, ``cap``, ``fps``, ``num_frames``, ``start_frame_idx``, optional
    ``crop`` [x0, x1, y0, y1] and ``resolution`` {height, width}).

    Args:
        metas: list of meta dicts (``path`` already absolute or relative to the working directory).
        height, width: output size when ``buckets`` is None.
        sample_num_frames: frames per sample (49 officially).
        train_fps: target frame rate (16 officially).
        text_drop_ratio: probability of an empty caption (0.1 officially).
        buckets: a :class:`~flashi2v.data.buckets.Buckets`; each sample is then resized to its bucket's size (bucket
            from the meta's crop/resolution, else from the decoded frames). Use with
            :class:`~flashi2v.data.buckets.BucketBatchSampler` and ``dataset.bucket_ids``.
        seed: base seed of the per-sample generators; :meth:`set_epoch` changes the draws per epoch.
        max_attempts: how many clips one ``__getitem__`` may try before giving up.
        reader_threads: decoder threads per clip (1 = like the official reader; DataLoader workers parallelise).

    Item: ``dict(video=[3,F,H,W] float32 in [-1,1], first_frame=[3,1,H,W], caption=str, index=int)`` where
    ``index`` is the meta index actually loaded (differs from the requested one after a skip).
    """

    def __init__(
        self,
        metas: Sequence[Dict[str, Any]],
        *,
        height: int = 480,
        width: int = 832,
        sample_num_frames: int = 49,
        train_fps: float = 16.0,
        text_drop_ratio: float = 0.1,
        buckets: Optional[Buckets] = None,
        seed: int = 0,
        max_attempts: int = 10,
        reader_threads: int = 1,
    ):
        self.metas = list(metas)
        if not self.metas:
            raise InputError("the dataset needs at least one meta entry")
        self.height, self.width = validate_size(height, width)
        if isinstance(sample_num_frames, bool) or not isinstance(sample_num_frames, int) or sample_num_frames < 1:
            raise InputError(f"sample_num_frames must be a positive integer, got {sample_num_frames!r}")
        if not train_fps or not 0 < float(train_fps) < float("inf"):
            raise InputError(f"train_fps must be positive and finite, got {train_fps!r}")
        if not 0.0 <= float(text_drop_ratio) <= 1.0:
            raise InputError(f"text_drop_ratio must be in [0, 1], got {text_drop_ratio!r}")
        if max_attempts < 1:
            raise InputError(f"max_attempts must be >= 1, got {max_attempts!r}")
        self.sample_num_frames = sample_num_frames
        self.train_fps = float(train_fps)
        self.text_drop_ratio = float(text_drop_ratio)
        self.buckets = buckets
        self.seed = int(seed)
        self.epoch = 0
        self.max_attempts = int(max_attempts)
        self.reader_threads = int(reader_threads)
        self.skip_counts: Dict[str, int] = {}
        self._logged_reasons: set = set()
        # Bucket of every sample, known before decoding when the meta gives the size (-1 = decide after decoding).
        self.bucket_ids: List[int] = []
        for m in self.metas:
            size = meta_size(m) if buckets is not None else None
            self.bucket_ids.append(buckets.assign(*size) if size else (-1 if buckets is not None else 0))

    def __len__(self) -> int:
        return len(self.metas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # ------------------------------------------------------------------------------------------------------------

    def _rng(self, index: int, epoch: Optional[int] = None) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch if epoch is None else int(epoch), index])

    def _candidates(self, index: int) -> List[int]:
        """The requested index, then the following ones (cyclic) in the same bucket, ``max_attempts`` at most."""
        n = len(self.metas)
        want = self.bucket_ids[index]
        out = []
        for step in range(n):
            j = (index + step) % n
            if step == 0 or self.bucket_ids[j] == want:
                out.append(j)
                if len(out) >= self.max_attempts:
                    break
        return out

    def _skip(self, index: int, err: ClipError) -> None:
        reason = err.reason
        self.skip_counts[reason] = self.skip_counts.get(reason, 0) + 1
        if reason not in self._logged_reasons:
            self._logged_reasons.add(reason)
            logger.warning("skipping clip %d (%s): %s (further '%s' skips are only counted)", index, reason, err, reason)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.get(index)

    def get(self, index: int, epoch: Optional[int] = None) -> Dict[str, Any]:
        """``self[index]`` with the draws of ``epoch`` (default: :attr:`epoch`) without changing :attr:`epoch`, so
        loader threads can load samples of different epochs at once."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} clips")
        index %= len(self)
        errors = []
        for j in self._candidates(index):
            try:
                return self.load(j, epoch)
            except ClipError as e:
                self._skip(j, e)
                errors.append(f"{j}: {e.reason}")
        raise InputError(
            f"{len(errors)} clips in a row could not be loaded starting at index {index} ({', '.join(errors)}); "
            f"see dataset.skip_counts {self.skip_counts}"
        )

    def load(self, index: int, epoch: Optional[int] = None) -> Dict[str, Any]:
        """Load meta entry ``index`` without skipping (raises :class:`ClipError` if it cannot be used)."""
        meta = self.metas[index]
        rng = self._rng(index, epoch)
        caption = self._caption(meta, rng)
        try:
            path = meta["path"]
            fps = float(meta.get("fps", DEFAULT_META_FPS))
            num_frames = int(meta["num_frames"])
            start = int(meta.get("start_frame_idx", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise ClipError(f"meta entry {index} is missing or has a bad field: {e!r}", "bad_meta") from e

        idx = frame_indices(fps, self.train_fps, start, num_frames)
        if len(idx) < self.sample_num_frames:
            raise TooShortError(
                f"clip {index} gives {len(idx)} frames at {self.train_fps:g} fps, {self.sample_num_frames} are needed"
            )
        begin = int(rng.integers(0, len(idx) - self.sample_num_frames + 1))  # all valid starts, last included
        idx = idx[begin : begin + self.sample_num_frames]

        frames = read_frames(path, idx.tolist(), expected_fps=fps, threads=self.reader_threads)  # uint8 [F,3,H,W]
        frames = self._crop(frames, meta.get("crop"), index)
        h, w = self._target_size(index, frames.shape[-2], frames.shape[-1])
        frames = center_crop_resize(frames, h, w)
        video = to_model_range(frames).permute(1, 0, 2, 3).contiguous()  # [3, F, H, W]
        return dict(video=video, first_frame=video[:, :1].clone(), caption=caption, index=index)

    def _caption(self, meta: Dict[str, Any], rng: np.random.Generator) -> str:
        caps = meta_captions(meta)
        cap = caps[int(rng.integers(0, len(caps)))] if isinstance(meta.get("cap"), (list, tuple)) else caps[0]
        if rng.random() < self.text_drop_ratio:
            return ""
        return cap

    @staticmethod
    def _crop(frames: torch.Tensor, crop, index: int) -> torch.Tensor:
        if crop is None:
            return frames
        try:
            x0, x1, y0, y1 = (int(v) for v in crop)
        except (TypeError, ValueError) as e:
            raise ClipError(f"clip {index}: crop must be [x0, x1, y0, y1], got {crop!r}", "bad_meta") from e
        h, w = frames.shape[-2:]
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ClipError(f"clip {index}: crop {list(crop)} does not fit a {w}x{h} (w x h) video", "bad_meta")
        return frames[..., y0:y1, x0:x1]

    def _target_size(self, index: int, h: int, w: int) -> Tuple[int, int]:
        if self.buckets is None:
            return self.height, self.width
        b = self.bucket_ids[index]
        if b < 0:
            b = self.buckets.assign(h, w)
        return self.buckets.sizes[b]
