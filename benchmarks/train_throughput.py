"""Training throughput of :class:`flashi2v.train.trainer.Trainer`: one process vs FSDP2 (and Ulysses CP) over gloo
on the CPU, and the 1.3B model with / without activation checkpointing on one GPU.

Every variant runs the real trainer (``Trainer(TrainConfig)``: AdamW, adaptive clipping, EMA, the flow-matching loss,
``data.source=random``) for ``--steps`` optimizer steps in a fresh *spawned* process group (so thread counts, process
groups and peak memory do not leak between variants), drops the first ``--warmup`` steps and reports the median step
time as steps/s, samples/s and tokens/s (global batch), the ratio to the named baseline, and the peak memory of a
process. Variants are run in ``--rounds`` interleaved rounds (A B C, C B A, ...) so slow drifts of a shared machine
hit all of them; the medians pool the timed steps of all rounds. Only ``Trainer.train_step`` is timed (the loop of
``Trainer.fit`` without its checkpoint save at the last step, which would write ~20 GB for the 1.3B model).

CPU (default): dim 256, 4 layers, 8 heads x 32, ffn 1024, text_dim 64 (32 text tokens), 17 frames at 128x128 ->
latent 16x5x16x16 -> 5x8x8 = 320 tokens per sample, fp32, global batch 4:

    python benchmarks/train_throughput.py                     # 1 proc x 1 thread (baseline), 1 proc x 2 threads,
                                                              # FSDP2 2 procs x 1 thread (batch 2 per rank)
    python benchmarks/train_throughput.py --cp 2              # + Ulysses dp 1 x cp 2 (2 procs x 1 thread, batch 4)
    python benchmarks/train_throughput.py --steps 4 --rounds 1  # quick

GPU (``--device cuda``): preset ``flashi2v-1.3b``, 49x480x832 (latent 13x60x104 -> 20,280 tokens, 512 text tokens),
batch 1, ``parallel.param_dtype=bf16`` (FSDP2 mixed precision on a one-rank mesh: bf16 compute, fp32 master weights
and AdamW state), with and without ``model.activation_checkpointing``; reports tokens/s and the peak CUDA memory
(``torch.cuda.max_memory_allocated``). The baseline is the run without activation checkpointing; a variant that
runs out of memory is reported as OOM.

    python benchmarks/train_throughput.py --device cuda                      # single GPU, AC off vs on
    python benchmarks/train_throughput.py --device cuda --steps 6 --ac on    # only one variant

The embedded default model's DiT (``--model default``): the architecture, optimizer, clipping, EMA and flow of
``flashi2v/default_model/recipe/dit_gpu.yaml`` on random latents of its shape (16 x 9 x 32 x 32 -> 2304 tokens;
``data.source=random`` assumes Wan's 4x/8x VAE strides, so it is asked for 33 x 256 x 256), batch ``--batch``
(default 64, the recipe's), in fp32 with TF32 matrix products (the recipe's setting, the baseline) against bf16
(FSDP2 mixed precision on a one-rank mesh: bf16 compute, fp32 master weights) and bf16 with ``torch.compile``:

    python benchmarks/train_throughput.py --device cuda --model default
    python benchmarks/train_throughput.py --model default --batch 2 --steps 4 --rounds 1   # CPU: the same variants

Multi-GPU: launch the same script with torchrun; then every rank runs the variants in this process, one after the
other (peak memory reset in between), with batch 1 per data-parallel rank, FSDP2 over all ranks (``--cp N``:
Ulysses over N ranks, dp = world / N); the table reports the global batch and the largest peak memory of any rank:

    torchrun --standalone --nproc_per_node 8 benchmarks/train_throughput.py --device cuda
    torchrun --standalone --nproc_per_node 8 benchmarks/train_throughput.py --device cuda --cp 2 --ac on
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta

import torch

from dit_forward import cpu_name  # benchmarks/ is on sys.path when run as a script

# dim 256 = 8 heads x 32; 17 frames 128x128 -> latent (16, 5, 16, 16) -> (5, 8, 8) = 320 tokens
SMALL = dict(dim=256, ffn_dim=1024, num_heads=8, num_layers=4, text_dim=64, text_len=32, freq_dim=256)


@dataclass
class Variant:
    name: str
    world: int = 1  # processes (CPU: spawned here; GPU under torchrun: the launcher's world)
    threads: int = 1  # torch intra-op threads per process (CPU)
    overrides: dict = field(default_factory=dict)  # dotted TrainConfig keys


def cpu_variants(args) -> list[Variant]:
    gb = args.global_batch
    if gb % 2:
        raise SystemExit("--global-batch must be even (it is split over 2 FSDP ranks)")
    vs = [
        Variant("1 proc x 1 thread (baseline)", 1, 1, {"data.batch_size": gb}),
        Variant("1 proc x 2 threads", 1, 2, {"data.batch_size": gb}),
        Variant("FSDP2 2 procs x 1 thread", 2, 1, {"data.batch_size": gb // 2}),
    ]
    if args.cp > 1:
        vs.append(Variant(f"Ulysses cp {args.cp}, {args.cp} procs x 1 thread", args.cp, 1,
                          {"data.batch_size": gb, "parallel.cp": args.cp}))
    return vs


def default_model_variants(args, world: int) -> list[Variant]:
    tf32 = args.device == "cuda"
    vs = [Variant(f"fp32{' + TF32' if tf32 else ''} (recipe/dit_gpu.yaml, baseline)", world, 0,
                  {"parallel.param_dtype": "fp32", "parallel.tf32": tf32}),
          Variant("bf16 (FSDP2 mixed precision)", world, 0, {"parallel.param_dtype": "bf16"}),
          Variant("bf16 + torch.compile", world, 0, {"parallel.param_dtype": "bf16", "parallel.compile": True})]
    for v in vs:
        v.overrides["data.batch_size"] = args.batch or 64
    return vs


def gpu_variants(args, world: int) -> list[Variant]:
    both = [Variant("bf16, no activation checkpointing (baseline)", world, 0, {"model.activation_checkpointing": False}),
            Variant("bf16, activation checkpointing", world, 0, {"model.activation_checkpointing": True})]
    keep = {"both": both, "off": both[:1], "on": both[1:]}[args.ac]
    for v in keep:
        v.overrides.update({"parallel.cp": args.cp, "data.batch_size": args.batch or 1})
    return keep


def default_model_config(device: str) -> dict:
    """recipe/dit_gpu.yaml's model and optimisation on random latents of the default model's shape."""
    import yaml

    from flashi2v.default_model import RECIPE_DIR

    rec = yaml.safe_load((RECIPE_DIR / "dit_gpu.yaml").read_text())
    return dict(device=device, threads=rec["threads"], model=rec["model"], optim=rec["optim"], clip=rec["clip"],
                ema=rec["ema"], flow=rec["flow"],
                data=dict(source="random", height=256, width=256, num_frames=33, random_samples=256,
                          text_dropout=rec["data"]["text_dropout"]))


def base_config(args) -> dict:
    common = dict(seed=1024, max_steps=10**6, checkpoint=dict(resume=False), log=dict(every=10**6, tensorboard=False))
    if args.model == "default":
        return dict(default_model_config(args.device), **common)
    if args.device == "cpu":
        return dict(common, device="cpu", model=dict(architecture=dict(SMALL)),
                    data=dict(source="random", height=128, width=128, num_frames=17, random_samples=256),
                    parallel=dict(param_dtype="fp32"))
    return dict(common, device="cuda", model=dict(preset="flashi2v-1.3b"),
                data=dict(source="random", height=480, width=832, num_frames=49, random_samples=64),
                parallel=dict(param_dtype="bf16"))


# ---------------------------------------------------------------------------------------------------- measuring
def measure(cfg_dict: dict, overrides: dict, steps: int, output_dir: str) -> dict:
    """Run ``steps`` training steps in this process (inside its process group, if any); the per-step times are the
    max over ranks (each step ends with an all-reduce of the loss, so they barely differ)."""
    import json

    import torch.distributed as dist

    from flashi2v.train.config import TrainConfig
    from flashi2v.train.trainer import Trainer

    over = [f"{k}={json.dumps(v)}" for k, v in {**overrides, "output_dir": output_dir}.items()]
    cfg = TrainConfig.from_dict(cfg_dict, over)
    cuda = cfg.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = Trainer(cfg)
    try:
        hist = [t.train_step(t.loader) for _ in range(steps)]
    finally:
        t.loader.close()
    times = torch.tensor([h["step_time"] for h in hist], dtype=torch.float64)
    peak = (torch.cuda.max_memory_allocated(t.device) if cuda else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    peak_t = torch.tensor([peak], dtype=torch.float64)
    if t.world > 1:
        if cuda:
            times, peak_t = times.to(t.device), peak_t.to(t.device)
        dist.all_reduce(times, op=dist.ReduceOp.MAX)
        dist.all_reduce(peak_t, op=dist.ReduceOp.MAX)
    samples = cfg.data.batch_size * cfg.optim.grad_accum * t.dp_size
    out = dict(times=times.cpu().tolist(), samples=samples, tokens=samples * t.tokens_per_sample, peak_gb=float(peak_t),
               tokens_per_sample=t.tokens_per_sample, dp=t.dp_size, cp=t.pcfg.cp, world=t.world,
               params=sum(p.numel() for p in t.model.parameters()), loss=hist[-1]["loss"])
    del t, hist
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def _child(rank: int, world: int, folder: str, threads: int, timeout_s: float, quiet: bool, job: tuple) -> None:
    if threads:
        torch.set_num_threads(threads)
    if quiet:  # keep the table readable
        sys.stdout = open(os.devnull, "w")
        import warnings

        # FSDP2 (torch 2.13) warns once per module type that a wrapped module returned a view; the trainer never
        # modifies those outputs in place (tests/test_train_distributed.py: FSDP2 == one process).
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    import torch.distributed as dist

    if world > 1:
        store = dist.FileStore(os.path.join(folder, "store"), world)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    try:
        outcome = ("ok", measure(*job, output_dir=os.path.join(folder, "out")))
    except torch.cuda.OutOfMemoryError:
        outcome = ("oom", traceback.format_exc(limit=1))
    except BaseException:  # noqa: BLE001 - reported by the parent
        outcome = ("error", traceback.format_exc())
    path = os.path.join(folder, f"result{rank}.pkl")
    with open(path + ".tmp", "wb") as f:
        pickle.dump(outcome, f)
    os.replace(path + ".tmp", path)
    if world > 1 and dist.is_initialized() and outcome[0] == "ok":
        dist.destroy_process_group()


def _a_rank_failed(procs, folder: str) -> bool:
    """A rank that has exited with a failure: do not wait for its peers' collective timeout."""
    for r, p in enumerate(procs):
        f = os.path.join(folder, f"result{r}.pkl")
        if not p.is_alive():
            if not os.path.exists(f):
                return True
            with open(f, "rb") as fh:
                if pickle.load(fh)[0] != "ok":
                    return True
    return False


