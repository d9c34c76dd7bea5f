"""How far a model's camera pans, step by step of the sampler (docs/default_model.md, "E's pans").

For every clip of a world dataset whose camera pans measurably (the leakage benchmark's rule), sample the model the
way the quality evaluation does (the folder's sampling defaults at the clip's size, noise seed = the clip's index),
and at the chosen sampling steps decode the step's prediction of the clean video, x̂0 = x - σ·v (guided velocity),
and the final sample. Each is scored with the benchmark's pan distance (`flashi2v.bench.leakage.pan_distance`):
the content's travel along the ground truth's pan over the ground truth's, in all and per temporal chunk. Prints a
table (one row per step: the median ratio over clips, how many reach the 25 % the pan rule asks, the pooled ratio
per chunk) and writes the per-clip numbers as JSON.

    flashi2v world --split test --num 100 --out W/test
    python examples/pan_amplitude.py --world W/test --output pans.json            # the shipped model
    python examples/pan_amplitude.py --world W/test --model MODEL --keep 0 --part 0/2   # σ = 1 only, half the clips

``--part k/n`` takes every n-th pan clip from the k-th (run n processes, then ``--merge`` their JSON files).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_KEEP = (0, 2, 4, 6, 9, 12, 15, 19)


def pan_clips(world, limit=None):
    """The clips of ``world`` whose ground-truth camera pans measurably, with their ground-truth camera paths."""
    from flashi2v.bench.leakage import load_eval_clips, measurable_pan

    clips = ((c, measurable_pan(c)) for c in load_eval_clips(world, limit=limit))
    return [(c, ref) for c, ref in clips if ref is not None]


def measure(pipe, clip, ref, keep, num_chunks: int = 4) -> dict:
    """Sample ``clip`` and score the pan of x̂0 at the steps in ``keep`` and of the final sample ("final")."""
    from flashi2v.bench.leakage import pan_distance
    from flashi2v.metrics import camera_shift

    preds: dict = {}

    def grab(step: dict) -> None:
        if step["i"] in keep:
            preds[step["i"]] = (float(step["sigma"]), (step["x"] - step["sigma"] * step["velocity"]).cpu())

    h, w = clip.size
    out = pipe(image=clip.image, prompt=clip.caption, num_frames=clip.num_frames, height=h, width=w, seed=clip.index,
               progress=False, callback=grab)
    rows = {str(i): dict(sigma=s, **pan_distance(camera_shift(pipe.decode(x)[0].numpy()), ref, num_chunks))
            for i, (s, x) in sorted(preds.items())}
    rows["final"] = dict(sigma=0.0, **pan_distance(camera_shift(out.frames[0].numpy()), ref, num_chunks))
    return dict(index=clip.index, caption=clip.caption, gt_total=list(ref.total), steps=rows)


def table(records: list[dict]) -> str:
    """One row per step: median distance ratio, clips at >= 25 %, pooled per-chunk ratios (the benchmark's summary)."""
    from flashi2v.bench.leakage import summarize_pan_distances
    from flashi2v.metrics import markdown_table

    rows = []
    for k in records[0]["steps"]:
        r = [rec["steps"][k] for rec in records]
        ratio = np.array([x["distance_ratio"] for x in r])
        summary = summarize_pan_distances(r)
        rows.append([k, f"{r[0]['sigma']:.3f}", f"{summary['camera_distance_ratio']:.2f}",
                     f"{int((ratio >= 0.25).sum())}/{len(r)}",
                     ", ".join(f"{x:.2f}" for x in summary["camera_chunk_distance_ratio"])])
    return markdown_table(rows, ["step", "σ", "median travel ratio", "≥ 0.25", "pooled ratio per chunk"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", help="a `flashi2v world` dataset folder")
    ap.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    ap.add_argument("--limit", type=int, default=None, help="only the world's first N clips")
    ap.add_argument("--keep", type=int, nargs="*", default=list(DEFAULT_KEEP),
                    help="sampling steps whose x̂0 is scored (0 = the first, at σ = 1)")
    ap.add_argument("--part", default="0/1", help="k/n: every n-th pan clip from the k-th")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--output", help="write the per-clip numbers here (JSON)")
    ap.add_argument("--merge", nargs="+", help="print the table of these JSON files (from --output) and exit")
    a = ap.parse_args(argv)
    if a.merge:
        print(table([r for f in a.merge for r in json.loads(Path(f).read_text())]))
        return 0
    if not a.world:
        ap.error("--world is required (or --merge)")
    try:
        k, n = (int(x) for x in a.part.split("/"))
        assert 0 <= k < n
    except (ValueError, AssertionError):
        ap.error(f"--part must be k/n with 0 <= k < n, got {a.part!r}")
    if a.threads:
        torch.set_num_threads(a.threads)
    from flashi2v.default_model import default_model_path
    from flashi2v.pipeline import FlashI2VPipeline

    pipe = FlashI2VPipeline.from_pretrained(a.model or default_model_path())
    clips = pan_clips(a.world, a.limit)[k::n]
    if not clips:
        print(f"no measurable camera pans in {a.world}", file=sys.stderr)
        return 1
    records = []
    for clip, ref in clips:
        t0 = time.perf_counter()
        records.append(measure(pipe, clip, ref, set(a.keep)))
        final = records[-1]["steps"]["final"]["distance_ratio"]
        print(f"clip {clip.index}: final travel ratio {final:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if a.output:
        from flashi2v.weights.io import atomic_write_text

        atomic_write_text(a.output, json.dumps(records, indent=1) + "\n")
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
