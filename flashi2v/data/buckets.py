"""Aspect-ratio buckets: train wide, tall and square videos at about the same pixel count without distortion.

The official FlashI2V trains at one size (480x832) and centre-crops everything to it, which cuts most of a portrait
video away. Here every clip goes to the bucket whose aspect ratio is closest to its own; the official
resize/centre-crop (:func:`flashi2v.media.image.center_crop_resize`) then removes only the small aspect difference.
:class:`BucketBatchSampler` puts only same-bucket samples into a batch, so batches stack.

Bucket sizes come from :func:`flashi2v.media.image.fit_resolution` (multiples of 16, area <= the target's area,
aspect as close as possible). With the defaults (target 480x832, ratios h:w 9:16, 3:4, 1:1, 4:3, 16:9) they are
480x832 (the target itself), 544x720, 624x624, 720x544, 832x480.
"""

from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..media.image import fit_resolution, validate_size

__all__ = ["DEFAULT_RATIOS", "BucketBatchSampler", "Buckets", "meta_size"]

#: Height:width ratios of the default buckets: wide 9:16, 3:4, square, 4:3, tall 16:9.
DEFAULT_RATIOS: Tuple[Tuple[int, int], ...] = ((9, 16), (3, 4), (1, 1), (4, 3), (16, 9))


class Buckets:
    """A set of ``(height, width)`` buckets, all multiples of ``multiple``, at about ``height * width`` pixels.

    The target size itself is always a bucket (so a 480x832 setup keeps the official 480x832 for 16:9 video).
    ``sizes`` gives the buckets explicitly instead (ratios are then ignored).
    """

    def __init__(
        self,
        height: int = 480,
        width: int = 832,
        ratios: Sequence[Tuple[int, int]] = DEFAULT_RATIOS,
        multiple: int = 16,
        sizes: Optional[Sequence[Tuple[int, int]]] = None,
    ):
        height, width = validate_size(height, width, multiple)
        if sizes is None:
            area = height * width
            found = {(height, width)}
            for rh, rw in ratios:
                if rh <= 0 or rw <= 0:
                    raise InputError(f"bucket ratios must be positive height:width pairs, got {rh}:{rw}")
                found.add(fit_resolution(rh * 1000, rw * 1000, area, multiple))
        else:
            found = {validate_size(h, w, multiple) for h, w in sizes}
            if not found:
                raise InputError("Buckets(sizes=...) needs at least one (height, width)")
        # Sorted from wide to tall, so bucket ids are stable and readable.
        self.sizes: List[Tuple[int, int]] = sorted(found, key=lambda s: (s[0] / s[1], s[0]))

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self):
        return iter(self.sizes)

    def __repr__(self) -> str:
        return "Buckets(" + ", ".join(f"{h}x{w}" for h, w in self.sizes) + ")"

    def assign(self, height: int, width: int) -> int:
        """Id of the bucket whose aspect ratio is closest (in log space) to ``height / width``; ties -> larger area."""
        if not (height > 0 and width > 0):
            raise InputError(f"cannot assign a bucket to a {height}x{width} video")
        r = math.log(height / width)
        return min(
            range(len(self.sizes)),
            key=lambda i: (abs(math.log(self.sizes[i][0] / self.sizes[i][1]) - r), -self.sizes[i][0] * self.sizes[i][1]),
        )

    def assign_bucket(self, height: int, width: int) -> Tuple[int, int]:
        """The ``(height, width)`` of the bucket for a ``height x width`` video."""
        return self.sizes[self.assign(height, width)]


def meta_size(meta: dict) -> Optional[Tuple[int, int]]:
    """``(height, width)`` a meta entry will have after its optional crop, or ``None`` if the meta does not say.

    Uses ``crop`` [x0, x1, y0, y1] when present, else ``resolution`` {height, width}.
    """
    crop = meta.get("crop")
    if crop is not None and len(crop) == 4:
        x0, x1, y0, y1 = (int(v) for v in crop)
        if x1 > x0 and y1 > y0:
            return y1 - y0, x1 - x0
    res = meta.get("resolution")
    if isinstance(res, dict) and res.get("height") and res.get("width"):
        return int(res["height"]), int(res["width"])
    return None


class BucketBatchSampler:
    """Batches of dataset indices, each batch from a single bucket.

    ``bucket_ids[i]`` is the bucket of sample ``i`` (e.g. ``dataset.bucket_ids``). Per epoch: every bucket's indices
    are shuffled, cut into batches of ``batch_size`` (the incomplete tail is dropped with ``drop_last``), and the
    batches of all buckets are shuffled together. The order depends only on ``(seed, epoch)`` (call
    :meth:`set_epoch`), never on global RNG state. With ``num_replicas > 1`` every rank gets every
    ``num_replicas``-th batch (the batch list is cut to a multiple of ``num_replicas`` so all ranks step equally).
    """

    def __init__(
        self,
        bucket_ids: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise InputError(f"need 0 <= rank < num_replicas, got rank {rank}, num_replicas {num_replicas}")
        self.bucket_ids = [int(b) for b in bucket_ids]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _all_batches(self) -> List[List[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches: List[List[int]] = []
        for b in sorted(set(self.bucket_ids)):
            members = np.array([i for i, x in enumerate(self.bucket_ids) if x == b], dtype=np.int64)
            if self.shuffle:
                members = members[rng.permutation(len(members))]
            for s in range(0, len(members), self.batch_size):
                chunk = members[s : s + self.batch_size].tolist()
                if len(chunk) < self.batch_size and self.drop_last:
                    continue
                batches.append(chunk)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.num_replicas > 1:
            batches = batches[: len(batches) - len(batches) % self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._all_batches()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        counts = {}
        for b in self.bucket_ids:
            counts[b] = counts.get(b, 0) + 1
        n = sum((c // self.batch_size) if self.drop_last else -(-c // self.batch_size) for c in counts.values())
        return (n - n % self.num_replicas) // self.num_replicas