def spawn(v: Variant, cfg_dict: dict, steps: int, timeout_s: float, quiet: bool) -> tuple[str, object]:
    """Run one variant in ``v.world`` fresh processes; returns rank 0's outcome (("ok", result) / ("oom" | "error",
    text))."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="flashi2v-bench-") as folder:
        job = (cfg_dict, v.overrides, steps)
        procs = [ctx.Process(target=_child, args=(r, v.world, folder, v.threads, timeout_s, quiet, job), daemon=True)
                 for r in range(v.world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        try:
            while any(p.is_alive() for p in procs) and not _a_rank_failed(procs, folder):
                if time.monotonic() > deadline:
                    return "error", f"timed out after {timeout_s:.0f} s"
                time.sleep(0.05)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join(5)
        outcomes = []
        for r, p in enumerate(procs):
            f = os.path.join(folder, f"result{r}.pkl")
            if not os.path.exists(f):
                outcomes.append(("error", f"rank {r} exited with code {p.exitcode} without a result"))
                continue
            with open(f, "rb") as fh:
                outcomes.append(pickle.load(fh))
        bad = [o for o in outcomes if o[0] != "ok"]
        return bad[0] if bad else outcomes[0]


# ------------------------------------------------------------------------------------------------------ report
def summarise(results: dict[str, list], warmup: int) -> dict[str, dict]:
    out = {}
    for name, runs in results.items():
        fails = [r for r in runs if r[0] != "ok"]
        if fails:
            out[name] = dict(fail=fails[0])
            continue
        timed = [t for _, r in runs for t in r["times"][warmup:]]
        r0 = runs[0][1]
        med = statistics.median(timed)
        out[name] = dict(r0, n=len(timed), median=med, min=min(timed), peak=max(r["peak_gb"] for _, r in runs))
    return out


def print_table(summary: dict[str, dict], baseline: str, gpu: bool) -> None:
    mem = "peak CUDA mem (GiB, max over ranks)" if gpu else "peak RSS per proc (GiB)"
    print(f"| variant | procs (dp x cp) | batch | median / min step (s) | steps/s | samples/s | tokens/s | "
          f"**vs baseline** (tokens/s) | {mem} |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    base = summary.get(baseline, {})
    for name, s in summary.items():
        if "fail" in s:
            kind, text = s["fail"]
            why = "OOM" if kind == "oom" else "failed"
            print(f"| {name} | | | {why} | | | | | |")
            if kind != "oom":
                print(f"\n{name} failed:\n{text}\n", file=sys.stderr)
            continue
        tps = s["tokens"] / s["median"]
        ratio = f"**{tps / (base['tokens'] / base['median']):.3f}**" if "median" in base else "n/a"
        print(f"| {name} | {s['world']} ({s['dp']} x {s['cp']}) | {s['samples']} | {s['median']:.3f} / {s['min']:.3f} | "
              f"{1 / s['median']:.2f} | {s['samples'] / s['median']:.2f} | {tps:,.0f} | {ratio} | {s['peak']:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run, warm-up included "
                                                            "(default 8 CPU, 10 GPU)")
    ap.add_argument("--warmup", type=int, default=2, help="first steps of each run left out of the medians")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved repetitions of every variant "
                                                             "(default 2 CPU, 1 GPU)")
    ap.add_argument("--cp", type=int, default=1, help="CPU: add a Ulysses row over this many processes; "
                                                      "GPU: context-parallel size (torchrun)")
    ap.add_argument("--global-batch", type=int, default=4, help="CPU: global batch (FSDP2: half per rank)")
    ap.add_argument("--model", default="bench", choices=["bench", "default"],
                    help="bench: the small CPU config / the 1.3B preset on a GPU; default: the embedded default "
                         "model's DiT (recipe/dit_gpu.yaml), fp32 + TF32 vs bf16 vs bf16 + compile")
    ap.add_argument("--batch", type=int, default=None,
                    help="GPU: batch per data-parallel rank (default 1); --model default: the batch (default 64)")
    ap.add_argument("--ac", default="both", choices=["both", "off", "on"], help="GPU: activation checkpointing")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run before it is killed")
    ap.add_argument("--verbose", action="store_true", help="keep the trainer's own output")
    args = ap.parse_args(argv)
    gpu = args.device == "cuda"
    steps = args.steps or (10 if gpu else 8)
    rounds = args.rounds or (1 if gpu else 2)
    if steps <= args.warmup:
        ap.error(f"--steps {steps} must exceed --warmup {args.warmup}")
    if gpu and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    cfg_dict = base_config(args)
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ

    if torchrun:  # every rank runs the variants in this process, one after the other
        if not gpu:
            ap.error("torchrun is for --device cuda; on the CPU the script spawns its own gloo processes")
        from flashi2v.parallel import init_distributed

        info = init_distributed()
        variants = default_model_variants(args, info.world_size) if args.model == "default" else \
            gpu_variants(args, info.world_size)
        results = {v.name: [] for v in variants}
        with tempfile.TemporaryDirectory(prefix="flashi2v-bench-") as folder:
            for r in range(rounds):
                for v in (variants if r % 2 == 0 else variants[::-1]):
                    try:
                        results[v.name].append(("ok", measure(cfg_dict, v.overrides, steps, folder)))
                    except torch.cuda.OutOfMemoryError:  # every rank hits it alike (same shapes)
                        gc.collect()
                        torch.cuda.empty_cache()
                        results[v.name].append(("oom", "out of memory"))
        if info.rank != 0:
            return 0
        machine = f"{info.world_size} x {torch.cuda.get_device_name(info.device)}"
    else:
        variants = (default_model_variants(args, 1) if args.model == "default" else
                    gpu_variants(args, 1) if gpu else cpu_variants(args))
        results = {v.name: [] for v in variants}
        for r in range(rounds):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                t0 = time.perf_counter()
                results[v.name].append(spawn(v, cfg_dict, steps, args.timeout, not args.verbose))
                print(f"  round {r + 1}/{rounds}: {v.name}: {results[v.name][-1][0]} "
                      f"({time.perf_counter() - t0:.0f} s incl. start-up)", file=sys.stderr, flush=True)
        machine = (torch.cuda.get_device_name(0) if gpu else
                   f"{cpu_name()}, os.cpu_count() = {os.cpu_count()}")

    summary = summarise(results, args.warmup)
    first = next((s for s in summary.values() if "fail" not in s), None)
    print("# Training throughput: flashi2v Trainer (AdamW + adaptive clipping + EMA, data.source=random)")
    print(f"machine: {machine}; torch {torch.__version__}; Python {platform.python_version()}")
    if args.model == "default":
        print(f"config: the default model's DiT, flashi2v/default_model/recipe/dit_gpu.yaml (dim 256, 4 blocks, patch "
              f"1x2x2) on random latents 16x9x32x32 -> 2304 tokens/sample, 96 text tokens; batch {args.batch or 64}")
    elif gpu:
        print("config: preset flashi2v-1.3b, 49x480x832 -> latent 13x60x104 -> 20,280 tokens, 512 text tokens, "
              "param_dtype bf16 (fp32 master weights / AdamW), reduce fp32")
    else:
        a = SMALL
        print(f"config: dim {a['dim']}, {a['num_layers']} layers, {a['num_heads']} heads x {a['dim'] // a['num_heads']}, "
              f"ffn {a['ffn_dim']}, text_dim {a['text_dim']} ({a['text_len']} text tokens); 17x128x128 -> latent "
              f"16x5x16x16 -> 320 tokens/sample; fp32; global batch {args.global_batch}; gloo")
    if first:
        print(f"model: flashi2v, {first['params'] / 1e6:.2f}M parameters; {first['tokens_per_sample']:,} tokens/sample")
    print(f"{rounds} interleaved round(s) x {steps} steps per variant; first {args.warmup} steps of each run dropped; "
          f"median / min over the remaining {rounds * (steps - args.warmup)} steps; ratio = tokens/s / baseline's\n")
    print_table(summary, variants[0].name, gpu)
    return 0 if all("fail" not in s or s["fail"][0] == "oom" for s in summary.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
