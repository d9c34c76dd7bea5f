"""Data filter: meta JSON + probing, the official rules, summary counts, LMDB store (official layout), CLI command."""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle

import numpy as np
import pytest

lmdb = pytest.importorskip("lmdb")
av = pytest.importorskip("av")
yaml = pytest.importorskip("yaml")

from flashi2v.data.cli import add_data_parser, cmd_data_filter  # noqa: E402
from flashi2v.data.filter import (  # noqa: E402
    RULES,
    FilterConfig,
    check_sample,
    filter_samples,
    frame_interval,
    min_area,
    run_filter,
)
from flashi2v.data.lmdb_store import LMDBReader, encode_key, output_path, write_filtered_samples, write_lmdb  # noqa: E402
from flashi2v.data.meta import ProbeError, fill_missing_fields, probe_video, read_annotations  # noqa: E402
from flashi2v.errors import ConfigError, InputError  # noqa: E402

# small sample: 48x64 (r0 = 0.75), 4 frames at 8 fps; min_hxw = 48*64
SMALL = dict(sample_height=48, sample_width=64, sample_num_frames=4, train_fps=8, min_hxw=3072)


def write_h264(path, frames=12, fps=16, height=48, width=64, fmt=None):
    c = av.open(str(path), "w", format=fmt)
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    for i in range(frames):
        img = np.full((height, width, 3), i * 10, np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def meta(**kw):
    d = dict(path="v.mp4", cap="a cat", resolution={"height": 48, "width": 64}, fps=16, num_frames=20)
    d.update(kw)
    return {k: v for k, v in d.items() if v is not _DEL}


_DEL = object()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_h264(root / "real.mp4")  # 48x64, 16 fps, 12 frames
    write_h264(root / "real.mkv")  # no frame count in the container: duration path
    write_h264(root / "real.h264", fmt="h264")  # raw stream: no duration at all -> decode count
    (root / "garbage.mp4").write_bytes(b"this is not a video" * 10)
    return root


# (entry, expected reason or None). Relative paths are joined onto the videos root by the annotation file.
CASES = [
    (meta(cut=[3, 20]), None),
    (meta(cap=["one", "two"], motion=0.5, crop=[0, 10, 0, 10]), None),
    (meta(fps=7.95, num_frames=4), None),  # |fps - 8| < 0.1: interval 1, exactly 4 frames
    (meta(num_frames=40), None),  # too-long limit is 5 * 4 * 16 / 8 = 40 (inclusive)
    (meta(resolution={"height": 72, "width": 96}, num_frames=7), None),  # arange(0, 7, 2) = 4 frames
    (meta(cap=_DEL), "no_caption"),
    (meta(cap=""), "no_caption"),
    (meta(cap=[]), "no_caption"),
    ("not a dict", "bad_metadata"),
    (meta(fps="fast"), "bad_metadata"),
    (meta(path=_DEL), "bad_metadata"),
    (meta(path="garbage.mp4", fps=_DEL), "bad_metadata"),  # unprobeable file
    (meta(path="missing.mp4", num_frames=_DEL), "bad_metadata"),  # file not there
    (meta(resolution={"height": 0, "width": 64}), "bad_resolution"),
    (meta(resolution={"height": 48}), "bad_resolution"),
    (meta(resolution={"height": 100, "width": 64}), "aspect_ratio"),  # 1.56 > 1.2
    (meta(resolution={"height": 20, "width": 64}), "aspect_ratio"),  # 0.31 < 0.4
    (meta(resolution={"height": 40, "width": 64}), "too_small"),  # needs ceil(3072 * 1.2) = 3687 > 2560
    (meta(num_frames=41), "too_long"),
    (meta(fps=7.5, num_frames=10), "fps_too_low"),  # with 20 frames it would be too long first
    (meta(motion=1.5), "motion"),
    (meta(motion=-0.1), "motion"),
    (meta(num_frames=6), "too_short"),  # arange(0, 6, 2) = 3 frames
    # probed from real files
    (dict(path="real.mp4", cap="probed"), None),
    (dict(path="real.mkv", cap="probed mkv"), None),
    (dict(path="real.mp4", cap="cut", cut=[6, 100]), "too_short"),  # 6 frames left -> 3 indices
    (dict(path="real.mp4", cap="kept field", resolution={"height": 10, "width": 64}), "aspect_ratio"),
]


def expected_counts():
    counts = {r.name: 0 for r in RULES}
    for _, reason in CASES:
        if reason:
            counts[reason] += 1
    return counts


@pytest.fixture()
def ann(tmp_path, videos):
    meta_json = tmp_path / "meta.json"
    meta_json.write_text(json.dumps([e for e, _ in CASES]))
    ann = tmp_path / "ann.txt"
    ann.write_text(f"# comment\n\n{videos},{meta_json}\n")
    return ann


def test_probe_real_files(videos):
    assert probe_video(videos / "real.mp4") == probe_video(videos / "real.mkv")
    info = probe_video(videos / "real.mp4")
    assert (info.height, info.width, info.fps, info.num_frames) == (48, 64, 16.0, 12)
    raw = probe_video(videos / "real.h264")  # decode count, the last resort
    assert (raw.height, raw.width, raw.num_frames) == (48, 64, 12)
    for bad in ("garbage.mp4", "missing.mp4"):
        with pytest.raises(ProbeError):
            probe_video(videos / bad)


def test_fill_missing_fields_keeps_given_and_counts_from_cut(videos):
    s = fill_missing_fields({"path": str(videos / "real.mp4"), "cap": "x", "fps": 30, "cut": [2, 9]})
    assert s["fps"] == 30 and s["resolution"] == {"height": 48, "width": 64} and s["num_frames"] == 7
    complete = meta()
    assert fill_missing_fields(complete, probe=None) == complete  # nothing missing: no probe at all


@pytest.mark.parametrize("i", range(len(CASES)))
def test_each_rule(i, videos):
    entry, reason = CASES[i]
    cfg = FilterConfig(**SMALL)
    if isinstance(entry, dict) and "path" in entry:
        entry = dict(entry, path=str(videos / entry["path"]))
    got, sample = check_sample(entry, cfg)
    assert got == reason
    if reason is None:
        assert sample["start_frame_idx"] == (entry.get("cut") or [0])[0]
        assert {k: sample[k] for k in entry} == entry  # every input field kept


def test_summary_counts_and_table(ann):
    cfg = FilterConfig(ann_txt_path=str(ann), **SMALL)
    samples = read_annotations(ann)
    before = json.dumps(samples, sort_keys=True)
    kept, summary = filter_samples(samples, cfg)
    assert json.dumps(samples, sort_keys=True) == before  # inputs not modified
    assert summary.dropped == expected_counts()
    assert summary.total == len(CASES) and summary.kept == len(kept) == sum(r is None for _, r in CASES)
    assert [s["cap"] for s in kept][-2:] == ["probed", "probed mkv"]
    assert kept[-1]["num_frames"] == 12 and kept[-1]["resolution"] == {"height": 48, "width": 64}
    table = summary.table()
    for name, n in expected_counts().items():
        assert any(line.split() == [name, str(n)] for line in table.splitlines())
    assert f"kept {summary.kept}" in " ".join(table.split())


def test_official_defaults():
    cfg = FilterConfig()
    assert (cfg.sample_height, cfg.sample_width, cfg.sample_num_frames, cfg.train_fps, cfg.min_hxw) == (480, 832, 49, 16, 921600)
    assert (cfg.min_h_div_w_ratio, cfg.max_h_div_w_ratio, cfg.too_long_factor) == (0.4, 1.2, 5.0)
    assert (cfg.min_motion_value, cfg.max_motion_value, cfg.sample_stride) == (0.0, 1.0, None)
    assert min_area(cfg, 480, 832) == 921600
    assert min_area(cfg, 720, 1280) == 945231  # 16:9 is slightly off 480:832, so 720p itself is just too small
    assert frame_interval(16.05, cfg) == 1.0 and frame_interval(24, cfg) == 1.5 and frame_interval(30, cfg) == 1.875
    hd = dict(path="x.mp4", cap="c", resolution={"height": 1080, "width": 1920}, fps=30, num_frames=200)
    assert check_sample(hd, cfg)[0] is None
    assert check_sample(dict(hd, resolution={"height": 720, "width": 1280}), cfg)[0] == "too_small"
    assert check_sample(dict(hd, num_frames=460), cfg)[0] == "too_long"  # > 5 * 49 * 30 / 16 = 459.4
    assert check_sample(dict(hd, num_frames=91), cfg)[0] is None  # arange(0, 91, 1.875) has 49 values
    assert check_sample(dict(hd, num_frames=90), cfg)[0] == "too_short"  # 48 values


def test_sample_stride_mode():
    cfg = FilterConfig(**dict(SMALL, train_fps=None, sample_stride=3))
    s = meta(fps=5, num_frames=10)  # fps ignored: interval 3 -> arange(0, 10, 3) = 4 frames
    assert check_sample(s, cfg)[0] is None
    assert check_sample(meta(fps=5, num_frames=9), cfg)[0] == "too_short"
    assert check_sample(meta(num_frames=61), cfg)[0] == "too_long"  # 5 * 4 * 3 = 60


# ---------------------------------------------------------------------------------------------------------- LMDB
def read_raw(path):
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    with env.begin() as txn:
        items = [(k, pickle.loads(v)) for k, v in txn.cursor()]
    env.close()
    return items


def test_run_filter_writes_official_layout(ann, tmp_path):
    cfg = FilterConfig(ann_txt_path=str(ann), save_path=str(tmp_path / "out"), **SMALL)
    buf = io.StringIO()
    result = run_filter(cfg, out=buf)
    n = result.summary.kept
    assert result.output_path == tmp_path / "out" / f"filtered_samples_{n}.lmdb"
    assert "too_short" in buf.getvalue()
    items = read_raw(result.output_path)
    assert [k for k, _ in items] == [f"{i:012d}".encode("utf-8") for i in range(n)]
    kept, _ = filter_samples(read_annotations(ann), cfg)
    assert [v for _, v in items] == kept
    reader = LMDBReader(result.output_path)
    assert len(reader) == n and reader[0] == kept[0] and reader[-1] == kept[-1] and reader.getitem(1) == kept[1]
    with pytest.raises(InputError, match="already exists"):
        run_filter(cfg, out=io.StringIO())
    assert run_filter(cfg, out=io.StringIO(), overwrite=True).output_path == result.output_path
    assert len(LMDBReader(result.output_path)) == n
    # a save_path under a file: one line (was a NotADirectoryError traceback), nothing written
    (tmp_path / "afile").write_text("x")
    under = FilterConfig(ann_txt_path=str(ann), save_path=str(tmp_path / "afile" / "out"), **SMALL)
    with pytest.raises(InputError, match="afile is a file, not a folder") as e:
        run_filter(under, out=io.StringIO())
    assert "\n" not in str(e.value) and (tmp_path / "afile").read_text() == "x"


def test_lmdb_suffix_naming_reads_back(tmp_path):
    assert output_path(tmp_path / "d", 7) == tmp_path / "d" / "filtered_samples_7.lmdb"
    assert output_path(tmp_path / "x.lmdb", 7) == tmp_path / "filtered_samples_7_x.lmdb"
    path = write_filtered_samples([{"a": 1}, {"b": 2}], tmp_path / "sub" / "x.lmdb")
    assert path == tmp_path / "sub" / "filtered_samples_2_x.lmdb"
    assert list(LMDBReader(path)) == [{"a": 1}, {"b": 2}] == list(LMDBReader(tmp_path / "sub"))


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(tmp_path, exc):
    def samples():
        for i in range(5):
            yield {"i": i}
        raise exc("stop")

    final = tmp_path / "filtered_samples_9.lmdb"
    with pytest.raises(exc):
        write_lmdb(samples(), final, commit_every=2)  # two batches were already committed
    assert not final.exists() and os.listdir(tmp_path) == []
    with pytest.raises(InputError):
        LMDBReader(tmp_path)


def test_interrupted_overwrite_keeps_old(tmp_path):
    final = tmp_path / "a.lmdb"
    write_lmdb([{"old": 1}], final)

    def samples():
        yield {"new": 1}
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        write_lmdb(samples(), final, overwrite=True)
    assert list(LMDBReader(final)) == [{"old": 1}] and os.listdir(tmp_path) == ["a.lmdb"]


def test_multi_db_reader(tmp_path):
    write_lmdb([{"k": i} for i in range(3)], tmp_path / "b.lmdb")
    write_lmdb([{"k": i} for i in range(10, 12)], tmp_path / "a.lmdb")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty.lmdb").mkdir()  # no data.mdb: ignored
    (tmp_path / ".c.lmdb.1234.partial").mkdir()  # leftover of a killed run: ignored
    reader = LMDBReader(tmp_path)
    assert [p.name for p in reader.paths] == ["a.lmdb", "b.lmdb"]
    assert len(reader) == 5 and [d["k"] for d in reader] == [10, 11, 0, 1, 2]
    assert reader[-1] == {"k": 2} and reader[2] == {"k": 0}
    with pytest.raises(IndexError):
        reader[5]
    clone = pickle.loads(pickle.dumps(reader))  # DataLoader workers: handles reopen lazily
    assert clone[3] == {"k": 1} and LMDBReader(tmp_path / "b.lmdb")[0] == {"k": 0}  # handles shared
    reader.close()
    env = lmdb.open(str(tmp_path / "a.lmdb"), readonly=True, lock=False)  # closed: the file can be opened again
    assert env.begin().get(encode_key(1)) == pickle.dumps({"k": 11}, protocol=pickle.HIGHEST_PROTOCOL)
    env.close()
    assert reader[0] == {"k": 10}  # reopens on demand


def test_reader_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        LMDBReader(tmp_path / "nope.lmdb")
    with pytest.raises(InputError, match="neither"):
        LMDBReader(tmp_path)
    (tmp_path / "f.lmdb").write_text("not a db")
    with pytest.raises(InputError):
        LMDBReader(tmp_path / "f.lmdb")


# -------------------------------------------------------------------------------------------------------- config
def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize("data, match", [
    ({"ann_txt_path": "a", "sample_heigth": 480}, "unknown key.*sample_heigth"),
    ({"sample_height": "480"}, "sample_height must be a positive integer"),
    ({"sample_num_frames": 0}, "sample_num_frames"),
    ({"train_fps": None}, "train_fps .* or sample_stride"),
    ({"min_h_div_w_ratio": 2.0}, "min_h_div_w_ratio"),
    ({"max_motion_value": -1}, "min_motion_value"),
    ({"save_absolute_path": "yes"}, "save_absolute_path"),
    ("- a\n- b\n", "mapping"),
    ("a: [1,\n", "not valid YAML"),
])
def test_config_errors(tmp_path, data, match):
    with pytest.raises(ConfigError, match=match) as e:
        FilterConfig.from_yaml(write_yaml(tmp_path / "f.yaml", data))
    assert "\n" not in str(e.value)


def test_config_yaml_and_missing(tmp_path):
    cfg = FilterConfig.from_yaml(write_yaml(tmp_path / "f.yaml", {"ann_txt_path": "a.txt", "min_hxw": 409600}))
    assert cfg.min_hxw == 409600 and cfg.sample_height == 480 and cfg.ann_txt_path == "a.txt"
    with pytest.raises(ConfigError, match="not found"):
        FilterConfig.from_yaml(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="filter config is a folder"):
        FilterConfig.from_yaml(tmp_path)
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError, match="is not a YAML text file"):  # was a UnicodeDecodeError traceback
        FilterConfig.from_yaml(tmp_path / "image.png")
    with pytest.raises(ConfigError, match="ann_txt_path"):
        run_filter(FilterConfig(save_path="x"))
    with pytest.raises(ConfigError, match="save_path"):
        run_filter(FilterConfig(ann_txt_path="x"))


