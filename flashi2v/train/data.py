"""Training batches: a resumable data-parallel sampler and the three sources (latent cache, videos, random).

Data order is a function of (seed, epoch) only: each epoch is one permutation of the dataset; every optimizer
micro-step consumes the next ``dp_size * batch_size`` indices (drop-last), and data-parallel rank r takes the r-th
slice. So one process with batch 2b and two processes with batch b see the same samples in the same *global slots*
(slot = dp_rank * b + i), and the per-sample training randomness (noise, sigma, cutoff, text dropout) is keyed by
(seed, step, micro-step, slot) — runs are reproducible across world sizes and exactly resumable from (epoch, cursor).
Context-parallel peers share a data-parallel rank and therefore the same batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import InputError


def sample_seed(*keys: int) -> int:
    """A stable 63-bit seed from integers (independent of Python's hash randomisation)."""
    digest = hashlib.blake2b("/".join(str(int(k)) for k in keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class DistributedEpochSampler:
    """Yields the local index list of every micro-step; ``state_dict()`` is the data position (epoch, cursor)."""

    def __init__(self, num_samples: int, batch_size: int, dp_rank: int = 0, dp_size: int = 1, seed: int = 0,
                 shuffle: bool = True):
        self.n, self.b, self.rank, self.size = int(num_samples), int(batch_size), int(dp_rank), int(dp_size)
        self.global_batch = self.b * self.size
        if self.n < self.global_batch:
            raise InputError(f"the dataset has {self.n} samples, fewer than one global batch ({self.size} data-parallel "
                             f"ranks x batch {self.b}); lower data.batch_size or add data")
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.epoch, self.cursor = 0, 0
        self._perm: Optional[torch.Tensor] = None
        self._perm_epoch = -1

    def _permutation(self) -> torch.Tensor:
        if self._perm_epoch != self.epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch))
                self._perm = torch.randperm(self.n, generator=g)
            else:
                self._perm = torch.arange(self.n)
            self._perm_epoch = self.epoch
        return self._perm

    def next_indices(self) -> list[int]:
        if self.cursor + self.global_batch > self.n:
            self.epoch, self.cursor = self.epoch + 1, 0
        start = self.cursor + self.rank * self.b
        idx = self._permutation()[start : start + self.b].tolist()
        self.cursor += self.global_batch
        return idx

    def state_dict(self) -> dict:
        return dict(epoch=self.epoch, cursor=self.cursor)

    def load_state_dict(self, sd: dict) -> None:
        self.epoch, self.cursor = int(sd["epoch"]), int(sd["cursor"])


@dataclass
class Batch:
    latents: torch.Tensor  # [B, C, T, h, w] float32
    first_frame_latents: torch.Tensor  # [B, C, 1, h, w]
    text_emb: torch.Tensor  # [B, L, D]
    empty_text_emb: torch.Tensor  # [L, D], the embedding of "" (text dropout)
    captions: list


class BatchSource:
    """Turns sampler indices into :class:`Batch` es. Subclasses: latent cache, decoded videos, random tensors."""

    num_samples: int
    latent_shape: tuple  # [C, T, h, w] of one sample (known after the first batch for videos)

    def batch(self, indices: list[int], device: torch.device, epoch: int = 0) -> Batch:
        """The samples ``indices`` of data epoch ``epoch`` (per-epoch draws: caption choice, frame window)."""
        raise NotImplementedError


class LatentCacheSource(BatchSource):
    """A latent cache. A sample with several captions gets one drawn per (seed, epoch, index): every epoch may see
    another caption, and a resumed run draws the same ones. ``caption_weights`` (``data.caption_weights``) weighs the
    draw by caption position (positions past the list take its last weight; a sample with one caption always uses
    it); None draws uniformly."""

    def __init__(self, path: str, text_len: int, text_dim: int, seed: int = 0, preload: bool = False,
                 device: torch.device | str = "cpu", caption_weights: list | None = None):
        from ..data.latent_cache import LatentCacheDataset

        self.ds = LatentCacheDataset(path, pad_text=True)
        m = self.ds.manifest
        if int(m["text_dim"]) != text_dim:
            raise InputError(f"the latent cache {path} holds {m['text_dim']}-d text states but the model expects "
                             f"text_dim {text_dim}; encode the cache with the model's text encoder")
        self.text_len = int(text_len)
        self.seed = int(seed)
        self.num_samples = len(self.ds)
        self.latent_shape = tuple(self.ds[0]["latents"].shape)
        self.empty = self._fit(self.ds.empty_text_emb)
        self.caption_weights = None
        if caption_weights is not None:
            self.caption_weights = [float(w) for w in caption_weights]
            for i, caps in enumerate(self.ds.all_captions()):
                if len(caps) > 1 and not any(self._weights(len(caps))):  # a lone caption is used anyway
                    raise InputError(f"data.caption_weights {list(caption_weights)} gives every caption of sample {i} "
                                     f"(it has {len(caps)}) weight 0; give one of its positions a positive weight")
        self.memory = self._preload(torch.device(device)) if preload else None

    def _preload(self, device: torch.device) -> dict:
        """The whole cache (:meth:`LatentCacheDataset.read_all`) on ``device``: latents, first-frame latents, each
        caption's states (fitted to ``text_len``) and each sample's first caption row, so a batch is a gather."""
        cache = self.ds.read_all()
        counts = torch.tensor([len(c) for c in cache["captions"]], dtype=torch.long)
        return dict(latents=cache["latents"].float().to(device), first=cache["first_frame_latents"].float().to(device),
                    text_emb=torch.stack([self._fit(e) for e in cache["text_emb"]]).to(device),
                    captions=cache["captions"], first_caption=torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]]))

    def _fit(self, emb: torch.Tensor) -> torch.Tensor:
        emb = emb[: self.text_len]
        if emb.shape[0] < self.text_len:
            emb = torch.cat([emb, emb.new_zeros(self.text_len - emb.shape[0], emb.shape[1])])
        return emb

    def _weights(self, count: int) -> list[float]:
        w = self.caption_weights
        return [w[min(k, len(w) - 1)] for k in range(count)]

    def _pick(self, epoch: int):
        def pick(index: int, count: int) -> int:
            if count == 1:
                return 0
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
            if self.caption_weights is None:
                return int(torch.randint(0, count, (), generator=g))
            return int(torch.multinomial(torch.tensor(self._weights(count), dtype=torch.float64), 1, generator=g))
        return pick

    def captions(self, epoch: int = 0) -> list[str]:
        """Every sample's caption as :meth:`batch` draws it in ``epoch``, in index order (no tensor is read)."""
        pick = self._pick(epoch)
        return [caps[pick(i, len(caps))] for i, caps in enumerate(self.ds.all_captions())]

    def batch(self, indices, device, epoch: int = 0):
        if self.memory is not None:
            m, pick = self.memory, self._pick(epoch)
            ks = [pick(i, len(m["captions"][i])) for i in indices]
            idx = torch.as_tensor(indices, dtype=torch.long)
            rows = m["first_caption"][idx] + torch.as_tensor(ks, dtype=torch.long)
            idx, rows = idx.to(m["latents"].device), rows.to(m["latents"].device)  # gathered where the cache lives
            return Batch(latents=m["latents"][idx].to(device), first_frame_latents=m["first"][idx].to(device),
                         text_emb=m["text_emb"][rows].to(device), empty_text_emb=self.empty.to(device),
                         captions=[m["captions"][i][k] for i, k in zip(indices, ks)])
        items = [self.ds.get(i, self._pick(epoch)) for i in indices]
        return Batch(
            latents=torch.stack([it["latents"] for it in items]).float().to(device),
            first_frame_latents=torch.stack([it["first_frame_latents"] for it in items]).float().to(device),
            text_emb=torch.stack([self._fit(it["text_emb"]) for it in items]).to(device),
            empty_text_emb=self.empty.to(device),
            captions=[it["caption"] for it in items],
        )


