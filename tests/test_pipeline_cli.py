"""End to end: tiny random-weight components in a model folder, the pipeline API and the `flashi2v` CLI."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import randomize_
from flashi2v import FlashI2VTransformer, TransformerConfig, WanTransformer
from flashi2v.cli import main
from flashi2v.pipeline import FlashI2VPipeline, GenerationDefaults

TINY = dict(dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=384, text_len=24)
DEFAULTS = GenerationDefaults(num_frames=5, height=32, width=48, num_steps=2, fps=12)


@pytest.fixture(scope="module")
def parts():
    from flashi2v.text import MiniLMTextEncoder
    from flashi2v.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(base_dim=8)
    text = MiniLMTextEncoder.from_package(text_len=24)  # real pretrained weights, offline
    i2v = randomize_(FlashI2VTransformer(TransformerConfig(**TINY)), seed=1)
    t2v = randomize_(WanTransformer(TransformerConfig(**TINY, model_type="t2v")), seed=2)
    return vae, text, i2v, t2v


@pytest.fixture(scope="module")
def model_dir(parts, tmp_path_factory):
    vae, text, i2v, _ = parts
    folder = tmp_path_factory.mktemp("m") / "tiny-flashi2v"
    FlashI2VPipeline(i2v, vae, text, DEFAULTS).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def t2v_dir(parts, tmp_path_factory):
    vae, text, _, t2v = parts
    folder = tmp_path_factory.mktemp("m") / "tiny-t2v"
    FlashI2VPipeline(t2v, vae, text, DEFAULTS).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_pipeline_round_trip_seeds_and_batch(model_dir, image):
    pipe = FlashI2VPipeline.from_pretrained(model_dir, device="cpu")
    assert pipe.is_i2v and pipe.defaults == DEFAULTS
    a = pipe(image, "an astronaut waves", seed=7, progress=False)
    assert a.frames.shape == (1, 5, 32, 48, 3) and a.frames.dtype == torch.uint8 and a.seeds == [7]
    steps = []
    b = pipe(image, "an astronaut waves", seed=7, progress=False, callback=steps.append)
    assert torch.equal(a.frames, b.frames)  # same seed -> same video (a callback changes nothing)
    # the callback sees every step; its last state is the returned latents, and decode() gives the returned frames
    assert [s["i"] for s in steps] == list(range(DEFAULTS.num_steps)) and float(steps[0]["sigma"]) == 1.0
    assert torch.equal(steps[-1]["x_next"].cpu(), b.latents) and torch.equal(pipe.decode(b.latents), b.frames)
    c = pipe(image, "an astronaut waves", seed=8, progress=False)
    assert not torch.equal(a.latents, c.latents)  # different seed -> different video
    batch = pipe(image, "an astronaut waves", seed=7, batch=2, progress=False)
    assert batch.seeds == [7, 8]
    assert not torch.equal(batch.latents[0], batch.latents[1])  # each sample its own noise
    torch.testing.assert_close(batch.latents[0], a.latents[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.latents[1], c.latents[0], atol=1e-5, rtol=1e-5)
    # an explicit generator: reproducible, one noise sequence for the batch
    g1 = pipe(image, "x", generator=torch.Generator().manual_seed(5), batch=2, progress=False, num_frames=1)
    g2 = pipe(image, "x", generator=torch.Generator().manual_seed(5), batch=2, progress=False, num_frames=1)
    assert torch.equal(g1.latents, g2.latents) and not torch.equal(g1.latents[0], g1.latents[1])
    assert g1.seeds == [None, None]
    # two prompts with their own images
    two = pipe([image, image], ["a", "b"], seed=1, progress=False, num_frames=1)
    assert two.frames.shape == (2, 1, 32, 48, 3)


def test_negative_prompt_per_prompt(model_dir, image):
    """A list of negative prompts gives each prompt its own: every video of the batch is the video made alone with
    its negative, and a different negative changes the video."""
    from flashi2v import InputError

    pipe = FlashI2VPipeline.from_pretrained(model_dir, device="cpu")
    kw = dict(seed=3, progress=False, num_frames=1, guidance_scale=4.0)
    both = pipe([image, image], ["moves left", "moves up"], negative_prompt=["moves right", "moves down"], **kw)
    left = pipe(image, "moves left", negative_prompt="moves right", **kw)
    up = pipe(image, "moves up", negative_prompt="moves down", seed=4, progress=False, num_frames=1,
              guidance_scale=4.0)
    torch.testing.assert_close(both.latents[0], left.latents[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.latents[1], up.latents[0], atol=1e-5, rtol=1e-5)
    empty = pipe(image, "moves left", negative_prompt="", **kw)
    assert not torch.allclose(empty.latents, left.latents)
    # batch=2 repeats each prompt's negative with it
    rep = pipe(image, ["moves left"], negative_prompt=["moves right"], batch=2, **kw)
    torch.testing.assert_close(rep.latents[0], left.latents[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="2 negative prompts for 1 prompts"):
        pipe(image, "x", negative_prompt=["a", "b"], **kw)


def test_pipeline_options_and_errors(model_dir, image):
    from flashi2v import InputError

    pipe = FlashI2VPipeline.from_pretrained(model_dir, device="cpu", offload=True)
    out = pipe(image, "x", seed=0, keep_aspect=True, height=32, width=32, progress=False, guidance_scale=1.0)
    assert out.frames.shape[2:4] == (32, 32)  # square astronaut keeps a square aspect
    for kwargs, msg in [
        (dict(num_frames=6), "4k\\+1"),
        (dict(height=40), "multiple of 16"),
        (dict(num_steps=0), "num_steps"),
        (dict(cutoff_ratio=2.0), "cutoff_ratio"),
    ]:
        with pytest.raises(InputError, match=msg):
            pipe(image, "x", progress=False, **kwargs)
    from flashi2v import InputError

    with pytest.raises(InputError, match="pass an image"):
        pipe(None, "x", progress=False)
    with pytest.raises(InputError, match="does not exist"):
        pipe("/nonexistent.png", "x", progress=False)


def test_anchor_first_frame_pins_latent_frame_zero(model_dir, t2v_dir, image, tmp_path):
    """Replacement sampling: with anchor_first_frame the final latent frame 0 is the image latent itself and the
    first decoded frame is the VAE round trip of the image; the other frames still come from the model."""
    from flashi2v import InputError

    pipe = FlashI2VPipeline.from_pretrained(model_dir, device="cpu")
    free = pipe(image, "an astronaut waves", seed=3, progress=False)
    pinned = pipe(image, "an astronaut waves", seed=3, progress=False, anchor_first_frame=True)
    z = pipe.encode_images([image], DEFAULTS.height, DEFAULTS.width)
    torch.testing.assert_close(pinned.latents[:, :, :1], z, atol=1e-6, rtol=0)
    assert (free.latents[:, :, :1] - z).abs().max() > 0.1  # the random model alone does not get there
    assert not torch.equal(pinned.latents[:, :, 1:], free.latents[:, :, 1:])  # later frames see the pinned one
    with torch.no_grad():
        roundtrip = pipe.vae.decode(z)
    from flashi2v.media import to_uint8_frames

    assert torch.equal(pinned.frames[:, 0], to_uint8_frames(roundtrip.float())[:, 0])
    # the CLI flag reaches the pipeline; a text-to-video model refuses it
    out = tmp_path / "a.mp4"
    assert main(["generate", "--model", str(model_dir), "--image", str(image), "--prompt", "an astronaut waves",
                 "--seed", "3", "--output", str(out), "--quiet", "--anchor-first-frame"]) == 0
    with pytest.raises(InputError, match="image-to-video"):
        FlashI2VPipeline.from_pretrained(t2v_dir, device="cpu")(None, "x", progress=False, anchor_first_frame=True)


def test_cli_generate_mp4(model_dir, image, tmp_path, capsys):
    from flashi2v.media import read_video

    out = tmp_path / "out.mp4"
    rc = main(["generate", "--model", str(model_dir), "--image", str(image), "--prompt", "an astronaut",
               "--output", str(out), "--seed", "3", "--quiet"])
    assert rc == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 48, 3) and fps == 12
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"wrote {out} (5 frames, 32x48, 12 fps) in ") and line.endswith(" s")
    out2 = tmp_path / "out2.mp4"
    assert main(["generate", "--model", str(model_dir), "--image", str(image), "--prompt", "an astronaut",
                 "--output", str(out2), "--seed", "3", "--quiet", "--num-frames", "9", "--fps", "8"]) == 0
    frames2, fps2 = read_video(out2)
    assert frames2.shape[0] == 9 and fps2 == 8
    gif = tmp_path / "o.gif"
    assert main(["generate", "--model", str(model_dir), "--image", str(image), "--prompt", "p", "--output", str(gif),
                 "--quiet"]) == 0 and gif.is_file()
    pngs = tmp_path / "frames"
    assert main(["generate", "--model", str(model_dir), "--image", str(image), "--prompt", "p", "--output", str(pngs),
                 "--quiet"]) == 0 and len(list(pngs.glob("*.png"))) == 5


def test_cli_vae_official_chunks(model_dir, image, tmp_path, monkeypatch):
    """The pipeline decodes small clips in one pass; --vae-official-chunks decodes them in the official chunks, and
    the two videos agree (up to float rounding before the H.264 encoder)."""
    from flashi2v.media import read_video
    from flashi2v.models.wan_vae import WanVAEModel

    seen = []
    decode = WanVAEModel.decode_latents

    def spy(self, z, **kw):
        seen.append(self.one_pass_max_pixels)
        return decode(self, z, **kw)

    monkeypatch.setattr(WanVAEModel, "decode_latents", spy)
    videos = []
    for flag in ([], ["--vae-official-chunks"]):
        out = tmp_path / f"out{len(flag)}.mp4"
        assert main(["generate", "--model", str(model_dir), "--image", str(image), "--prompt", "an astronaut",
                     "--output", str(out), "--seed", "3", "--quiet", *flag]) == 0
        videos.append(read_video(out)[0].int())
    assert seen[0] > 0 and seen[1] == 0
    assert (videos[0] - videos[1]).abs().max() <= 2


def test_cli_batch_mode_and_grid(model_dir, image, tmp_path):
    from flashi2v.media import read_video

    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    (tmp_path / "images.txt").write_text(f"{image}\n{image.name}\n")
    (tmp_path / image.name).write_bytes(image.read_bytes())  # relative paths resolve against images.txt's folder
    out_dir = tmp_path / "samples"
    rc = main(["generate", "--model", str(model_dir), "--prompts-txt", str(tmp_path / "prompts.txt"),
               "--images-txt", str(tmp_path / "images.txt"), "--output-dir", str(out_dir), "--grid", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["video_0.mp4", "video_1.mp4", "video_grid.mp4"]
    v0, _ = read_video(out_dir / "video_0.mp4")
    v1, _ = read_video(out_dir / "video_1.mp4")
    assert v0.shape == v1.shape == (5, 32, 48, 3) and not torch.equal(v0, v1)
    grid, _ = read_video(out_dir / "video_grid.mp4")
    assert grid.shape[0] == 5 and grid.shape[1] > 32


def test_t2v_model_folder(t2v_dir, image, tmp_path):
    pipe = FlashI2VPipeline.from_pretrained(t2v_dir, device="cpu")
    assert not pipe.is_i2v
    out = pipe(None, "a red ball", seed=1, progress=False)
    assert out.frames.shape == (1, 5, 32, 48, 3)
    assert main(["generate", "--model", str(t2v_dir), "--prompt", "a red ball", "--output",
                 str(tmp_path / "t.mp4"), "--quiet"]) == 0
    assert main(["generate", "--model", str(t2v_dir), "--prompt", "a", "--image", str(image), "--output",
                 str(tmp_path / "t.mp4")]) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image", "missing.png", "--prompt", "x"], "--image file not found: missing.png"),
        (["--image", "{img}", "--prompt", "x", "--num-frames", "6"], "num_frames must be 4k+1"),
        (["--image", "{img}", "--prompt", "x", "--height", "50"], "height 50 is not a multiple of 16"),
        (["--image", "{img}"], "no prompt"),
        (["--image", "{img}", "--prompt", "x", "--bogus"], "unrecognized arguments: --bogus"),
        (["--image", "{img}", "--prompt", "x", "--steps", "two"], "invalid int value"),
        (["--image", "{img}", "--prompt", "x", "--guidance", "nan"], "guidance_scale must be a finite number"),
        (["--image", "{img}", "--prompt", "x", "--guidance", "inf"], "guidance_scale must be a finite number"),
        (["--image", "{img}", "--prompt", "x", "--shift", "nan"], "shift must be a finite number > 0, got nan"),
        (["--image", "{img}", "--prompt", "x", "--device", "gpu7"], "unknown device 'gpu7'; use cpu, cuda or cuda:N"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(model_dir, image, capsys, extra, message):
    argv = ["generate", "--model", str(model_dir)] + [a.replace("{img}", str(image)) for a in extra] + ["--quiet"]
    with pytest.raises(SystemExit) if "--bogus" in extra or "two" in extra else _nullcontext() as exc:
        rc = main(argv)
    rc = exc.value.code if exc is not None and hasattr(exc, "value") else rc
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("output, message", [("out.xyz", "unsupported extension '.xyz'"),
                                             ("out.png", "is a single .png file")])
def test_cli_bad_output_is_refused_before_sampling(model_dir, image, tmp_path, capsys, monkeypatch, output, message):
    """An --output the writer cannot write is a one-line error before the model is even loaded (not after a long
    sampling run), and nothing is written."""
    def no_load(*a, **k):
        raise AssertionError("the model was loaded for an output that cannot be written")

    monkeypatch.setattr(FlashI2VPipeline, "from_pretrained", no_load)
    rc = main(["generate", "--model", str(model_dir), "--image", str(image), "--prompt", "x", "--quiet",
               "--output", str(tmp_path / output)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_unusable_output_place_is_refused_before_loading(model_dir, image, tmp_path, capsys, monkeypatch):
    """An output under a file, an existing folder given as the video file, a file where the --batch / batch-mode
    folder goes, or a folder that may not be written: one line before the model is loaded; nothing is created."""
    def no_load(*a, **k):
        raise AssertionError("the model was loaded for an output that cannot be written")

    monkeypatch.setattr(FlashI2VPipeline, "from_pretrained", no_load)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dir.mp4").mkdir()
    (tmp_path / "frames").write_text("x")
    (tmp_path / "prompts.txt").write_text("a\n")
    (tmp_path / "images.txt").write_text(f"{image}\n")
    before = sorted(tmp_path.rglob("*"))
    base = ["generate", "--model", str(model_dir), "--quiet"]
    single = base + ["--image", str(image), "--prompt", "x"]
    batch = base + ["--prompts-txt", str(tmp_path / "prompts.txt"), "--images-txt", str(tmp_path / "images.txt")]
    for argv, message in [
        (single + ["--output", str(tmp_path / "afile" / "out.mp4")], "afile is a file, not a folder"),
        (single + ["--output", str(tmp_path / "dir.mp4")], "is an existing folder"),
        (single + ["--batch", "2", "--output", str(tmp_path / "frames.mp4")], "is an existing file, not a folder"),
        (batch + ["--output-dir", str(tmp_path / "afile")], "is an existing file, not a folder"),
        (batch + ["--output-dir", str(tmp_path / "afile" / "s")], "afile is a file, not a folder"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    assert main(single + ["--output", str(tmp_path / "new.mp4")]) == 2
    assert f"no permission to write in {tmp_path}" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


def test_convert_bad_numbers_and_output_are_refused_before_loading(tmp_path, capsys, monkeypatch):
    """--num-heads 0 / --text-len 0 used to fall back to the defaults silently; an --output under a file failed with a
    traceback after every component was loaded. Both are one-line errors before anything is read."""
    import flashi2v.weights as weights

    def no_load(*a, **k):
        raise AssertionError("a component was loaded")

    monkeypatch.setattr(weights, "load_transformer", no_load)
    (tmp_path / "dit.pt").write_bytes(b"x")
    (tmp_path / "vae.pth").write_bytes(b"x")
    (tmp_path / "afile").write_text("x")
    common = ["convert", "--transformer", str(tmp_path / "dit.pt"), "--vae", str(tmp_path / "vae.pth"),
              "--text-encoder", "minilm"]
    for extra, message in [
        (["--num-heads", "0", "--output", str(tmp_path / "o")], "--num-heads must be a positive integer, got 0"),
        (["--text-len", "0", "--output", str(tmp_path / "o")], "--text-len must be a positive integer, got 0"),
        (["--output", str(tmp_path / "afile" / "o")], "afile is a file, not a folder"),
    ]:
        assert main(common + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dit.pt", "vae.pth"]


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_cli_missing_model_and_debug_flag(tmp_path, capsys, image):
    assert main(["generate", "--model", str(tmp_path / "none"), "--image", str(image), "--prompt", "x"]) == 2
    assert "--model folder not found" in capsys.readouterr().err
    from flashi2v import InputError

    with pytest.raises(InputError):
        main(["--debug", "generate", "--model", str(tmp_path / "none"), "--image", str(image), "--prompt", "x"])


def test_console_script_entry_point(model_dir, image, tmp_path):
    """The installed `flashi2v` command itself: exit code 2 and one stderr line on a user error."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-m", "flashi2v.cli", "generate", "--model", str(model_dir), "--image",
                        str(image), "--prompt", "x", "--num-frames", "4"], capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "flashi2v generate: error: num_frames must be 4k+1 (1, 5, 9, ..., 49, ...), got 4; try 1 or 5"]


