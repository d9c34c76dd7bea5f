"""How far a model moves the camera and the objects, step by step of the sampler (docs/default_model.md, "E's pans").

For every clip of a world dataset whose camera pans measurably or that has a scored object with a direction (the
leakage benchmark's rules; objects are scored where the model's own VAE keeps them trackable, as in the quality
evaluation, unless ``--no-ceiling``), sample the model the way the quality evaluation does (the folder's sampling
defaults at the clip's size, noise seed = the clip's index), and at the chosen sampling steps decode the step's
prediction of the clean video, x̂0 = x - σ·v (guided velocity), and the final sample. Each is scored with the
benchmark's metrics: the camera's pan distance (`flashi2v.bench.leakage.pan_distance`, the content's travel along
the ground truth's pan over the ground truth's, in all and per temporal chunk) and, per object, the direction rule
and the object distance (`object_distance`, the same along the object's own path). Prints one table per kind (a row
per step: the median ratio, how many follow the caption, the pooled ratio per chunk) and writes the per-clip
numbers as JSON.

    flashi2v world --split test --num 100 --out W/test
    python examples/motion_amplitude.py --world W/test --output motion.json            # the shipped model
    python examples/motion_amplitude.py --world W/test --model MODEL --keep 0 --part 0/2   # σ = 1 only, half the clips

``--part k/n`` takes every n-th scored clip from the k-th (run n processes, then ``--merge`` their JSON files).
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
OBJECT_KEYS = ("id", "motion", "direction_agrees", "distance_ratio", "chunk_distance_ratio", "chunk_along",
               "gt_chunk_along", "traj_error", "shape_iou")


def object_settings():
    """The benchmark's settings without the optical-flow metrics (the objects need only the tracker)."""
    from flashi2v.bench.leakage import EvalSettings

    return EvalSettings(dynamic_method="none", camera_method="none")


def scored_clips(world, limit=None, vae=None):
    """``(clip, camera path or None)`` for the clips of ``world`` with a measurable pan or a scored object with a
    direction; with ``vae``, objects count only where that VAE's round trip of the clip keeps them trackable."""
    from flashi2v.bench.leakage import (attach_ceiling, clip_reference, load_eval_clips, measurable_pan,
                                        vae_roundtrip_model)

    clips = load_eval_clips(world, limit=limit)
    if vae is not None:
        attach_ceiling(clips, vae_roundtrip_model(vae))
    out = []
    for c in clips:
        ref = measurable_pan(c)
        if ref is not None or any(r["trackable"] and r["direction"] is not None
                                  for r in clip_reference(c, object_settings())):
            out.append((c, ref))
    return out


def score(video, clip, ref, num_chunks: int = 4) -> dict:
    """The camera's pan distance (None without a measurable pan) and the scored objects' records of ``video``."""
    from flashi2v.bench.leakage import evaluate_clip, pan_distance
    from flashi2v.metrics import camera_shift

    rec = evaluate_clip(video, clip, object_settings())
    objects = [{k: o.get(k) for k in OBJECT_KEYS} for o in rec["objects"] if "direction_agrees" in o]
    camera = None if ref is None else pan_distance(camera_shift(video), ref, num_chunks)
    return dict(camera=camera, objects=objects)


def measure(pipe, clip, ref, keep) -> dict:
    """Sample ``clip`` and score x̂0 at the steps in ``keep`` and the final sample ("final")."""
    preds: dict = {}

    def grab(step: dict) -> None:
        if step["i"] in keep:
            preds[step["i"]] = (float(step["sigma"]), (step["x"] - step["sigma"] * step["velocity"]).cpu())

    h, w = clip.size
    out = pipe(image=clip.image, prompt=clip.caption, num_frames=clip.num_frames, height=h, width=w, seed=clip.index,
               progress=False, callback=grab)
    rows = {str(i): dict(sigma=s, **score(pipe.decode(x)[0].numpy(), clip, ref)) for i, (s, x) in sorted(preds.items())}
    rows["final"] = dict(sigma=0.0, **score(out.frames[0].numpy(), clip, ref))
    return dict(index=clip.index, caption=clip.caption, gt_total=None if ref is None else list(ref.total), steps=rows)


