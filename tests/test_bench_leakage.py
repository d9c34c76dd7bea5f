"""The conditional-image-leakage benchmark: metrics on constructed cases, and a smoke run of the whole pipeline
(world data -> filter -> latent cache -> three paradigms trained and exported -> evaluation -> report)."""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flashi2v.bench.leakage import (EVAL_SPLITS, PARADIGMS, REFERENCES, EvalSettings, GenerationSettings,
                                    LeakageConfig, attach_ceiling, ceiling_model, clip_reference, evaluate_clip,
                                    evaluate_model, load_eval_clips, oracle_model, run_leakage, static_model,
                                    track_object)
from flashi2v.errors import InputError


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world_root(tmp_path_factory):
    """4 in-domain clips, 9 frames at 64x64."""
    from flashi2v.world import write_dataset

    root = tmp_path_factory.mktemp("world") / "test"
    write_dataset(root, "test", num_clips=4, seed=0, num_frames=9, height=64, width=64, fps=8, workers=1)
    return root


@pytest.fixture(scope="module")
def world_clips(world_root):
    return load_eval_clips(world_root)  # rendered exactly from the stored specs


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """A tiny model folder: random WanVAE(base_dim=8), the real MiniLM text encoder, a random tiny DiT."""
    from flashi2v import FlashI2VTransformer, TransformerConfig
    from flashi2v.pipeline import FlashI2VPipeline, GenerationDefaults
    from flashi2v.text import MiniLMTextEncoder
    from flashi2v.vae import WanVAE

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("base") / "tiny"
    dit = FlashI2VTransformer(TransformerConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=384,
                                                text_len=16, freq_dim=32))
    FlashI2VPipeline(dit, WanVAE(base_dim=8), MiniLMTextEncoder.from_package(text_len=16),
                     GenerationDefaults(num_frames=5, height=32, width=32, num_steps=2, fps=8)).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ constructed cases
def test_ground_truth_as_model_is_perfect(world_root, world_clips):
    ev = evaluate_model(oracle_model, world_clips)
    s = ev.summary
    assert s["n_clips"] == 4 and len(ev.records) == 4
    assert s["first_frame_psnr"] == 100.0 and s["psnr"] == 100.0 and s["chunk_psnr"] == [100.0] * 4
    assert s["ssim"] == pytest.approx(1.0) and s["chunk_mse"] == [0.0] * 4
    assert s["colour_excess"] == pytest.approx(0.0, abs=1e-9)
    # every trackable object is found where the ground truth says (sub-pixel: anti-aliased edges only)
    assert s["n_trackable"] >= 3 and s["miss_rate"] == 0.0
    assert s["traj_error"] < 1.0 and s["traj_error"] == pytest.approx(s["traj_error_matched"])
    assert s["n_direction"] >= 1 and s["direction_rate"] == 1.0
    assert s["static_traj_error"] > 1.0  # the objects do move: standing still costs something
    # the camera: clips 1 and 2 pan down, and the ground truth's content moves up
    assert s["n_camera_pans"] == 2 and s["camera_direction_rate"] == 1.0
    assert [r["camera"]["motion"] for r in ev.records] == ["zoom_in", "pan", "pan", "rotate"]
    assert ev.records[2]["camera"]["displacement"][1] < -20
    # ... and travels exactly as far as itself, in every chunk
    assert s["camera_distance_ratio"] == pytest.approx(1.0)
    assert s["camera_chunk_distance_ratio"] == pytest.approx([1.0] * 4)
    # the objects travel their own paths as far as the ground truth's (the tracker's centroids: sub-pixel off)
    assert s["object_distance_ratio"] == pytest.approx(1.0, abs=0.05)
    assert s["object_chunk_distance_ratio"] == pytest.approx([1.0] * 4, abs=0.05)
    # float input in [0, 1] scores the same as uint8
    c = world_clips[0]
    a, b = evaluate_clip(c.frames, c), evaluate_clip(c.frames.astype(np.float32) / 255.0, c)
    assert a["psnr"] == b["psnr"] and a["objects"] == b["objects"]
    with pytest.raises(InputError, match="shape"):
        evaluate_clip(c.frames[:3], c)
    # the decoded MP4s are the same clips up to H.264 loss; limit / indices select clips
    from flashi2v.metrics import psnr

    decoded = load_eval_clips(world_root, source="video", indices=[2, 0])
    assert [d.index for d in decoded] == [2, 0] and decoded[1].caption == c.caption
    assert decoded[1].frames.shape == c.frames.shape and psnr(decoded[1].frames, c.frames).mean > 30
    assert len(load_eval_clips(world_root, limit=1)) == 1