def test_convert_from_official_files(parts, tmp_path, image):
    from flashi2v.media import read_video

    vae, _, i2v, _ = parts
    torch.save(i2v.state_dict(), tmp_path / "flashi2v.pt")
    torch.save(vae.official_state_dict(), tmp_path / "Wan2.1_VAE.pth")
    out = tmp_path / "converted"
    rc = main(["convert", "--transformer", str(tmp_path / "flashi2v.pt"), "--num-heads", "4", "--vae",
               str(tmp_path / "Wan2.1_VAE.pth"), "--text-encoder", "minilm", "--text-len", "24", "--output", str(out)])
    assert rc == 0
    pipe = FlashI2VPipeline.from_pretrained(out, device="cpu")
    for (n, a), (_, b) in zip(i2v.state_dict().items(), pipe.transformer.state_dict().items()):
        assert torch.equal(a, b), n
    assert main(["generate", "--model", str(out), "--image", str(image), "--prompt", "x", "--output",
                 str(tmp_path / "c.mp4"), "--num-frames", "5", "--height", "32", "--width", "32", "--steps", "1",
                 "--quiet"]) == 0
    assert read_video(tmp_path / "c.mp4")[0].shape == (5, 32, 32, 3)
    # refuses to overwrite; a component that does not fit writes nothing
    assert main(["convert", "--transformer", str(tmp_path / "flashi2v.pt"), "--vae", str(tmp_path / "Wan2.1_VAE.pth"),
                 "--text-encoder", "minilm", "--output", str(out)]) == 2
    t2v_bad = {k: v for k, v in i2v.state_dict().items() if not k.startswith("text_embedding")}
    torch.save(t2v_bad, tmp_path / "broken.pt")
    bad_out = tmp_path / "bad"
    assert main(["convert", "--transformer", str(tmp_path / "broken.pt"), "--num-heads", "4", "--vae",
                 str(tmp_path / "Wan2.1_VAE.pth"), "--text-encoder", "minilm", "--output", str(bad_out)]) == 2
    assert not bad_out.exists() and not any(p.name.startswith(".bad") for p in tmp_path.iterdir())