class RandomSource(BatchSource):
    """Random latents and text states of the configured size (throughput benchmarks; the official ``i2v_random``).

    Deterministic per index, and the first-frame latent is the first latent frame (as with the causal VAE)."""

    def __init__(self, num_samples: int, latent_shape: tuple, text_len: int, text_dim: int, seed: int = 0):
        self.num_samples, self.latent_shape = int(num_samples), tuple(latent_shape)
        self.text_len, self.text_dim, self.seed = int(text_len), int(text_dim), int(seed)

    def batch(self, indices, device, epoch: int = 0):  # a sample is the same tensors in every epoch
        lat, txt = [], []
        for i in indices:
            g = torch.Generator().manual_seed(sample_seed(self.seed, 7, i))
            lat.append(torch.randn(self.latent_shape, generator=g))
            txt.append(torch.randn(self.text_len, self.text_dim, generator=g))
        latents = torch.stack(lat).to(device)
        return Batch(latents, latents[:, :, :1].clone(), torch.stack(txt).to(device),
                     torch.zeros(self.text_len, self.text_dim, device=device), [""] * len(indices))


class VideoSource(BatchSource):
    """Decoded clips of a filtered LMDB, encoded on the fly by the frozen VAE and text encoder of a model folder."""

    def __init__(self, lmdb: str, pipeline_folder: str, *, height: int, width: int, num_frames: int,
                 train_fps: float, seed: int, device: torch.device, text_len: int):
        from ..data.dataset import FlashI2VVideoDataset
        from ..data.lmdb_store import LMDBReader
        from ..text import load_text_encoder
        from ..vae import WanVAE
        from pathlib import Path

        metas = list(LMDBReader(lmdb))
        if not metas:
            raise InputError(f"LMDB {lmdb} holds no samples; re-run `flashi2v data filter` with looser rules")
        self.ds = FlashI2VVideoDataset(metas, height=height, width=width, sample_num_frames=num_frames,
                                       train_fps=train_fps, text_drop_ratio=0.0, seed=seed)
        folder = Path(pipeline_folder)
        self.vae = WanVAE.from_pretrained(folder / "vae", dtype=torch.float32, device=device)
        self.text_encoder = load_text_encoder(folder / "text_encoder", device=device)
        self.text_len = int(text_len)
        self.num_samples = len(self.ds)
        sf, tf = self.vae.spatial_factor, self.vae.temporal_factor
        self.latent_shape = (self.vae.z_dim, (num_frames - 1) // tf + 1, height // sf, width // sf)
        with torch.no_grad():
            self.empty = self._encode_text([""])[0]

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        emb, _ = self.text_encoder.encode(prompts)
        emb = emb[:, : self.text_len].float()
        if emb.shape[1] < self.text_len:
            emb = torch.cat([emb, emb.new_zeros(emb.shape[0], self.text_len - emb.shape[1], emb.shape[2])], 1)
        return emb

    @torch.no_grad()
    def batch(self, indices, device, epoch: int = 0):
        items = [self.ds.get(i, epoch) for i in indices]
        video = torch.stack([it["video"] for it in items]).to(device)
        latents = self.vae.encode(video).float()
        first = self.vae.encode(video[:, :, :1]).float()
        captions = [it["caption"] for it in items]
        return Batch(latents, first, self._encode_text(captions).to(device), self.empty.to(device), captions)

    @property
    def skip_counts(self) -> dict:
        return dict(self.ds.skip_counts)


def build_source(cfg, model_config, device: torch.device) -> BatchSource:
    d = cfg.data
    if d.source == "latent_cache":
        src: Any = LatentCacheSource(d.path, model_config.text_len, model_config.text_dim, cfg.seed, d.preload,
                                     device, d.caption_weights)
    elif d.source == "random":
        for name, m in (("height", 16), ("width", 16)):
            if getattr(d, name) % m:
                raise InputError(f"data.{name} must be a multiple of {m}, got {getattr(d, name)}")
        if (d.num_frames - 1) % 4:
            raise InputError(f"data.num_frames must be 1 + 4k, got {d.num_frames}")
        shape = (model_config.out_dim, (d.num_frames - 1) // 4 + 1, d.height // 8, d.width // 8)
        src = RandomSource(d.random_samples, shape, model_config.text_len, model_config.text_dim, cfg.seed)
    else:
        src = VideoSource(d.path, cfg.model.pipeline, height=d.height, width=d.width, num_frames=d.num_frames,
                          train_fps=d.train_fps, seed=cfg.seed, device=device, text_len=model_config.text_len)
    if d.max_samples is not None:
        if d.max_samples > src.num_samples:
            raise InputError(f"data.max_samples is {d.max_samples} but {d.path} holds {src.num_samples} samples; "
                             "lower data.max_samples or remove it to train on all of them")
        src.num_samples = d.max_samples  # the sampler draws from indices [0, max_samples)
    return src


class BatchLoader:
    """Iterator of :class:`Batch` es in sampler order, prefetching ``num_workers`` batches on background threads
    (decoding and the frozen encoders release the GIL). ``state_dict()`` is the position after the last batch
    *returned* (not the last one prefetched), so a checkpoint resumes exactly."""

    def __init__(self, source: BatchSource, sampler: DistributedEpochSampler, device, num_workers: int = 0):
        self.source, self.sampler, self.device, self.num_workers = source, sampler, device, int(num_workers)
        self._consumed = sampler.state_dict()
        self._queue: list = []
        self._pool = None

    def _submit(self) -> None:
        indices = self.sampler.next_indices()
        after = self.sampler.state_dict()  # its epoch is the one these indices were drawn in
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="flashi2v-data")
        self._queue.append((self._pool.submit(self.source.batch, indices, self.device, after["epoch"]), after))

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        if self.num_workers == 0:
            indices = self.sampler.next_indices()
            batch = self.source.batch(indices, self.device, self.sampler.epoch)
            self._consumed = self.sampler.state_dict()
            return batch
        while len(self._queue) < self.num_workers + 1:
            self._submit()
        future, after = self._queue.pop(0)
        batch = future.result()
        self._consumed = after
        return batch

    def state_dict(self) -> dict:
        return dict(self._consumed)

    def load_state_dict(self, sd: dict) -> None:
        self.close()
        self.sampler.load_state_dict(sd)
        self._consumed = self.sampler.state_dict()

    def close(self) -> None:
        for future, _ in self._queue:
            future.cancel()
        self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