def tables(records: list[dict]) -> str:
    """Per kind (camera pans, objects), one row per step: median distance ratio, how many follow the caption (pans:
    a travel of at least 25 %; objects: the direction rule), pooled per-chunk ratios (the benchmark's summaries)."""
    from flashi2v.bench.leakage import summarize_object_distances, summarize_pan_distances
    from flashi2v.metrics import markdown_table

    def chunks(vals):
        return ", ".join("–" if x is None else f"{x:.2f}" for x in vals or [])

    pans, objs = [], []
    for k in records[0]["steps"]:
        steps = [rec["steps"][k] for rec in records]
        sigma = f"{steps[0]['sigma']:.3f}"
        cams = [s["camera"] for s in steps if s["camera"]]
        if cams:
            p = summarize_pan_distances(cams)
            n = sum(c["distance_ratio"] >= 0.25 for c in cams)
            pans.append([k, sigma, f"{p['camera_distance_ratio']:.2f}", f"{n}/{len(cams)}",
                         chunks(p["camera_chunk_distance_ratio"])])
        ob = [o for s in steps for o in s["objects"]]
        if ob:
            d = summarize_object_distances(ob)
            agree = sum(bool(o["direction_agrees"]) for o in ob)
            med = d["object_distance_ratio"]
            objs.append([k, sigma, "–" if med is None else f"{med:.2f}", f"{agree}/{len(ob)}",
                         chunks(d["object_chunk_distance_ratio"]),
                         f"{np.nanmean([np.nan if o['traj_error'] is None else o['traj_error'] for o in ob]):.1f}"])
    out = []
    if pans:
        out += ["camera pans", "", markdown_table(pans, ["step", "σ", "median travel ratio", "≥ 0.25",
                                                         "pooled ratio per chunk"]), ""]
    if objs:
        out += ["objects with a direction", "", markdown_table(objs, ["step", "σ", "median travel ratio",
                                                                      "direction followed", "pooled ratio per chunk",
                                                                      "trajectory px"]), ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", help="a `flashi2v world` dataset folder")
    ap.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    ap.add_argument("--limit", type=int, default=None, help="only the world's first N clips")
    ap.add_argument("--keep", type=int, nargs="*", default=list(DEFAULT_KEEP),
                    help="sampling steps whose x̂0 is scored (0 = the first, at σ = 1)")
    ap.add_argument("--no-ceiling", action="store_true",
                    help="score every object the tracker follows in the ground truth, not only those the model's "
                         "VAE keeps trackable (the quality evaluation's rule)")
    ap.add_argument("--part", default="0/1", help="k/n: every n-th scored clip from the k-th")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--output", help="write the per-clip numbers here (JSON)")
    ap.add_argument("--merge", nargs="+", help="print the tables of these JSON files (from --output) and exit")
    a = ap.parse_args(argv)
    if a.merge:
        print(tables([r for f in a.merge for r in json.loads(Path(f).read_text())]))
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
    clips = scored_clips(a.world, a.limit, vae=None if a.no_ceiling else pipe.vae)[k::n]
    if not clips:
        print(f"no measurable camera pan and no scored moving object in {a.world}", file=sys.stderr)
        return 1
    records = []
    for clip, ref in clips:
        t0 = time.perf_counter()
        records.append(measure(pipe, clip, ref, set(a.keep)))
        final = records[-1]["steps"]["final"]
        objs = final["objects"]
        print(f"clip {clip.index}: " + ("" if final["camera"] is None else
                                        f"pan travel ratio {final['camera']['distance_ratio']:.2f}; ")
              + f"{sum(bool(o['direction_agrees']) for o in objs)}/{len(objs)} object directions "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if a.output:
        from flashi2v.weights.io import atomic_write_text

        atomic_write_text(a.output, json.dumps(records, indent=1) + "\n")
    print(tables(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
