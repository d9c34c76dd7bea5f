"""VAE training (flashi2v/train/vae_trainer.py): tiny VAEs (base_dim 8) on 5-frame 32x32 clips, a few steps each."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from flashi2v.errors import ConfigError, InputError
from flashi2v.train.vae_trainer import (
    RandomClips,
    VAELossConfig,
    VAETrainConfig,
    VAETrainer,
    add_vae_parser,
    build_clip_source,
    inflate_temporal_convs,
    latent_stats,
    train_vae,
    vae_forward,
    vae_loss,
)
from flashi2v.vae import WanVAE

TINY_ARCH = dict(base_dim=8, z_dim=16, dim_mult=(1, 2, 2, 2), num_res_blocks=1)


def tiny_cfg(out: Path, data_path: Path | None, **over) -> VAETrainConfig:
    d = {
        "output_dir": str(out),
        "seed": 3,
        "max_steps": 4,
        "threads": 1,
        "model": {"base_dim": 8},
        "data": {"path": str(data_path) if data_path else None, "source": "auto" if data_path else "random",
                 "height": 32, "width": 32, "num_frames": 5, "batch_size": 2, "random_samples": 8},
        "loss": {"temporal": 0.5, "gradient": 0.5},
        "optim": {"warmup_steps": 1, "lr": 2e-3},
        "eval": {"num_clips": 2},
        "export": {"stats_clips": 4},
        "checkpoint": {"every": 2, "keep_last": 2},
        "log": {"every": 2},
    }
    for k, v in over.items():
        if isinstance(v, dict):
            d[k].update(v)
        else:
            d[k] = v
    return VAETrainConfig.from_dict(d)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread: these tiny convolutions are dominated by per-op overhead, and on a shared CPU two OpenMP threads
    are several times slower than one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from flashi2v.world.writer import write_dataset

    out = tmp_path_factory.mktemp("vae_world") / "world"
    write_dataset(out, "train", num_clips=8, seed=0, num_frames=5, height=32, width=32, workers=1)
    return out


def _net():
    torch.manual_seed(0)
    net = WanVAE(**TINY_ARCH).model
    net.requires_grad_(True)
    return net.train()


def test_gradients_reach_every_parameter():
    net = _net()
    video = torch.stack([RandomClips(2, 5, 32, 32, seed=1).load(i) for i in range(2)])
    recon, mu, logvar = vae_forward(net, video, generator=torch.Generator().manual_seed(0))
    assert recon.shape == video.shape and mu.shape == (2, 16, 2, 4, 4)
    loss, parts = vae_loss(recon, video, mu, logvar, VAELossConfig(temporal=0.5, gradient=0.5, kl=1e-3))
    assert set(parts) == {"l1", "mse", "first", "temporal", "gradient", "kl"}
    loss.backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_two_times_temporal_compression_trains(tmp_path):
    """temperal_downsample with one True flag (2x in time, 1 + 2k latent frames): the trainer accepts it, every
    parameter gets a gradient, and the exported VAE round-trips 5 frames through 3 latent frames."""
    cfg = tiny_cfg(tmp_path / "run", None, max_steps=2,
                   model={"base_dim": 8, "dim_mult": [1, 2, 2], "temperal_downsample": [False, True]})
    assert cfg.temporal_factor == 2 and cfg.spatial_factor == 4
    res = train_vae(cfg)
    vae = WanVAE.from_pretrained(res.vae_dir)
    assert vae.temporal_factor == 2
    z = vae.encode(torch.zeros(1, 3, 5, 32, 32))
    assert z.shape == (1, 16, 3, 8, 8)
    assert vae.decode(z).shape == (1, 3, 5, 32, 32)
    torch.manual_seed(0)
    net = WanVAE(base_dim=8, z_dim=16, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(False, True)).model
    net.requires_grad_(True).train()
    video = torch.stack([RandomClips(2, 5, 32, 32, seed=1).load(i) for i in range(2)])
    recon, mu, logvar = vae_forward(net, video, generator=torch.Generator().manual_seed(0))
    loss, _ = vae_loss(recon, video, mu, logvar, VAELossConfig())
    loss.backward()
    assert not [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_init_with_fewer_temporal_downsamplings(tmp_path):
    """model.init from a 4x-temporal VAE into a 2x-temporal config keeps every shared tensor (only the removed
    temporal convolutions are dropped); the other way round would leave weights uninitialised and is refused."""
    torch.manual_seed(1)
    arch = dict(base_dim=8, z_dim=16, dim_mult=(1, 2, 2), num_res_blocks=1)
    four = WanVAE(**arch, temperal_downsample=(True, True))
    four.save_pretrained(tmp_path / "four")
    cfg = tiny_cfg(tmp_path / "run", None, model={"base_dim": 8, "dim_mult": [1, 2, 2], "init": str(tmp_path / "four"),
                                                 "temperal_downsample": [False, True]})
    trainer = VAETrainer(cfg)
    src, dst = four.state_dict(), trainer.vae.state_dict()
    assert 0 < len(src) - len(dst) <= 4
    assert all(torch.equal(dst[k], src[k]) for k in dst)
    assert trainer.vae.temporal_factor == 2
    two = WanVAE(**arch, temperal_downsample=(False, True))
    two.save_pretrained(tmp_path / "two")
    back = tiny_cfg(tmp_path / "run2", None, model={"base_dim": 8, "dim_mult": [1, 2, 2], "init": str(tmp_path / "two"),
                                                   "temperal_downsample": [True, True]})
    with pytest.raises(ConfigError, match="same or fewer temporal down-samplings"):
        VAETrainer(back)


def _static_spread(vae: WanVAE, frames: int = 9) -> float:
    """max |latent frame k - latent frame 0| / |latent frame 0| of a static clip (a random image held still)."""
    img = torch.rand(1, 3, 1, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    z = vae.encode(img.expand(-1, -1, frames, -1, -1))[0]
    return max(float((z[:, k] - z[:, 0]).norm() / z[:, 0].norm()) for k in range(1, z.shape[1]))


@pytest.mark.parametrize("temporal", [(False, True), (True, True)])
def test_inflated_vae_encodes_a_static_clip_to_identical_latent_frames(tmp_path, temporal):
    """model.temporal_init: inflate. A VAE with random weights (as an image-trained VAE's unused temporal taps are)
    gives a static clip latent frames unrelated to the first; inflated, every latent frame equals the first frame's
    latent, the first frame's own latent is unchanged (only its current-frame taps are kept), and constant latents
    decode to a static clip. The trainer applies it on model.init (and refuses it without one: see the config errors)."""
    torch.manual_seed(2)
    arch = dict(base_dim=8, z_dim=16, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=temporal)
    image_vae = WanVAE(**arch)
    for mod in image_vae.model.modules():  # random, like an untrained tap (diffusers' default init is tiny here)
        if isinstance(mod, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    assert _static_spread(image_vae) > 0.3
    img = torch.rand(1, 3, 1, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    first = image_vae.encode(img)
    image_vae.save_pretrained(tmp_path / "image")
    n = inflate_temporal_convs(image_vae)
    assert n == sum(isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 1 for m in image_vae.model.modules())
    assert _static_spread(image_vae) < 1e-5
    assert torch.allclose(image_vae.encode(img), first, atol=1e-5)
    video = image_vae.decode(image_vae.encode(img.expand(-1, -1, 9, -1, -1)))[0]
    assert video.shape[1] == 9 and float((video - video[:, :1]).abs().max()) < 1e-4

    cfg = tiny_cfg(tmp_path / "run", None, model={"base_dim": 8, "dim_mult": [1, 2, 2], "init": str(tmp_path / "image"),
                                                 "temperal_downsample": list(temporal), "temporal_init": "inflate"})
    assert _static_spread(VAETrainer(cfg).vae) < 1e-5
    keep = tiny_cfg(tmp_path / "run2", None, model={"base_dim": 8, "dim_mult": [1, 2, 2],
                                                   "init": str(tmp_path / "image"), "temperal_downsample": list(temporal)})
    assert _static_spread(VAETrainer(keep).vae) > 0.3


def test_loss_decreases_on_one_batch():
    net = _net()
    video = torch.stack([RandomClips(2, 5, 32, 32, seed=2).load(i) for i in range(2)])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for step in range(12):
        recon, mu, logvar = vae_forward(net, video, sample=False)
        loss, _ = vae_loss(recon, video, mu, logvar, VAELossConfig())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0] and losses[-1] < min(losses[:6]), losses


class _Crash(Exception):
    pass


def test_resume_is_exact_and_export_reloads(world, tmp_path, monkeypatch):
    # uninterrupted run
    full = train_vae(tiny_cfg(tmp_path / "a", world))
    assert [h["step"] for h in full.history] == [1, 2, 3, 4]

    # interrupted after the step-2 checkpoint, then resumed by a fresh run
    cfg_b = tiny_cfg(tmp_path / "b", world)
    real_step = VAETrainer.train_step

    def crashing(self):
        if self.step == 3:
            raise _Crash()
        return real_step(self)

    monkeypatch.setattr(VAETrainer, "train_step", crashing)
    with pytest.raises(_Crash):
        train_vae(cfg_b)
    monkeypatch.setattr(VAETrainer, "train_step", real_step)
    resumed = train_vae(cfg_b)
    assert [h["step"] for h in resumed.history] == [3, 4]
    for h_full, h_res in zip(full.history[2:], resumed.history):
        assert h_full["loss"] == h_res["loss"] and h_full["lr"] == h_res["lr"]

    a = WanVAE.from_pretrained(full.vae_dir)
    b = WanVAE.from_pretrained(resumed.vae_dir)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert full.latents_mean == resumed.latents_mean and full.latents_std == resumed.latents_std
    assert full.eval == resumed.eval and full.eval["num_clips"] == 2

    # the saved VAE carries the measured statistics; they normalise the training clips' latents to mean 0, std 1
    assert a.config["latents_mean"] == full.latents_mean and a.config["latents_std"] == full.latents_std
    assert a.config["base_dim"] == 8 and a.dtype == torch.float32 and not a.training
    cfg = tiny_cfg(tmp_path / "a", world)
    clips = build_clip_source(cfg, str(world)).subset(list(range(6)))  # the 6 training clips (2 held out)
    idx = [0, 2, 3, 5]  # stats_clips=4 spread evenly over the 6 training clips
    mean, std = latent_stats(a, clips, idx)
    assert mean == pytest.approx(full.latents_mean, abs=1e-5) and std == pytest.approx(full.latents_std, abs=1e-5)
    z = a.encode(torch.stack([clips.load(i) for i in idx])).transpose(0, 1).reshape(16, -1)
    assert z.mean(1).abs().max() < 1e-3 and (z.std(1, unbiased=False) - 1).abs().max() < 1e-3

    # files beside the checkpoints
    out = tmp_path / "a"
    assert VAETrainConfig.from_yaml(out / "config.yaml").to_dict() == cfg.to_dict()
    assert json.loads((out / "eval.json").read_text())["psnr"] == full.eval["psnr"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000000002", "step_000000004"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    # resuming with another architecture is a one-line config error
    with pytest.raises(ConfigError, match="another architecture") as e:
        train_vae(tiny_cfg(out, world, model={"base_dim": 16}))
    assert "\n" not in str(e.value)


def test_fp16_export_and_random_source(tmp_path):
    tr = VAETrainer(tiny_cfg(tmp_path / "x", None, eval={"num_clips": 0}))
    z = 16
    assert torch.equal(tr.net.quant_conv.bias[z:], torch.full((z,), -6.0))  # init_logvar
    assert not tr.net.quant_conv.weight[z:].any() and not tr.net.decoder.conv_in.bias.any()  # kaiming: zero biases
    assert all(p.requires_grad for p in tr.net.parameters()) and tr.train_clips.num_samples == 8

    res = train_vae(tiny_cfg(tmp_path / "r", None, max_steps=1, export={"dtype": "fp16", "stats_clips": 2},
                             eval={"num_clips": 0}, checkpoint={"every": 5}))
    vae = WanVAE.from_pretrained(res.vae_dir)
    assert vae.dtype == torch.float16 and res.eval == {}
    assert vae.config["latents_std"] == res.latents_std and all(s > 0 for s in res.latents_std)


def test_max_minutes_saves_a_checkpoint_exports_nothing_and_resumes(tmp_path, capsys):
    from flashi2v.cli import main
    from flashi2v.train.checkpoint import list_checkpoints

    over = dict(max_steps=3, eval={"num_clips": 0}, checkpoint={"every": 5}, export={"stats_clips": 2})
    res = train_vae(tiny_cfg(tmp_path / "r", None, max_minutes=1e-6, **over))
    assert res.stopped.startswith("time limit") and res.vae_dir is None and len(res.history) == 1
    assert not (tmp_path / "r" / "vae").exists() and not (tmp_path / "r" / "eval.json").exists()
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [1]
    assert "stopped at step 1 of 3" in capsys.readouterr().out
    res = train_vae(tiny_cfg(tmp_path / "r", None, **over))
    assert res.stopped is None and [h["step"] for h in res.history] == [2, 3]
    assert (res.vae_dir / "config.json").is_file()
    y = tmp_path / "v.yaml"
    tiny_cfg(tmp_path / "cli", None, max_minutes=1e-6, **over).save(y)
    assert main(["train-vae", "--config", str(y)]) == 0
    out = capsys.readouterr().out
    assert "stopped at step 1 of 3" in out and "wrote" not in out


@pytest.mark.parametrize(
    "over, match",
    [
        (["max_steps=0"], "max_steps must be positive"),
        (["data.num_frames=8"], "num_frames must be 1 \\+ 4k"),
        (["data.height=60"], "multiple of 8"),
        (["data.crop_size=12"], "crop_size"),
        (["data.crop_frames=21"], "crop_frames"),
        (["model.dim_mult=[1, 2]"], "temperal_downsample needs 1 flags"),
        (["model.temperal_downsample=[true, true, true]"], "at most twice"),
        (["model.base_dim=big"], "model.base_dim must be an integer"),
        (["model.widht=3"], "unknown key"),
        (["loss.kl=-1"], "loss.kl must be a finite number >= 0"),
        (["loss.l1=0", "loss.mse=0"], "both 0"),
        (["optim.schedule=linear"], "cosine or constant"),
        (["model.init_scheme=xavier"], "init_scheme"),
        (["model.temporal_init=zero"], "temporal_init must be keep or inflate"),
        (["model.temporal_init=inflate"], "temporal_init: inflate needs model.init"),
        (["export.dtype=int8"], "export.dtype"),
        (["data.source=lmdb"], "data.path is required"),
        (["oops"], "section.key=value"),
    ],
)
def test_config_errors_are_one_line(over, match):
    base = [] if any(o.startswith("data.source") for o in over) else ["data.source=random"]
    with pytest.raises(ConfigError, match=match) as e:
        VAETrainConfig.from_dict({}, base + over)
    assert "\n" not in str(e.value)


def test_config_yaml_and_cli(tmp_path):
    p = tmp_path / "vae.yaml"
    p.write_text("max_steps: 7\nmodel: {base_dim: 12}\ndata: {source: random, crop_size: 16}\noptim: {lr: 1e-3}\n")
    cfg = VAETrainConfig.from_yaml(p, ["optim.warmup_steps=3", "data.batch_size=4"])
    assert (cfg.max_steps, cfg.model.base_dim, cfg.data.crop_size, cfg.optim.lr) == (7, 12, 16, 1e-3)
    assert (cfg.optim.warmup_steps, cfg.data.batch_size, cfg.model.dim_mult) == (3, 4, (1, 2, 2, 2))
    with pytest.raises(ConfigError, match="not found"):
        VAETrainConfig.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        VAETrainConfig.from_yaml(tmp_path / "bad.yaml")

    parser = argparse.ArgumentParser()
    add_vae_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-vae", "--config", str(tmp_path / "missing.yaml"), "max_steps=3"])
    assert args.overrides == ["max_steps=3"]
    with pytest.raises(ConfigError, match="not found"):
        args.func(args)


def test_bad_data_path_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not found") as e:
        VAETrainer(tiny_cfg(tmp_path / "o", tmp_path / "nowhere"))
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither an LMDB"):
        VAETrainer(tiny_cfg(tmp_path / "o", tmp_path / "empty"))
