"""The embedded default model: the recipe end to end at toy sizes, packaging, the text-encoder package reference."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("lmdb")

from flashi2v.default_model import package_model  # noqa: E402
from flashi2v.default_model.recipe import Recipe, main as recipe_main  # noqa: E402
from flashi2v.pipeline import FlashI2VPipeline  # noqa: E402

TOY = ["vae_image.max_steps=2", "vae_image.data.batch_size=2", "vae_image.eval.num_clips=2", "vae_image.export.stats_clips=2",
       "vae_image.checkpoint.every=2", "vae.max_steps=2", "vae.eval.num_clips=2", "vae.export.stats_clips=2", "vae.checkpoint.every=2",
       "dit.max_steps=2", "dit.data.batch_size=2", "dit.checkpoint.every=2", "dit.model.architecture.dim=32",
       "dit.model.architecture.ffn_dim=64", "dit.model.architecture.num_layers=1", "dit.model.architecture.num_heads=2",
       "dit.model.architecture.text_len=16"]


@pytest.fixture(scope="module")
def toy_recipe(tmp_path_factory):
    work = tmp_path_factory.mktemp("recipe")
    r = Recipe(work, workers=1, overrides=TOY, train_clips=4, test_clips=2, frames=5, size=32)
    threads = torch.get_num_threads()
    r.world()
    r.vae_image()
    r.vae()
    r.base()
    r.cache()
    r.train()
    r.export()
    r.package()
    assert torch.get_num_threads() == threads  # the recipe's threads: 1 does not leak into the caller
    return r


def test_recipe_runs_every_stage_and_packages(toy_recipe):
    r = toy_recipe
    pkg = r.package_dir
    index = json.loads((pkg / "model_index.json").read_text())
    assert index["defaults"]["num_frames"] == 5 and index["defaults"]["height"] == 32
    info = index["default_model"]
    assert info["weights_dtype"] == "fp16" and info["dit_steps"] == 2 and "psnr" in json.dumps(info["vae_eval"])
    # the text encoder is a reference to the installed MiniLM, not a 90 MB copy
    assert [p.name for p in (pkg / "text_encoder").iterdir()] == ["config.json"]
    assert json.loads((pkg / "text_encoder" / "config.json").read_text())["weights"] == "package"
    from safetensors import safe_open

    with safe_open(str(pkg / "transformer" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    for name in ("vae_image_metrics.jsonl", "vae_metrics.jsonl", "vae_eval.json", "dit_metrics.jsonl"):
        assert (r.work / "recipe_logs" / name).is_file()
    # the packaged model equals the fp32 export up to fp16 rounding of the weights
    a = FlashI2VPipeline.from_pretrained(pkg, device="cpu")
    b = FlashI2VPipeline.from_pretrained(r.export_dir, device="cpu")
    for (ka, va), (kb, vb) in zip(a.transformer.state_dict().items(), b.transformer.state_dict().items()):
        assert ka == kb and va.dtype == torch.float32
        assert torch.allclose(va, vb.half().float())
    out = a(image=torch.zeros(3, 32, 32, dtype=torch.uint8), prompt="a red square moves left", num_steps=2,
            progress=False)
    assert out.frames.shape == (1, 5, 32, 32, 3) and out.frames.dtype == torch.uint8


def test_recipe_evaluate_reports_the_quality_bars(toy_recipe):
    res = toy_recipe.evaluate()
    bars = res["bars"]
    assert bars["n_clips"] == 2
    for k in ("first_frame_psnr", "vae_first_frame_psnr", "first_frame_ok", "traj_ok", "direction_ok",
              "camera_direction_rate", "n_camera_pans"):
        assert k in bars
    assert (toy_recipe.work / "eval.json").is_file()


def test_recipe_evaluate_in_parallel_equals_serial(toy_recipe):
    """The evaluation split over 2 processes scores the videos a serial run makes (seeds follow the clip; batching
    and thread count change the floats only in the last bits, so a few uint8 pixels may round differently)."""
    from flashi2v.bench.leakage import (EvalSettings, GenerationSettings, attach_ceiling, evaluate_model,
                                        load_eval_clips, vae_roundtrip_model)
    from flashi2v.default_model.recipe import _evaluate_in_parallel

    gen = GenerationSettings(num_steps=2, negative_prompt=None, batch_size=4)
    pipe = FlashI2VPipeline.from_pretrained(toy_recipe.package_dir, device="cpu")
    clips = load_eval_clips(toy_recipe.data / "test")
    attach_ceiling(clips, vae_roundtrip_model(pipe.vae))
    par = _evaluate_in_parallel(pipe, toy_recipe.package_dir, clips, EvalSettings(), gen, 2)
    serial = evaluate_model(toy_recipe.package_dir, clips, EvalSettings(), generation=gen)
    assert [r["index"] for r in par.records] == [0, 1]
    for a, b in zip(par.records, serial.records):
        assert a["index"] == b["index"]
        # the workers got the parent's ceilings: the same objects are trackable
        assert [o["trackable"] for o in a["objects"]] == [o["trackable"] for o in b["objects"]]
        for k in ("first_frame_psnr", "psnr", "ssim"):
            assert a[k] == pytest.approx(b[k], abs=0.02), k
    assert par.generation == serial.generation


def test_recipe_reuses_finished_stages(toy_recipe, capsys):
    assert recipe_main(["--work", str(toy_recipe.work), "--stages", "world,vae_image,vae,base"]) == 0
    out = capsys.readouterr().out
    assert "world: reusing" in out and "vae: reusing" in out and "base: reusing" in out


def test_a_training_stage_that_stops_early_stops_the_recipe(toy_recipe, tmp_path, monkeypatch, capsys):
    """dit.max_minutes: phase 0 goes on from its finished step 2 to step 4, its budget is gone after step 3, it saves
    there and the recipe stops (no later phase or export may start from unfinished weights); the CLI exits 3."""
    import shutil

    from flashi2v.default_model import recipe as recipe_mod
    from flashi2v.train.checkpoint import list_checkpoints

    work = tmp_path / "work"
    shutil.copytree(toy_recipe.work, work)
    r = Recipe(work, workers=1, overrides=TOY + ["dit.max_steps=4", "dit.max_minutes=1e-6"], train_clips=4,
               test_clips=2, frames=5, size=32)
    with pytest.raises(recipe_mod.RecipeStopped, match="train: phase 0 at step 3: time limit"):
        r.train()
    assert list_checkpoints(r.phase_run(0))[0][0] == 3

    def stopped(self):
        raise recipe_mod.RecipeStopped("vae: stop signal (SIGTERM)")

    monkeypatch.setattr(Recipe, "vae", stopped)
    assert recipe_main(["--work", str(work), "--stages", "vae,base"]) == 3
    err = capsys.readouterr().err
    assert "recipe stopped in stage vae: stop signal (SIGTERM)" in err and "same command again" in err


def test_recipe_gpu_profile_at_toy_size(tmp_path):
    """--profile gpu: the DiT trains on its own larger draw of the world (data/train_dit, a superset of the VAE's
    data/train) from recipe/dit_gpu.yaml; the VAE stages inflate. Run here on the CPU (dit.device=cpu) at toy size."""
    from flashi2v.data.latent_cache import LatentCacheDataset

    cpu = ["dit.device=cpu", "dit.data.batch_size=2", "dit.data.num_workers=0", "dit.parallel.tf32=false"]
    r = Recipe(tmp_path, workers=1, overrides=TOY + cpu, train_clips=3, test_clips=2, frames=5, size=32,
               profile="gpu", dit_train_clips=5)
    assert r.vae_config("vae").model.temporal_init == "inflate" and r.vae_config("vae_image").threads == 2
    cfg = r.dit_config()
    assert cfg.data.preload and cfg.data.batch_size == 2 and cfg.data.path == str(tmp_path / "data" / "latents_dit")
    for stage in ("world", "vae_image", "vae", "base", "cache", "train", "export", "package"):
        getattr(r, stage)()
    gt = lambda name: json.loads((tmp_path / "data" / name / "ground_truth.json").read_text())  # noqa: E731
    assert len(LatentCacheDataset(r.latents)) == 5
    dit_clips, vae_clips = gt("train_dit")["clips"], gt("train")["clips"]
    assert len(dit_clips) == 5 and len(vae_clips) == 3 and dit_clips[:3] == vae_clips  # same seeds, same clips
    info = json.loads((r.package_dir / "model_index.json").read_text())["default_model"]
    assert info["profile"] == "gpu" and info["dit_config"] == "recipe/dit_gpu.yaml"
    assert [ph["config"] for ph in info["dit_phases"]] == ["recipe/dit_gpu.yaml", "recipe/dit_gpu_continue.yaml",
                                                           "recipe/dit_gpu_text.yaml"]
    for k in (1, 2):  # each continuation ran, from the previous phase
        assert (tmp_path / "runs" / f"flashi2v_phase{k}" / "metrics.jsonl").is_file()
        assert r.dit_config(phase=k).model.init == str(r.phase_package(k - 1))
    assert r.dit_config(phase=1).optim.warmup_steps == 100
    # phase 2 trains on the same clips with focused captions, encoded by MiniLM's layer 5, which the package ships
    cfg2 = r.dit_config(phase=2)
    assert cfg2.data.path == str(tmp_path / "data" / "latents_dit_focused_text5") and cfg2.data.caption_weights
    assert cfg2.model.pipeline == str(tmp_path / "base_text5") and r.phase_latents(1) == r.latents
    focused = gt("train_dit_focused")["clips"]
    assert [c["seed"] for c in focused] == [c["seed"] for c in dit_clips]
    meta = json.loads((tmp_path / "data" / "train_dit_focused" / "meta.json").read_text())
    assert all(isinstance(m["cap"], list) and len(m["cap"]) >= 4 for m in meta)
    assert LatentCacheDataset(r.phase_latents(2))[0]["captions"] == meta[0]["cap"]
    assert json.loads((r.package_dir / "text_encoder" / "config.json").read_text())["hidden_layer"] == 5
    assert [(ph["focused_captions"], ph["text_hidden_layer"]) for ph in info["dit_phases"]] == [
        (False, -1), (False, -1), (True, 5)] and info["text_hidden_layer"] == 5
    assert (tmp_path / "recipe_logs" / "dit_phase2_probe.jsonl").is_file()
    assert info["data"]["dit_train_clips"] == 5 and "--profile gpu" in info["recipe"]
    assert info["vae_overrides"]["vae"] == ["model.temporal_init=inflate", "threads=2"]
    with pytest.raises(Exception, match="unknown recipe profile 'tpu'; choose from cpu, gpu"):
        Recipe(tmp_path, profile="tpu")


def test_recipe_continues_each_phase_from_the_previous_packaged_weights(tmp_path, monkeypatch):
    """A profile with ``dit_continue`` trains its DiT in phases: phase 1 starts from phase 0's EMA weights as they
    would be shipped (fp16), with its own run folder, log and steps; the package is the last phase's."""
    from flashi2v.default_model import recipe as recipe_mod
    from flashi2v.train.trainer import build_model

    monkeypatch.setitem(recipe_mod.PROFILES, "two", recipe_mod.Profile("dit.yaml", dit_continue=("dit.yaml",)))
    r = Recipe(tmp_path, workers=1, overrides=TOY + ["dit.checkpoint.every=1"], train_clips=3, test_clips=2, frames=5,
               size=32, profile="two")
    for stage in ("world", "vae_image", "vae", "base", "cache", "train", "export", "package"):
        getattr(r, stage)()
    assert r.run == tmp_path / "runs" / "flashi2v_phase1" and r.phase_run(0) == tmp_path / "runs" / "flashi2v"
    start = FlashI2VPipeline.from_pretrained(r.phase_package(0), device="cpu").transformer.state_dict()
    cfg1 = r.dit_config(phase=1)
    assert cfg1.model.init == str(r.phase_package(0)) and cfg1.output_dir == str(r.run)
    built = build_model(cfg1, torch.device("cpu")).state_dict()
    for name, value in start.items():  # phase 1 really starts from phase 0's weights, rounded to fp16
        torch.testing.assert_close(built[name], value, rtol=0, atol=0, msg=name)
        assert torch.equal(value, value.half().float()), name
    shipped = FlashI2VPipeline.from_pretrained(r.package_dir, device="cpu").transformer.state_dict()
    assert any(not torch.equal(shipped[k], start[k]) for k in shipped)  # phase 1 trained
    info = json.loads((r.package_dir / "model_index.json").read_text())["default_model"]
    assert [ph["config"] for ph in info["dit_phases"]] == ["recipe/dit.yaml", "recipe/dit.yaml"]
    assert [ph["steps"] for ph in info["dit_phases"]] == [2, 2] and info["dit_steps"] == 4
    logs = tmp_path / "recipe_logs"
    assert len((logs / "dit_metrics.jsonl").read_text().splitlines()) >= 1
    assert (logs / "dit_phase1_metrics.jsonl").read_text() == (r.run / "metrics.jsonl").read_text()
    stamp = (r.phase_package(0) / "model_index.json").stat().st_mtime_ns
    r.train()  # both phases finished: nothing is trained again, the phase package is reused
    assert (r.run / "metrics.jsonl").read_text() == (logs / "dit_phase1_metrics.jsonl").read_text()
    assert (r.phase_package(0) / "model_index.json").stat().st_mtime_ns == stamp
    index = json.loads((r.phase_package(0) / "model_index.json").read_text())
    assert index["trained"]["checkpoint"] == "step_000000002"
    index["trained"]["checkpoint"] = "step_000000001"  # as if phase 0 had been trained further since
    (r.phase_package(0) / "model_index.json").write_text(json.dumps(index))
    r.train()
    assert json.loads((r.phase_package(0) / "model_index.json").read_text())["trained"]["checkpoint"] == "step_000000002"