def test_annotation_errors(tmp_path):
    cfg = FilterConfig(ann_txt_path=str(tmp_path / "none.txt"), save_path=str(tmp_path / "o"))
    with pytest.raises(InputError, match="annotation file not found"):
        run_filter(cfg)
    ann = tmp_path / "ann.txt"
    for text, match in [("no comma here\n", "root_dir,meta.json"), ("/r,missing.json\n", "meta JSON not found")]:
        ann.write_text(text)
        with pytest.raises(InputError, match=match):
            read_annotations(ann)
    for content, match in [("{bad", "not valid JSON"), ('{"a": 1}', "must hold a list")]:
        (tmp_path / "m.json").write_text(content)
        ann.write_text("/r,m.json\n")  # relative: found beside the annotation file
        with pytest.raises(InputError, match=match):
            read_annotations(ann)
    (tmp_path / "m.json").write_text(json.dumps([{"path": "a.mp4", "cap": "x"}, 3]))
    assert read_annotations(ann) == [{"path": os.path.join("/r", "a.mp4"), "cap": "x"}, 3]
    assert read_annotations(ann, absolute_paths=False)[0]["path"] == "a.mp4"


def test_nothing_survives_writes_nothing(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps([{"path": "a.mp4"}]))
    (tmp_path / "ann.txt").write_text(f"/r,{tmp_path / 'm.json'}\n")
    cfg = FilterConfig(ann_txt_path=str(tmp_path / "ann.txt"), save_path=str(tmp_path / "o"))
    buf = io.StringIO()
    with pytest.raises(InputError, match="no sample passed"):
        run_filter(cfg, out=buf)
    assert "no_caption" in buf.getvalue() and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------------- CLI
