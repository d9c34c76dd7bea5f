"""Video reader, training dataset and aspect buckets on small real H.264 files written here with PyAV.

Every frame carries its own index as a 6-bit code (16x16 black/white blocks in the top row), so the tests can check
which source frames were decoded, independently of compression noise.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from flashi2v.data.buckets import BucketBatchSampler, Buckets, meta_size  # noqa: E402
from flashi2v.data.dataset import FlashI2VVideoDataset, frame_indices  # noqa: E402
from flashi2v.data.video_reader import (  # noqa: E402
    ClipError,
    CorruptVideoError,
    FpsMismatchError,
    MissingFileError,
    TooShortError,
    TruncatedVideoError,
    probe,
    read_frames,
)
from flashi2v.errors import InputError  # noqa: E402
from flashi2v.media.image import center_crop_resize, to_model_range  # noqa: E402

H, W = 64, 96
BITS = 6


def coded_frame(i: int, h: int = H, w: int = W) -> np.ndarray:
    """Gray frame, left half darker, with the index ``i`` as BITS 16x16 blocks in the top row (MSB first)."""
    a = np.full((h, w, 3), 128, np.uint8)
    a[16:, : w // 2] = 60
    for b in range(BITS):
        a[:16, 16 * b : 16 * b + 16] = 255 if (i >> (BITS - 1 - b)) & 1 else 0
    return a


def read_code(frame_chw: torch.Tensor) -> int:
    """Inverse of :func:`coded_frame` on a uint8 [3,H,W] frame (or a float frame in [-1, 1])."""
    f = frame_chw.float()
    if not frame_chw.dtype == torch.uint8:
        f = (f + 1) * 127.5
    code = 0
    for b in range(BITS):
        code = (code << 1) | int(f[:, 4:12, 16 * b + 4 : 16 * b + 12].mean() > 128)
    return code


def write_h264(path, n, fps=30, *, size=(H, W), pts=None, rotation=None, faststart=False, gop=8):
    h, w = size
    container = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {})
    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                                  options={"g": str(gop), "preset": "ultrafast", "crf": "18"})
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    if rotation is not None:
        stream.set_display_rotation(rotation)
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(coded_frame(i, h, w), format="rgb24")
        if pts is not None:
            frame.pts = pts[i]
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)


def full_decode(path) -> torch.Tensor:
    with av.open(str(path)) as c:
        return torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    v = {
        "v30": write_h264(d / "v30.mp4", 40, 30),
        "v16": write_h264(d / "v16.mp4", 30, 16),
        "tall": write_h264(d / "tall.mp4", 20, 16, size=(96, 64)),
        "square": write_h264(d / "square.mp4", 20, 16, size=(64, 64)),
        "rot": write_h264(d / "rot.mp4", 12, 16, rotation=90),
        "rot270": write_h264(d / "rot270.mp4", 12, 16, rotation=-90),
    }
    fs = write_h264(d / "faststart.mp4", 40, 16, faststart=True)
    data = open(fs, "rb").read()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    v["truncated"] = str(d / "truncated.mp4")
    (d / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    v["corrupt"] = str(d / "corrupt.mp4")
    v["missing"] = str(d / "does_not_exist.mp4")
    # Variable frame rate: irregular pts (gaps and bursts) in a 1/16 s time base.
    vfr_pts = [0, 1, 2, 4, 5, 6, 9, 10, 11, 12, 14, 15, 16, 17, 20, 21, 22, 23, 24, 26]
    v["vfr"] = write_h264(d / "vfr.mp4", len(vfr_pts), 16, pts=vfr_pts)
    v["vfr_pts"] = vfr_pts
    return v


def meta(path, fps, num_frames, start=0, cap="a caption", **kw):
    return dict(path=path, cap=cap, fps=fps, num_frames=num_frames, start_frame_idx=start, **kw)


def codes(video: torch.Tensor):
    """Frame codes of a dataset video [3,F,H,W] in [-1, 1]."""
    return [read_code(video[:, t]) for t in range(video.shape[1])]


# ---------------------------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------------------------


def test_read_frames_exact_after_seek(vids):
    full = full_decode(vids["v30"])
    assert [read_code(f) for f in full] == list(range(40))
    for idx in ([0], [7, 8, 9], [8], [15, 16, 17, 31], [39], [33, 2, 20, 20], list(range(40))):
        out = read_frames(vids["v30"], idx)
        assert out.dtype == torch.uint8 and out.shape == (len(idx), 3, H, W)
        assert torch.equal(out, full[idx]), idx  # bit-identical to a full decode
        assert [read_code(f) for f in out] == idx


def test_probe(vids):
    assert probe(vids["v30"]) == (40, 30.0, H, W)
    assert probe(vids["tall"]) == (20, 16.0, 96, 64)
    assert probe(vids["rot"]) == (12, 16.0, W, H)  # upright size


def test_reader_errors_have_reasons(vids):
    cases = [
        (vids["missing"], [0], {}, MissingFileError, "missing"),
        (vids["corrupt"], [0], {}, CorruptVideoError, "corrupt"),
        (vids["truncated"], [35], {}, TruncatedVideoError, "truncated"),
        (vids["v30"], [0], {"expected_fps": 24}, FpsMismatchError, "fps_mismatch"),
        (vids["v30"], [40], {}, TooShortError, "too_short"),
    ]
    for path, idx, kw, cls, reason in cases:
        with pytest.raises(cls) as ei:
            read_frames(path, idx, **kw)
        assert isinstance(ei.value, ClipError) and isinstance(ei.value, InputError)
        assert ei.value.reason == reason
    read_frames(vids["v30"], [0], expected_fps=30.05)  # within 0.1
    assert [read_code(f) for f in read_frames(vids["truncated"], [0, 1])] == [0, 1]  # the intact part still reads
    with pytest.raises(InputError):
        read_frames(vids["v30"], [])
    with pytest.raises(InputError):
        read_frames(vids["v30"], [-1])


def test_rotation_is_honoured(vids):
    with av.open(vids["rot"]) as c:
        stored = next(c.decode(video=0))
        assert stored.rotation == 90 and (stored.height, stored.width) == (H, W)
    out = read_frames(vids["rot"], [0, 5])
    assert out.shape == (2, 3, W, H)  # upright: portrait
    raw = full_decode(vids["rot"])[[0, 5]]
    assert torch.equal(out, torch.rot90(raw, 1, dims=(2, 3)))  # 90 degrees counter-clockwise
    # The code row (top of the stored frame) ends up as the left column, MSB at the bottom.
    assert [read_code(torch.rot90(f, -1, dims=(1, 2))) for f in out] == [0, 5]
    out270 = read_frames(vids["rot270"], [3])
    assert torch.equal(out270, torch.rot90(full_decode(vids["rot270"])[[3]], -1, dims=(2, 3)))


def test_variable_frame_rate(vids):
    pts = vids["vfr_pts"]
    with av.open(vids["vfr"]) as c:
        s = c.streams.video[0]
        rate, tb = Fraction(s.average_rate), Fraction(s.time_base)
        frames = [(f.pts, read_code(torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)))
                  for f in c.decode(s)]
    assert [code for _, code in frames] == list(range(len(pts)))
    slot = [round(p * tb * rate) for p, _ in frames]
    # Reference: index k shows the last frame whose slot is <= k.
    want = list(range(slot[-1] + 1))
    expected = [max(code for (_, code), s_ in zip(frames, slot) if s_ <= k) for k in want]
    assert len(set(expected)) < len(expected) or len(set(slot)) < len(slot)  # really irregular
    got = [read_code(f) for f in read_frames(vids["vfr"], want)]
    assert got == expected
    tail = want[9:]
    assert [read_code(f) for f in read_frames(vids["vfr"], tail)] == expected[9:]  # same after seeking


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


def test_frame_indices_official_rule():
    assert frame_indices(30, 16, 0, 40).tolist() == [int(x) for x in np.arange(0, 40, 30 / 16)]
    assert frame_indices(16.05, 16, 3, 10).tolist() == list(range(3, 13))
    with pytest.raises(ClipError) as ei:
        frame_indices(12, 16, 0, 40)
    assert ei.value.reason == "low_fps"


def test_fps_resampling_30_to_16(vids):
    ds = FlashI2VVideoDataset([meta(vids["v30"], 30, 40)], height=H, width=W, sample_num_frames=21,
                              text_drop_ratio=0.0)
    allowed = frame_indices(30, 16, 0, 40).tolist()
    assert len(allowed) == 22
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        c = codes(item["video"])
        begin = allowed.index(c[0])
        assert c == allowed[begin : begin + 21]
        seen.add(begin)
    assert seen == {0, 1}


def test_fps_16_to_16_keeps_every_frame_and_start(vids):
    ds = FlashI2VVideoDataset([meta(vids["v16"], 16, 20, start=5)], height=H, width=W, sample_num_frames=20)
    assert codes(ds[0]["video"]) == list(range(5, 25))


def test_temporal_window_covers_all_starts_including_last(vids):
    ds = FlashI2VVideoDataset([meta(vids["v16"], 16, 10, start=4)], height=H, width=W, sample_num_frames=8)
    starts = set()
    for epoch in range(25):
        ds.set_epoch(epoch)
        starts.add(codes(ds[0]["video"])[0])
    assert starts == {4, 5, 6}  # 10 frames, window 8: starts 0, 1, 2 (the official code never picks 2)


def test_item_shapes_first_frame_and_range(vids):
    ds = FlashI2VVideoDataset([meta(vids["v30"], 30, 40)], height=32, width=64, sample_num_frames=5)
    item = ds[0]
    v = item["video"]
    assert v.shape == (3, 5, 32, 64) and v.dtype == torch.float32
    assert v.min() >= -1 and v.max() <= 1
    assert item["first_frame"].shape == (3, 1, 32, 64)
    assert torch.equal(item["first_frame"], v[:, :1])
    assert item["index"] == 0 and isinstance(item["caption"], str)


def test_transform_matches_official_pipeline_and_crop(vids):
    crop = [16, 96, 0, 48]  # x0, x1, y0, y1: drops the MSB code block (unused below 32) and the bottom rows
    ds = FlashI2VVideoDataset([meta(vids["v16"], 16, 30, crop=crop)], height=48, width=80, sample_num_frames=6, seed=3)
    item = ds[0]
    v = item["video"]
    assert v.shape == (3, 6, 48, 80)
    px = (v[:, 0] + 1) * 127.5
    assert abs(px[:, 20:48, :28].mean() - 60) < 3 and abs(px[:, 20:48, 36:].mean() - 128) < 3  # dark left third
    # Reference: decode everything, crop, official resize, model range; exactly one window matches bit for bit.
    ref = to_model_range(center_crop_resize(full_decode(vids["v16"])[..., 0:48, 16:96], 48, 80))
    matches = [t for t in range(30 - 5) if torch.equal(ref[t : t + 6].permute(1, 0, 2, 3), v)]
    assert len(matches) == 1
    # Uncropped: the official transform of the same frames, bit for bit.
    ds2 = FlashI2VVideoDataset([meta(vids["v16"], 16, 30)], height=H, width=W, sample_num_frames=6, seed=3)
    it2 = ds2[0]
    c = codes(it2["video"])
    assert c == list(range(c[0], c[0] + 6))
    ref2 = to_model_range(center_crop_resize(full_decode(vids["v16"])[c], H, W)).permute(1, 0, 2, 3)
    assert torch.equal(it2["video"], ref2)
    ds3 = FlashI2VVideoDataset([meta(vids["v16"], 16, 30)], height=32, width=32, sample_num_frames=6, seed=3)
    ref3 = to_model_range(center_crop_resize(full_decode(vids["v16"])[c], 32, 32)).permute(1, 0, 2, 3)
    assert torch.equal(ds3[0]["video"], ref3)  # same seed, same window; resize + centre crop to a square
    bad = FlashI2VVideoDataset([meta(vids["v16"], 16, 30, crop=[0, 200, 0, 48])], height=32, width=32,
                               sample_num_frames=6, max_attempts=1)
    with pytest.raises(InputError):
        bad[0]
    assert bad.skip_counts == {"bad_meta": 1}


def test_caption_choice_dropout_and_reproducibility(vids):
    caps = ["one", "two", "three", "four"]
    ms = [meta(vids["v16"], 16, 20, cap=caps) for _ in range(3)]
    kw = dict(height=32, width=48, sample_num_frames=4, seed=7)
    a = FlashI2VVideoDataset(ms, **kw)
    b = FlashI2VVideoDataset(ms, **kw)
    for i in range(3):
        x, y = a[i], b[i]
        assert x["caption"] == y["caption"] and torch.equal(x["video"], y["video"])
    seen = set()
    for epoch in range(30):
        a.set_epoch(epoch)
        seen.add(a._caption(ms[0], a._rng(0)))
    assert {"one", "two", "three", "four"} <= seen
    dropped = FlashI2VVideoDataset(ms, text_drop_ratio=1.0, **kw)
    assert dropped[0]["caption"] == ""
    # Text dropout rate ~ 0.1 by default.
    d = FlashI2VVideoDataset(ms, **kw)
    n_empty = 0
    for epoch in range(400):
        d.set_epoch(epoch)
        n_empty += d._caption(ms[0], d._rng(0)) == ""
    assert 15 <= n_empty <= 70


def test_bad_clips_are_skipped_with_reasons(vids, caplog):
    good = meta(vids["v16"], 16, 30)
    ms = [
        meta(vids["missing"], 16, 30),
        meta(vids["corrupt"], 16, 30),
        meta(vids["truncated"], 16, 40),  # header says 40 frames; the file was cut in half
        meta(vids["v30"], 16, 40),  # meta says 16 fps, container 30 fps
        meta(vids["v16"], 16, 3),  # meta too short for the window
        meta(vids["v16"], 16, 20, start=25),  # file (30 frames) shorter than the meta says
        good,
        meta(vids["missing"], 16, 30),
    ]
    ds = FlashI2VVideoDataset(ms, height=32, width=48, sample_num_frames=8)
    with caplog.at_level(logging.WARNING, logger="flashi2v.data.dataset"):
        item = ds[0]
        assert item["index"] == 6 and item["video"].shape == (3, 8, 32, 48)
        assert ds.skip_counts == {"missing": 1, "corrupt": 1, "truncated": 1, "fps_mismatch": 1, "too_short": 2}
        assert ds[7]["index"] == 6  # wraps around deterministically
    assert ds.skip_counts == {"missing": 3, "corrupt": 2, "truncated": 2, "fps_mismatch": 2, "too_short": 4}
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 5  # once per reason
    assert sum("(missing)" in m for m in logged) == 1


def test_all_bad_clips_fail_after_bounded_attempts(vids):
    ds = FlashI2VVideoDataset([meta(vids["missing"], 16, 30)] * 50, height=32, width=48, sample_num_frames=8,
                              max_attempts=4)
    with pytest.raises(InputError, match="4 clips in a row"):
        ds[10]
    assert ds.skip_counts == {"missing": 4}


# ---------------------------------------------------------------------------------------------------------------
# Buckets
# ---------------------------------------------------------------------------------------------------------------


def test_default_buckets_and_assignment():
    b = Buckets(480, 832)
    assert b.sizes == [(480, 832), (544, 720), (624, 624), (720, 544), (832, 480)]
    for h, w in b.sizes:
        assert h % 16 == 0 and w % 16 == 0 and 0.85 <= h * w / (480 * 832) <= 1.0
    assert b.assign_bucket(1080, 1920) == (480, 832)  # wide
    assert b.assign_bucket(1920, 1080) == (832, 480)  # tall
    assert b.assign_bucket(720, 720) == (624, 624)  # square
    assert b.assign_bucket(480, 640) == (544, 720)  # 3:4
    assert meta_size({"resolution": {"height": 720, "width": 1280}}) == (720, 1280)
    assert meta_size({"resolution": {"height": 720, "width": 1280}, "crop": [0, 720, 0, 720]}) == (720, 720)


def test_bucket_batch_sampler_groups_and_is_deterministic():
    ids = [0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 0]
    s = BucketBatchSampler(ids, 2, seed=5)
    batches = list(s)
    assert len(batches) == len(s) == 2 + 1 + 1
    for batch in batches:
        assert len(batch) == 2 and len({ids[i] for i in batch}) == 1
    assert batches == list(BucketBatchSampler(ids, 2, seed=5))
    s.set_epoch(1)
    assert list(s) != batches  # a new epoch, a new order
    keep = BucketBatchSampler(ids, 2, seed=5, drop_last=False)
    assert sorted(i for b in keep for i in b) == list(range(len(ids))) and len(keep) == len(list(keep)) == 7
    r0 = list(BucketBatchSampler(ids, 2, seed=5, num_replicas=2, rank=0))
    r1 = list(BucketBatchSampler(ids, 2, seed=5, num_replicas=2, rank=1))
    assert len(r0) == len(r1) == 2 and not set(map(tuple, r0)) & set(map(tuple, r1))


def test_dataset_with_buckets_wide_tall_square(vids):
    buckets = Buckets(32, 48, ratios=((2, 3), (1, 1), (3, 2)))
    assert buckets.sizes == [(32, 48), (32, 32), (48, 32)]
    ms = [
        meta(vids["v16"], 16, 20, resolution={"height": H, "width": W}),
        meta(vids["tall"], 16, 20, resolution={"height": 96, "width": 64}),
        meta(vids["square"], 16, 20, resolution={"height": 64, "width": 64}),
        meta(vids["tall"], 16, 20),  # no resolution in the meta: bucket from the decoded frames
    ]
    ds = FlashI2VVideoDataset(ms, sample_num_frames=4, buckets=buckets)
    shapes = [tuple(ds[i]["video"].shape[-2:]) for i in range(4)]
    assert shapes[0] == buckets.assign_bucket(H, W) and shapes[0][0] < shapes[0][1]
    assert shapes[1] == buckets.assign_bucket(96, 64) and shapes[1][0] > shapes[1][1]
    assert shapes[2] == buckets.assign_bucket(64, 64) and shapes[2][0] == shapes[2][1]
    assert shapes[3] == shapes[1]
    sampler = BucketBatchSampler(ds.bucket_ids[:3] * 2, 2, seed=0)
    for batch in sampler:
        assert len({shapes[i % 3] for i in batch}) == 1