def test_recipe_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        recipe_main(["--work", str(tmp_path), "--stages", "nope"])
    assert recipe_main(["--work", str(tmp_path), "--stages", "world", "--set", "max_steps=3"]) == 2
    assert "prefix the key" in capsys.readouterr().err


def test_package_model_keeps_a_copy_when_asked(toy_recipe, tmp_path):
    out = package_model(toy_recipe.export_dir, tmp_path / "pkg32", dtype="fp32")
    p = FlashI2VPipeline.from_pretrained(out, device="cpu")
    assert p.text_encoder.weights_source == "package"
    p.text_encoder.save_pretrained(tmp_path / "te_copy", weights="copy")
    assert (tmp_path / "te_copy" / "model").is_dir() and (tmp_path / "te_copy" / "tokenizer").is_dir()


# ------------------------------------------------------------------------------------------ the shipped model
def test_shipped_default_model_is_small_and_complete():
    from flashi2v.default_model import MODEL_DIR, default_model_path, examples

    folder = default_model_path()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"shipped model is {size / 2**20:.1f} MiB"
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert index["model_type"] == "flashi2v" and index["default_model"]["weights_dtype"] == "fp16"
    assert index["defaults"]["num_frames"] == 17 and index["defaults"]["height"] == 128
    ex = examples()
    assert len(ex) >= 1 and all(e.image.is_file() and e.prompt for e in ex)


