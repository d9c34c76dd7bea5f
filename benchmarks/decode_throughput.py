"""Decode throughput of the training-data reader (PyAV, seek + decode forward) versus decord.

Generates ``--clips`` H.264 clips (``--frames`` frames at ``--fps``, ``--height`` x ``--width``, keyframe every
``--gop`` frames), then reads the same frames from every clip with both readers in the same process, interleaved
(clip by clip, alternating which reader goes first), for each decoder thread setting in ``--threads``.
The frames per clip are what training reads: ``--sample-frames`` frames resampled to ``--train-fps`` (the official
rule) from a random start, the same start for both readers.

    python benchmarks/decode_throughput.py                  # 16 clips, 100 frames 480x832 @ 30 fps -> 49 @ 16 fps
    python benchmarks/decode_throughput.py --clips 4 --height 240 --width 416   # quick

Reports clips/s and decoded-and-returned frames/s (including opening the file and the uint8 [N,3,H,W] tensor) and the
ratio ours/decord (> 1 = ours faster), plus whether the pixels agree. Both return a channels-last ``[N,3,H,W]`` view
(no layout copy), as the official code does after decord (``permute(0, 3, 1, 2)``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np
import torch


def make_clips(folder, n, frames, fps, height, width, gop):
    import av

    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:height, 0:width]
    for c in range(n):
        path = os.path.join(folder, f"clip_{c:03d}.mp4")
        container = av.open(path, "w")
        stream = container.add_stream("libx264", rate=Fraction(fps), options={"g": str(gop), "preset": "veryfast",
                                                                           "crf": "20"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        phase = rng.uniform(0, 6.28, 3)
        # A noisy colour-wave texture that pans diagonally: realistic-ish motion and detail for the encoder.
        base = np.stack([127 + 100 * np.sin(xx / (37 + 11 * k) + yy / (53 + 7 * k) + phase[k]) for k in range(3)], -1)
        base = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        for i in range(frames):
            img = np.roll(base, (2 * i, 3 * i), axis=(0, 1))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        paths.append(path)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--gop", type=int, default=30, help="keyframe interval of the generated clips")
    p.add_argument("--sample-frames", type=int, default=49)
    p.add_argument("--train-fps", type=float, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", default="1,0", help="decoder thread settings to compare (0 = automatic)")
    args = p.parse_args(argv)

    try:
        import decord
    except ImportError:
        print("decord is not installed (`pip install decord`); nothing to compare with", file=sys.stderr)
        return 2
    from flashi2v.data.dataset import frame_indices
    from flashi2v.data.video_reader import read_frames

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        paths = make_clips(folder, args.clips, args.frames, args.fps, args.height, args.width, args.gop)
        print(f"wrote {args.clips} clips of {args.frames} frames {args.height}x{args.width} @ {args.fps:g} fps "
              f"(gop {args.gop}) in {time.perf_counter() - t0:.1f} s")
        rng = np.random.default_rng(1)
        all_idx = frame_indices(args.fps, args.train_fps, 0, args.frames)
        if len(all_idx) < args.sample_frames:
            raise SystemExit(f"{args.frames} frames at {args.fps:g} fps give only {len(all_idx)} frames at "
                             f"{args.train_fps:g} fps; need --sample-frames {args.sample_frames}")
        windows = []
        for _ in paths:
            b = int(rng.integers(0, len(all_idx) - args.sample_frames + 1))
            windows.append(all_idx[b : b + args.sample_frames].tolist())

        def ours(path, idx, threads):
            return read_frames(path, idx, threads=threads)

        def theirs(path, idx, threads):  # the official WanVideoProcessor way (THWC -> TCHW)
            vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
            return torch.from_numpy(vr.get_batch(idx).asnumpy()).permute(0, 3, 1, 2)

        rows = []
        for threads in [int(x) for x in args.threads.split(",")]:
            times = {"ours": 0.0, "decord": 0.0}
            max_diff, same = 0, 0
            for c, (path, idx) in enumerate(zip(paths, windows)):  # warm-up (file cache, libraries)
                ours(path, idx, threads), theirs(path, idx, threads)
            for r in range(args.repeats):
                for c, (path, idx) in enumerate(zip(paths, windows)):
                    order = [("ours", ours), ("decord", theirs)]
                    if (c + r) % 2:
                        order.reverse()
                    out = {}
                    for name, fn in order:
                        t = time.perf_counter()
                        out[name] = fn(path, idx, threads)
                        times[name] += time.perf_counter() - t
                    if r == 0:
                        d = (out["ours"].int() - out["decord"].int()).abs()
                        max_diff = max(max_diff, int(d.max()))
                        same += int(sum(torch.equal(a, b) for a, b in zip(out["ours"], out["decord"])))
            n_clips = args.repeats * len(paths)
            n_frames = n_clips * args.sample_frames
            rows.append((threads, times, n_clips, n_frames, max_diff, same / (len(paths) * args.sample_frames)))

        print()
        print(f"{len(paths)} clips x {args.repeats} repeats, {args.sample_frames} frames per clip "
              f"({args.fps:g} -> {args.train_fps:g} fps), {args.height}x{args.width}, torch threads 1")
        print("| decoder threads | reader | clips/s | frames/s | ours/decord | identical frames | max abs diff |")
        print("|---|---|---|---|---|---|---|")
        for threads, times, n_clips, n_frames, max_diff, same in rows:
            ratio = times["decord"] / times["ours"]
            for name in ("ours", "decord"):
                tag = "auto" if threads == 0 else str(threads)
                extra = f"{ratio:.2f}x" if name == "ours" else ""
                print(f"| {tag} | {name} | {n_clips / times[name]:.2f} | {n_frames / times[name]:.1f} | {extra} | "
                      f"{same:.1%} | {max_diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
