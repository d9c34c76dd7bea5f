"""Stopping a training run early without losing it: a wall-clock budget and signals.

A run stops after the current optimizer step, saves a checkpoint there and returns normally when

- ``max_minutes`` (> 0) of wall-clock time since the trainer was made would be passed by one more step as long as
  the last one (its logging, probes and saves included), so the run ends inside its budget; the final checkpoint's
  save comes on top;
- the process gets SIGTERM or SIGUSR1 (what batch schedulers send before they kill a job, e.g. SLURM's
  ``--signal=USR1@120``) or a first Ctrl-C (SIGINT); a second Ctrl-C aborts at once, as usual. A signal the process
  ignores (SIGINT in a background job of a script) stays ignored.

Running the same command again resumes from that checkpoint exactly, as from any other. With several processes every
step all-reduces the request (its maximum), so all ranks stop after the same step and enter the checkpoint's
collectives together even when only one of them got the signal or crossed the budget.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Optional

import torch

log = logging.getLogger("flashi2v.train")

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class StopRequest:
    """The stop conditions of one training loop. Use as a context manager around the loop (it installs the signal
    handlers in the main thread and restores the previous ones on exit) and call :meth:`check` after every step."""

    def __init__(self, max_minutes: float = 0.0, start: Optional[float] = None, *, group_size: int = 1,
                 device: torch.device | str = "cpu"):
        self.max_seconds = float(max_minutes) * 60.0
        self.start = time.monotonic() if start is None else float(start)
        self.group_size = int(group_size)
        self.device = torch.device(device)
        self.signal_name: Optional[str] = None
        self._previous: dict = {}
        self._tick = time.monotonic()

    # ------------------------------------------------------------------------------------------- signals
    def __enter__(self) -> "StopRequest":
        self._tick = time.monotonic()
        if threading.current_thread() is not threading.main_thread():
            log.debug("training outside the main thread: stop signals are not handled")
            return self
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.signal_name == "SIGINT":  # the second Ctrl-C: abort now
            signal.signal(signum, self._previous.get(signum, signal.default_int_handler))
            raise KeyboardInterrupt
        if self.signal_name is None:
            self.signal_name = name
            hint = " (Ctrl-C again to abort without saving)" if name == "SIGINT" else ""
            print(f"{name}: stopping after this step and saving a checkpoint{hint}", flush=True)

    # ------------------------------------------------------------------------------------------- check
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def check(self) -> Optional[str]:
        """Why to stop now (None: go on), to be called once per step; the time since the previous call (or since
        entering) is the estimate of the next step's. Collective when ``group_size > 1``: every rank must call it
        at every step."""
        now = time.monotonic()
        step_seconds, self._tick = now - self._tick, now
        code = 0
        if self.signal_name is not None:
            code = 2
        elif self.max_seconds > 0 and now - self.start + step_seconds > self.max_seconds:
            code = 1
        if self.group_size > 1:
            import torch.distributed as dist

            flag = torch.tensor([code], dtype=torch.int32, device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            code = int(flag.item())
        if code == 0:
            return None
        if code == 2:
            return f"stop signal ({self.signal_name or 'on another rank'})"
        return (f"time limit: {self.elapsed() / 60:.1f} of max_minutes={self.max_seconds / 60:g} used and one more "
                "step would pass it")
