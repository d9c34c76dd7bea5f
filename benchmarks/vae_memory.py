"""Peak memory of decoding 49x480x832 (latents 13x60x104) with the real-size Wan2.1 VAE, tiled vs untiled.

Usage::

    python benchmarks/vae_memory.py                 # CPU: meta-device accounting (+ a small real cross-check)
    python benchmarks/vae_memory.py --device cuda   # GPU: real decode, torch.cuda.max_memory_allocated

Methods (see docs/vae.md):

* ``meta`` (default without a GPU): the full-size VAE and the full-size latents are built on PyTorch's ``meta``
  device, where every op runs its shape logic only (no data, no arithmetic, ~seconds). A ``TorchDispatchMode`` sees
  every aten op of the decode and keeps a ledger of the *storages* its outputs own: a storage is counted when an op
  first returns it and released when the last Python tensor referring to it dies. The peak of that ledger is the
  peak of live activation bytes, i.e. what ``torch.cuda.max_memory_allocated`` would report above the weights and the
  input, minus kernel-internal workspaces (cuDNN/oneDNN scratch) and allocator rounding. On meta, SDPA runs its math
  decomposition (the h*w x h*w attention matrix is counted; a fused kernel on CUDA/CPU would not allocate it).
* ``--check`` (on by default for CPU): decodes a small latent (2x8x13) with the real-size VAE and random weights on
  the CPU, and reports the same ledger on real tensors, the ledger on meta for the same shapes, and the process's
  peak-RSS growth during the decode (``VmHWM`` reset through ``/proc/self/clear_refs``). The two ledgers must agree
  (same op sequence); RSS adds allocator and oneDNN overheads.
* ``cuda``: real random weights on the GPU; ``torch.cuda.reset_peak_memory_stats()`` before each decode and
  ``max_memory_allocated() - memory_allocated()`` (the weights and the input) after it. Also reports the wall time.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from flashi2v.vae import WanVAE

GiB = 2**30
MiB = 2**20


class LiveStorageLedger(TorchDispatchMode):
    """Tracks the bytes of storages created by aten ops while the mode is active (current and peak)."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes: dict[int, int] = {}
        self.refs: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = st._cdata  # address of the StorageImpl: stable while the storage lives
        if key not in self.nbytes:
            n = st.nbytes()
            self.nbytes[key] = n
            self.refs[key] = 0
            self.current += n
            self.peak = max(self.peak, self.current)
        self.refs[key] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.current -= self.nbytes.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._track, out)
        return out


def _rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS
        return True
    except OSError:
        return False


def _rss_peak_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _rss_now_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _build(device: str, dtype: torch.dtype) -> WanVAE:
    with torch.device(device):
        vae = WanVAE()  # real-size architecture, random (diffusers default) initialisation
    return vae.to(dtype)


def meta_peak(latent_shape, dtype, tiled, tile) -> tuple[int, float]:
    vae = _build("meta", dtype)
    if tiled:
        vae.enable_tiling(tile[0], tile[0], tile[1], tile[1])
    z = torch.zeros(latent_shape, device="meta", dtype=torch.float32)
    ledger = LiveStorageLedger()
    t0 = time.perf_counter()
    with ledger:
        out = vae.decode(z)
    del out
    return ledger.peak, time.perf_counter() - t0


def cuda_peak(vae: WanVAE, latent_shape, tiled, tile) -> tuple[int, float]:
    if tiled:
        vae.enable_tiling(tile[0], tile[0], tile[1], tile[1])
    else:
        vae.disable_tiling()
    z = torch.randn(latent_shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = vae.decode(z)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak, dt


def cpu_check(dtype: torch.dtype, small=(1, 16, 2, 8, 13)) -> dict:
    """Small real decode on the CPU: ledger on real tensors vs ledger on meta vs peak-RSS growth."""
    torch.manual_seed(0)
    vae = _build("cpu", dtype)
    z = torch.randn(small)
    vae.decode(z[:, :, :1])  # warm-up (oneDNN primitive caches, lazy inits)
    gc.collect()
    rss_ok = _rss_reset()
    rss0 = _rss_now_kib()
    ledger = LiveStorageLedger()
    t0 = time.perf_counter()
    with ledger:
        out = vae.decode(z)
    dt = time.perf_counter() - t0
    rss_peak = _rss_peak_kib() if rss_ok else None
    del out
    meta, _ = meta_peak(small, dtype, False, None)
    return {
        "shape": small,
        "ledger_cpu": ledger.peak,
        "ledger_meta": meta,
        "rss_growth": None if rss_peak is None or rss0 is None else (rss_peak - rss0) * 1024,
        "seconds": dt,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--latent", type=int, nargs=3, default=[13, 60, 104], metavar=("T", "H", "W"))
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--tile", type=int, nargs=2, default=[256, 192], metavar=("MIN", "STRIDE"),
                   help="tile size and stride in pixels (diffusers' defaults)")
    p.add_argument("--no-check", action="store_true", help="skip the small real CPU cross-check")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t_, h_, w_ = args.latent
    shape = (1, 16, t_, h_, w_)
    frames, height, width = 1 + 4 * (t_ - 1), 8 * h_, 8 * w_
    weights_fp32 = sum(p.numel() for p in _build("meta", torch.float32).parameters()) * 4
    print(f"Wan2.1 VAE decode of latents {t_}x{h_}x{w_} -> video {frames}x{height}x{width}, batch 1")
    print(f"weights: {weights_fp32 / MiB:.0f} MiB in fp32 ({weights_fp32 / 2 / MiB:.0f} MiB in bf16); "
          f"output video fp32: {3 * frames * height * width * 4 / MiB:.0f} MiB")
    method = "cuda max_memory_allocated (real decode)" if device == "cuda" else "meta-device live-storage ledger"
    print(f"method: {method}; tiles {args.tile[0]} px, stride {args.tile[1]} px")
    print()
    print(f"| dtype | mode | peak activation memory (excl. weights) | time |")
    print(f"|---|---|---|---|")
    for name in args.dtypes:
        dtype = dtypes[name]
        vae = _build("cuda", dtype) if device == "cuda" else None
        for tiled in (False, True):
            if device == "cuda":
                peak, dt = cuda_peak(vae, shape, tiled, args.tile)
                tlabel = f"{dt:.1f} s (GPU)"
            else:
                peak, dt = meta_peak(shape, dtype, tiled, args.tile)
                tlabel = f"{dt:.1f} s (meta, no arithmetic)"
            print(f"| {name} | {'tiled' if tiled else 'untiled'} | {peak / GiB:.2f} GiB | {tlabel} |", flush=True)
        del vae
    if device == "cpu" and not args.no_check:
        c = cpu_check(torch.float32)
        print()
        print(f"cross-check, real CPU decode of latents {tuple(c['shape'][2:])} with the real-size VAE (fp32, "
              f"{c['seconds']:.1f} s):")
        print(f"  ledger on real CPU tensors: {c['ledger_cpu'] / MiB:.1f} MiB")
        print(f"  ledger on meta tensors:     {c['ledger_meta'] / MiB:.1f} MiB")
        rss = "n/a (cannot reset VmHWM)" if c["rss_growth"] is None else f"{c['rss_growth'] / MiB:.1f} MiB"
        print(f"  peak-RSS growth:            {rss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
