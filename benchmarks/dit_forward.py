"""Forward time of our Wan2.1 T2V DiT vs diffusers' ``WanTransformer3DModel``, same config, same (converted) weights.

Both models live in one process; repetitions are interleaved (ours, diffusers, diffusers, ours, ...) after a warm-up so
that slow drifts of a shared machine hit both equally. Reports median and min over ``--reps`` runs and the ratio
ours / diffusers, plus the peak CUDA memory of one forward (CPU: not measured).

    python benchmarks/dit_forward.py                          # CPU, small config (dim 256, 4 layers, 320 tokens)
    python benchmarks/dit_forward.py --device cuda --dtype bf16 --size 1.3b   # 1.3B on a 13x60x104 latent
    python benchmarks/dit_forward.py --profile                # + torch.profiler top ops of each model

bf16: ours uses :func:`flashi2v.precision.apply_precision` (bf16 matmuls, fp32 time embedding / modulation / norms /
head); diffusers is cast to bf16 except its ``_keep_in_fp32_modules`` (what ``from_pretrained(torch_dtype=bf16)``
does).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch

from flashi2v.config import TransformerConfig
from flashi2v.models.attention import _resolve as _our_attention_backend
from flashi2v.models.wan import WanTransformer
from flashi2v.precision import apply_precision
from flashi2v.weights.diffusers import config_to_diffusers, diffusers_to_official

SIZES = {
    # dim 256 = 4 heads x 64; latent 5x16x16 -> (5, 8, 8) = 320 tokens; text 32 tokens
    "small": dict(config=dict(dim=256, ffn_dim=1024, num_heads=4, num_layers=4, text_dim=256), latent=(5, 16, 16), text_len=32),
    # Wan2.1-T2V-1.3B on a 49x480x832 video: latent 13x60x104 -> 20,280 tokens; 512 T5 tokens
    "1.3b": dict(config=dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, text_dim=4096), latent=(13, 60, 104), text_len=512),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@torch.no_grad()
def fill_(model: torch.nn.Module, seed: int = 0) -> None:
    """Seeded, trained-model-like values for every parameter (nothing left zero/one)."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype)
        if ".norm" in name:
            p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * r)
        elif "scale_shift_table" in name:
            p.copy_(r / p.shape[-1] ** 0.5)
        elif p.ndim == 1:
            p.copy_(0.1 * r)
        else:
            p.copy_(r / math.prod(p.shape[1:]) ** 0.5)


