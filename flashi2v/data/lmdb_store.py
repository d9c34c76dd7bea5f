"""LMDB storage of filtered samples, in the official layout (``flashi2v/data/utils/utils.py``).

One entry per sample: key = the 12-digit zero-padded index as UTF-8 bytes (``b"000000000000"``, ...), value =
``pickle.dumps(sample_dict)``. :class:`LMDBReader` also reads zstd-compressed values (the official writer's option)
when ``zstandard`` is installed.

Writing is atomic: the DB is built in a hidden ``.<name>.<random>.partial`` directory beside the final path and
renamed only after every entry is committed and synced, so an interrupted run never leaves a ``*.lmdb`` behind.
Values are pickles: read only DBs you trust.
"""

from __future__ import annotations

import bisect
import os
import pickle
import uuid
from pathlib import Path
from typing import Iterable, Union

from ..errors import InputError
from ..weights.io import make_temp_dir, remove_path, replace_path

PathLike = Union[str, os.PathLike]

KEY_DIGITS = 12
DEFAULT_MAP_SIZE = 1 << 40  # 1 TiB of address space, as the official writer (the file only grows as written)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _lmdb():
    try:
        import lmdb
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("the LMDB store needs the lmdb package; install it with `pip install lmdb`") from e
    return lmdb


def encode_key(index: int) -> bytes:
    """``b"000000000042"`` for 42."""
    return f"{index:0{KEY_DIGITS}d}".encode("utf-8")


def output_path(save_path: PathLike, count: int) -> Path:
    """Official naming: ``save_path/filtered_samples_{N}.lmdb``, or ``filtered_samples_{N}_{name}`` next to a
    ``save_path`` that ends in ``.lmdb``."""
    save_path = Path(save_path)
    if save_path.suffix == ".lmdb":
        return save_path.parent / f"filtered_samples_{count}_{save_path.name}"
    return save_path / f"filtered_samples_{count}.lmdb"


def write_lmdb(samples: Iterable[dict], final: PathLike, overwrite: bool = False, map_size: int = DEFAULT_MAP_SIZE,
               commit_every: int = 10_000) -> int:
    """Write ``samples`` (keys 0, 1, ...) to the LMDB directory ``final`` atomically; returns the number written.

    An existing ``final`` raises :class:`InputError` unless ``overwrite``. Any exception while writing (including
    ``KeyboardInterrupt`` from the sample iterator) removes the partial DB and leaves ``final`` untouched.
    """
    lmdb = _lmdb()
    final = Path(final)
    if final.exists() and not overwrite:
        raise InputError(f"{final} already exists; delete it, choose another save_path/--output, or pass --overwrite")
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:10]}.partial")
    count = 0
    make_temp_dir(tmp, final)
    try:
        env = lmdb.open(str(tmp), map_size=map_size, subdir=True, readonly=False, meminit=False, map_async=True)
        try:
            txn = env.begin(write=True)
            try:
                for sample in samples:
                    txn.put(encode_key(count), pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))
                    count += 1
                    if count % commit_every == 0:
                        txn.commit()
                        txn = env.begin(write=True)
                txn.commit()
            except BaseException:
                txn.abort()
                raise
            env.sync(True)
        finally:
            env.close()
        replace_path(tmp, final)  # overwrite: the old DB is moved aside first, so a failure keeps one of the two
    except BaseException:
        remove_path(tmp)
        raise
    return count


def write_filtered_samples(samples: list, save_path: PathLike, overwrite: bool = False,
                           map_size: int = DEFAULT_MAP_SIZE) -> Path:
    """Write the filter's survivors under the official name (:func:`output_path`); returns that path."""
    final = output_path(save_path, len(samples))
    n = write_lmdb(samples, final, overwrite=overwrite, map_size=map_size)
    assert n == len(samples)
    return final


def _is_lmdb_dir(p: Path) -> bool:
    return p.is_dir() and (p / "data.mdb").is_file()


