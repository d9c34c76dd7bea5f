"""Latent cache (`flashi2v data encode`): shards, manifest, resume after an interruption, reader, CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")
pytest.importorskip("lmdb")

from conftest import load_example, randomize_  # noqa: E402
from flashi2v import FlashI2VTransformer, TransformerConfig  # noqa: E402
from flashi2v.cli import main  # noqa: E402
from flashi2v.data.dataset import FlashI2VVideoDataset  # noqa: E402
from flashi2v.data.latent_cache import LatentCacheDataset, encode_cache, shard_name  # noqa: E402
from flashi2v.data.lmdb_store import LMDBReader, write_lmdb  # noqa: E402
from flashi2v.errors import InputError  # noqa: E402
from flashi2v.pipeline import FlashI2VPipeline, GenerationDefaults  # noqa: E402
from flashi2v.vae import WanVAE  # noqa: E402

H, W, NF, FPS = 32, 48, 9, 16
ARGS = dict(height=H, width=W, num_frames=NF, train_fps=FPS, shard_size=2, seed=3, device="cpu")
CAPS = ["a red ball rolls", "waves on a beach at sunset", "broken", "a cat", "a dog runs across a long field"]


def write_h264(path, n=12, fps=FPS, seed=0):
    rng = np.random.default_rng(seed)
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    for i in range(n):
        img = np.roll(base, 2 * i, axis=1)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_data")
    metas = []
    for i, cap in enumerate(CAPS):
        path = root / f"v{i}.mp4"
        if cap == "broken":
            path.write_bytes(b"this is not a video" * 50)
        else:
            write_h264(path, seed=i)
        metas.append(dict(path=str(path), cap=cap, fps=FPS, num_frames=12, resolution={"height": H, "width": W}))
    db = root / "filtered_samples_5.lmdb"
    write_lmdb(metas, db)
    from flashi2v.text import MiniLMTextEncoder

    torch.manual_seed(0)
    tiny = dict(dim=64, ffn_dim=128, num_heads=4, num_layers=1, text_dim=384, text_len=16)
    model = root / "model"
    FlashI2VPipeline(randomize_(FlashI2VTransformer(TransformerConfig(**tiny)), seed=1), WanVAE(base_dim=8),
                     MiniLMTextEncoder.from_package(text_len=16),
                     GenerationDefaults(num_frames=NF, height=H, width=W)).save_pretrained(model)
    full = root / "full"
    manifest = encode_cache(db, model, full, **ARGS)
    return dict(root=root, db=db, model=model, full=full, manifest=manifest, metas=metas)


def test_manifest_shards_and_skip_counts(setup):
    m = setup["manifest"]
    assert m["complete"] and m["num_shards"] == 3 and m["num_source_samples"] == 5 and m["num_samples"] == 4
    assert m["skip_counts"] == {"corrupt": 1}
    assert [s["file"] for s in m["shards"]] == [shard_name(k) for k in range(3)]
    assert [s["num_samples"] for s in m["shards"]] == [2, 1, 1]
    assert m["shards"][1]["skip_counts"] == {"corrupt": 1}
    assert m["config"]["shard_size"] == 2 and m["config"]["seed"] == 3
    assert m["text_len"] == 16 and m["text_dim"] == 384 and m["latent_shape"] == [16, 3, 4, 6]
    assert json.loads((setup["full"] / "manifest.json").read_text()) == m
    assert not list(setup["full"].glob(".*"))  # no temp files left


def test_reader_matches_vae_and_text_encoder(setup):
    from flashi2v.text import load_text_encoder

    ds = LatentCacheDataset(setup["full"])
    assert len(ds) == 4 and [ds[i]["index"] for i in range(4)] == [0, 1, 3, 4]
    vae = WanVAE.from_pretrained(setup["model"] / "vae", dtype=torch.float32)
    text = load_text_encoder(setup["model"] / "text_encoder")
    source = FlashI2VVideoDataset(setup["metas"], height=H, width=W, sample_num_frames=NF, train_fps=FPS,
                                  text_drop_ratio=0.0, seed=3)
    for i in (0, 2, 3):
        item = ds[i]
        ref = source.load(item["index"])
        assert item["caption"] == ref["caption"] == CAPS[item["index"]]
        assert item["latents"].shape == (16, 3, 4, 6) and item["first_frame_latents"].shape == (16, 1, 4, 6)
        assert torch.equal(item["latents"], vae.encode(ref["video"][None])[0])
        assert torch.equal(item["first_frame_latents"], vae.encode(ref["first_frame"][None])[0])
        # causal VAE: the first latent frame only depends on the first video frame
        torch.testing.assert_close(item["first_frame_latents"], item["latents"][:, :1], atol=1e-5, rtol=1e-5)
        emb, lengths = text.encode([item["caption"]])
        assert item["text_len"] == int(lengths[0]) and item["text_emb"].shape == (16, 384)
        assert not item["text_emb"][item["text_len"]:].any()
        torch.testing.assert_close(item["text_emb"], emb[0], atol=1e-5, rtol=1e-5)
    trimmed = LatentCacheDataset(setup["full"], pad_text=False)[0]
    assert trimmed["text_emb"].shape == (trimmed["text_len"], 384)
    emb, lengths = text.encode([""])
    assert ds.empty_text_len == int(lengths[0]) and ds.empty_text_emb.shape == (16, 384)
    torch.testing.assert_close(ds.empty_text_emb, emb[0], atol=1e-5, rtol=1e-5)
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["latents"].shape == (2, 16, 3, 4, 6) and batch["text_emb"].shape == (2, 16, 384)


def test_resume_after_interruption_is_bit_identical(setup, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    calls = {"n": 0}
    real = WanVAE.encode

    def flaky(self, video, **kw):
        calls["n"] += 1
        if calls["n"] > 6:  # 2 calls per sample: shard 0 (2 samples) and shard 1 (1 sample + 1 skip) done
            raise KeyboardInterrupt("simulated interruption")
        return real(self, video, **kw)

    monkeypatch.setattr(WanVAE, "encode", flaky)
    with pytest.raises(KeyboardInterrupt):
        encode_cache(setup["db"], setup["model"], out, **ARGS)
    partial = json.loads((out / "manifest.json").read_text())
    assert not partial["complete"] and [s["shard"] for s in partial["shards"]] == [0, 1]
    assert not (out / shard_name(2)).exists() and not list(out.glob(".*"))
    with pytest.raises(InputError, match="incomplete"):
        LatentCacheDataset(out)
    monkeypatch.setattr(WanVAE, "encode", real)
    lines = []
    m = encode_cache(setup["db"], setup["model"], out, log=lines.append, **ARGS)
    assert lines[0].startswith("resuming: 2 of 3 shards") and len(lines) == 2
    assert m == setup["manifest"]
    full = setup["full"]
    for name in [shard_name(k) for k in range(3)] + ["empty_prompt.safetensors", "manifest.json"]:
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
    # a complete cache: rerunning does nothing
    lines.clear()
    assert encode_cache(setup["db"], setup["model"], out, log=lines.append, **ARGS) == m
    assert lines == ["resuming: 3 of 3 shards already complete"]


def test_argument_mismatch_and_bad_output(setup, tmp_path):
    with pytest.raises(InputError, match=r"other arguments \(shard_size: 2 -> 3\).*same arguments"):
        encode_cache(setup["db"], setup["model"], setup["full"], **{**ARGS, "shard_size": 3})
    with pytest.raises(InputError, match="seed: 3 -> 4"):
        encode_cache(setup["db"], setup["model"], setup["full"], **{**ARGS, "seed": 4})
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.txt").write_text("x")
    with pytest.raises(InputError, match="not a latent cache"):
        encode_cache(setup["db"], setup["model"], junk, **ARGS)
    with pytest.raises(InputError, match="not a latent cache"):
        LatentCacheDataset(junk)
    with pytest.raises(InputError, match="shard_size must be a positive integer"):
        encode_cache(setup["db"], setup["model"], tmp_path / "o", **{**ARGS, "shard_size": 0})
    with pytest.raises(InputError, match="not found"):
        encode_cache(tmp_path / "nope.lmdb", setup["model"], tmp_path / "o", **ARGS)


def test_bad_arguments_fail_before_the_cache_folder_is_made(setup, tmp_path):
    """A frame count the VAE cannot take, a bad size, a NaN frame rate or an unknown device used to fail after the
    cache folder was made (an empty folder, or a started cache: manifest + empty prompt) or as a traceback; an
    --output that is or lies under a file was a FileExistsError / NotADirectoryError traceback."""
    out = tmp_path / "o"
    for kw, message in [
        (dict(num_frames=7), "num_frames must be 1 \\+ 4k for the VAE of .*got 7; try 5 or 9"),
        (dict(height=40), "height 40 is not a multiple of 16"),
        (dict(train_fps=float("nan")), "train_fps must be positive and finite"),
        (dict(device="gpu7"), "unknown device 'gpu7'"),
    ]:
        with pytest.raises(InputError, match=message):
            encode_cache(setup["db"], setup["model"], out, **{**ARGS, **kw})
        assert not out.exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file; pass a new or empty folder"):
        encode_cache(setup["db"], setup["model"], tmp_path / "afile", **ARGS)
    with pytest.raises(InputError, match="afile is a file, not a folder"):
        encode_cache(setup["db"], setup["model"], tmp_path / "afile" / "o", **ARGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_cli_encode(setup, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["data", "encode", "--lmdb", str(setup["db"]), "--model", str(setup["model"]), "--output", str(out),
            "--height", str(H), "--width", str(W), "--num-frames", str(NF), "--train-fps", str(FPS),
            "--shard-size", "2", "--seed", "3", "--device", "cpu"]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out} (4 of 5 samples in 3 shards; skipped corrupt: 1) in ")
    for k in range(3):
        assert (out / shard_name(k)).read_bytes() == (setup["full"] / shard_name(k)).read_bytes()
    assert LMDBReader(setup["db"])[0]["cap"] == CAPS[0]
    rc = main(argv[:-4] + ["--seed", "9", "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed: 3 -> 9" in err


def test_parallel_workers_write_the_same_cache(setup, tmp_path):
    out = tmp_path / "par"
    lines = []
    m = encode_cache(setup["db"], setup["model"], out, log=lines.append, workers=2, **ARGS)
    assert m == setup["manifest"] and len(lines) == 3 and all(line.startswith("shard ") for line in lines)
    for name in [shard_name(k) for k in range(3)] + ["empty_prompt.safetensors", "manifest.json"]:
        assert (out / name).read_bytes() == (setup["full"] / name).read_bytes(), name
    with pytest.raises(InputError, match="workers"):
        encode_cache(setup["db"], setup["model"], tmp_path / "bad", workers=0, **ARGS)


def test_cli_bench_reliance_on_a_cache(setup, tmp_path, capsys):
    out = tmp_path / "rel.json"
    assert main(["bench", "reliance", "--model", str(setup["model"]), "--cache", str(setup["full"]), "--samples", "3",
                 "--sigmas", "0.9", "0.5", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 0.90 |" in text and "std phi(z)" in text
    rows = json.loads(out.read_text())[str(setup["model"])]["rows"]
    assert [r["sigma"] for r in rows] == [0.9, 0.5] and all(r["frame0"] > 0 for r in rows)
    assert main(["bench", "reliance", "--model", str(tmp_path / "nope"), "--cache", str(setup["full"])]) != 0
    assert "not a model folder" in capsys.readouterr().err


def test_cli_bench_reliance_bad_device_json_path_and_damaged_shard(setup, tmp_path, capsys):
    """One line each, and the --json checks come before the models run (they were tracebacks after it)."""
    base = ["bench", "reliance", "--model", str(setup["model"]), "--sigmas", "0.9", "--samples", "2"]
    (tmp_path / "out.json").mkdir()
    (tmp_path / "afile").write_text("x")
    for extra, message in [
        (["--device", "gpu7"], "unknown device 'gpu7'; use cpu, cuda or cuda:N"),
        (["--json", str(tmp_path / "out.json")], "is a folder; give a file path"),
        (["--json", str(tmp_path / "afile" / "r.json")], "afile is a file, not a folder"),
    ]:
        assert main(base + ["--cache", str(setup["full"])] + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    damaged = tmp_path / "damaged"
    shutil.copytree(setup["full"], damaged)
    shard = damaged / shard_name(0)
    shard.write_bytes(shard.read_bytes()[:100])  # a truncated shard: was a SafetensorError traceback
    assert main(base + ["--cache", str(damaged)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot read {shard}" in err and "rerun `flashi2v data encode`" in err
    assert main(base + ["--cache", str(setup["full"]), "--json", str(tmp_path / "new" / "r.json")]) == 0
    assert (tmp_path / "new" / "r.json").is_file()  # missing parent folders are made


def test_cli_bench_reliance_with_swapped_words(setup, tmp_path, capsys):
    from flashi2v.data.latent_cache import LatentCacheDataset

    ds = LatentCacheDataset(setup["full"])
    assert ds.captions() == [ds[i]["caption"] for i in range(len(ds))]
    out = tmp_path / "rel.json"
    args = ["bench", "reliance", "--model", str(setup["model"]), "--cache", str(setup["full"]), "--sigmas", "0.9"]
    assert main(args + ["--swap-words", "cat=dog", "--json", str(out)]) == 0
    assert "edited captions: cat<->dog" in capsys.readouterr().out
    res = json.loads(out.read_text())[str(setup["model"])]
    assert res["samples"] == 2 and res["edit"] == "cat<->dog"  # "a cat" and "a dog runs ...": the captions it changes
    row = res["rows"][0]
    assert row["rest_edited_prompt"] > 0 and row["edit_reliance"] == pytest.approx(row["rest_edited_prompt"] - row["rest"])
    assert main(args + ["--swap-words", "left=right"]) != 0
    assert "contain a word of the swap (left<->right)" in capsys.readouterr().err
    assert main(args + ["--swap-words", "left"]) != 0
    assert "WORD=WORD" in capsys.readouterr().err
    transformer_only = tmp_path / "t"
    import shutil

    shutil.copytree(setup["model"] / "transformer", transformer_only)
    assert main(["bench", "reliance", "--model", str(transformer_only), "--cache", str(setup["full"]),
                 "--swap-words", "cat=dog"]) != 0
    assert "needs a model folder with a text encoder" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    shutil.copytree(setup["model"], corrupt)
    (corrupt / "model_index.json").write_text("{not json")
    shutil.copytree(setup["model"] / "transformer", corrupt / "transformer", dirs_exist_ok=True)
    assert main(["bench", "reliance", "--model", str(corrupt), "--cache", str(setup["full"]),
                 "--swap-words", "cat=dog"]) != 0
    assert "cannot read" in capsys.readouterr().err


def test_every_caption_is_cached_and_training_draws_one_per_epoch(setup, tmp_path):
    """A meta entry whose ``cap`` is a list: every caption is encoded (same states as encoding it alone), the
    latents are those of the one-caption cache, and LatentCacheSource draws a caption per (seed, epoch, index):
    different epochs see different captions, and the same arguments draw the same ones (exact resume)."""
    from flashi2v.text import MiniLMTextEncoder
    from flashi2v.train.data import LatentCacheSource

    metas = [dict(m) for m in setup["metas"]]
    metas[0]["cap"] = ["a red ball rolls", "a ball", "the red ball rolls to the left"]
    metas[4]["cap"] = ["a dog runs across a long field", "a dog"]
    db = tmp_path / "filtered_samples_5.lmdb"
    write_lmdb(metas, db)
    out = tmp_path / "multi"
    m = encode_cache(db, setup["model"], out, **ARGS)
    assert m["format_version"] == 2 and m["num_samples"] == 4
    ds, single = LatentCacheDataset(out), LatentCacheDataset(setup["full"])
    assert [len(c) for c in ds.all_captions()] == [3, 1, 1, 2] and ds.captions() == single.captions()
    enc = MiniLMTextEncoder.from_package(text_len=16)
    for i in range(len(ds)):
        ref = single[i]
        assert ds[i]["caption"] == ref["caption"] and ds[i]["text_len"] == ref["text_len"]
        torch.testing.assert_close(ds[i]["text_emb"], ref["text_emb"])
        for k, cap in enumerate(ds[i]["captions"]):
            it = ds.get(i, k)
            emb, n = enc.encode([cap])
            assert it["caption"] == cap and it["text_len"] == int(n[0]) and it["num_captions"] == len(ds[i]["captions"])
            torch.testing.assert_close(it["text_emb"], emb[0], atol=1e-5, rtol=1e-5)
            assert torch.equal(it["latents"], ref["latents"]) and torch.equal(it["first_frame_latents"],
                                                                              ref["first_frame_latents"])

    src = LatentCacheSource(str(out), 16, 384, seed=5)
    draws = [src.batch([0, 3, 1], torch.device("cpu"), epoch=e).captions for e in range(16)]
    assert {d[0] for d in draws} == set(metas[0]["cap"]) and {d[1] for d in draws} == set(metas[4]["cap"])
    assert {d[2] for d in draws} == {metas[1]["cap"]}
    again = LatentCacheSource(str(out), 16, 384, seed=5)
    assert [again.batch([0, 3, 1], torch.device("cpu"), epoch=e).captions for e in range(16)] == draws
    b = src.batch([0], torch.device("cpu"), epoch=2)
    torch.testing.assert_close(b.text_emb[0], ds.get(0, metas[0]["cap"].index(b.captions[0]))["text_emb"])
    # data.preload: the whole cache in memory, each batch a gather; the same batches, text_len 8 < the longest caption
    for text_len in (16, 8):
        disk, mem = (LatentCacheSource(str(out), text_len, 384, seed=5, preload=p) for p in (False, True))
        for e in range(4):
            x, y = disk.batch([3, 0, 1, 3], torch.device("cpu"), epoch=e), mem.batch([3, 0, 1, 3], torch.device("cpu"), epoch=e)
            assert x.captions == y.captions and y.text_emb.shape == (4, text_len, 384)
            for f in ("latents", "first_frame_latents", "text_emb", "empty_text_emb"):
                assert torch.equal(getattr(x, f), getattr(y, f)), f
    # data.caption_weights: the draw weighted by caption position, on disk and preloaded alike, and in captions()
    caps0 = metas[0]["cap"]  # sample 0 has 3 captions, sample 3 has 2
    for p in (False, True):
        w = LatentCacheSource(str(out), 16, 384, seed=5, preload=p, caption_weights=[0, 1, 0])
        for e in range(6):
            assert w.batch([0, 3, 1], torch.device("cpu"), epoch=e).captions == [caps0[1], metas[4]["cap"][1],
                                                                                  metas[1]["cap"]]
            assert w.captions(e) == [caps0[1], metas[1]["cap"], src.captions(0)[2], metas[4]["cap"][1]]
    from types import SimpleNamespace

    from flashi2v.train.config import TrainConfig
    from flashi2v.train.data import build_source

    cfg = TrainConfig.from_dict({"model": {"preset": "flashi2v-1.3b"}, "seed": 5, "data": {
        "source": "latent_cache", "path": str(out), "caption_weights": [0, 1, 0]}})
    built = build_source(cfg, SimpleNamespace(text_len=16, text_dim=384), torch.device("cpu"))
    assert built.captions(3) == w.captions(3)  # the trainer's source gets data.caption_weights
    with pytest.raises(InputError, match=r"every caption of sample 3 \(it has 2\) weight 0"):
        LatentCacheSource(str(out), 16, 384, seed=5, caption_weights=[0, 0, 1])  # sample 3's positions 0 and 1
    skew = LatentCacheSource(str(out), 16, 384, seed=5, caption_weights=[1, 8])  # positions 1 and 2 weigh 8 each
    firsts = [skew.captions(e)[0] for e in range(170)]
    assert 3 <= firsts.count(caps0[0]) <= 20  # about 10 of 170 (1 / 17), against 57 uniformly
    uniform = LatentCacheSource(str(out), 16, 384, seed=5, caption_weights=[1])
    assert {uniform.captions(e)[0] for e in range(30)} == set(caps0)


def test_a_version_1_cache_still_reads(setup, tmp_path):
    """Caches written before captions lists were kept (format_version 1: no num_captions) read as one caption each."""
    import shutil

    from flashi2v.weights.io import read_safetensors, save_safetensors
    from safetensors import safe_open

    old = tmp_path / "v1"
    shutil.copytree(setup["full"], old)
    for f in old.glob("shard_*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            meta = h.metadata()
        t = read_safetensors(f)
        del t["num_captions"]
        save_safetensors(t, f, metadata=dict(captions=json.dumps([c[0] for c in json.loads(meta["captions"])])))
    m = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps(dict(m, format_version=1)))
    a, b = LatentCacheDataset(old), LatentCacheDataset(setup["full"])
    from flashi2v.train.data import LatentCacheSource

    x, y = (LatentCacheSource(str(old), 16, 384, preload=True).batch(list(range(len(b))), torch.device("cpu")),
            LatentCacheSource(str(setup["full"]), 16, 384).batch(list(range(len(b))), torch.device("cpu")))
    assert x.captions == y.captions and torch.equal(x.text_emb, y.text_emb) and torch.equal(x.latents, y.latents)
    for i in range(len(b)):
        x, y = a[i], b[i]
        assert x["caption"] == y["caption"] and x["captions"] == [y["caption"]] and x["num_captions"] == 1
        assert torch.equal(x["text_emb"], y["text_emb"]) and torch.equal(x["latents"], y["latents"])


def test_video_dataset_draws_per_epoch_without_changing_its_epoch(setup):
    """FlashI2VVideoDataset.get(i, epoch) = set_epoch(epoch); ds[i] without touching ds.epoch (loader threads)."""
    metas = [dict(m, cap=[f"caption {k}" for k in range(6)]) for m in setup["metas"] if m["cap"] != "broken"]
    ds = FlashI2VVideoDataset(metas, height=H, width=W, sample_num_frames=NF, train_fps=FPS, text_drop_ratio=0.0,
                              seed=3)
    got = [ds.get(0, e)["caption"] for e in range(8)]
    assert ds.epoch == 0 and len(set(got)) > 1
    for e in (0, 5):
        ref = FlashI2VVideoDataset(metas, height=H, width=W, sample_num_frames=NF, train_fps=FPS, text_drop_ratio=0.0,
                                   seed=3)
        ref.set_epoch(e)
        assert ref[0]["caption"] == got[e] and torch.equal(ref[0]["video"], ds.get(0, e)["video"])


def test_text_motion_probe_pans_over_a_caches_first_frame_latents(setup):
    """examples/text_motion_probe.py --canvas-cache: the canvases are the cache's (centre-cropped) first-frame
    latents; a window that does not fit twice into them is refused."""
    probe = load_example("text_motion_probe")
    canvases = probe.load_canvases(str(setup["full"]), 2)
    ds = LatentCacheDataset(setup["full"])
    z = ds[0]["first_frame_latents"][:, 0]
    assert canvases.shape == (len(ds), 16, 4, 4) and torch.equal(canvases[0], z[:, :, 1:5].float())
    g = torch.Generator().manual_seed(0)
    clips, _, labels = probe.make_clips((torch.zeros(9, 4, 384), torch.arange(9)), 9, g, size=2, canvases=canvases)
    still = [c for c, lab in zip(clips, labels) if probe.NAMES[lab] == "still"]
    assert clips.shape == (9, 16, 9, 2, 2) and still and all(torch.allclose(c[:, 0], c[:, -1]) for c in still)
    assert any(any(torch.allclose(c[:, 0], canvas[:, 1:3, 1:3], atol=1e-5) for canvas in canvases) for c in still)
    r = probe.main(["--captions", "short", "--steps", "2", "--eval-clips", "9", "--bank", "9", "--size", "2",
                    "--patch", "1", "--dim", "32", "--canvas-cache", str(setup["full"])])
    assert r["canvas"] == "cache" and math.isfinite(r["loss_last_100"])
    with pytest.raises(SystemExit, match="--canvas-cache: .* is not a latent cache"):
        probe.main(["--canvas-cache", str(setup["root"] / "nowhere")])
    with pytest.raises(SystemExit, match="at least 6 px a side"):
        probe.main(["--size", "3", "--patch", "1", "--canvas-cache", str(setup["full"])])


def _probe_cfg(setup, tmp_path, name, **log):
    from flashi2v.train.config import TrainConfig

    cfg = TrainConfig()
    cfg.output_dir = str(tmp_path / name)
    cfg.seed, cfg.max_steps, cfg.device, cfg.threads = 5, 3, "cpu", 1
    cfg.model.architecture = dict(dim=64, ffn_dim=128, num_heads=4, num_layers=1, text_dim=384, text_len=16)
    cfg.model.pipeline = str(setup["model"])
    cfg.data.source, cfg.data.path, cfg.data.batch_size, cfg.data.num_workers = "latent_cache", str(setup["full"]), 2, 0
    cfg.data.height, cfg.data.width, cfg.data.num_frames = H, W, NF
    cfg.ema.decay = 0.5
    cfg.checkpoint.every, cfg.log.every, cfg.log.tensorboard = 100, 1, False
    for k, v in log.items():
        setattr(cfg.log, k, v)
    cfg.validate()
    return cfg


def test_training_probe_logs_reliance_without_changing_the_training(setup, tmp_path, capsys):
    """``log.probe_every``: the reliance probe of the EMA weights at step 0, every N steps and the last step, in
    probe.jsonl; the same numbers as `flashi2v bench reliance` on the exported EMA model and the same items; and the
    run's losses and weights are exactly those of a run without it."""
    from flashi2v.bench.reliance import reliance_from_cache
    from flashi2v.errors import ConfigError
    from flashi2v.train.export import export
    from flashi2v.train.trainer import Trainer

    probe = dict(probe_every=2, probe_samples=3, probe_sigmas=[1.0, 0.9], probe_swap_words=["cat=dog"])
    with_probe = Trainer(_probe_cfg(setup, tmp_path, "probe", **probe, tensorboard=True)).fit()
    assert "probe step 0 sigma 1: frame 0" in capsys.readouterr().out
    plain = Trainer(_probe_cfg(setup, tmp_path, "plain")).fit()
    assert [h["loss"] for h in with_probe] == [h["loss"] for h in plain]
    lines = [json.loads(x) for x in (tmp_path / "probe" / "probe.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 2, 3] and all(x["ema"] for x in lines)
    assert all(x["samples"] == 2 and x["edit"] == "cat<->dog" for x in lines)  # "a cat", "a dog runs ...": 2 of 4
    assert [r["sigma"] for r in lines[-1]["rows"]] == [1.0, 0.9]
    assert all(r["edit_reliance"] is not None and r["frame0"] > 0 for x in lines for r in x["rows"])
    assert lines[0]["rows"] != lines[-1]["rows"]  # the weights changed in between
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "probe" / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("probe/edit_reliance@1")  # the step-0 probe too, before the first training log
    assert [e.step for e in scalars] == [0, 2, 3]
    assert scalars[-1].value == pytest.approx(lines[-1]["rows"][0]["edit_reliance"], rel=1e-6)
    from safetensors.torch import load_file

    for weights in ("raw", "ema"):  # the runs' checkpoints hold the same weights
        files = {}
        for name in ("probe", "plain"):
            export(tmp_path / name, tmp_path / f"{name}_{weights}", weights=weights)
            files[name] = sorted((tmp_path / f"{name}_{weights}" / "transformer").glob("*.safetensors"))
        assert [f.name for f in files["probe"]] == [f.name for f in files["plain"]] and files["probe"]
        for fa, fb in zip(files["probe"], files["plain"]):
            sa, sb = load_file(fa), load_file(fb)
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    bench = reliance_from_cache(tmp_path / "probe_ema", setup["full"], samples=3, sigmas=(1.0, 0.9), seed=5,
                                swaps={"cat": "dog", "dog": "cat"})
    for row, logged in zip(bench.to_dict()["rows"], lines[-1]["rows"]):
        for k in ("frame0", "rest", "frame0_wrong", "rest_wrong_prompt", "rest_empty_prompt", "rest_edited_prompt"):
            assert row[k] == pytest.approx(logged[k], rel=1e-4), k
        assert row["edit_reliance"] == pytest.approx(logged["edit_reliance"], abs=1e-5)
    threads = torch.get_num_threads()
    with pytest.raises(ConfigError, match="contain a word of the swap"):
        Trainer(_probe_cfg(setup, tmp_path, "bad", **dict(probe, probe_swap_words=["up=down"])))
    assert torch.get_num_threads() == threads  # a failed set-up leaves the process's thread count (threads: 1) alone
    with pytest.raises(ConfigError, match="probe_samples"):
        _probe_cfg(setup, tmp_path, "bad2", probe_every=2, probe_samples=1)
    with pytest.raises(ConfigError, match="probe_sigmas"):
        _probe_cfg(setup, tmp_path, "bad3", probe_every=2, probe_sigmas=[0.0])


def _probe_in_fsdp(rank, world, cfg_dict):
    from flashi2v.train.config import TrainConfig
    from flashi2v.train.trainer import Trainer

    Trainer(TrainConfig.from_dict(cfg_dict)).fit()
    return rank


def test_training_probe_under_fsdp_matches_one_process(setup, tmp_path):
    """Two FSDP2 ranks (the model sharded) take part in every probe forward and log what one process logs."""
    from dist import run_distributed
    from flashi2v.train.trainer import Trainer

    probe = dict(probe_every=2, probe_samples=3, probe_sigmas=[0.9], probe_swap_words=["cat=dog"])
    one = _probe_cfg(setup, tmp_path, "one", **probe)
    one.optim.eps, one.clip.mode, one.max_steps = 1e-8, "fixed", 2  # reduction-order-robust (see test_train_distributed)
    Trainer(one).fit()
    two = _probe_cfg(setup, tmp_path, "two", **probe)
    two.optim.eps, two.clip.mode, two.max_steps, two.data.batch_size = 1e-8, "fixed", 2, 1
    two.parallel.param_dtype = "fp32"
    assert run_distributed(_probe_in_fsdp, 2, two.to_dict(), timeout_s=240) == [0, 1]
    a, b = ([json.loads(x) for x in (tmp_path / n / "probe.jsonl").read_text().splitlines()] for n in ("one", "two"))
    assert [x["step"] for x in a] == [x["step"] for x in b] == [0, 2]
    for x, y in zip(a, b):
        for k in ("frame0", "rest", "frame0_wrong", "rest_wrong_prompt", "rest_edited_prompt"):
            assert x["rows"][0][k] == pytest.approx(y["rows"][0][k], rel=1e-5), k


def test_vae_one_pass_cache_equals_the_chunked_one(setup, tmp_path, capsys):
    """--vae-one-pass encodes each clip in one pass over time: the same latents up to float rounding, the same
    captions, and a different cache identity (resuming across the switch is refused; a manifest written before the
    switch existed resumes as chunked)."""
    from safetensors.torch import load_file

    out = tmp_path / "one_pass"
    m = encode_cache(setup["db"], setup["model"], out, vae_one_pass=True, **ARGS)
    assert m["config"]["vae_one_pass"] is True and setup["manifest"]["config"]["vae_one_pass"] is False
    for k in range(3):
        a, b = load_file(str(out / shard_name(k))), load_file(str(setup["full"] / shard_name(k)))
        assert set(a) == set(b)
        for key in a:
            if a[key].is_floating_point():
                torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
            else:
                assert torch.equal(a[key], b[key]), key
    with pytest.raises(InputError, match="vae_one_pass: False -> True"):
        encode_cache(setup["db"], setup["model"], setup["full"], vae_one_pass=True, **ARGS)
    old = tmp_path / "old"
    shutil.copytree(setup["full"], old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["config"]["vae_one_pass"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert encode_cache(setup["db"], setup["model"], old, **ARGS)["complete"]
    argv = ["data", "encode", "--lmdb", str(setup["db"]), "--model", str(setup["model"]), "--output", str(out),
            "--height", str(H), "--width", str(W), "--num-frames", str(NF), "--train-fps", str(FPS),
            "--shard-size", "2", "--seed", "3", "--device", "cpu", "--vae-one-pass"]
    assert main(argv) == 0  # the CLI flag resumes (here: finds complete) the one-pass cache
    assert "3 shards" in capsys.readouterr().out