def test_convert_t2v_to_concat_baseline(parts, tmp_path):
    vae, _, _, t2v = parts
    torch.save(t2v.state_dict(), tmp_path / "t2v.pt")
    torch.save(vae.official_state_dict(), tmp_path / "Wan2.1_VAE.pth")
    common = ["--transformer", str(tmp_path / "t2v.pt"), "--num-heads", "4", "--vae", str(tmp_path / "Wan2.1_VAE.pth"),
              "--text-encoder", "minilm", "--text-len", "24"]
    assert main(["convert", *common, "--from-t2v", "--model-type", "i2v-concat-mask", "--output",
                 str(tmp_path / "wan-style")]) == 0
    pipe = FlashI2VPipeline.from_pretrained(tmp_path / "wan-style", device="cpu")
    assert pipe.model_type == "i2v-concat-mask" and pipe.transformer.config.in_dim == 36
    assert main(["convert", *common, "--model-type", "i2v-concat-mask", "--output", str(tmp_path / "x")]) == 2


def test_convert_official_umt5_and_diffusers_folders(tmp_path, image):
    """convert from a diffusers Wan transformer folder + diffusers VAE folder + official umT5 .pth + tokenizer."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from safetensors.torch import load_file
    from conftest import golden_path, make_tiny_t5_tokenizer
    from flashi2v.media import read_video

    t5 = load_file(str(golden_path("t5", "tiny_t5_weights.safetensors")))  # official names, dim 32
    torch.save(t5, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    tok_dir = make_tiny_t5_tokenizer(tmp_path / "tokenizer")
    torch.manual_seed(0)
    dit = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, in_channels=16,
                                out_channels=16, text_dim=32, freq_dim=256, ffn_dim=128, num_layers=2,
                                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    randomize_(dit, seed=3)
    dit.save_pretrained(tmp_path / "dit", max_shard_size="200KB")
    vae = AutoencoderKLWan(base_dim=8, z_dim=16)
    vae.save_pretrained(tmp_path / "vae")
    out = tmp_path / "t2v-model"
    rc = main(["convert", "--transformer", str(tmp_path / "dit"), "--vae", str(tmp_path / "vae"), "--text-encoder",
               str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"), "--tokenizer", str(tok_dir), "--text-len", "16",
               "--output", str(out)])
    assert rc == 0
    assert main(["generate", "--model", str(out), "--prompt", "a red car on the beach", "--output",
                 str(tmp_path / "t.mp4"), "--num-frames", "5", "--height", "32", "--width", "32", "--steps", "1",
                 "--quiet"]) == 0
    assert read_video(tmp_path / "t.mp4")[0].shape == (5, 32, 32, 3)
    # an official .pth without --tokenizer is a clear error
    assert main(["convert", "--transformer", str(tmp_path / "dit"), "--vae", str(tmp_path / "vae"), "--text-encoder",
                 str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"), "--output", str(tmp_path / "x")]) == 2


def test_out_of_memory_is_one_line(model_dir, image, tmp_path, capsys, monkeypatch):
    from flashi2v.pipeline import FlashI2VPipeline as P

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(P, "__call__", oom)
    rc = main(["generate", "--model", str(model_dir), "--image", str(image), "--prompt", "x", "--output",
               str(tmp_path / "o.mp4")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0] and "--offload" in err[0]


def test_examples_run(tmp_path):
    """The README's Python example (examples/sample_latents.py) and the demo-model builder run as documented."""
    from conftest import REPO

    r = subprocess.run([sys.executable, str(REPO / "examples" / "sample_latents.py"), "--steps", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "latents (1, 16, 3, 16, 16) torch.float32" in r.stdout and "loaded 77 tensors" in r.stdout
    r = subprocess.run([sys.executable, str(REPO / "examples" / "make_tiny_model.py"), "--output",
                        str(tmp_path / "m"), "--image", str(tmp_path / "a.png")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m" / "model_index.json").is_file() and (tmp_path / "a.png").is_file()


def test_unreadable_folder_configs_are_one_line_errors(model_dir, tmp_path):
    """Every model-folder loader (pipeline index, DiT, VAE, text encoder) reports a bad JSON file the same way."""
    import shutil

    from flashi2v import CheckpointError, WanVAE, load_transformer
    from flashi2v.text import load_text_encoder

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    loaders = {
        "model_index.json": lambda: FlashI2VPipeline.from_pretrained(bad, device="cpu"),
        "transformer/config.json": lambda: load_transformer(bad / "transformer"),
        "vae/config.json": lambda: WanVAE.from_pretrained(bad / "vae"),
        "text_encoder/config.json": lambda: load_text_encoder(bad / "text_encoder"),
    }
    for rel, load in loaders.items():
        original = (bad / rel).read_text()
        for content, message in [("{truncated", "cannot read"), ("[1, 2]", "must hold a JSON object, got list")]:
            (bad / rel).write_text(content)
            with pytest.raises(CheckpointError, match=message) as e:
                load()
            assert str(bad / rel) in str(e.value) and "\n" not in str(e.value)
        (bad / rel).write_text(original)


def test_wrongly_typed_or_unknown_folder_config_values_are_one_line_errors(model_dir, tmp_path):
    """A quoted number in model_index.json's defaults, a non-integer DiT size, an unknown text-encoder key: one-line
    CheckpointErrors naming the file (they were a misleading message, a ValueError traceback, silently ignored)."""
    import json
    import shutil

    from flashi2v import CheckpointError

    for rel, edit, message in [
        ("model_index.json", lambda d: d["defaults"].update(num_steps="2"),
         "defaults.num_steps must be an integer, got '2'"),
        ("model_index.json", lambda d: d.update(defaults=[1]), "defaults must be a JSON object"),
        ("transformer/config.json", lambda d: d.update(num_layers="two"), "num_layers must be a positive integer"),
        ("transformer/config.json", lambda d: d.update(patch_size=2), "patch_size must be 3 integers"),
        ("text_encoder/config.json", lambda d: d.update(bogus=1), "has unknown keys ['bogus']"),
    ]:
        bad = tmp_path / "bad"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(model_dir, bad)
        d = json.loads((bad / rel).read_text())
        edit(d)
        (bad / rel).write_text(json.dumps(d))
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
            FlashI2VPipeline.from_pretrained(bad, device="cpu")
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("model_type", ["i2v-concat-mask", "i2v-concat-noise"])
def test_concat_baseline_pipeline_folders_generate(parts, image, tmp_path, model_type):
    """The channel-concatenation I2V baselines (flashi2v.paradigms) generate through the same pipeline API."""
    vae, text, _, _ = parts
    cfg = TransformerConfig(**TINY, model_type=model_type)
    assert cfg.in_dim == {"i2v-concat-mask": 36, "i2v-concat-noise": 32}[model_type] and cfg.out_dim == 16
    model = randomize_(WanTransformer(cfg), seed=3)
    FlashI2VPipeline(model, vae, text, DEFAULTS).save_pretrained(tmp_path / model_type)
    pipe = FlashI2VPipeline.from_pretrained(tmp_path / model_type, device="cpu")
    assert pipe.is_i2v and pipe.model_type == model_type and pipe.transformer.config == cfg
    a = pipe(image, "an astronaut waves", seed=7, progress=False)
    assert a.frames.shape == (1, 5, 32, 48, 3) and a.frames.dtype == torch.uint8
    assert a.latents.shape == (1, 16, 2, 4, 6)
    assert torch.equal(a.latents, pipe(image, "an astronaut waves", seed=7, progress=False).latents)
    if model_type == "i2v-concat-noise":  # a fixed inference σ_aug: reproducible per seed, and it matters
        n1 = pipe(image, "an astronaut waves", seed=7, image_noise_sigma=0.5, progress=False, num_frames=1)
        n2 = pipe(image, "an astronaut waves", seed=7, image_noise_sigma=0.5, progress=False, num_frames=1)
        n0 = pipe(image, "an astronaut waves", seed=7, progress=False, num_frames=1)
        assert torch.equal(n1.latents, n2.latents) and not torch.equal(n1.latents, n0.latents)
    from flashi2v import InputError

    with pytest.raises(InputError, match="pass an image"):
        pipe(None, "x", progress=False)


def test_frame_embedding_model_generates_within_its_frames_and_refuses_longer(parts, image):
    from flashi2v.errors import InputError

    vae, text, _, _ = parts
    model = randomize_(FlashI2VTransformer(TransformerConfig(**TINY, frame_embedding=2)), seed=3)
    pipe = FlashI2VPipeline(model, vae, text, DEFAULTS)
    out = pipe(image, "a cat", num_frames=5, seed=0, progress=False)  # 2 latent frames with the 4x temporal VAE
    assert out.frames.shape[1] == 5
    with pytest.raises(InputError, match="covers 2 latent frames, i.e. at most 5 frames; got num_frames 9"):
        pipe(image, "a cat", num_frames=9, seed=0, progress=False)
