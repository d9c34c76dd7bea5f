"""`flashi2v data index`: a folder of videos with captions -> meta JSON, annotations and filter config; then the whole
journey of training the default model on your own videos (index -> filter -> encode -> train -> export -> generate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("lmdb")

from flashi2v.cli import main  # noqa: E402
from flashi2v.data.index import index_videos  # noqa: E402
from flashi2v.errors import InputError  # noqa: E402
from flashi2v.media import write_video  # noqa: E402


def _clip(path: Path, frames=17, size=(128, 160), fps=16, seed=0) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(size[0] // 8, size[1] // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    video = np.stack([np.roll(base, 2 * t, axis=1) for t in range(frames)])  # a pan
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(video, path, fps=fps)


@pytest.fixture
def videos(tmp_path) -> Path:
    root = tmp_path / "my videos"
    _clip(root / "a.mp4", seed=1)
    (root / "a.txt").write_text("the camera pans left over tiles\n\n  a tiled wall, panning  \n")
    _clip(root / "sub" / "b.mp4", frames=25, seed=2)
    (root / "sub" / "b.txt").write_text("tiles slide by\n")
    _clip(root / "c.mp4", seed=3)  # no caption
    (root / "broken.mp4").write_bytes(b"not a video at all")
    (root / "broken.txt").write_text("a caption for a file that cannot be read\n")
    (root / "notes.md").write_text("not a video\n")
    return root


def test_index_pairs_sidecar_captions_probes_and_lists_what_it_left_out(videos, tmp_path):
    res = index_videos(videos, tmp_path / "ds", height=128, width=128, num_frames=17)
    assert (res.indexed, res.found) == (2, 4)
    assert res.no_caption == ["c.mp4"] and [r for r, _ in res.unreadable] == ["broken.mp4"]
    assert "indexed 2 of 4 videos" in res.summary() and "1 without a caption (first: c.mp4)" in res.summary()
    metas = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert [m["path"] for m in metas] == ["a.mp4", "sub/b.mp4"]
    a, b = metas
    assert a["cap"] == ["the camera pans left over tiles", "a tiled wall, panning"] and b["cap"] == "tiles slide by"
    assert a["resolution"] == {"height": 128, "width": 160} and a["fps"] == 16 and a["num_frames"] == 17
    assert b["num_frames"] == 25
    ann = (tmp_path / "ds" / "annotations.txt").read_text().strip()
    assert ann == f"{videos},{tmp_path / 'ds' / 'meta.json'}"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # the temporary folder was renamed
    assert (tmp_path / "ds").stat().st_mode & 0o777 != 0o700  # the usual mode, not a private temporary one

    # the filter reads it as it is and keeps both clips (25 frames at 16 fps hold a 17-frame window too)
    from flashi2v.data import LMDBReader
    from flashi2v.data.filter import filter_once

    lmdb, counts = filter_once(tmp_path / "ds" / "filter.yaml", tmp_path / "ds" / "filtered")
    assert counts["kept"] == 2 and len(list(LMDBReader(lmdb))) == 2


def test_captions_from_a_csv_or_a_json_object(videos, tmp_path):
    csv = tmp_path / "caps.csv"
    csv.write_text('path,caption\nc.mp4,"tiles, moving"\nc.mp4,more tiles\nsub/b.mp4,b from the csv\n')
    res = index_videos(videos, tmp_path / "ds", captions=csv)
    metas = {m["path"]: m["cap"] for m in json.loads((tmp_path / "ds" / "meta.json").read_text())}
    assert metas == {"c.mp4": ["tiles, moving", "more tiles"], "sub/b.mp4": "b from the csv"}  # sidecars ignored
    assert res.no_caption == ["a.mp4", "broken.mp4"]
    js = tmp_path / "caps.json"
    js.write_text(json.dumps({"a.mp4": "from json", "sub/b.mp4": ["one", "two"]}))
    index_videos(videos, tmp_path / "ds", captions=js, overwrite=True)
    metas = {m["path"]: m["cap"] for m in json.loads((tmp_path / "ds" / "meta.json").read_text())}
    assert metas == {"a.mp4": "from json", "sub/b.mp4": ["one", "two"]}


@pytest.mark.parametrize("case, match", [
    ("missing", "video folder .* not found"),
    ("empty", "no video files"),
    ("uncaptioned", "nothing to index .* 4 without a caption"),
    ("unknown", "names 1 video\\(s\\) not under"),
    ("header", "must name a path and a caption column"),
    ("frames", "1 \\+ 4k"),
    ("inside", "inside the video folder"),
    ("not_empty", "exists and is not empty"),
    ("file", "is a file"),
    ("videos_file", "video folder .* is a file"),
    ("caption_type", "the caption of 'a.mp4' must be a string or a list of strings, got 5"),
    ("fps_inf", "--train-fps must be positive and finite, got inf"),
    ("under_file", "afile is a file, not a folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(videos, tmp_path, case, match):
    kw = dict(videos=videos, output=tmp_path / "ds")
    if case == "missing":
        kw["videos"] = tmp_path / "nope"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        kw["videos"] = tmp_path / "empty"
    elif case == "uncaptioned":
        (tmp_path / "caps.json").write_text("{}")
        kw["captions"] = tmp_path / "caps.json"
    elif case == "unknown":
        (tmp_path / "caps.csv").write_text("path,caption\nzzz.mp4,x\n")
        kw["captions"] = tmp_path / "caps.csv"
    elif case == "header":
        (tmp_path / "caps.csv").write_text("file,text\na.mp4,x\n")
        kw["captions"] = tmp_path / "caps.csv"
    elif case == "frames":
        kw["num_frames"] = 16
    elif case == "inside":
        kw["output"] = videos / "dataset"
    elif case == "file":
        (tmp_path / "ds").write_text("mine")
        kw["overwrite"] = True
    elif case == "not_empty":
        (tmp_path / "ds").mkdir()
        (tmp_path / "ds" / "keep.txt").write_text("mine")
    elif case == "videos_file":  # was "not found"
        (tmp_path / "v.mp4").write_bytes(b"x")
        kw["videos"] = tmp_path / "v.mp4"
    elif case == "caption_type":  # a number was dropped silently (the video counted as uncaptioned)
        (tmp_path / "caps.json").write_text('{"a.mp4": 5}')
        kw["captions"] = tmp_path / "caps.json"
    elif case == "fps_inf":  # was written into filter.yaml
        kw["train_fps"] = float("inf")
    elif case == "under_file":  # was a FileExistsError traceback
        (tmp_path / "afile").write_text("x")
        kw["output"] = tmp_path / "afile" / "ds"
    with pytest.raises(InputError, match=match) as e:
        index_videos(**kw)
    assert "\n" not in str(e.value)
    if case == "not_empty":
        assert (tmp_path / "ds" / "keep.txt").read_text() == "mine"
    elif case == "file":
        assert (tmp_path / "ds").read_text() == "mine"
    else:
        assert not (tmp_path / "ds").exists()


def test_cli(videos, tmp_path, capsys):
    assert main(["data", "index", str(videos), "--output", str(tmp_path / "ds"), "--height", "128", "--width",
                 "128", "--num-frames", "17"]) == 0
    out = capsys.readouterr().out
    assert "indexed 2 of 4 videos" in out and f"next: flashi2v data filter --config {tmp_path / 'ds'}" in out
    assert main(["data", "index", str(videos), "--output", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists and is not empty" in err[0]


def test_fine_tune_the_default_model_on_your_own_videos(videos, tmp_path, capsys):
    """docs/own_videos.md, end to end at toy size: index -> filter -> encode with the default model's VAE and text
    encoder -> 2 training steps from the default model -> export -> generate with the result."""
    from flashi2v.default_model import default_model_path

    default = str(default_model_path())
    ds = tmp_path / "ds"
    assert main(["data", "index", str(videos), "--output", str(ds), "--height", "128", "--width", "128",
                 "--num-frames", "17"]) == 0
    assert main(["data", "filter", "--config", str(ds / "filter.yaml"), "--output", str(ds / "filtered")]) == 0
    assert main(["data", "encode", "--lmdb", str(ds / "filtered"), "--model", default, "--output", str(ds / "cache"),
                 "--height", "128", "--width", "128", "--num-frames", "17", "--device", "cpu", "--vae-one-pass"]) == 0
    recipe = Path(default).parent / "recipe" / "dit_gpu_text.yaml"
    assert main(["train", "--config", str(recipe), f"output_dir={tmp_path / 'run'}", f"data.path={ds / 'cache'}",
                 f"model.init={default}", f"model.pipeline={default}", "model.condition_init=zero", "device=cpu",
                 "data.batch_size=2", "data.preload=false", "max_steps=2", "optim.warmup_steps=1",
                 "checkpoint.every=2", "log.every=1", "log.probe_every=0"]) == 0
    assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "mine")]) == 0
    assert main(["generate", "--model", str(tmp_path / "mine"), "--image", str(Path(default).parent / "examples" /
                 "test_000002.png"), "--prompt", "the camera pans left over tiles", "--steps", "2",
                 "--output", str(tmp_path / "out.mp4"), "--quiet"]) == 0
    from flashi2v.data.video_reader import probe

    assert probe(tmp_path / "out.mp4")[0] == 17  # (frames, fps, height, width)
