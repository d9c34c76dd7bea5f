"""Training checkpoints with ``torch.distributed.checkpoint`` (DCP): atomic, self-checking, keep the last K.

Layout of ``output_dir/checkpoints/step_{step:09d}/``::

    .metadata, __*_*.distcp        DCP: model, EMA and optimizer state, sharded as in training (any world size
                                   can load them: DCP reshards)
    extra/rank_{rank:05d}.pt       per-rank state: step, data position, clipper, lr scheduler, every RNG
    COMPLETE.json                  written last: step, world size and the size of every file above

A checkpoint is written into ``.step_{step:09d}.tmp`` and renamed only after every rank has finished and
``COMPLETE.json`` lists the files, so an interrupted save never looks like a checkpoint. Resuming picks the newest
directory whose files all have their recorded sizes and that loads; a truncated or damaged one is reported with a
warning and the previous one is used.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from ..errors import CheckpointError
from ..weights.io import atomic_write_text

log = logging.getLogger("flashi2v.train")

COMPLETE = "COMPLETE.json"
_STEP_RE = re.compile(r"^step_(\d{9})$")


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_root(output_dir) / f"step_{step:09d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every finished checkpoint directory (COMPLETE.json present), newest first."""
    root = checkpoint_root(output_dir)
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_RE.match(p.name)
            if m and p.is_dir() and (p / COMPLETE).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def verify(path: Path) -> Optional[str]:
    """None if every file listed in COMPLETE.json exists with its recorded size, else what is wrong."""
    try:
        manifest = json.loads((path / COMPLETE).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as e:
        return f"unreadable {COMPLETE} ({e})"
    for name, size in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, {size} were written"
    return None


# ------------------------------------------------------------------------------------------------------ RNG
def rng_state() -> dict:
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------- training state
def training_state(model, optimizer, ema=None) -> dict:
    """The DCP state of a training run: model and optimizer state dicts (sharded as trained) and the EMA."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    if ema is not None:
        state["ema"] = ema.state_dict()
    return state


def restore_training_state(model, optimizer, ema, state: dict) -> None:
    """Put a :func:`training_state` dict filled by :func:`load_latest` back into the model, optimizer and EMA."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    if ema is not None:
        ema.load_state_dict(state["ema"])


# ----------------------------------------------------------------------------------------------------- save
def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def quiet_single_process():
    """DCP warns that it 'assumes a single process' whenever no process group exists; that is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_checkpoint(output_dir: str | os.PathLike, step: int, state: dict, extra: dict, keep_last: int) -> Path:
    """Collective: write ``state`` (tensors, possibly DTensors) with DCP and each rank's ``extra`` with torch.save.

    Returns the final directory. Older checkpoints beyond ``keep_last`` are removed after the new one is complete.
    """
    import torch.distributed.checkpoint as dcp

    rank, world = _rank_world()
    root = checkpoint_root(output_dir)
    final = step_dir(output_dir, step)
    tmp = root / f".{final.name}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "extra").mkdir(parents=True)
    _barrier()
    with quiet_single_process():
        dcp.save(state, checkpoint_id=str(tmp))
    extra_path = tmp / "extra" / f"rank_{rank:05d}.pt"
    torch.save(extra, extra_path)
    with open(extra_path, "rb") as f:
        os.fsync(f.fileno())
    _barrier()
    if rank == 0:
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        atomic_write_text(tmp / COMPLETE, json.dumps(dict(step=step, world_size=world, files=files), indent=1) + "\n")
        if final.exists():  # re-saving the same step (e.g. the final step after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(output_dir)[keep_last:]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


# ----------------------------------------------------------------------------------------------------- load
def load_latest(
    output_dir: str | os.PathLike,
    state: dict,
    apply_extra: Callable[[dict], None],
    warn: Callable[[str], None] = log.warning,
) -> Optional[int]:
    """Load the newest usable checkpoint into ``state`` (in place, DCP) and pass this rank's extra state to
    ``apply_extra``. Returns its step, or None when there is no checkpoint. Damaged ones are skipped with a warning;
    if checkpoints exist but none loads, raises :class:`CheckpointError`."""
    import torch.distributed.checkpoint as dcp

    rank, world = _rank_world()
    candidates = list_checkpoints(output_dir)
    if not candidates:
        return None
    problems = []
    for step, path in candidates:
        problem = verify(path)
        extra: Any = None
        if problem is None:
            try:
                with quiet_single_process():
                    dcp.load(state, checkpoint_id=str(path))
                extra_file = path / "extra" / f"rank_{rank:05d}.pt"
                if not extra_file.is_file():
                    # A different world size: data-parallel ranks beyond the saved ones start from rank 0's state.
                    extra_file = path / "extra" / "rank_00000.pt"
                extra = torch.load(extra_file, map_location="cpu", weights_only=False)
            except Exception as e:  # noqa: BLE001 - any failure means "this checkpoint is unusable"
                problem = f"cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ok = torch.tensor([0 if problem else 1])
        if world > 1:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            if problem is None and not ok.item():
                problem = "failed to load on another rank"
        if ok.item():
            apply_extra(extra)
            return step
        problems.append(f"{path.name}: {problem}")
        warn(f"checkpoint {path} is damaged ({problem}); falling back to the previous one")
    raise CheckpointError(f"no usable checkpoint in {checkpoint_root(output_dir)}: {'; '.join(problems)}")
