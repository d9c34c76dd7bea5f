"""Tests of flashi2v.metrics on constructed videos with known answers (CPU, a few seconds)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from flashi2v.errors import InputError
from flashi2v.metrics import (
    PSNR_MAX_DB,
    chunk_bounds,
    chunkwise,
    chunkwise_mse,
    chunkwise_psnr,
    chunkwise_ssim,
    colour_drift,
    dynamic_degree,
    first_frame_psnr,
    markdown_table,
    motion_direction_agreement,
    mse,
    optical_flow,
    plot_chunkwise,
    psnr,
    shape_iou,
    ssim,
    temporal_flicker,
    top_fraction_mean,
    track_colour,
    trajectory_error,
)


def texture(h: int = 128, w: int = 128, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """A smooth, periodic (wrap-around) random RGB texture in [0.25, 0.75], float64 [H, W, 3]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((h, w, 3)), sigma=(sigma, sigma, 0), mode="wrap")
    x = (x - x.min()) / (x.max() - x.min())
    return 0.25 + 0.5 * x


def shifting_video(k: int, t: int = 17, h: int = 128, w: int = 128, axis: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 [T, H, W, 3]: a periodic texture translated by k px per frame (axis 1 = +x right, 0 = +y down)."""
    img = texture(h, w, seed)
    return np.stack([np.roll(img, k * i, axis=axis) for i in range(t)]).__mul__(255).round().astype(np.uint8)


def static_video(t: int = 17, h: int = 128, w: int = 128, seed: int = 0) -> np.ndarray:
    return shifting_video(0, t, h, w, seed=seed)


# ----------------------------------------------------------------------------------------------- inputs / PSNR


def test_identical_videos_psnr_capped_or_inf_and_ssim_one():
    v = static_video(t=5, h=32, w=32)
    p = psnr(v, v)
    assert p.per_frame.shape == (5,)
    assert np.all(p.per_frame == PSNR_MAX_DB) and p.mean == PSNR_MAX_DB
    assert math.isinf(psnr(v, v, max_db=None).mean)
    s = ssim(v, v)
    assert np.allclose(s.per_frame, 1.0, atol=1e-12) and abs(float(s) - 1.0) < 1e-12
    assert mse(v, v).mean == 0.0


def test_psnr_of_known_noise_levels():
    # Exact: +-0.1 checkerboard on mid grey -> MSE 0.01 -> 20 dB.
    base = np.full((3, 16, 16, 3), 0.5)
    sign = np.where((np.indices((16, 16)).sum(0) % 2) == 0, 1.0, -1.0)[None, :, :, None]
    p = psnr(base, base + 0.1 * sign)
    assert np.allclose(p.per_frame, 20.0, atol=1e-9)
    # uint8 Gaussian noise, sigma 10 grey levels, no clipping: MSE ~ 100 (+1/12 rounding) -> ~28.13 dB.
    rng = np.random.default_rng(1)
    a = np.full((4, 64, 64, 3), 128, np.uint8)
    b = np.clip(np.round(128 + rng.normal(0, 10, a.shape)), 0, 255).astype(np.uint8)
    expected = 10 * math.log10(255.0**2 / 100.0)
    assert abs(psnr(a, b).mean - expected) < 0.15
    # data_range on the [0, 1] scale: halving it costs 20 log10(2) dB.
    assert abs(psnr(a, b, 0.5).mean - (psnr(a, b).mean - 20 * math.log10(2))) < 1e-9


def test_uint8_float_and_torch_inputs_agree():
    a = shifting_video(1, t=3, h=32, w=32)
    b = shifting_video(2, t=3, h=32, w=32)
    ref = psnr(a, b).per_frame
    af = torch.from_numpy(a.astype(np.float32) / 255)
    assert np.allclose(psnr(af, b).per_frame, ref, atol=1e-6)
    assert np.allclose(ssim(af, torch.from_numpy(b)).per_frame, ssim(a, b).per_frame, atol=1e-6)


def test_bad_inputs_are_rejected():
    v = static_video(t=2, h=16, w=16)
    with pytest.raises(InputError, match="channels-last"):
        psnr(v.transpose(0, 3, 1, 2), v.transpose(0, 3, 1, 2))
    with pytest.raises(InputError, match="x / 255"):
        psnr(v.astype(np.float32), v.astype(np.float32))
    with pytest.raises(InputError, match=r"\(x \+ 1\) / 2"):
        psnr(v / 127.5 - 1, v / 127.5 - 1)
    with pytest.raises(InputError, match="differ in shape"):
        psnr(v, v[:1])


def test_first_frame_psnr_accepts_hwc_and_chw():
    v = shifting_video(2, t=4, h=32, w=32)
    assert first_frame_psnr(v, v[0]) == PSNR_MAX_DB
    chw = torch.from_numpy(v[0]).permute(2, 0, 1)
    assert first_frame_psnr(v, chw) == PSNR_MAX_DB
    assert first_frame_psnr(v, v[1]) == pytest.approx(psnr(v[0], v[1]).mean)


# ----------------------------------------------------------------------------------------------- SSIM


def test_ssim_matches_skimage_per_frame():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    a = shifting_video(1, t=3, h=48, w=40)
    b = np.clip(a.astype(int) + rng.integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    ours = ssim(a, b).per_frame
    kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    for t in range(a.shape[0]):
        ref = structural_similarity(a[t], b[t], channel_axis=-1, data_range=255, **kw)
        assert abs(ours[t] - ref) < 1e-4
    # luminance variant: skimage on the BT.601 luma (float in [0, 1])
    luma = np.array([0.299, 0.587, 0.114])
    ya, yb = (a / 255.0) @ luma, (b / 255.0) @ luma
    ours_y = ssim(a, b, luminance=True).per_frame
    for t in range(a.shape[0]):
        ref = structural_similarity(ya[t], yb[t], data_range=1.0, **kw)
        assert abs(ours_y[t] - ref) < 1e-4
    assert np.all(ours < 1.0)


# ----------------------------------------------------------------------------------------------- chunks


def test_chunk_bounds_17_frames_into_4():
    assert chunk_bounds(17, 4) == [(0, 5), (5, 9), (9, 13), (13, 17)]
    assert chunk_bounds(17, 4, skip_first=True) == [(1, 5), (5, 9), (9, 13), (13, 17)]
    assert chunk_bounds(16, 4) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert [e - s for s, e in chunk_bounds(10, 4)] == [3, 3, 2, 2]
    with pytest.raises(InputError):
        chunk_bounds(3, 4)


def test_chunkwise_uses_the_bounds_and_reduces_frame_metrics():
    t = 17
    v = np.zeros((t, 4, 4, 3), np.uint8)
    for i in range(t):
        v[i] = i  # frame i has value i
    res = chunkwise(lambda x: x.astype(float).mean(), v, num_chunks=4)
    assert res.bounds == ((0, 5), (5, 9), (9, 13), (13, 17))
    assert np.allclose(res.values, [2.0, 6.5, 10.5, 14.5])
    # error growing over time -> chunk-wise MSE increases, PSNR decreases, SSIM decreases
    ref = shifting_video(0, t=t, h=32, w=32)
    rng = np.random.default_rng(0)
    noisy = np.stack(
        [np.clip(ref[i].astype(int) + rng.integers(-i, i + 1, ref[i].shape), 0, 255) for i in range(t)]
    ).astype(np.uint8)
    m, p, s = chunkwise_mse(noisy, ref), chunkwise_psnr(noisy, ref), chunkwise_ssim(noisy, ref)
    assert len(m) == len(p) == len(s) == 4
    assert np.all(np.diff(m.values) > 0) and np.all(np.diff(p.values) < 0) and np.all(np.diff(s.values) < 0)
    assert p.values[0] == pytest.approx(psnr(noisy[:5], ref[:5]).mean)


# ----------------------------------------------------------------------------------------------- tracking


def square_video(k: int = 3, t: int = 8, size: int = 6, rgb=(230, 30, 40), start=(20, 40), absent=()) -> np.ndarray:
    bg = (texture(96, 96, seed=5) * 255).round().astype(np.uint8)
    v = np.repeat(bg[None], t, axis=0)
    for i in range(t):
        if i in absent:
            continue
        x0, y0 = start[0] + k * i, start[1]
        v[i, y0 : y0 + size, x0 : x0 + size] = rgb
    v[:, 5, 90] = rgb  # isolated look-alike pixels (noise) that must be ignored
    v[:, 90, 5] = rgb
    return v


def test_track_colour_follows_a_known_shift():
    k, size, start = 3, 6, (20, 40)
    v = square_video(k=k, size=size, start=start)
    cents = track_colour(v, (230, 30, 40), tol=30)
    gt = [(start[0] + k * i + (size - 1) / 2, start[1] + (size - 1) / 2) for i in range(len(v))]
    assert all(c is not None for c in cents)
    assert np.allclose(np.diff([c[0] for c in cents]), k)
    err = trajectory_error(cents, gt)
    assert err.mean == pytest.approx(0.0, abs=1e-9) and err.matched == len(v) and err.missed == 0
    # floats in [0, 1], median reducer and pixel-area coordinates
    cents2 = track_colour(v, (230 / 255, 30 / 255, 40 / 255), tol=30, reducer="median", pixel_centre=0.5)
    assert cents2[0] == pytest.approx((gt[0][0] + 0.5, gt[0][1] + 0.5))
    # direction: right agrees, left (opposite) and down (90 degrees) do not
    assert motion_direction_agreement(cents, (1, 0))
    assert motion_direction_agreement(cents, (2.0, 1.5)).angle_deg == pytest.approx(math.degrees(math.atan2(1.5, 2)))
    opp = motion_direction_agreement(cents, (-1, 0))
    assert not opp and opp.reason == "opposite" and opp.angle_deg == pytest.approx(180.0)
    assert not motion_direction_agreement(cents, (0, 1))
    assert motion_direction_agreement(cents, (0, 1), max_angle_deg=91.0)
    # per-frame ground-truth directions with undefined entries
    assert motion_direction_agreement(cents, [None, (1, 0), (0.9, 0.1), None])


def test_track_colour_handles_vanishing_and_search_window():
    v = square_video(k=2, t=8, absent=(3, 4))
    cents = track_colour(v, (230, 30, 40), tol=30)
    assert cents[3] is None and cents[4] is None and cents[5] is not None
    gt = [(20 + 2 * i + 2.5, 42.5) for i in range(8)]
    err = trajectory_error(cents, gt, miss_penalty=100.0)
    assert err.mean == pytest.approx(0.0, abs=1e-9)
    assert (err.matched, err.missed, err.spurious, err.gt_visible) == (6, 2, 0, 8)
    assert err.miss_rate == pytest.approx(0.25) and err.penalised == pytest.approx(200.0 / 8)
    assert np.isnan(err.per_frame[3])
    # spurious detections: GT invisible but tracked
    err2 = trajectory_error(cents, [None] + gt[1:])
    assert err2.spurious == 1 and err2.gt_visible == 7
    # a bigger distractor of the same colour far away: the search window keeps the track on the object
    v2 = square_video(k=2, t=6)
    v2[2:, 70:82, 70:82] = (230, 30, 40)
    free = track_colour(v2, (230, 30, 40), tol=30)
    assert free[3][0] > 70  # jumps to the larger blob
    windowed = track_colour(v2, (230, 30, 40), tol=30, search_radius=8, start=(22.5, 42.5))
    assert np.allclose([c[0] for c in windowed], [22.5 + 2 * i for i in range(6)])
    # too few pixels -> None
    assert track_colour(v2[:1], (230, 30, 40), tol=30, min_pixels=37) == [None]


def test_shape_iou_known_answers_and_tracked_pixels():
    sq = np.array([(x, y) for x in range(4) for y in range(4)])  # a 4x4 square
    assert shape_iou(sq, sq) == 1.0
    assert shape_iou(sq + (37, -5), sq) == 1.0  # the same shape elsewhere: aligned by centroid
    assert shape_iou(sq + (37, -5), sq, align=False) == 0.0
    assert shape_iou(sq + (2, 0), sq, align=False) == pytest.approx(8 / 24)  # half overlap, unaligned
    small = np.array([(x, y) for x in range(1, 3) for y in range(1, 3)])  # the 2x2 middle of the square
    assert shape_iou(small, sq) == pytest.approx(4 / 16) and shape_iou(sq, small) == pytest.approx(4 / 16)
    bar = np.array([(x, 0) for x in range(16)])  # 16 pixels in a row: same area, another shape
    assert shape_iou(bar, sq) == pytest.approx(4 / 28)
    assert math.isnan(shape_iou(None, sq)) and math.isnan(shape_iou(sq, np.zeros((0, 2))))
    # track_colour hands out the pixels of the component it keeps (None where it finds nothing)
    v = square_video(k=2, t=8, absent=(3,))
    pixels = []
    cents = track_colour(v, (230, 30, 40), tol=30, pixels=pixels)
    assert len(pixels) == 8 and pixels[3] is None and cents[3] is None
    assert all(len(p) == 36 for i, p in enumerate(pixels) if i != 3)  # the 6x6 square, not the stray pixels
    assert np.allclose(pixels[1].mean(0), cents[1])
    assert shape_iou(pixels[0], pixels[7]) == 1.0


def test_trajectory_error_known_offset_and_direction_edge_cases():
    gt = [(float(i), 2.0 * i) for i in range(5)]
    pred = [(x + 3.0, y + 4.0) for x, y in gt]
    assert trajectory_error(pred, gt).mean == pytest.approx(5.0)
    assert trajectory_error(np.array(pred), np.array(gt)).mean == pytest.approx(5.0)
    none = trajectory_error([None] * 5, gt, miss_penalty=10.0)
    assert math.isnan(none.mean) and none.penalised == pytest.approx(10.0)
    assert motion_direction_agreement([None, (1, 1)], (1, 0)).reason == "not_tracked"
    small = motion_direction_agreement([(0, 0), (1, 0)], (1, 0), min_displacement=2.0)
    assert not small and small.reason == "too_small"
    with pytest.raises(InputError):
        motion_direction_agreement(pred, (0, 0))


# ----------------------------------------------------------------------------------------------- motion


def test_static_video_has_no_flow_no_flicker_and_is_not_dynamic():
    v = static_video(t=17, h=64, w=64)
    flow = optical_flow(v[:3])
    assert flow.shape == (2, 64, 64, 2) and np.abs(flow).max() < 1e-3
    dd = dynamic_degree(v)
    assert not dd and dd.count_over == 0 and np.all(dd.scores < 1e-3)
    assert dd.threshold == pytest.approx(6.0 * 64 / 256) and dd.count_required == 4
    fl = temporal_flicker(v)
    assert fl.mae == 0.0 and fl.score == 1.0 and fl.per_pair.shape == (16,)


@pytest.mark.parametrize("method", ["tvl1", "ilk"])
def test_flow_of_a_known_shift(method):
    k = 2
    right = shifting_video(k, t=3, h=96, w=96, axis=1)
    flow = optical_flow(right, method=method)
    c = flow[:, 16:-16, 16:-16]
    assert np.median(c[..., 0]) == pytest.approx(k, abs=0.1) and abs(np.median(c[..., 1])) < 0.1
    down = shifting_video(k, t=2, h=96, w=96, axis=0)
    c = optical_flow(down, method=method)[:, 16:-16, 16:-16]
    assert np.median(c[..., 1]) == pytest.approx(k, abs=0.1) and abs(np.median(c[..., 0])) < 0.1
    mag = np.hypot(flow[..., 0], flow[..., 1])
    assert top_fraction_mean(mag[0]) == pytest.approx(k, abs=0.3)


def test_dynamic_degree_vbench_rule_on_a_moving_clip():
    v = shifting_video(2, t=17, h=64, w=64)  # 2 px/frame > threshold 1.5 px at 64x64
    dd = dynamic_degree(v)
    assert dd.is_dynamic and dd.count_over == 16 and dd.scores.shape == (16,)
    assert np.allclose(dd.scores, 2.0, atol=0.3)
    # VBench's fps handling: 16 fps -> every 2nd frame (9 frames, round(2.25) = 2 pairs needed), factor 1
    d16 = dynamic_degree(v, fps=16)
    assert d16.frame_interval == 2 and d16.count_required == 2 and d16.scores.shape == (8,)
    assert np.allclose(d16.scores, 4.0, atol=0.4)
    # 4 fps -> threshold doubled (factor 8 / 4)
    assert dynamic_degree(v[:3], fps=4).threshold == pytest.approx(2 * 6.0 * 64 / 256)
    # a clip that moves in only 3 of its 16 pairs is not dynamic (4 needed)
    still = static_video(t=17, h=64, w=64)
    mixed = still.copy()
    mixed[14:] = shifting_video(3, t=17, h=64, w=64)[1:4]
    dm = dynamic_degree(mixed)
    assert dm.count_over == 3 and not dm.is_dynamic


def test_flow_speed_16_pairs_128():
    v = shifting_video(2, t=17, h=128, w=128)
    t0 = time.perf_counter()
    dd = dynamic_degree(v)
    elapsed = time.perf_counter() - t0
    assert dd.count_required == 4 and dd.threshold == pytest.approx(3.0)
    # ~1 s on one free core; the bound is loose because the test machine is shared.
    assert elapsed < 10.0, f"dynamic_degree on 17x128x128 took {elapsed:.2f} s"


def test_temporal_flicker_known_values():
    v = np.zeros((5, 8, 8, 3), np.uint8)
    v[1::2] = 10  # alternating 0 / 10 -> MAE 10 per pair
    fl = temporal_flicker(v)
    assert fl.mae == pytest.approx(10.0) and fl.score == pytest.approx(245.0 / 255.0)
    assert np.allclose(temporal_flicker(v.astype(np.float32) / 255).per_pair, 10.0)


# ----------------------------------------------------------------------------------------------- colour


def test_colour_drift_of_a_known_brightness_change():
    from skimage.color import rgb2lab

    t = 17
    levels = 100 + 5 * np.arange(t)  # grey level per frame
    v = np.repeat(levels[:, None, None, None], 3, axis=-1) * np.ones((1, 8, 8, 1))
    v = v.astype(np.uint8)

    def lab(level):
        return rgb2lab(np.full((1, 1, 3), level / 255.0))[0, 0]

    first = np.mean([lab(x) for x in levels[0:5]], axis=0)
    last = np.mean([lab(x) for x in levels[13:17]], axis=0)
    cd = colour_drift(v)
    assert cd.drift == pytest.approx(np.linalg.norm(last - first), abs=1e-6)
    assert cd.drift > 10 and cd.reference_drift is None and cd.excess is None
    same = colour_drift(v, v)
    assert same.excess == pytest.approx(0.0, abs=1e-9) and same.reference_drift == pytest.approx(cd.drift)
    flat = np.repeat(v[:1], t, axis=0)
    vs_static = colour_drift(v, flat)
    assert vs_static.reference_drift == pytest.approx(0.0, abs=1e-9) and vs_static.excess == pytest.approx(cd.drift)
    assert colour_drift(flat).drift == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------------------------- reports


def test_plot_chunkwise_writes_a_png(tmp_path):
    results = {
        "seen": {"FlashI2V": [0.10, 0.12, 0.13, 0.15], "concat": [0.08, 0.15, 0.22, 0.30]},
        "unseen": {"FlashI2V": [[0.2, 0.21, 0.22, 0.25], [0.3, 0.3, 0.31, 0.33]], "concat": [0.2, 0.3, 0.4, 0.5]},
    }
    out = plot_chunkwise(results, tmp_path / "sub" / "fig7a.png", title="chunk-wise error")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    from PIL import Image

    with Image.open(out) as im:
        assert im.width > im.height  # two panels side by side
    single = plot_chunkwise({"FlashI2V": chunk_scores_example()}, tmp_path / "one.png")
    assert single.exists()


def chunk_scores_example():
    ref = static_video(t=9, h=16, w=16)
    return chunkwise_mse(ref, ref)


def test_markdown_table():
    rows = [{"paradigm": "FlashI2V", "psnr": 21.5, "dynamic": True}, {"paradigm": "a|b", "psnr": float("inf")}]
    md = markdown_table(rows)
    lines = md.splitlines()
    assert lines[0] == "| paradigm | psnr | dynamic |"
    assert lines[1] == "|---|---:|---|"
    assert lines[2] == "| FlashI2V | 21.500 | yes |"
    assert lines[3] == "| a\\|b | inf | – |"
    md2 = markdown_table([("x", 1, float("nan"))], ["name", "n", "v"], floatfmt=".1f")
    assert md2.splitlines()[2] == "| x | 1 | nan |"
    with pytest.raises(InputError):
        markdown_table([("x", 1)], ["only"])


# ------------------------------------------------------------------------------------------------------ camera
def test_camera_shift_of_a_known_pan_and_its_direction():
    from flashi2v.metrics import CameraShift, camera_direction_agreement, camera_shift

    v = shifting_video(2, t=5, h=48, w=48, axis=1)  # content moves 2 px right per frame: the camera pans left
    cs = camera_shift(v)
    assert cs.steps.shape == (4, 2) and cs.path.shape == (5, 2)
    np.testing.assert_allclose(cs.steps, [[2.0, 0.0]] * 4, atol=0.1)
    assert cs.total == pytest.approx((8.0, 0.0), abs=0.3)
    assert camera_direction_agreement(cs, (-1, 0), 4.0).agrees  # pan left
    assert camera_direction_agreement(v, (-1, -0.2), 4.0).agrees  # within 45 degrees
    wrong = camera_direction_agreement(cs, (1, 0), 4.0)
    assert not wrong and wrong.reason == "opposite"
    assert camera_direction_agreement(cs, (0, 1), 4.0).reason == "opposite"  # 90 degrees off
    assert camera_direction_agreement(cs, (-1, 0), 20.0).reason == "too_small"
    still = camera_shift(static_video(t=4, h=48, w=48))
    assert still.total == (0.0, 0.0) and camera_direction_agreement(still, (1, 0), 1.0).reason == "too_small"
    # the content moving down (axis 0): a pan up
    assert camera_direction_agreement(shifting_video(2, t=4, h=48, w=48, axis=0), (0, -1), 3.0).agrees
    # a precomputed flow is used as given; the wrong shape is an error
    flow = np.zeros((4, 48, 48, 2), np.float32)
    flow[..., 1] = -3.0
    assert camera_shift(v, flow=flow).total == (0.0, -12.0)
    assert isinstance(camera_shift(v, flow=flow), CameraShift)
    with pytest.raises(InputError, match="flow must have shape"):
        camera_shift(v, flow=flow[:2])
    with pytest.raises(InputError, match="camera_vector"):
        camera_direction_agreement(cs, (1, 0, 0))


def test_camera_shift_ignores_a_small_moving_object():
    from flashi2v.metrics import camera_shift

    v = shifting_video(0, t=4, h=48, w=48).copy()
    for i in range(4):  # a 8x8 white square moving 4 px down per frame over a still background
        v[i, 4 + 4 * i:12 + 4 * i, 20:28] = 255
    assert np.abs(camera_shift(v).total).max() < 0.5


def test_dynamic_degree_reuses_a_given_flow():
    from flashi2v.metrics import dynamic_degree, optical_flow

    v = shifting_video(4, t=5, h=48, w=48)
    flow = optical_flow(v)
    a, b = dynamic_degree(v), dynamic_degree(v, flow=flow)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert dynamic_degree(v, flow=np.zeros_like(flow)).count_over == 0
    with pytest.raises(InputError, match="flow must have shape"):
        dynamic_degree(v, flow=flow[:1])