def test_shipped_dit_sees_every_latent_direction():
    """A patch embedding narrower than a latent patch leaves noise the sampler can never remove (the previous
    default's grain); the shipped DiT must not have that blind spot, and must be the recipe's architecture."""
    import yaml

    from flashi2v.config import TransformerConfig
    from flashi2v.default_model import MODEL_DIR, RECIPE_DIR
    from flashi2v.default_model.recipe import PROFILES

    cfg = TransformerConfig.load(MODEL_DIR / "transformer")
    assert cfg.unseen_latent_dims == 0, f"shipped DiT cannot see {cfg.unseen_latent_dims} latent dims per patch"
    info = json.loads((MODEL_DIR / "model_index.json").read_text())["default_model"]
    profile = PROFILES[info["profile"]]  # the recipe profile that made it: its configs and VAE overrides
    assert info["dit_config"] == f"recipe/{profile.dit_config}"
    assert info["vae_overrides"] == dict(vae_image=list(profile.vae_image_overrides), vae=list(profile.vae_overrides))
    assert [ph["config"] for ph in info["dit_phases"]] == [f"recipe/{ph.config}" for ph in profile.dit_phases]
    configs = [yaml.safe_load((RECIPE_DIR / ph.config).read_text()) for ph in profile.dit_phases]
    for config, phase, spec in zip(configs, info["dit_phases"], profile.dit_phases):
        assert config["max_steps"] == phase["steps"], f"{phase['config']}: the shipped DiT's steps are not its config's"
        assert config["model"]["architecture"] == configs[0]["model"]["architecture"]
        for key in ("focused_captions", "text_hidden_layer"):  # the phase's data as its Phase says (None: default)
            assert getattr(spec, key) in (None, phase[key]), f"{phase['config']}: {key}"
    assert info["dit_steps"] == sum(ph["steps"] for ph in info["dit_phases"])
    # the shipped text encoder is the one the last phase trained with
    text = json.loads((MODEL_DIR / "text_encoder" / "config.json").read_text())
    assert text.get("hidden_layer", -1) == info["dit_phases"][-1]["text_hidden_layer"] == info["text_hidden_layer"]
    recipe = configs[0]["model"]["architecture"]
    shipped = cfg.to_dict()
    for key, value in recipe.items():
        got = shipped[key]
        assert (list(got) if isinstance(got, (list, tuple)) else got) == value, key