def find_lmdb_dirs(path: PathLike) -> list:
    """``[path]`` for one LMDB directory, else the sorted ``*.lmdb`` LMDB directories inside ``path``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"LMDB not found: {path} (run `flashi2v data filter` to create one)")
    if _is_lmdb_dir(path):
        return [path]
    if path.is_dir():
        dbs = sorted(p for p in path.iterdir() if p.name.endswith(".lmdb") and _is_lmdb_dir(p))
        if dbs:
            return dbs
    raise InputError(f"{path} is neither an LMDB directory (with data.mdb) nor a folder of *.lmdb directories")


# py-lmdb refuses to open one environment twice in a process, so readers share handles: one per (DB file, process).
# The key holds the inode of data.mdb, so a DB replaced by an overwrite is opened afresh.
_ENVS: dict = {}


def _env_key(p: Path):
    try:
        ino = (p / "data.mdb").stat().st_ino
    except OSError as e:
        raise InputError(f"cannot open LMDB {p}: {e.strerror}") from e
    return (str(p.resolve()), ino, os.getpid())


def _shared_env(p: Path, max_readers: int = 2048):
    key = _env_key(p)
    env = _ENVS.get(key)
    if env is None:
        lmdb = _lmdb()
        # a replaced DB, or handles inherited from the parent process: py-lmdb refuses to reopen files it still
        # holds, and closing a read-only lock-free handle in a child only unmaps the child's copy
        for stale in [k for k in _ENVS if k[0] == key[0] or k[2] != key[2]]:
            _ENVS.pop(stale).close()
        try:
            env = lmdb.open(str(p), subdir=True, readonly=True, lock=False, readahead=False, meminit=False,
                            max_readers=max_readers)
        except lmdb.Error as e:
            raise InputError(f"cannot open LMDB {p}: {' '.join(str(e).split())}") from e
        _ENVS[key] = env
    return env


def _close_shared(p: Path) -> None:
    name, pid = str(p.resolve()), os.getpid()
    for key in [k for k in _ENVS if k[0] == name and k[2] == pid]:
        _ENVS.pop(key).close()


class LMDBReader:
    """Read-only, lock-free view of one LMDB or a folder of them (sorted by name, indices concatenated).

    ``len(reader)`` and ``reader[i]`` (negative indices allowed) return the stored dicts. Handles live in a
    per-process cache (reopened after a fork, e.g. in DataLoader workers), so the reader pickles without them.
    """

    def __init__(self, path: PathLike, max_readers: int = 2048):
        self.path = Path(path)
        self.max_readers = max_readers
        self.paths = find_lmdb_dirs(self.path)
        self.lengths = self._count()
        self.offsets = [0]
        for n in self.lengths:
            self.offsets.append(self.offsets[-1] + n)

    def _environments(self):
        return [_shared_env(p, self.max_readers) for p in self.paths]

    def _count(self) -> list:
        return [env.stat()["entries"] for env in self._environments()]

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not isinstance(index, int):
            raise TypeError(f"LMDBReader indices must be integers, got {type(index).__name__}")
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index out of range for {n} samples")
        shard = bisect.bisect_right(self.offsets, index) - 1
        local = index - self.offsets[shard]
        with self._environments()[shard].begin(write=False, buffers=False) as txn:
            value = txn.get(encode_key(local))
        if value is None:
            raise InputError(f"LMDB {self.paths[shard]} has no key {encode_key(local).decode()}; the DB is corrupt, "
                             "rewrite it with `flashi2v data filter`")
        return self._decode(value)

    getitem = __getitem__  # the official reader's name

    def _decode(self, value: bytes) -> dict:
        if value[:4] == _ZSTD_MAGIC:
            try:
                import zstandard
            except ImportError as e:
                raise InputError("this LMDB holds zstd-compressed values; install zstandard (`pip install zstandard`)") from e
            value = zstandard.ZstdDecompressor().decompress(value)
        return pickle.loads(value)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        """Close this reader's DB files (shared: other readers of the same files in this process reopen them)."""
        for p in self.paths:
            _close_shared(p)

    def __repr__(self) -> str:
        return f"LMDBReader({str(self.path)!r}, {len(self)} samples in {len(self.paths)} DB(s))"
