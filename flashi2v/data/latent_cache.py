"""Pre-computed training inputs: VAE latents, first-frame latents and text embeddings (``flashi2v data encode``).

:func:`encode_cache` runs every sample of a filtered LMDB through :class:`~flashi2v.data.dataset.FlashI2VVideoDataset`
(text dropout 0: dropout is applied at training time by swapping in the stored empty-prompt embedding) and writes::

    cache_dir/
      manifest.json                 config, model folder, counts, skip counts per reason, list of complete shards
      empty_prompt.safetensors      text_emb [L0, D] (embedding of "" trimmed to its length L0), text_len [1]
      shard_000000.safetensors      LMDB samples [0, S), S = --shard-size (clips that cannot be loaded are skipped)
      shard_000001.safetensors      ...

A shard holds ``latents [n, 16, T, h, w]`` (float32, ``vae.encode`` of the clip), ``first_frame_latents
[n, 16, 1, h, w]`` (the first frame encoded alone, as the official training code), ``num_captions [n]`` (a meta
entry's ``cap`` may be a list: *every* caption is encoded, and training draws one per epoch, as training on the videos
does), ``text_emb [sum(text_len), D]`` (each caption's embedding trimmed to its length, concatenated, sample by
sample), ``text_len [sum(num_captions)]``, ``index [n]`` (LMDB index), and the captions as JSON (one list per sample)
in the file metadata. Shard ``k`` always covers LMDB indices ``[k*S, (k+1)*S)``, so a run is
resumable: every file is written under a temporary name and renamed when complete, and ``manifest.json`` is rewritten
atomically after each shard; rerunning with the same arguments skips the listed shards. Every draw (the frame window)
comes from the dataset's per-sample generator seeded by ``--seed``, so a resumed run equals an uninterrupted one.

:class:`LatentCacheDataset` reads a cache back; text embeddings are zero-padded to the encoder's ``text_len`` (the
layout ``TextEncoder.encode`` returns), so items are drop-in for the model.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.data import Dataset

from ..errors import CheckpointError, InputError
from ..precision import resolve_device
from ..weights.io import atomic_save_safetensors, atomic_write_text, check_output_path, make_dirs

__all__ = ["CACHE_FORMAT", "LatentCacheDataset", "encode_cache", "shard_name"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = "flashi2v-latent-cache"
CACHE_FORMAT_VERSION = 2  # 2: every caption of a sample (1: one caption, still read)
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
EMPTY_PROMPT_NAME = "empty_prompt.safetensors"

#: The arguments that define a cache; a rerun into the same folder must use the same values.
CONFIG_KEYS = ("lmdb", "model", "height", "width", "num_frames", "train_fps", "shard_size", "seed", "vae_one_pass")
_CONFIG_DEFAULTS = {"vae_one_pass": False}  # for manifests written before the key existed


def manifest_config(manifest: dict) -> dict:
    """The arguments a cache was written with (its manifest's ``config``), keys added since filled with the
    defaults those caches were written under."""
    return {**_CONFIG_DEFAULTS, **manifest.get("config", {})}


def shard_name(k: int) -> str:
    return f"shard_{k:06d}.safetensors"


def _read_manifest(cache_dir: Path) -> Optional[dict]:
    path = cache_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is unreadable ({e}); delete the cache folder and run `flashi2v data encode` again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise InputError(f"{path} is not a flashi2v latent cache manifest; pass a folder written by `flashi2v data encode`")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise InputError(f"{path} has format_version {manifest.get('format_version')!r}, this code reads "
                         f"{' or '.join(map(str, READABLE_VERSIONS))}; re-encode the cache with this version of "
                         "flashi2v")
    return manifest


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------- writer


def encode_cache(
    lmdb: str | os.PathLike,
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    height: int = 480,
    width: int = 832,
    num_frames: int = 49,
    train_fps: float = 16.0,
    shard_size: int = 64,
    seed: int = 0,
    device: str | torch.device | None = None,
    log: Callable[[str], None] | None = None,
    workers: int = 1,
    vae_one_pass: bool = False,
) -> dict:
    """Encode the filtered LMDB ``lmdb`` with the VAE and text encoder of the model folder ``model`` into the cache
    folder ``output`` (created, or resumed if it holds a cache written with the same arguments). Returns the final
    manifest dict. ``device=None`` picks CUDA when available; the device is not part of the cache identity.
    ``workers > 1`` encodes shards in that many processes (CPU: each gets ``torch.get_num_threads() // workers``
    threads); the cache is the same file for file as with one worker. ``vae_one_pass`` encodes each clip in one pass
    over time instead of the official chunks (``WanVAE.enable_one_pass``: the same latents up to float rounding,
    about 2e-6; twice as fast on this CPU for the default model's clips); it is part of the cache's identity."""
    from .lmdb_store import LMDBReader

    log = log or (lambda msg: None)
    lmdb_path, model_path, out = Path(lmdb).resolve(), Path(model).resolve(), Path(output)
    _check_positive_int("shard_size", shard_size)
    _check_positive_int("workers", workers)
    _check_positive_int("num_frames", num_frames)
    if not lmdb_path.exists():
        raise InputError(f"LMDB {lmdb_path} not found; pass the output of `flashi2v data filter` to --lmdb")
    if not model_path.is_dir():
        raise CheckpointError(f"model folder {model_path} not found; pass a folder written by `flashi2v convert`")
    config = dict(lmdb=str(lmdb_path), model=str(model_path), height=int(height), width=int(width),
                  num_frames=int(num_frames), train_fps=float(train_fps), shard_size=int(shard_size), seed=int(seed),
                  vae_one_pass=bool(vae_one_pass))

    manifest = _read_manifest(out) if out.is_dir() else None
    if manifest is not None:
        old = manifest_config(manifest)
        diff = [f"{k}: {old.get(k)!r} -> {config[k]!r}" for k in CONFIG_KEYS if old.get(k) != config[k]]
        if diff:
            raise InputError(f"{out} holds a cache written with other arguments ({'; '.join(diff)}); rerun with the "
                             "same arguments to resume it, or pass a new --output folder")
    elif out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise InputError(f"{out} exists and is not a latent cache (no {MANIFEST_NAME}); pass an empty or new --output folder")
    elif out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file; pass a new or empty folder for the cache")
    check_output_path(out)
    dev = resolve_device(device)

    reader = LMDBReader(lmdb_path)
    metas = list(reader)
    if not metas:
        raise InputError(f"LMDB {lmdb_path} holds no samples; re-run `flashi2v data filter` with looser rules")

    # the models and the dataset check the sizes and the frame rate before the cache folder is made
    enc = _ShardEncoder(dict(metas=metas, config=config, device=str(dev), out=str(out)))
    tf = enc.vae.temporal_factor
    if (num_frames - 1) % tf:
        lo = 1 + (num_frames - 1) // tf * tf
        raise InputError(f"num_frames must be 1 + {tf}k for the VAE of {model_path} (1, {1 + tf}, {1 + 2 * tf}, ...), "
                         f"got {num_frames}; try {lo} or {lo + tf}")
    make_dirs(out)
    for stale in out.glob(".*.tmp"):  # leftovers of an interrupted write
        stale.unlink(missing_ok=True)

    if manifest is None:
        empty, empty_len = enc.text_encoder.encode([""])
        n0 = int(empty_len[0])
        atomic_save_safetensors({"text_emb": empty[0, :n0], "text_len": empty_len[:1].long()}, out / EMPTY_PROMPT_NAME)
        num_shards = (len(metas) + shard_size - 1) // shard_size
        manifest = dict(format=CACHE_FORMAT, format_version=CACHE_FORMAT_VERSION, config=config,
                        text_len=int(enc.text_encoder.text_len), text_dim=int(enc.text_encoder.dim),
                        text_dtype=str(enc.text_encoder.dtype).replace("torch.", ""), latent_shape=None,
                        empty_prompt=EMPTY_PROMPT_NAME, num_source_samples=len(metas), num_shards=num_shards,
                        num_samples=0, skip_counts={}, shards=[], complete=False)
        atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    elif manifest.get("num_source_samples") != len(metas):
        raise InputError(f"{lmdb_path} now holds {len(metas)} samples but the cache in {out} was started with "
                         f"{manifest.get('num_source_samples')}; pass a new --output folder")

    done = {s["shard"] for s in manifest["shards"] if s["file"] is None or (out / s["file"]).is_file()}
    manifest["shards"] = [s for s in manifest["shards"] if s["shard"] in done]
    if done:
        log(f"resuming: {len(done)} of {manifest['num_shards']} shards already complete")
    todo = [k for k in range(manifest["num_shards"]) if k not in done]

    def record(entry: dict, shape) -> None:
        if shape is not None:
            manifest["latent_shape"] = shape
        manifest["shards"].append(entry)
        manifest["shards"].sort(key=lambda s: s["shard"])
        _summarise(manifest)
        atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
        skips = entry["skip_counts"]
        log(f"shard {entry['shard'] + 1}/{manifest['num_shards']}: {entry['num_samples']} samples"
            + (f", skipped {skips}" if skips else ""))

    workers = min(workers, len(todo)) if todo else 1
    if workers <= 1:
        for k in todo:
            record(*enc(k))
    else:  # shards are independent: worker processes encode them, this process keeps the manifest
        import concurrent.futures as cf
        import multiprocessing as mp

        del enc  # free the models in this process
        threads = max(1, torch.get_num_threads() // workers)
        state = dict(metas=metas, config=config, device=str(dev), out=str(out), threads=threads)
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                    initargs=(state,)) as pool:
            for fut in cf.as_completed([pool.submit(_encode_in_worker, k) for k in todo]):
                record(*fut.result())
    _summarise(manifest)
    manifest["complete"] = len(manifest["shards"]) == manifest["num_shards"]
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return manifest


class _ShardEncoder:
    """Encodes one shard (``enc(k) -> (manifest entry, latent shape or None)``), writing its file atomically."""

    def __init__(self, state: dict):
        from ..text import load_text_encoder
        from ..vae import WanVAE
        from .dataset import FlashI2VVideoDataset

        c = state["config"]
        self.metas, self.shard_size, self.out = state["metas"], c["shard_size"], Path(state["out"])
        self.dataset = FlashI2VVideoDataset(self.metas, height=c["height"], width=c["width"],
                                            sample_num_frames=c["num_frames"], train_fps=c["train_fps"],
                                            text_drop_ratio=0.0, seed=c["seed"])
        dev = torch.device(state["device"])
        self.vae = WanVAE.from_pretrained(Path(c["model"]) / "vae", dtype=torch.float32, device=dev)
        if c.get("vae_one_pass"):
            self.vae.enable_one_pass()
        self.text_encoder = load_text_encoder(Path(c["model"]) / "text_encoder", device=dev)

    def __call__(self, k: int) -> tuple:
        from .dataset import meta_captions
        from .video_reader import ClipError

        start, stop = k * self.shard_size, min((k + 1) * self.shard_size, len(self.metas))
        latents, firsts, captions, indices, skips = [], [], [], [], {}
        for i in range(start, stop):
            try:
                item = self.dataset.load(i)
            except ClipError as e:
                skips[e.reason] = skips.get(e.reason, 0) + 1
                logger.warning("skipping clip %d (%s): %s", i, e.reason, e)
                continue
            latents.append(self.vae.encode(item["video"].unsqueeze(0)).cpu())
            firsts.append(self.vae.encode(item["first_frame"].unsqueeze(0)).cpu())  # the first frame alone (official)
            captions.append(meta_captions(self.metas[i]))
            indices.append(i)
        entry = dict(shard=k, file=None, start=start, stop=stop, num_samples=len(indices), skip_counts=skips)
        shape = None
        if indices:
            flat = [c for caps in captions for c in caps]
            rows, lengths = [], []
            for b in range(0, len(flat), 64):  # bounded text-encoder batches: a sample may bring many captions
                emb, lens = self.text_encoder.encode(flat[b:b + 64])
                lengths += [int(n) for n in lens]
                rows += [emb[j, :n].cpu() for j, n in enumerate(lengths[b:])]
            tensors = dict(latents=torch.cat(latents), first_frame_latents=torch.cat(firsts), text_emb=torch.cat(rows),
                           text_len=torch.tensor(lengths, dtype=torch.int64),
                           num_captions=torch.tensor([len(c) for c in captions], dtype=torch.int64),
                           index=torch.tensor(indices, dtype=torch.int64))
            atomic_save_safetensors(tensors, self.out / shard_name(k), metadata={"captions": json.dumps(captions)})
            entry["file"] = shard_name(k)
            shape = list(tensors["latents"].shape[1:])
        return entry, shape


_WORKER: Optional[_ShardEncoder] = None


def _init_worker(state: dict) -> None:
    global _WORKER
    torch.set_num_threads(int(state.get("threads", 1)))
    _WORKER = _ShardEncoder(state)


def _encode_in_worker(k: int) -> tuple:
    assert _WORKER is not None
    return _WORKER(k)


def _summarise(manifest: dict) -> None:
    manifest["num_samples"] = sum(s["num_samples"] for s in manifest["shards"])
    totals: Dict[str, int] = {}
    for s in manifest["shards"]:
        for reason, n in s["skip_counts"].items():
            totals[reason] = totals.get(reason, 0) + n
    manifest["skip_counts"] = dict(sorted(totals.items()))


# ---------------------------------------------------------------------------------------------------------- reader


class LatentCacheDataset(Dataset):
    """Torch dataset over a cache written by :func:`encode_cache`.

    Item: ``dict(latents [16, T, h, w], first_frame_latents [16, 1, h, w], text_emb [text_len, D] (zero rows past
    ``text_len``; trimmed to ``text_len`` rows with ``pad_text=False``), text_len (int), caption (str), captions (all
    of the sample's captions), num_captions, index (LMDB index))``; ``self[i]`` gives caption 0, :meth:`get` another.
    :attr:`empty_text_emb` / :attr:`empty_text_len` hold the embedding of ``""`` (same layout) for text dropout at
    training time. Shards are opened per item (memory-mapped), so the dataset pickles to DataLoader workers.
    """

    def __init__(self, cache_dir: str | os.PathLike, *, pad_text: bool = True, allow_incomplete: bool = False):
        from ..weights.io import read_safetensors

        self.cache_dir = Path(cache_dir)
        manifest = _read_manifest(self.cache_dir) if self.cache_dir.is_dir() else None
        if manifest is None:
            raise InputError(f"{self.cache_dir} is not a latent cache (no {MANIFEST_NAME}); build one with "
                             "`flashi2v data encode`")
        if not manifest.get("complete") and not allow_incomplete:
            raise InputError(f"the latent cache {self.cache_dir} is incomplete; rerun `flashi2v data encode` with the "
                             "same arguments to finish it (or pass allow_incomplete=True)")
        self.manifest = manifest
        self.pad_text = bool(pad_text)
        self.text_len_max = int(manifest["text_len"])
        self.shards: List[tuple] = [(s["file"], s["num_samples"]) for s in manifest["shards"] if s["num_samples"]]
        for name, _ in self.shards:
            if not (self.cache_dir / name).is_file():
                raise InputError(f"{self.cache_dir / name} is missing; rerun `flashi2v data encode` with the same "
                                 "arguments to rewrite it")
        self.offsets = [0]
        for _, n in self.shards:
            self.offsets.append(self.offsets[-1] + n)
        try:
            empty = read_safetensors(self.cache_dir / manifest["empty_prompt"])
        except CheckpointError as e:
            raise InputError(f"{e}") from None
        self.empty_text_len = int(empty["text_len"][0])
        self.empty_text_emb = self._pad(empty["text_emb"])

    def __len__(self) -> int:
        return self.offsets[-1]

    def captions(self) -> List[str]:
        """Every sample's (first) caption in index order, from the shards' metadata (no tensor is read)."""
        return [caps[0] for caps in self.all_captions()]

    def all_captions(self) -> List[List[str]]:
        """Every sample's list of captions in index order (one each in a version-1 cache)."""
        out: List[List[str]] = []
        for name, _ in self.shards:
            with self._open(name) as f:
                out += [c if isinstance(c, list) else [c] for c in json.loads(f.metadata()["captions"])]
        return out

    def read_all(self) -> Dict[str, Any]:
        """The whole cache, one file open per shard: ``latents`` [N, 16, T, h, w] and ``first_frame_latents``
        [N, 16, 1, h, w] (as stored), ``text_emb`` (every caption's states [length, D], unpadded, sample by sample and
        within a sample in caption order) and ``captions`` (:meth:`all_captions`)."""
        lat, first, emb = [], [], []
        for name, n in self.shards:
            with self._open(name) as f:
                lat.append(f.get_tensor("latents")[:n])
                first.append(f.get_tensor("first_frame_latents")[:n])
                lengths = f.get_tensor("text_len").tolist()
                emb += f.get_tensor("text_emb")[: sum(lengths)].split(lengths)
        return dict(latents=torch.cat(lat), first_frame_latents=torch.cat(first), text_emb=emb,
                    captions=self.all_captions())

    def _open(self, name: str):
        """The shard file ``name`` opened with safetensors; a one-line InputError when it is damaged (truncated)."""
        from safetensors import safe_open

        path = self.cache_dir / name
        try:
            return safe_open(str(path), framework="pt")
        except Exception as e:  # truncated or overwritten by something else
            first = " ".join(str(e).split())[:200]
            raise InputError(f"cannot read {path} ({type(e).__name__}: {first}); delete it and rerun `flashi2v data "
                             "encode` with the same arguments to rewrite it") from None

    def _pad(self, emb: torch.Tensor) -> torch.Tensor:
        if not self.pad_text or emb.shape[0] >= self.text_len_max:
            return emb
        return torch.cat([emb, emb.new_zeros(self.text_len_max - emb.shape[0], emb.shape[1])])

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.get(index)

    def get(self, index: int, caption: int | Callable[[int, int], int] = 0) -> Dict[str, Any]:
        """Item ``index`` with its caption number ``caption`` (or ``caption(index, num_captions)``; an int beyond
        the sample's count wraps around). The item also holds ``captions`` (all of them) and ``num_captions``."""
        import bisect

        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a cache of {n} samples")
        index %= n
        s = bisect.bisect_right(self.offsets, index) - 1
        j = index - self.offsets[s]
        with self._open(self.shards[s][0]) as f:
            counts = f.get_tensor("num_captions") if "num_captions" in f.keys() else None
            first = int(counts[:j].sum()) if counts is not None else j  # this sample's first caption
            count = int(counts[j]) if counts is not None else 1
            k = (caption(index, count) if callable(caption) else int(caption)) % count
            lengths = f.get_tensor("text_len")
            begin = int(lengths[: first + k].sum())
            length = int(lengths[first + k])
            caps = json.loads(f.metadata()["captions"])[j]
            caps = caps if isinstance(caps, list) else [caps]
            item = dict(
                latents=f.get_slice("latents")[j : j + 1][0].clone(),
                first_frame_latents=f.get_slice("first_frame_latents")[j : j + 1][0].clone(),
                text_emb=self._pad(f.get_slice("text_emb")[begin : begin + length].clone()),
                text_len=length,
                caption=caps[k],
                captions=caps,
                num_captions=count,
                index=int(f.get_tensor("index")[j]),
            )
        return item