def test_static_baseline_equals_metric_on_repeated_first_frame(world_clips):
    from flashi2v.metrics import trajectory_error

    settings = EvalSettings()
    ev = evaluate_model(static_model, world_clips, settings)
    s = ev.summary
    assert s["first_frame_psnr"] == 100.0 and s["dynamic_rate"] == 0.0 and s["flicker_mae"] == 0.0
    assert s["traj_error"] == pytest.approx(s["static_traj_error"]) and s["traj_ratio"] == pytest.approx(1.0)
    assert s["direction_rate"] == 0.0  # a static video never follows a motion
    assert s["camera_direction_rate"] == 0.0 and s["n_camera_pans"] == 2
    assert {r["camera"].get("reason") for r in ev.records} == {None, "too_small"}
    for clip, rec in zip(world_clips, ev.records):
        repeated = np.repeat(clip.frames[:1], clip.num_frames, axis=0)
        gains = clip.gt["lighting"]["gain"]
        diag = math.hypot(*clip.size)
        for obj, ref, o in zip(clip.gt["objects"], clip_reference(clip, settings), rec["objects"]):
            assert o["trackable"] == ref["trackable"]
            if not ref["trackable"]:
                continue
            te = trajectory_error(track_object(repeated, obj, gains, settings, ref["gt_centroids"][0],
                                               ref["track_tol"]), ref["gt_centroids"], miss_penalty=diag)
            assert o["traj_error"] == pytest.approx(te.penalised) == pytest.approx(o["static_traj_error"])
            if "direction_agrees" in o:
                assert o["direction_reason"] in ("too_small", "not_tracked")
    # a time-reversed video moves every object the wrong way
    rev = evaluate_model(lambda cs: [c.frames[::-1].copy() for c in cs], world_clips, settings).summary
    assert rev["direction_rate"] == 0.0 and rev["traj_error"] > s["traj_error"] * 0.5
    assert rev["camera_direction_rate"] == 0.0 and rev["n_camera_pans"] == 2  # the camera pans up, not down
    assert rev["camera_distance_ratio"] == pytest.approx(-1.0, abs=0.15)  # as far, the other way
    assert s["camera_distance_ratio"] == pytest.approx(0.0, abs=0.05)  # the static video does not pan
    assert s["object_distance_ratio"] == 0.0 and s["object_chunk_distance_ratio"] == [0.0] * 4  # nothing moves
    assert rev["first_frame_psnr"] < 40.0