def cast_diffusers_(model, dtype: torch.dtype) -> None:
    """Cast like ``from_pretrained(torch_dtype=dtype)``: parameters of ``_keep_in_fp32_modules`` stay float32."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, p in model.named_parameters():
        target = torch.float32 if keep & set(name.split(".")) else dtype
        p.data = p.data.to(target)


def build(size: str, device: torch.device, dtype: torch.dtype, layers: int | None = None, latent=None):
    from diffusers import WanTransformer3DModel

    spec = dict(SIZES[size])
    if latent:
        spec["latent"] = tuple(latent)
    cfg = TransformerConfig(**{**spec["config"], **({"num_layers": layers} if layers else {})}, model_type="t2v")
    with torch.device(device):
        theirs = WanTransformer3DModel(**config_to_diffusers(cfg)).eval()
    fill_(theirs)
    ours = WanTransformer(cfg, device=device).eval()
    ours.load_state_dict(diffusers_to_official(theirs.state_dict()), strict=True)
    if dtype != torch.float32:
        apply_precision(ours, dtype)
        cast_diffusers_(theirs, dtype)
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(1, cfg.in_dim, *spec["latent"], generator=g, device=device, dtype=dtype)
    ctx = torch.randn(1, spec["text_len"], cfg.text_dim, generator=g, device=device, dtype=dtype)
    t = torch.tensor([999.0], device=device)
    return cfg, ours, theirs, (x, t, ctx)


def runners(ours, theirs, inputs):
    x, t, ctx = inputs
    return {
        "ours": lambda: ours(x, t, ctx),
        "diffusers": lambda: theirs(x, t, ctx, return_dict=False)[0],
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict, device: torch.device, reps: int, warmup: int) -> dict[str, list[float]]:
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    sync(device)
    times = {n: [] for n in names}
    for i in range(reps):
        for n in names if i % 2 == 0 else names[::-1]:
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append(time.perf_counter() - t0)
    return times


def peak_memory(fns: dict, device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {n: None for n in fns}
    out = {}
    for n, fn in fns.items():
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        out[n] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
    return out


def profile(fns: dict, device: torch.device, rows: int) -> None:
    from torch.profiler import ProfilerActivity, profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for n, fn in fns.items():
        with tprofile(activities=acts) as prof:
            for _ in range(3):
                fn()
            sync(device)
        print(f"\n### profile: {n} (3 forwards, sorted by {key})\n")
        print(prof.key_averages().table(sort_by=key, row_limit=rows))


def attention_backends(device: torch.device, dtype: torch.dtype, theirs) -> dict[str, str]:
    """Which attention kernel each model calls for these inputs."""
    ours = _our_attention_backend(torch.empty(1, 1, 1, 2, device=device, dtype=dtype))
    ours = {"sdpa": "torch SDPA", "flash2": "flash-attn 2", "flash3": "flash-attn 3"}.get(ours, ours)
    name = getattr(theirs.blocks[0].attn1.processor, "_attention_backend", None)
    if name is None:
        try:
            from diffusers.models.attention_dispatch import _AttentionBackendRegistry

            name = _AttentionBackendRegistry.get_active_backend()[0]
        except Exception:  # private API moved
            name = "native"
    name = str(getattr(name, "value", name))
    theirs_name = "torch SDPA (diffusers 'native')" if name == "native" else f"diffusers '{name}'"
    return {"ours": ours, "diffusers": theirs_name}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--size", default="small", choices=sorted(SIZES))
    ap.add_argument("--reps", type=int, default=None, help="timed forwards per model (default 20 small, 5 1.3b)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--layers", type=int, default=None, help="override the number of layers (smoke tests)")
    ap.add_argument("--latent", type=lambda v: tuple(int(i) for i in v.split(",")), default=None,
                    help="override the latent size T,H,W (default 5,16,16 small; 13,60,104 for 1.3b)")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler top ops of each model")
    ap.add_argument("--rows", type=int, default=20, help="rows of the profile tables")
    args = ap.parse_args(argv)

    import diffusers

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (20 if args.size == "small" else 5)

    cfg, ours, theirs, inputs = build(args.size, device, dtype, args.layers, args.latent)
    fns = runners(ours, theirs, inputs)
    with torch.no_grad():
        out_o, out_d = fns["ours"](), fns["diffusers"]()
        diff = (out_o.float() - out_d.float()).abs().max().item()
        times = time_interleaved(fns, device, reps, args.warmup)
        mem = peak_memory(fns, device)
        backends = attention_backends(device, dtype, theirs)

    x = inputs[0]
    tokens = math.prod(s // p for s, p in zip(x.shape[2:], cfg.patch_size))
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    print(f"# DiT forward: flashi2v WanTransformer vs diffusers {diffusers.__version__} WanTransformer3DModel")
    print(f"machine: {machine}; torch {torch.__version__}; device {device}; dtype {args.dtype}; no_grad")
    print(f"config '{args.size}': dim {cfg.dim}, {cfg.num_layers} layers, {cfg.num_heads} heads x {cfg.head_dim}, "
          f"ffn {cfg.ffn_dim}, text_dim {cfg.text_dim}; latent {tuple(x.shape)} -> {tokens} tokens; "
          f"text {inputs[2].shape[1]} tokens; batch {x.shape[0]}")
    why = ("diffusers computes the timestep sinusoid in fp32, the official code in fp64; "
           "see tests/test_diffusers_parity.py" if dtype == torch.float32 else
           "reduced precision, and the two keep different parts in fp32: not a parity measure")
    print(f"{args.warmup} warm-up + {reps} interleaved timed forwards each; max |ours - diffusers| = {diff:.3g} ({why})\n")
    print("| model | attention backend | median (ms) | min (ms) | peak mem above weights (GiB) |")
    print("|---|---|---:|---:|---:|")
    for n in fns:
        m = mem[n]
        print(f"| {n} | {backends[n]} | {statistics.median(times[n]) * 1e3:.1f} | {min(times[n]) * 1e3:.1f} | "
              f"{'n/a' if m is None else f'{m:.2f}'} |")
    med = statistics.median(times["ours"]) / statistics.median(times["diffusers"])
    mn = min(times["ours"]) / min(times["diffusers"])
    mem_ratio = "n/a" if mem["ours"] is None else f"{mem['ours'] / mem['diffusers']:.3f}"
    print(f"| **ours / diffusers** | | **{med:.3f}** | **{mn:.3f}** | {mem_ratio} |")

    if args.profile:
        with torch.no_grad():
            profile(fns, device, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