def test_generate_without_model_uses_the_shipped_default(tmp_path):
    from flashi2v.cli import main
    from flashi2v.default_model import examples
    from flashi2v.media import read_video

    ex = examples()[0]
    out = tmp_path / "demo.mp4"
    assert main(["generate", "--image", str(ex.image), "--prompt", ex.prompt, "--output", str(out), "--steps", "3",
                 "--quiet"]) == 0
    frames, fps = read_video(out)
    assert tuple(frames.shape) == (17, 128, 128, 3) and fps == 16


def test_loading_the_default_model_imports_no_heavy_library():
    """`flashi2v generate` on the default model needs neither diffusers nor transformers (the VAE network and MiniLM's
    BERT are our own) nor torch's compiler stack (nothing random runs on the meta device): together 4-5 s of every
    run on this CPU (benchmarks/generate_overhead.py). A fresh interpreter loads the pipeline, encodes a prompt and an
    image and decodes a clip, then lists which of them got imported."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from flashi2v.pipeline import FlashI2VPipeline\n"
        "from flashi2v.default_model import default_model_path\n"
        "pipe = FlashI2VPipeline.from_pretrained(default_model_path())\n"
        "pipe.text_encoder.encode(['a red square moves left'])\n"
        "assert pipe.vae.one_pass_max_pixels > 0\n"
        "pipe.vae.decode(pipe.vae.encode(torch.zeros(1, 3, 5, 32, 32)))\n"
        "print(sorted(m for m in ('diffusers', 'transformers', 'torch._dynamo', 'sympy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_saved_weights_get_the_usual_file_mode(tmp_path):
    import os

    from flashi2v.weights.io import save_safetensors

    save_safetensors({"a": torch.zeros(2)}, tmp_path / "x.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert (os.stat(tmp_path / "x.safetensors").st_mode & 0o777) == 0o666 & ~umask


def test_recipe_switches_focused_captions_and_text_layer(toy_recipe, tmp_path):
    """--focused-captions writes 3 full captions + one per element per clip; --text-layer reaches the base folder."""
    r = Recipe(tmp_path / "w", workers=1, overrides=TOY, train_clips=2, test_clips=1, frames=5, size=32,
               focused_captions=True, text_hidden_layer=5)
    r.world()
    meta = json.loads((r.data / "train" / "meta.json").read_text())
    assert all(isinstance(m["cap"], list) and len(m["cap"]) >= 3 + 1 for m in meta)
    (r.work / "vae").symlink_to(toy_recipe.vae_run, target_is_directory=True)  # reuse the toy VAE
    r.base()
    assert json.loads((r.base_dir / "text_encoder" / "config.json").read_text())["hidden_layer"] == 5
    assert FlashI2VPipeline.from_pretrained(r.base_dir, device="cpu").text_encoder.hidden_layer == 5


def test_readme_gif_puts_the_image_next_to_the_video(tmp_path, capsys):
    from PIL import Image

    from conftest import load_example
    from flashi2v.media import write_video

    gif = load_example("readme_gif")
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (8, 12, 3), generator=g, dtype=torch.uint8)
    frames = torch.randint(0, 256, (3, 8, 10, 3), generator=g, dtype=torch.uint8)
    out = gif.side_by_side(image.numpy(), frames.numpy(), scale=2, gap=4)
    assert len(out) == 3 and out[0].shape == (16, 24 + 4 + 20, 3)
    assert (out[1][:, :24] == image.numpy().repeat(2, 0).repeat(2, 1)).all() and (out[1][:, 24:28] == 255).all()
    assert (out[2][::2, 28::2] == frames[2].numpy()).all()
    Image.fromarray(image.numpy()).save(tmp_path / "img.png")
    write_video(torch.zeros(3, 16, 16, 3, dtype=torch.uint8), tmp_path / "v.mp4")
    assert gif.main([str(tmp_path / "v.mp4"), "--image", str(tmp_path / "img.png"), "--output", str(tmp_path / "a.gif")]) == 2
    assert "image height 8 != video height 16" in capsys.readouterr().err