def test_pan_distance_known_answers(world_clips):
    """pan_distance on constructed paths (exact), then through the optical flow on a video that plays the ground
    truth at half speed (frame k shows frame k // 2): half the travel, half the speed in every chunk."""
    from flashi2v.bench.leakage import pan_distance
    from flashi2v.metrics import CameraShift

    def path(steps):
        steps = np.asarray(steps, np.float64)
        return CameraShift(steps=steps, path=np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)]))

    gt = path([[0.0, -3.0]] * 8)  # the content moves up 3 px a frame
    half = pan_distance(path([[0.0, -1.5]] * 8), gt)
    assert half["distance_ratio"] == pytest.approx(0.5) and half["chunk_distance_ratio"] == pytest.approx([0.5] * 4)
    stalls = pan_distance(path([[0.0, -3.0]] * 4 + [[0.0, 0.0]] * 4), gt)  # pans, then the camera stops
    assert stalls["distance_ratio"] == pytest.approx(0.5)
    assert stalls["chunk_distance_ratio"] == pytest.approx([1, 1, 0, 0])
    assert pan_distance(path([[2.0, 0.0]] * 8), gt)["distance_ratio"] == pytest.approx(0.0)  # across: no travel
    assert pan_distance(path([[0.0, 3.0]] * 8), gt)["distance_ratio"] == pytest.approx(-1.0)  # the wrong way
    assert pan_distance(path([[0.0, -3.0]] * 8), gt, num_chunks=3)["gt_chunk_along"] == pytest.approx([9, 9, 6])
    assert pan_distance(gt, path([[0.0, 0.0]] * 8)) == {}  # no ground-truth pan, no ratio
    # the same through evaluate_model and the TV-L1 flow, on the two panning world clips
    slow = evaluate_model(lambda cs: [c.frames[np.arange(c.num_frames) // 2] for c in cs], world_clips,
                          EvalSettings(dynamic_method="none"))
    pans = [r["camera"] for r in slow.records if r["camera"].get("measurable")]
    assert len(pans) == 2
    for c in pans:
        assert c["distance_ratio"] == pytest.approx(0.5, abs=0.08)
    assert slow.summary["camera_chunk_distance_ratio"] == pytest.approx([0.5] * 4, abs=0.1)


def test_object_distance_known_answers(world_clips):
    """object_distance on constructed tracks (exact: each step projected on the ground truth's step, so a bounce is
    followed), then through the tracker on a half-speed replay of the ground truth."""
    from flashi2v.bench.leakage import object_distance

    def walk(steps, start=(10.0, 10.0)):
        return [tuple(p) for p in np.concatenate([[start], start + np.cumsum(np.asarray(steps, float), 0)])]

    gt = walk([[2.0, 0.0]] * 4 + [[-2.0, 0.0]] * 4)  # right, then it bounces back
    assert object_distance(gt, gt)["distance_ratio"] == pytest.approx(1.0)
    half = object_distance(walk([[1.0, 0.0]] * 4 + [[-1.0, 0.0]] * 4), gt)
    assert half["distance_ratio"] == pytest.approx(0.5) and half["chunk_distance_ratio"] == pytest.approx([0.5] * 4)
    no_bounce = object_distance(walk([[2.0, 0.0]] * 8), gt)  # keeps going right: the second half goes the wrong way
    assert no_bounce["distance_ratio"] == pytest.approx(0.0)
    assert no_bounce["chunk_distance_ratio"] == pytest.approx([1, 1, -1, -1])
    stops = object_distance(walk([[2.0, 0.0]] * 2 + [[0.0, 0.0]] * 6), gt)  # starts, then stays
    assert stops["chunk_distance_ratio"] == pytest.approx([1, 0, 0, 0])
    assert stops["distance_ratio"] == pytest.approx(0.25)
    assert object_distance(walk([[0.0, 3.0]] * 8), gt)["distance_ratio"] == pytest.approx(0.0)  # across the path
    # frames where either has no centroid: the steps touching them do not count, on either side
    lost = walk([[1.0, 0.0]] * 4 + [[-1.0, 0.0]] * 4)
    lost[2] = None
    r = object_distance(lost, gt)
    assert r["steps_scored"] == 6 and r["gt_chunk_along"] == pytest.approx([2, 2, 4, 4])
    assert r["distance_ratio"] == pytest.approx(0.5)
    assert object_distance([None] * 9, gt) == {} and object_distance(gt, [(1.0, 1.0)] * 9) == {}
    with pytest.raises(InputError, match="frames"):
        object_distance(gt[:4], gt)
    # through the tracker: a video that plays the ground truth at half speed (frame k shows frame k // 2) moves a
    # linear object half as far in every chunk (a falling one, accelerating and bouncing, is not simply halved)
    slow = evaluate_model(lambda cs: [c.frames[np.arange(c.num_frames) // 2] for c in cs], world_clips,
                          EvalSettings(dynamic_method="none", camera_method="none"))
    linear = [o for r in slow.records for o in r["objects"] if "distance_ratio" in o and o["motion"] == "linear"]
    assert len(linear) == 1 and linear[0]["steps_scored"] == 8
    assert linear[0]["distance_ratio"] == pytest.approx(0.5, abs=0.03)
    assert linear[0]["chunk_distance_ratio"] == pytest.approx([0.5] * 4, abs=0.06)


def test_bad_train_override_fails_before_any_stage(base_folder, tmp_path):
    """A training override that names no config key, or gives a bad value, stops the benchmark before the data stage
    writes anything (it used to surface only when the first paradigm started training)."""
    from flashi2v.errors import FlashI2VError

    for override, match in (("flashi2v:optim.bogus=1", "bogus"), ("optim.lr=-1", "lr")):
        cfg = LeakageConfig.quick(workdir=str(tmp_path / "work"), base=str(base_folder), train_clips=4, eval_clips=2,
                                  steps=2, threads=1, train_overrides=(override,))
        with pytest.raises(FlashI2VError, match=match):
            run_leakage(cfg)
        assert not (tmp_path / "work").exists()


def test_motion_chunk_table(world_clips, tmp_path):
    """The report's motion-per-chunk table: the truth keeps all of its motion in every chunk, the static video none;
    models or splits without a ratio get no row."""
    from flashi2v.bench.leakage import motion_chunk_table

    truth, static = (evaluate_model(m, world_clips, EvalSettings(dynamic_method="none")).summary
                     for m in (oracle_model, static_model))
    report = dict(model_order=["still"], references=["ground-truth"], splits=["test"],
                  results={"still": {"test": static}}, reference_results={"ground-truth": {"test": truth}})
    lines = motion_chunk_table(report).splitlines()
    cells = [[x.strip() for x in line.split("|")[1:-1]] for line in lines]
    assert cells[0] == ["model", "split", "what", "chunk 1", "chunk 2", "chunk 3", "chunk 4"]
    assert [c[:3] for c in cells[2:]] == [["still", "test", "objects"], ["still", "test", "camera pans"],
                                          ["(ground-truth)", "test", "objects"],
                                          ["(ground-truth)", "test", "camera pans"]]
    assert [float(x) for c in cells[2:4] for x in c[3:]] == [0.0] * 8
    assert [float(x) for x in cells[4][3:]] == pytest.approx([1.0] * 4, abs=0.05)  # the tracker: sub-pixel off
    assert [float(x) for x in cells[5][3:]] == [1.0] * 4
    assert motion_chunk_table(dict(report, splits=[], results={"still": {}})) == ""
    # and as plots (one per kind of motion, only for the kinds some summary has)
    from flashi2v.bench.leakage import write_motion_plots

    paths = write_motion_plots(report, tmp_path)
    assert [p.name for p in paths] == ["chunkwise_object_motion.png", "chunkwise_camera_motion.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    no_cam = {"test": {k: v for k, v in truth.items() if k != "camera_chunk_distance_ratio"}}
    assert [p.name for p in write_motion_plots(dict(report, model_order=[], results={},
                                                    reference_results={"ground-truth": no_cam}), tmp_path / "b")] == [
        "chunkwise_object_motion.png"]


def test_shape_iou_measures_the_shape_not_the_place(tmp_path):
    """Known answers: the truth keeps every shape (1), the same video shifted keeps them too (1, while the trajectory
    error grows), objects re-rendered at half (0.7 x) their radius keep a quarter (half) of their area, and the
    static video's rigid objects keep most of theirs. Objects of clips with a fade are left out (None)."""
    import copy

    from flashi2v.world import render, write_dataset

    write_dataset(tmp_path / "w", "test", num_clips=8, seed=0, num_frames=9, height=96, width=96, fps=8, workers=1)
    clips = load_eval_clips(tmp_path / "w")
    settings = EvalSettings(dynamic_method="none", camera_method="none")

    def scaled(f):
        def run(cs):
            out = []
            for c in cs:
                spec = copy.deepcopy({k: v for k, v in c.gt.items() if k not in ("index", "path")})
                for o in spec["objects"]:
                    o["radius"] = o["radius"][:1] + [r * f for r in o["radius"][1:]]
                out.append(render(spec)[0])
            return out
        return run

    def shifted(cs):
        out = []
        for c in cs:
            v = c.frames.copy()
            v[1:] = np.roll(v[1:], 6, axis=2)
            out.append(v)
        return out

    truth = evaluate_model(oracle_model, clips, settings)
    scored = [o for r in truth.records for o in r["objects"] if o.get("shape_iou") is not None]
    assert len(scored) >= 5 and truth.summary["shape_iou"] == 1.0
    faded = [o for c, r in zip(clips, truth.records) for o in r["objects"]
             if o["trackable"] and c.gt["lighting"]["type"] in ("fade_in", "fade_out")]
    assert faded and all(o["shape_iou"] is None for o in faded)
    moved = evaluate_model(shifted, clips, settings).summary
    assert moved["shape_iou"] == 1.0 and moved["traj_error_matched"] > 4.0
    assert evaluate_model(scaled(0.5), clips, settings).summary["shape_iou"] == pytest.approx(0.25, abs=0.05)
    assert evaluate_model(scaled(0.7), clips, settings).summary["shape_iou"] == pytest.approx(0.49, abs=0.05)
    assert 0.7 < evaluate_model(static_model, clips, settings).summary["shape_iou"] < 1.0
    with pytest.raises(InputError, match="shape_clean_iou"):
        EvalSettings(shape_clean_iou=0.0)


def test_per_object_tolerance_finds_recoloured_objects(world_clips):
    """A decoder shifts colours: every pixel +35 per channel (RGB distance 60.6 > the base tolerance 40). With one
    fixed tolerance the objects are lost; with the per-object tolerance (the widest that works on the ground truth)
    the objects that allow it are found where they are."""
    fixed = EvalSettings(dynamic_method="none", track_tol_max=40.0)
    adaptive = EvalSettings(dynamic_method="none")
    assert adaptive.track_tols() == [100.0, 80.0, 60.0, 40.0] and fixed.track_tols() == [40.0]

    def shifted(cs):
        return [np.clip(c.frames.astype(np.int16) + 35, 0, 255).astype(np.uint8) for c in cs]

    f = evaluate_model(shifted, world_clips, fixed)
    a = evaluate_model(shifted, world_clips, adaptive)
    assert f.summary["miss_rate"] > 0.3
    wide = [o for r in a.records for o in r["objects"] if o["trackable"] and o["track_tol"] >= 80]
    assert wide and all(o["miss_rate"] == 0.0 and o["traj_error"] < 2.0 for o in wide)
    assert a.summary["miss_rate"] < f.summary["miss_rate"]
    # the ground truth is still perfect, and a wider tolerance never loses an object that the fixed one tracked
    o = evaluate_model(oracle_model, world_clips, adaptive).summary
    assert o["traj_error"] < 1.0 and o["direction_rate"] == 1.0
    for clip in world_clips:
        for r_f, r_a in zip(clip_reference(clip, fixed), clip_reference(clip, adaptive)):
            assert r_a["trackable"] or not r_f["trackable"]
    with pytest.raises(InputError, match="track_tol_max"):
        EvalSettings(track_tol_max=20.0)


def test_ceiling_limits_objects_to_those_the_decoder_keeps(world_root):
    """With a ceiling video (normally the VAE round trip), an object is trackable only if it is also tracked in the
    ceiling; every model is then scored on the same objects. A frozen video as ceiling keeps only objects that
    hardly move."""
    clips = load_eval_clips(world_root)
    settings = EvalSettings(dynamic_method="none")
    free = [r["trackable"] for c in clips for r in clip_reference(c, settings)]
    with pytest.raises(InputError, match="attach_ceiling"):
        ceiling_model(clips)
    with pytest.raises(InputError, match="videos for"):
        attach_ceiling(clips, lambda cs: cs[:1])
    videos = attach_ceiling(clips, static_model)
    assert all(np.array_equal(v, c.image[None].repeat(c.num_frames, 0)) for v, c in zip(videos, clips))
    refs = [r for c in clips for r in clip_reference(c, settings)]  # recomputed: attach_ceiling cleared the cache
    capped = [r["trackable"] for r in refs]
    assert sum(capped) < sum(free) and all(f or not c for f, c in zip(free, capped))
    side = min(clips[0].size)
    for r in refs:
        if r["trackable"]:
            assert r["ceiling_track_error"] <= settings.trackable_error_frac * side
    # the ceiling model scores like the static baseline, on the same (few) objects; the oracle stays perfect
    c_ev = evaluate_model(ceiling_model, clips, settings).summary
    s_ev = evaluate_model(static_model, clips, settings).summary
    assert c_ev["n_trackable"] == s_ev["n_trackable"] == sum(capped)
    assert c_ev["traj_error"] == pytest.approx(s_ev["traj_error"])
    assert evaluate_model(oracle_model, clips, settings).summary["miss_rate"] in (0.0, None)


# ------------------------------------------------------------------------------------------- the whole thing
def _check_summary(summ):
    for key in ("first_frame_psnr", "psnr", "ssim", "mse", "dynamic_rate", "dynamic_score", "flicker_mae",
                "flicker_score", "colour_drift", "colour_excess"):
        assert isinstance(summ[key], float) and math.isfinite(summ[key]), key
    for key in ("chunk_psnr", "chunk_ssim", "chunk_ssim_err", "chunk_mse", "chunk_psnr_std"):
        assert len(summ[key]) == 4 and all(isinstance(v, float) for v in summ[key]), key
    for key in ("n_objects", "n_trackable", "n_direction", "traj_error", "static_traj_error", "miss_rate",
                "direction_rate", "direction_by_motion"):
        assert key in summ, key


def test_smoke_benchmark_trains_evaluates_reports_and_resumes(base_folder, tmp_path, capsys):
    cfg = LeakageConfig.quick(workdir=str(tmp_path / "work"), base=str(base_folder), train_clips=4, eval_clips=2,
                              steps=2, threads=1)
    report = run_leakage(cfg)
    out = tmp_path / "work" / "results"
    res = json.loads((out / "results.json").read_text())
    assert res["model_order"] == list(PARADIGMS) and res["splits"] == list(EVAL_SPLITS)
    for name in PARADIGMS:
        folder = Path(res["models"][name])
        assert json.loads((folder / "model_index.json").read_text())["model_type"] == name
        assert res["training"][name]["step"] == 2
        for s in EVAL_SPLITS:
            _check_summary(res["results"][name][s])
        assert set(res["drops"][name]) == {"ood_background", "ood_combo", "ood_motion", "mean"}
    for ref in REFERENCES:
        for s in EVAL_SPLITS:
            _check_summary(res["reference_results"][ref][s])
        assert res["reference_results"][ref]["test"]["n_clips"] == 2
    assert res["reference_results"]["ground-truth"]["test"]["psnr"] == 100.0
    assert res["reference_results"]["static"]["test"]["first_frame_psnr"] == 100.0
    # same backbone, seed and budget for every paradigm; only the model type (and its input width) differ
    archs = {p: dict(res["training"][p]["config"]["model"]["architecture"]) for p in PARADIGMS}
    for a in archs.values():
        a.pop("model_type"), a.pop("in_dim")
    assert all(a == archs["flashi2v"] for a in archs.values())
    per_clip = json.loads((out / "per_clip.json").read_text())
    assert len(per_clip["i2v-concat-noise"]["ood_motion"]) == 2
    md = (out / "results.md").read_text()
    assert "## Per model and split" in md and "## Chunk-wise 1 - SSIM" in md and "## In-domain -> out-of-domain" in md
    assert "| obj dist |" in md  # (no object is trackable at 32 x 32: no motion-per-chunk table)
    assert md.count("| flashi2v | ") >= 4 + 4 + 4
    for p in ("chunkwise_1-ssim.png", "chunkwise_mse.png", "chunkwise_psnr.png"):
        assert (out / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "work" / "eval" / "flashi2v" / "videos" / "test").glob("*.mp4"))
    printed = capsys.readouterr().out
    assert "| model | split | FF-PSNR |" in printed and "wrote " in printed
    assert report["results"] == res["results"]

    # rerun through the CLI: every stage is reused, the numbers are identical
    from flashi2v.bench.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "leakage", "--quick", "--base", str(base_folder), "--workdir",
                              str(tmp_path / "work"), "--train-clips", "4", "--eval-clips", "2", "--steps", "2",
                              "--threads", "1"])
    assert config_from_args(args) == cfg
    assert args.func(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["results"] == res["results"] and again["reference_results"] == res["reference_results"]
    assert len(again["reused"]) == 5 + 2 + 3 + 3 + 3 * 4 + 3 * 4  # data, filter, cache, train, export, evals
    # an evaluation stored by code with other metrics is redone, not reused without them
    from flashi2v.bench.leakage import METRICS_VERSION

    stale = tmp_path / "work" / "eval" / "static" / "test.json"
    rec = json.loads(stale.read_text())
    rec["fingerprint"]["metrics"] = METRICS_VERSION - 1
    stale.write_text(json.dumps(rec))
    third = run_leakage(cfg)
    assert "eval static/test" not in third["reused"] and len(third["reused"]) == len(again["reused"]) - 1
    assert json.loads(stale.read_text())["fingerprint"]["metrics"] == METRICS_VERSION
    assert third["reference_results"] == res["reference_results"]

    # a given model folder, no training, one split; a changed training setup is refused
    given = LeakageConfig.quick(workdir=str(tmp_path / "work2"), models={"mine": res["models"]["flashi2v"]},
                                paradigms=(), eval_splits=("test",), references=("static",), eval_clips=2, threads=1)
    r2 = run_leakage(given)
    assert r2["model_order"] == ["mine"] and r2["drops"]["mine"] == {} and not r2["training"]
    assert r2["results"]["mine"]["test"]["psnr"] == pytest.approx(res["results"]["flashi2v"]["test"]["psnr"])
    changed = LeakageConfig.quick(workdir=str(tmp_path / "work"), base=str(base_folder), train_clips=4,
                                  eval_clips=2, steps=2, lr=5e-4, threads=1)
    with pytest.raises(InputError, match="other settings"):
        run_leakage(changed)

    # --vae-one-pass: part of the latent cache's identity (an existing chunked cache is not silently reused)
    args = parser.parse_args(["bench", "leakage", "--quick", "--base", str(base_folder), "--workdir",
                              str(tmp_path / "work"), "--train-clips", "4", "--vae-one-pass"])
    one_pass = config_from_args(args)
    assert one_pass.vae_one_pass and not cfg.vae_one_pass
    with pytest.raises(InputError, match="vae_one_pass: False -> True"):
        run_leakage(one_pass)


def test_config_errors(base_folder, tmp_path):
    for kw, msg in [
        (dict(num_frames=6), "4k\\+1"),
        (dict(height=40), "multiple of 16"),
        (dict(eval_splits=("train",)), "unknown evaluation split"),
        (dict(paradigms=("t2v",)), "unknown paradigm"),
        (dict(models={"static": str(base_folder)}), "reserved"),
        (dict(models={"x": str(tmp_path)}), "not a model folder"),
        (dict(base=None), "--base"),
        (dict(batch_size=9), "exceeds train_clips"),
        (dict(train_overrides=("tpu:flow.shift=1",)), "'tpu' is not a paradigm"),
    ]:
        args = dict(workdir=str(tmp_path / "w"), base=str(base_folder))
        args.update(kw)
        with pytest.raises(InputError, match=msg):
            LeakageConfig.quick(**args).validate()
    with pytest.raises(InputError, match="dynamic_method"):
        EvalSettings(dynamic_method="raft")
    assert GenerationSettings().negative_prompt == ""


def test_a_train_override_can_name_its_paradigm(base_folder, tmp_path):
    """"PARADIGM:section.key=value" reaches that paradigm's training config only, so an option that exists for one
    paradigm (FlashI2V's fixed identity phi) can be benchmarked against the others in one run."""
    from flashi2v.bench.leakage import _Stages

    cfg = LeakageConfig.quick(workdir=str(tmp_path / "w"), base=str(base_folder), train_overrides=(
        "flow.shift=2.0", "flashi2v:model.condition_init=identity", "flashi2v:model.freeze=[learnable_proj]",
        "i2v-concat-noise:optim.lr=5e-4"))
    cfg.validate()
    st = _Stages(cfg, log=lambda m: None)
    f, m, n = (st.train_config(p, tmp_path) for p in PARADIGMS)
    assert f.flow.shift == m.flow.shift == n.flow.shift == 2.0
    assert f.model.condition_init == "identity" and f.model.freeze == ["learnable_proj"] and f.optim.lr == cfg.lr
    assert m.model.condition_init == n.model.condition_init == "zero" and not m.model.freeze
    assert n.optim.lr == 5e-4 and m.optim.lr == cfg.lr


def test_motion_amplitude_example(world_root, world_clips, base_folder, tmp_path, capsys):
    """examples/motion_amplitude.py on a tiny random model: one row per kept step plus the final sample, for the two
    panning clips and the clips with a scored moving object; the "final" row holds the pan distance and the object
    records that evaluate_model records with the quality evaluation's settings (the folder's defaults, seed = clip
    index)."""
    from conftest import load_example

    from flashi2v.pipeline import FlashI2VPipeline

    ex = load_example("motion_amplitude")
    out = tmp_path / "motion.json"
    assert ex.main(["--world", str(world_root), "--model", str(base_folder), "--keep", "0", "1", "--no-ceiling",
                    "--output", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["index"] for r in records] == [0, 1, 2]  # clip 0: a linear object; 1, 2: pans (2: a falling object)
    assert all(list(r["steps"]) == ["0", "1", "final"] for r in records)
    assert records[1]["steps"]["0"]["sigma"] == 1.0
    assert len(records[1]["steps"]["1"]["camera"]["chunk_distance_ratio"]) == 4
    assert records[0]["steps"]["final"]["camera"] is None and len(records[0]["steps"]["0"]["objects"]) == 1
    printed = capsys.readouterr().out
    assert "camera pans" in printed and "objects with a direction" in printed
    assert "| final | 0.000 |" in printed and "| 0 | 1.000 |" in printed
    pipe = FlashI2VPipeline.from_pretrained(base_folder)
    ev = evaluate_model(pipe, world_clips, EvalSettings(dynamic_method="none"),  # the quality evaluation's settings
                        generation=GenerationSettings(num_steps=None, negative_prompt=None))
    by_index = {r["index"]: r for r in ev.records}
    for r in records:
        final, want = r["steps"]["final"], by_index[r["index"]]
        if want["camera"].get("measurable"):
            assert final["camera"]["distance_ratio"] == pytest.approx(want["camera"]["distance_ratio"], abs=1e-6)
        scored = [o for o in want["objects"] if "direction_agrees" in o]
        assert [o["id"] for o in final["objects"]] == [o["id"] for o in scored]
        for o, w in zip(final["objects"], scored):
            assert o["direction_agrees"] == w["direction_agrees"] and o["traj_error"] == pytest.approx(w["traj_error"])
            assert o.get("distance_ratio") == pytest.approx(w.get("distance_ratio"))
    # --merge prints the tables of saved files; a world with nothing to score is a one-line error
    assert ex.main(["--merge", str(out)]) == 0 and "| final |" in capsys.readouterr().out
    # (clip 0's object is lost in the tiny random VAE's round trip, the quality evaluation's rule without --no-ceiling)
    assert ex.main(["--world", str(world_root), "--model", str(base_folder), "--limit", "1"]) == 1