def test_cli_command(ann, tmp_path, capsys):
    cfg_path = write_yaml(tmp_path / "filter.yaml", dict(SMALL, ann_txt_path=str(ann), save_path=str(tmp_path / "unused")))
    parser = argparse.ArgumentParser(prog="flashi2v")
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "filter", "--config", str(cfg_path), "--output", str(tmp_path / "db")])
    assert args.func is cmd_data_filter
    assert args.func(args) == 0
    out = capsys.readouterr().out
    n = sum(r is None for _, r in CASES)
    assert f"wrote {tmp_path / 'db' / f'filtered_samples_{n}.lmdb'} ({n} of {len(CASES)} samples)" in out
    assert "bad_metadata" in out and not (tmp_path / "unused").exists()
    assert len(LMDBReader(tmp_path / "db")) == n
    bare = parser.parse_args(["data"])
    assert bare.func(bare) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_reader_after_fork(tmp_path):
    write_lmdb([{"k": i} for i in range(3)], tmp_path / "a.lmdb")
    reader = LMDBReader(tmp_path)
    assert reader[0] == {"k": 0}  # opened in the parent before the fork, as a DataLoader does
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(w, pickle.dumps(reader[2]))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read()
    os.waitpid(pid, 0)
    assert pickle.loads(got) == {"k": 2} and reader[1] == {"k": 1}


def test_data_filter_through_the_flashi2v_command(tmp_path, capsys):
    """`flashi2v data filter` is wired into the main CLI: a missing config is one line, exit 2."""
    from flashi2v.cli import main

    assert main(["data", "filter", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.yaml" in err[0]
