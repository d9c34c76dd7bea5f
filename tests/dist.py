"""Run a function in N local processes joined by a gloo process group (multi-process tests on the CPU).

    from dist import run_distributed

    def _check(rank, world_size, n):          # module level, so that the child processes can import it
        ...                                   # torch.distributed is initialised (gloo, world_size ranks)
        return something_picklable

    results = run_distributed(_check, 2, 5)   # [result of rank 0, result of rank 1]

The children are *spawned* (fresh interpreters, with the parent's ``sys.path``), rendezvous on a FileStore in a
temporary folder (no TCP port to pick) and run with one intra-op thread each. If a child raises, the others are
terminated and its exception is re-raised in the parent with the child's traceback attached (or a
``ChildProcessError`` holding the traceback when the exception cannot be pickled), so ``pytest.raises`` works
across the process boundary. When several ranks fail, the *first* error in time is raised: a rank that raises
makes its peers fail too (gloo reports "connection closed by peer" in a rank waiting on a collective), and that
echo can be noticed by the parent before the cause. A hang is ended after ``timeout_s``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
import traceback
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(fn, rank: int, world_size: int, folder: str, timeout_s: float, threads: int, args, kwargs) -> None:
    torch.set_num_threads(threads)
    store = dist.FileStore(os.path.join(folder, "store"), world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    try:
        outcome = ("ok", fn(rank, world_size, *args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        tb = traceback.format_exc()
        try:
            pickle.dumps(exc)
            outcome = ("error", (exc, tb, time.time()))
        except Exception:
            outcome = ("error", (None, tb, time.time()))
    path = os.path.join(folder, f"result{rank}.pt")
    torch.save(outcome, path + ".tmp")
    os.replace(path + ".tmp", path)  # appears atomically
    if outcome[0] == "ok":
        dist.destroy_process_group()


def _read(folder: str, rank: int):
    path = os.path.join(folder, f"result{rank}.pt")
    return torch.load(path, weights_only=False) if os.path.exists(path) else None


ERROR_GRACE_S = 3.0


def _failed(procs, folder: str) -> dict[int, tuple]:
    """``{rank: (exception or None, traceback, time raised)}`` for the ranks that ended without success."""
    errors = {}
    for rank, p in enumerate(procs):
        if p.is_alive():
            continue
        outcome = _read(folder, rank)
        if outcome is None:
            raise ChildProcessError(f"rank {rank} exited with code {p.exitcode} without a result")
        if outcome[0] == "error":
            errors[rank] = outcome[1]
    return errors


def run_distributed(
    fn: Callable[..., Any], world_size: int, *args, timeout_s: float = 120.0, threads: int = 1, **kwargs
) -> list[Any]:
    """``fn(rank, world_size, *args, **kwargs)`` in ``world_size`` gloo processes; returns the results by rank."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="flashi2v-dist-") as folder:
        procs = [
            ctx.Process(target=_worker, args=(fn, r, world_size, folder, timeout_s, threads, args, kwargs), daemon=True)
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                errors = _failed(procs, folder)
                if errors:
                    # Give the peers a moment: the rank that failed first is the cause, the others its echo.
                    grace = time.monotonic() + ERROR_GRACE_S
                    while any(p.is_alive() for p in procs) and time.monotonic() < grace:
                        time.sleep(0.02)
                    errors = _failed(procs, folder)
                    rank, (exc, tb, _) = min(errors.items(), key=lambda item: item[1][2])
                    note = f"raised in rank {rank} of {world_size}:\n{tb}"
                    if exc is None:
                        raise ChildProcessError(note)
                    exc.add_note(note)
                    raise exc
                if not any(p.is_alive() for p in procs):
                    return [_read(folder, r)[1] for r in range(world_size)]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{getattr(fn, '__name__', fn)} did not finish within {timeout_s:.0f} s")
                time.sleep(0.02)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
