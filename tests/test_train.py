"""The trainer in one process: config, clipper, EMA, sampler, checkpoints (atomic, fallback), resume, export, LoRA."""

import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flashi2v.errors import CheckpointError, ConfigError
from flashi2v.train.config import TrainConfig

ARCH = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=16, text_len=8, freq_dim=32)


def tiny_cfg(tmp_path, model_type="flashi2v", **over) -> TrainConfig:
    d = dict(
        output_dir=str(tmp_path / "run"), seed=3, max_steps=4,
        model=dict(architecture=dict(ARCH, model_type=model_type, **_in_dim(model_type))),
        data=dict(source="random", height=32, width=32, num_frames=5, batch_size=2, random_samples=16),
        optim=dict(lr=1e-3), checkpoint=dict(every=2, keep_last=2), log=dict(every=1, tensorboard=False),
    )
    overrides = [f"{k}={json.dumps(v)}" for k, v in over.items()]
    return TrainConfig.from_dict(d, overrides)


def _in_dim(model_type):
    return {"i2v-concat-mask": dict(in_dim=36), "i2v-concat-noise": dict(in_dim=32)}.get(model_type, {})


def run(cfg):
    from flashi2v.train.trainer import Trainer

    t = Trainer(cfg)
    return t, t.fit()


# ------------------------------------------------------------------------------------------------- config
def test_config_yaml_overrides_and_errors(tmp_path):
    y = tmp_path / "t.yaml"
    y.write_text("seed: 5\noptim:\n  lr: 0.001\nmodel:\n  preset: flashi2v-1.3b\ndata:\n  source: random\n")
    cfg = TrainConfig.from_yaml(y, ["optim.lr=3e-4", "parallel.cp=2", "flow.cutoff_ratio=[0.1, 0.2]"])
    assert cfg.seed == 5 and cfg.optim.lr == 3e-4 and cfg.parallel.cp == 2 and cfg.flow.cutoff_ratio == (0.1, 0.2)
    # the paper's recipe is the default
    d = TrainConfig.from_dict({"model": {"preset": "flashi2v-1.3b"}, "data": {"source": "random"}})
    assert (d.optim.lr, d.optim.weight_decay, d.optim.betas, d.optim.eps) == (2e-5, 1e-2, (0.9, 0.999), 1e-15)
    assert (d.ema.decay, d.data.text_dropout, d.flow.cutoff_ratio, d.flow.shift) == (0.9999, 0.1, (0.05, 0.95), "dynamic")
    cfg.save(tmp_path / "saved.yaml")
    assert TrainConfig.from_yaml(tmp_path / "saved.yaml").to_dict() == cfg.to_dict()
    base = {"model": {"preset": "flashi2v-1.3b"}, "data": {"source": "random"}}
    for bad, msg in [
        (["optim.lrr=1"], "unknown key(s) lrr in section 'optim'"),
        (["optim.lr=fast"], "optim.lr must be a number"),
        (["data.text_dropout=2"], "text_dropout"),
        (["noequals"], "section.key=value"),
        (["clip.mode=sometimes"], "clip.mode"),
        (["data.source=latent_cache"], "data.path is required"),
        (["data.max_samples=0"], "data.max_samples must be a positive integer or null"),
        (["data.max_samples=true"], "data.max_samples must be an integer"),
        (["data.max_samples=8"], "does not apply to data.source=random"),
        (["data.caption_weights=[1, 2]"], "data.caption_weights applies to data.source=latent_cache only"),
        (["data.source=latent_cache", "data.path=x", "data.caption_weights=[0, 0]"], "not all zero"),
        (["data.source=latent_cache", "data.path=x", "data.caption_weights=[1, -1]"], "non-negative numbers"),
        (["data.source=latent_cache", "data.path=x", "data.caption_weights=[]"], "non-negative numbers"),
        (["data.source=latent_cache", "data.path=x", "data.caption_weights=[true]"], "non-negative numbers"),
        (["optim.lr=nan"], "optim.lr must be a finite number"),  # NaN used to reach torch.optim as a traceback
        (["optim.lr=.inf"], "optim.lr must be a finite number"),  # inf used to train to NaN weights silently
        (["optim.lr=inf"], "optim.lr must be a finite number"),
    ]:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            TrainConfig.from_dict(base, bad)
    ok = TrainConfig.from_dict(base, ["data.source=latent_cache", "data.path=x", "data.caption_weights=[1, 1, 1, 6, 1]"])
    assert ok.data.caption_weights == [1, 1, 1, 6, 1]
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="training config is a folder"):
        TrainConfig.from_yaml(tmp_path)
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError, match="is not a YAML text file"):  # was a UnicodeDecodeError traceback
        TrainConfig.from_yaml(tmp_path / "image.png")


# ------------------------------------------------------------------------------------------------ clipper
def test_adaptive_clipper_rule_and_true_norm():
    from flashi2v.train.clipping import GradClipper

    p = torch.nn.Parameter(torch.zeros(4))
    c = GradClipper("adaptive", max_norm=1.0, ema_decay=0.9, num_std=3.0)
    # 1st call: threshold = 1.0; norm 0.5 is kept and updates the statistics
    p.grad = torch.tensor([0.3, 0.4, 0.0, 0.0])
    r = c([p])
    assert r.threshold == 1.0 and not r.clipped and math.isclose(r.norm, 0.5, rel_tol=1e-6)
    avg = 0.9 * 1.0 + 0.1 * 0.5
    var = 0.1 * (avg - 0.5) ** 2
    assert math.isclose(c.avg, avg) and math.isclose(c.var, var)
    # a spike is clipped to the threshold and does not move the statistics
    p.grad = torch.tensor([30.0, 40.0, 0.0, 0.0])
    thr = avg + 3 * math.sqrt(var)
    r = c([p])
    assert r.clipped and math.isclose(r.threshold, thr) and math.isclose(r.norm, 50.0, rel_tol=1e-6)
    assert math.isclose(float(p.grad.norm()), thr, rel_tol=1e-5)
    assert math.isclose(c.avg, avg) and math.isclose(c.var, var)
    # state round trip; non-finite gradients are reported, not applied
    c2 = GradClipper("adaptive")
    c2.load_state_dict(c.state_dict())
    assert c2.threshold() == c.threshold()
    p.grad = torch.tensor([float("nan"), 0, 0, 0])
    assert not c([p]).finite and c.num_nonfinite == 1


def test_ema_rule():
    from flashi2v.train.ema import EMA

    m = torch.nn.Linear(3, 2)
    e = EMA(m, decay=0.9)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    e.update(m)
    for n, p in m.named_parameters():
        torch.testing.assert_close(e.shadow[n], before[n] - 0.1 * (before[n] - p.detach()))
    with e.swapped_in(m):
        torch.testing.assert_close(m.weight.detach(), e.shadow["weight"])
    torch.testing.assert_close(m.weight.detach(), before["weight"] + 1)


def test_sampler_is_layout_independent_and_resumable():
    from flashi2v.train.data import DistributedEpochSampler

    one = DistributedEpochSampler(10, 4, seed=1)
    r0, r1 = DistributedEpochSampler(10, 2, 0, 2, seed=1), DistributedEpochSampler(10, 2, 1, 2, seed=1)
    for _ in range(5):  # crosses epochs (drop-last: 2 batches of 4 per epoch of 10)
        assert one.next_indices() == r0.next_indices() + r1.next_indices()
    state = one.state_dict()
    nxt = one.next_indices()
    again = DistributedEpochSampler(10, 4, seed=1)
    again.load_state_dict(state)
    assert again.next_indices() == nxt
    from flashi2v.errors import InputError

    with pytest.raises(InputError, match="fewer than one global batch"):
        DistributedEpochSampler(3, 2, 0, 2)


# ----------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("model_type", ["flashi2v", "t2v", "i2v-concat-mask", "i2v-concat-noise"])
def test_training_runs_and_learns_every_paradigm(tmp_path, model_type):
    cfg = tiny_cfg(tmp_path, model_type, max_steps=6, **{"checkpoint.every": 100, "ema.decay": 0.5})
    t, hist = run(cfg)
    assert [h["step"] for h in hist] == list(range(1, 7))
    assert all(math.isfinite(h["loss"]) and h["grad_norm"] > 0 for h in hist)
    assert (Path(cfg.output_dir) / "config.yaml").is_file() and (Path(cfg.output_dir) / "model_config.json").is_file()
    assert json.loads((Path(cfg.output_dir) / "model_config.json").read_text())["model_type"] == model_type
    # the final step is always checkpointed
    assert (Path(cfg.output_dir) / "checkpoints" / "step_000000006" / "COMPLETE.json").is_file()


def test_overfits_one_batch(tmp_path):
    cfg = tiny_cfg(tmp_path, max_steps=40, **{"data.random_samples": 2, "data.text_dropout": 0.0,
                                               "flow.distribution": "uniform", "checkpoint.every": 1000,
                                               "optim.lr": 3e-3, "clip.mode": "none"})
    _, hist = run(cfg)
    first = sum(h["loss"] for h in hist[:5]) / 5
    last = sum(h["loss"] for h in hist[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_grad_accum_equals_big_batch(tmp_path):
    """2 micro-steps of batch 2 = 1 step of batch 4: same samples, same per-sample randomness, same update."""
    from flashi2v.train.trainer import Trainer

    # eps 1e-8 instead of the recipe's 1e-15: with eps 1e-15 Adam turns gradients that are zero up to rounding
    # (the zero-initialised φ at step 1) into full +-lr steps whose sign depends on the summation order.
    a = Trainer(tiny_cfg(tmp_path / "a", max_steps=3, **{"data.batch_size": 4, "clip.mode": "none",
                                                           "optim.eps": 1e-8}))
    b = Trainer(tiny_cfg(tmp_path / "b", max_steps=3, **{"data.batch_size": 2, "optim.grad_accum": 2,
                                                           "clip.mode": "none", "optim.eps": 1e-8}))
    ha, hb = a.fit(), b.fit()
    for x, y in zip(ha, hb):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-5)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m: f"{n}: {m}")


def test_text_dropout_uses_empty_prompt(tmp_path, monkeypatch):
    from flashi2v.train.trainer import Trainer

    t = Trainer(tiny_cfg(tmp_path, **{"data.text_dropout": 1.0}))
    seen = []
    orig = t.paradigm.training_loss

    def spy(model, latents, z, context, **kw):
        seen.append(context.clone())
        return orig(model, latents, z, context, **kw)

    monkeypatch.setattr(t.paradigm, "training_loss", spy)
    t.cfg.max_steps = 1
    t.fit()
    assert torch.equal(seen[0], torch.zeros_like(seen[0]))  # the random source's "" embedding is zeros


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoints_keep_last_and_resume_exactly(tmp_path):
    full = tiny_cfg(tmp_path / "full", max_steps=6)
    _, ref = run(full)
    part = tiny_cfg(tmp_path / "part", max_steps=4, **{"data.num_workers": 2})  # prefetching must not skip data
    run(part)
    steps = sorted(p.name for p in (Path(part.output_dir) / "checkpoints").iterdir())
    assert steps == ["step_000000002", "step_000000004"]  # every 2, keep 2
    resumed_cfg = tiny_cfg(tmp_path / "part", max_steps=6)
    _, tail = run(resumed_cfg)
    assert [h["step"] for h in tail] == [5, 6]
    assert [h["loss"] for h in tail] == [h["loss"] for h in ref[4:]]
    assert (Path(part.output_dir) / "checkpoints").is_dir()
    kept = sorted(p.name for p in (Path(part.output_dir) / "checkpoints").iterdir())
    assert kept == ["step_000000004", "step_000000006"]


def test_truncated_checkpoint_falls_back_to_previous(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path, max_steps=4)
    _, ref = run(cfg)
    newest = Path(cfg.output_dir) / "checkpoints" / "step_000000004"
    shard = max((p for p in newest.iterdir() if p.suffix == ".distcp"), key=lambda p: p.stat().st_size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a truncated write
    t, hist = run(tiny_cfg(tmp_path, max_steps=4))
    assert any("damaged" in r.message for r in caplog.records)
    assert [h["step"] for h in hist] == [3, 4]  # resumed from step 2 and retrained steps 3, 4
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref[2:]]
    # a garbage checkpoint directory only (nothing usable) is a clear error
    for p in (Path(cfg.output_dir) / "checkpoints").iterdir():
        for f in p.glob("*.distcp"):
            f.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        run(tiny_cfg(tmp_path, max_steps=8))


def test_interrupted_save_leaves_no_checkpoint(tmp_path, monkeypatch):
    import flashi2v.train.checkpoint as ck

    cfg = tiny_cfg(tmp_path, max_steps=2, **{"checkpoint.every": 2})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(BaseException) as info:  # DCP wraps it in a CheckpointException (a BaseException)
        run(cfg)
    assert "disk full" in repr(info.value) + str(getattr(info.value, "failures", ""))
    assert not list((Path(cfg.output_dir) / "checkpoints").glob("step_*"))
    assert ck.list_checkpoints(cfg.output_dir) == []


KILL_SCRIPT = r"""
import os, signal, sys, json
import torch
torch.set_num_threads(2)  # as in the test process (conftest), so float reductions are identical
from flashi2v.train.config import TrainConfig
from flashi2v.train.trainer import Trainer
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
kill_at = int(sys.argv[2])
t = Trainer(cfg)
orig = t.train_step
def step(batches):
    s = orig(batches)
    print(json.dumps({"step": t.step, "loss": s["loss"]}), flush=True)
    if t.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return s
t.train_step = step
t.fit()
"""


def test_sigkill_resume_matches_uninterrupted(tmp_path):
    import random

    ref_cfg = tiny_cfg(tmp_path / "ref", max_steps=7, **{"checkpoint.every": 2})
    _, ref = run(ref_cfg)
    cfg = tiny_cfg(tmp_path / "killed", max_steps=7, **{"checkpoint.every": 2})
    kill_at = random.Random().randint(3, 6)
    p = subprocess.run([sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg.to_dict()), str(kill_at)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    _, tail = run(cfg)
    resumed_from = ((kill_at - 1) // 2) * 2  # killed after step kill_at, before its checkpoint
    assert tail[0]["step"] == resumed_from + 1
    assert [h["loss"] for h in tail] == [h["loss"] for h in ref[resumed_from:]]


def test_a_stop_signal_ends_the_run_after_the_step_with_a_checkpoint_that_resumes_exactly(tmp_path, capsys):
    """SIGTERM (a scheduler's warning) in the middle of step 3: the run finishes that step, saves step 3 although
    checkpoint.every is 100, returns normally with its reason, restores the signal handlers, and the same command
    resumes it exactly like an uninterrupted run."""
    import os

    from flashi2v.train.trainer import Trainer

    _, ref = run(tiny_cfg(tmp_path / "ref", max_steps=6))
    cfg = tiny_cfg(tmp_path / "stopped", max_steps=6, **{"checkpoint.every": 100, "log.every": 100})
    before = signal.getsignal(signal.SIGTERM)
    t = Trainer(cfg)
    orig = t.train_step

    def step(batches):
        if t.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while step 3 runs
        return orig(batches)

    t.train_step = step
    hist = t.fit()
    assert [h["step"] for h in hist] == [1, 2, 3]
    assert "SIGTERM" in t.stop_reason
    assert signal.getsignal(signal.SIGTERM) is before
    ckpts = sorted(p.name for p in (Path(cfg.output_dir) / "checkpoints").iterdir())
    assert ckpts == ["step_000000003"]
    lines = [json.loads(x) for x in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3]  # the last step is logged though log.every is 100
    assert "stopped at step 3 of 6" in capsys.readouterr().out
    t2, tail = run(cfg)
    assert t2.stop_reason is None
    assert [h["step"] for h in tail] == [4, 5, 6]
    assert [h["loss"] for h in tail] == [h["loss"] for h in ref[3:]]


def test_max_minutes_stops_before_the_next_step_would_pass_it(tmp_path, monkeypatch, capsys):
    """The budget rule on a fake clock, then a real run whose budget is gone after one step (CLI: exit 0, the
    message says where it stopped)."""
    import flashi2v.train.stopping as stopping
    from flashi2v.cli import main

    clock = [0.0]
    monkeypatch.setattr(stopping.time, "monotonic", lambda: clock[0])
    stop = stopping.StopRequest(max_minutes=1.0, start=0.0)
    reasons = []
    with stop:
        for now in (20.0, 35.0, 50.0):  # steps of 20, 15, 15 s: after the third, 50 + 15 > 60
            clock[0] = now
            reasons.append(stop.check())
    assert reasons[:2] == [None, None] and reasons[2].startswith("time limit")
    assert stopping.StopRequest(max_minutes=0, start=-1e9).__enter__().check() is None  # 0: no limit
    monkeypatch.undo()

    cfg = tiny_cfg(tmp_path, max_steps=5, **{"checkpoint.every": 100, "max_minutes": 1e-6})
    y = tmp_path / "t.yaml"
    cfg.save(y)
    assert main(["train", "--config", str(y)]) == 0
    out = capsys.readouterr().out
    assert "max_minutes=1e-06" in out and "stopped early (of 5) at step 1" in out
    from flashi2v.train.checkpoint import list_checkpoints

    assert [s for s, _ in list_checkpoints(cfg.output_dir)] == [1]
    t, tail = run(tiny_cfg(tmp_path, max_steps=5, **{"checkpoint.every": 100}))  # no budget: goes on to the end
    assert [h["step"] for h in tail] == [2, 3, 4, 5] and t.stop_reason is None
    with pytest.raises(ConfigError, match="max_minutes must be a number of minutes >= 0"):
        tiny_cfg(tmp_path, max_minutes=-1)


def test_a_second_ctrl_c_aborts_at_once():
    import os

    from flashi2v.train.stopping import StopRequest

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.check().startswith("stop signal (SIGINT)")
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs between bytecodes, soon after the signal
                pass
    assert signal.getsignal(signal.SIGINT) is before
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job: an ignored signal stays ignored
    try:
        with StopRequest() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.check() is None
    finally:
        signal.signal(signal.SIGINT, before)


# ---------------------------------------------------------------------------------------------- export, LoRA
def test_export_ema_and_raw(tmp_path):
    from flashi2v.train.export import export
    from flashi2v.weights.transformer import load_transformer

    cfg = tiny_cfg(tmp_path, max_steps=3, **{"ema.decay": 0.5})
    t, _ = run(cfg)
    raw = export(cfg.output_dir, tmp_path / "raw", weights="raw")
    ema = export(cfg.output_dir, tmp_path / "ema", weights="ema")
    m_raw, _ = load_transformer(raw)
    m_ema, _ = load_transformer(ema)
    for n, p in t.model.named_parameters():
        torch.testing.assert_close(m_raw.state_dict()[n], p.detach(), rtol=0, atol=0)
        torch.testing.assert_close(m_ema.state_dict()[n], t.ema.shadow[n], rtol=0, atol=0)
    from flashi2v.errors import InputError

    with pytest.raises(InputError, match="already exists"):
        export(cfg.output_dir, tmp_path / "raw")
    with pytest.raises(InputError, match="not a training run"):
        export(tmp_path, tmp_path / "x")


def test_freeze_keeps_the_named_parameters_through_training_resume_and_export(tmp_path):
    from flashi2v.train.export import export
    from flashi2v.train.trainer import build_model
    from flashi2v.weights.transformer import load_transformer

    cfg = tiny_cfg(tmp_path, max_steps=3, **{"ema.decay": 0.5, "model.condition_init": "identity",
                                             "model.freeze": ["learnable_proj"]})
    t, hist = run(cfg)
    assert len(hist) == 3
    z = torch.randn(2, 16, 1, 8, 8)
    init = build_model(tiny_cfg(tmp_path, **{"model.condition_init": "identity"}), torch.device("cpu")).state_dict()
    for weights in ("raw", "ema"):
        m, _ = load_transformer(export(cfg.output_dir, tmp_path / weights, weights=weights))
        torch.testing.assert_close(m.project_first_frame(z), z, atol=1e-5, rtol=0)  # φ(z) = z still
        moved = [n for n, q in m.state_dict().items() if n.startswith("blocks.0.") and n in t.ema.shadow
                 and not torch.equal(q, init[n])]
        assert moved  # the rest trained
    assert not any(n.startswith("learnable_proj.") for n in t.ema.shadow)
    # resuming a frozen run keeps it frozen
    t2, _ = run(tiny_cfg(tmp_path, max_steps=4, **{"ema.decay": 0.5, "model.condition_init": "identity",
                                                   "model.freeze": ["learnable_proj"]}))
    assert t2.step == 4 and not any(q.requires_grad for q in t2.model.learnable_proj.parameters())
    torch.testing.assert_close(t2.model.project_first_frame(z), z, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="model.freeze: no parameter's name starts with 'learnable_projection'"):
        run(tiny_cfg(tmp_path / "x", **{"model.freeze": ["learnable_projection"]}))
    for bad in ("learnable_proj", [""], [3]):  # a bare string would otherwise be read letter by letter
        with pytest.raises(ConfigError, match="model.freeze must be a list"):
            tiny_cfg(tmp_path, **{"model.freeze": bad})


def test_lora_trains_only_adapters_and_merges(tmp_path):
    from flashi2v.models.flashi2v import build_transformer
    from flashi2v.config import TransformerConfig
    from flashi2v.train.export import export
    from flashi2v.weights.transformer import load_transformer, save_transformer

    torch.manual_seed(0)
    base = build_transformer(TransformerConfig(**ARCH))
    save_transformer(base, tmp_path / "base")
    cfg = tiny_cfg(tmp_path, max_steps=3, **{"model.init": str(tmp_path / "base"), "model.architecture": None,
                                              "lora.enabled": True, "lora.rank": 4, "lora.alpha": 8,
                                              "optim.lr": 1e-2, "ema.enabled": False})
    t, _ = run(cfg)
    trainable = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # base weights untouched; adapters moved
    for n, p in t.model.named_parameters():
        if "base_layer" in n:
            key = n.replace(".base_layer", "")
            torch.testing.assert_close(p.detach(), base.state_dict()[key], rtol=0, atol=0)
    out = export(cfg.output_dir, tmp_path / "merged", weights="raw")
    merged, _ = load_transformer(out)
    assert set(merged.state_dict()) == set(base.state_dict())
    x = torch.randn(1, 16, 2, 4, 4)
    ctx = torch.randn(1, 8, 16)
    ff = torch.randn(1, 16, 2, 4, 4)
    tt = torch.tensor([500.0])
    t.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(x, tt, ctx, ff), t.model(x, tt, ctx, ff), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(merged(x, tt, ctx, ff), base(x, tt, ctx, ff), atol=1e-4)


def test_cli_train_and_export(tmp_path, capsys):
    from flashi2v.cli import main

    cfg = tiny_cfg(tmp_path, max_steps=2)
    y = tmp_path / "train.yaml"
    cfg.save(y)
    assert main(["train", "--config", str(y), "max_steps=3"]) == 0
    out = capsys.readouterr().out
    assert "step 3/3" in out and "tokens/s" in out and "trained to step 3" in out
    assert main(["export", cfg.output_dir, "--output", str(tmp_path / "m"), "--weights", "raw"]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert main(["train", "--config", str(y), "optim.nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key(s) nope" in err
    assert main(["export", str(tmp_path / "nothing"), "--output", str(tmp_path / "o")]) == 2
    capsys.readouterr()
    # an output_dir / --output that is (or lies under) a file: one line each, not a FileExistsError traceback
    (tmp_path / "afile").write_text("x")
    for argv, message in [
        (["train", "--config", str(y), f"output_dir={tmp_path / 'afile'}"], "a file of that name exists"),
        (["train", "--config", str(y), f"output_dir={tmp_path / 'afile' / 'run'}"], "afile is a file, not a folder"),
        (["export", cfg.output_dir, "--output", str(tmp_path / "afile" / "m")], "afile is a file, not a folder"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert (tmp_path / "afile").read_text() == "x"


def test_export_refuses_a_pipeline_folder_that_does_not_fit(tmp_path):
    """--pipeline whose text encoder does not fit the trained DiT was exported without a word (a folder `generate`
    then refuses), one without a vae/ failed with a FileNotFoundError traceback; now both are one line and nothing is
    written."""
    import shutil

    from flashi2v.errors import InputError
    from flashi2v.text import MiniLMTextEncoder
    from flashi2v.train.export import export
    from flashi2v.vae import WanVAE

    cfg = tiny_cfg(tmp_path, max_steps=2)  # text_dim 16
    run(cfg)
    base = tmp_path / "base"  # a 384-d text encoder and a VAE, written part by part (the pipeline would refuse them)
    WanVAE(base_dim=8).save_pretrained(base / "vae")
    MiniLMTextEncoder.from_package(text_len=8).save_pretrained(base / "text_encoder")
    (base / "model_index.json").write_text(json.dumps({"format": "flashi2v-pipeline", "format_version": 1}))
    with pytest.raises(InputError, match="gives 384-d states but the trained transformer expects text_dim 16"):
        export(cfg.output_dir, tmp_path / "m", pipeline=str(base))
    shutil.rmtree(base / "vae")
    with pytest.raises(InputError, match="has no vae folder"):
        export(cfg.output_dir, tmp_path / "m", pipeline=str(base))
    assert not (tmp_path / "m").exists() and not any(p.name.startswith(".m") for p in tmp_path.iterdir())


@pytest.mark.parametrize("model_type", ["flashi2v", "i2v-concat-mask"])
def test_init_from_t2v_checkpoint(tmp_path, model_type):
    """The paper's recipe: start from Wan2.1-T2V weights; the new branches start at zero (step 0 = the T2V model)."""
    from flashi2v.config import TransformerConfig
    from flashi2v.models.flashi2v import build_transformer
    from flashi2v.weights.transformer import save_transformer

    torch.manual_seed(0)
    t2v = build_transformer(TransformerConfig(**ARCH, model_type="t2v"))
    save_transformer(t2v, tmp_path / "t2v")
    cfg = tiny_cfg(tmp_path, max_steps=1, **{"model.init": str(tmp_path / "t2v"), "model.from_t2v": True,
                                              "model.architecture": {"model_type": model_type}})
    from flashi2v.train.trainer import Trainer

    t = Trainer(cfg)
    assert t.model_config.model_type == model_type
    x = torch.randn(1, 16, 2, 4, 4)
    ctx = torch.randn(1, 8, 16)
    tt = torch.tensor([300.0])
    with torch.no_grad():
        ref = t2v(x, tt, ctx)
        if model_type == "flashi2v":
            out = t.model(x, tt, ctx, fourier_features=torch.randn_like(x))
            assert torch.equal(t.model.project_first_frame(x[:, :, :1]), torch.zeros_like(x[:, :, :1]))
        else:
            out = t.model(torch.cat([x, torch.randn(1, 20, 2, 4, 4)], 1), tt, ctx)
    assert torch.equal(out, ref)
    t.fit()
    with pytest.raises(ConfigError, match="from_t2v"):
        tiny_cfg(tmp_path, **{"model.from_t2v": True})


def test_warmup_is_linear_then_constant(tmp_path):
    _, hist = run(tiny_cfg(tmp_path, max_steps=6, **{"optim.warmup_steps": 4, "optim.lr": 1e-3}))
    assert [round(h["lr"], 8) for h in hist] == [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]


def test_cosine_schedule_and_threads(tmp_path):
    import math

    from flashi2v.train.trainer import lr_factor
    from flashi2v.train.config import OptimConfig

    f = lr_factor(OptimConfig(warmup_steps=2, schedule="cosine", min_lr_ratio=0.1), max_steps=12)
    assert [f(s) for s in (0, 1)] == [0.5, 1.0]
    assert f(2) == 1.0 and abs(f(7) - (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))) < 1e-12
    assert abs(f(12) - 0.1) < 1e-12 and abs(f(50) - 0.1) < 1e-12
    with pytest.raises(ConfigError, match="optim.schedule"):
        tiny_cfg(tmp_path, **{"optim.schedule": "linear"})
    with pytest.raises(ConfigError, match="threads"):
        tiny_cfg(tmp_path, threads=-1)


def test_lr_multipliers_scale_named_modules_and_follow_the_schedule(tmp_path):
    from flashi2v.train.trainer import Trainer

    over = {"optim.warmup_steps": 2, "optim.lr": 1e-3, "optim.lr_multipliers": {"learnable_proj": 10, "fourier_embedding": 4}}
    t = Trainer(tiny_cfg(tmp_path, max_steps=3, **over))
    names = {id(q): n for n, q in t.model.named_parameters()}
    groups = {tuple(sorted({names[id(q)].split(".")[0] for q in g["params"]})): g for g in t.optimizer.param_groups}
    assert set(groups) >= {("learnable_proj",), ("fourier_embedding",)}
    base = next(g for k, g in groups.items() if "blocks" in k)
    assert "learnable_proj" not in {names[id(q)].split(".")[0] for q in base["params"]}
    assert sum(len(g["params"]) for g in t.optimizer.param_groups) == len(t.params)  # every parameter exactly once
    t.fit()
    # after 3 scheduler steps (warm-up done) each group runs at its own multiple of the base lr
    assert groups[("learnable_proj",)]["lr"] == pytest.approx(10 * base["lr"])
    assert groups[("fourier_embedding",)]["lr"] == pytest.approx(4 * base["lr"]) and base["lr"] == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="no trainable parameter's name starts with 'learnable_projection'"):
        Trainer(tiny_cfg(tmp_path / "x", **{"optim.lr_multipliers": {"learnable_projection": 10}}))
    with pytest.raises(ConfigError, match="must be a positive number"):
        tiny_cfg(tmp_path, **{"optim.lr_multipliers": {"learnable_proj": 0}})


def test_condition_init_xavier_gives_the_image_branches_weights_from_scratch(tmp_path):
    from flashi2v.train.trainer import build_model

    zero = build_model(tiny_cfg(tmp_path), torch.device("cpu"))
    xav = build_model(tiny_cfg(tmp_path, **{"model.condition_init": "xavier"}), torch.device("cpu"))
    z = torch.randn(2, 16, 1, 8, 8)
    assert torch.count_nonzero(zero.project_first_frame(z)) == 0  # the paper's zero init: φ ≡ 0
    assert zero.fourier_embedding[1].weight.abs().sum() == 0
    phi = xav.project_first_frame(z)
    assert 0.3 < phi.std().item() < 3.0  # an O(1) shift from the first step
    assert xav.fourier_embedding[1].weight.std() > 0
    # everything else is the same seeded init
    same = [n for n, q in zero.state_dict().items()
            if not n.startswith(("learnable_proj.proj.2.weight", "fourier_embedding.1.weight"))]
    assert all(torch.equal(zero.state_dict()[n], xav.state_dict()[n]) for n in same)
    with pytest.raises(ConfigError, match="condition_init must be zero, xavier or identity"):
        tiny_cfg(tmp_path, **{"model.condition_init": "normal"})
    with pytest.raises(ConfigError, match="only applies to model.init=scratch"):
        tiny_cfg(tmp_path, **{"model.condition_init": "xavier", "model.init": str(tmp_path)})
    with pytest.raises(ConfigError, match="needs a flashi2v model"):
        build_model(tiny_cfg(tmp_path, "t2v", **{"model.condition_init": "xavier"}), torch.device("cpu"))


def test_condition_init_identity_starts_with_phi_equal_to_z(tmp_path):
    from flashi2v.train.trainer import build_model

    zero = build_model(tiny_cfg(tmp_path), torch.device("cpu"))
    ident = build_model(tiny_cfg(tmp_path, **{"model.condition_init": "identity"}), torch.device("cpu"))
    z = 3 * torch.randn(2, 16, 1, 8, 8)
    torch.testing.assert_close(ident.project_first_frame(z), z, atol=1e-5, rtol=0)
    # frame 0 of the shifted state σ·ε + (1 − σ)·z − φ(z) is then σ·(ε − z): σ times its own velocity target
    eps, sigma = torch.randn_like(z), 0.3
    state = sigma * eps + (1 - sigma) * z - ident.project_first_frame(z)
    torch.testing.assert_close(state, sigma * (eps - z), atol=1e-5, rtol=0)
    assert ident.fourier_embedding[1].weight.abs().sum() == 0  # the Fourier branch keeps the paper's init
    # φ still learns: every one of its tensors gets a gradient through the identity
    ident.project_first_frame(z).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ident.learnable_proj.parameters())
    # everything outside φ is the same seeded init
    same = [n for n in zero.state_dict() if not n.startswith("learnable_proj.")]
    assert all(torch.equal(zero.state_dict()[n], ident.state_dict()[n]) for n in same)
    with pytest.raises(ConfigError, match="condition_init=identity only applies to model.init=scratch"):
        tiny_cfg(tmp_path, **{"model.condition_init": "identity", "model.init": str(tmp_path)})
    with pytest.raises(ConfigError, match="identity needs a flashi2v model"):
        build_model(tiny_cfg(tmp_path, "t2v", **{"model.condition_init": "identity"}), torch.device("cpu"))


def test_trainer_warns_when_the_patch_embedding_cannot_see_all_of_the_latent(tmp_path, caplog):
    """dim 32 < 16 channels x 2x2 patch: 32 noise directions per patch are invisible (TransformerConfig's
    unseen_latent_dims), which the trainer says before training; dim 64 sees everything and gets no warning."""
    import logging

    with caplog.at_level(logging.WARNING, logger="flashi2v.train"):
        run(tiny_cfg(tmp_path / "narrow", max_steps=1))
    assert "at least 32 directions of the noise are invisible" in caplog.text and "use dim >= 64" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flashi2v.train"):
        run(tiny_cfg(tmp_path / "wide", max_steps=1, **{"model.architecture.dim": 64}))
    assert "invisible" not in caplog.text


def test_motion_weights_favour_what_moves_and_average_one():
    from flashi2v.flow_matching import flow_matching_loss, motion_weights

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 16, 16, generator=g) * 0.1
    x[:] = x[:, :, :1]  # a still background ...
    for t in range(5):  # ... with a square moving right in clip 0
        x[0, :, t, 4:8, 2 + 2 * t:6 + 2 * t] = 2.0
    for t in range(5):  # clip 1: the whole frame pans
        x[1, :, t] = torch.roll(x[1, :, 0], t, dims=-1)
    # clip 2 does not change at all
    w = motion_weights(x, 4.0)
    assert w.shape == (3, 1, 5, 16, 16)
    torch.testing.assert_close(w.mean((1, 2, 3, 4)), torch.ones(3))
    assert w[0, 0, 4, 4:8, 10:14].mean() > 10 * w[0, 0, 4, 12:, :4].mean()  # the square's new place vs background
    assert w[0, 0, 0].max() < w[0, 0, 4].max()  # frame 0 never differs from itself
    torch.testing.assert_close(w[2], torch.ones_like(w[2]))  # nothing moves: even weights
    assert w[1, :, 1:].std() < w[0, :, 1:].std()  # a pan is weighted far more evenly than one small object
    torch.testing.assert_close(motion_weights(x, 0.0), torch.ones_like(w))
    torch.testing.assert_close(motion_weights(x[:, :, :1], 4.0), torch.ones(3, 1, 1, 16, 16))
    with pytest.raises(ValueError, match=">= 0"):
        motion_weights(x, -1.0)
    pred, noise = torch.randn_like(x), torch.randn_like(x)
    torch.testing.assert_close(flow_matching_loss(pred, x, noise, torch.ones_like(w)),
                               flow_matching_loss(pred, x, noise))


def test_trainer_motion_weight_uses_the_weighted_loss(tmp_path, monkeypatch):
    import flashi2v.train.trainer as trainer_mod
    from flashi2v.flow_matching import motion_weights

    seen = []
    real = trainer_mod.flow_matching_loss

    def spy(pred, x0, noise, weights=None):
        torch.testing.assert_close(weights, motion_weights(x0, 2.5))
        loss = real(pred, x0, noise, weights)
        seen.append(loss.item())
        return loss

    monkeypatch.setattr(trainer_mod, "flow_matching_loss", spy)
    _, hist = run(tiny_cfg(tmp_path / "w", max_steps=2, **{"flow.motion_weight": 2.5, "checkpoint.every": 100}))
    assert len(seen) == 2 and [h["loss"] for h in hist] == pytest.approx(seen)
    _, plain = run(tiny_cfg(tmp_path / "p", max_steps=2, **{"checkpoint.every": 100}))
    assert len(seen) == 2 and plain[0]["loss"] != pytest.approx(hist[0]["loss"])  # off by default
    with pytest.raises(ConfigError, match="flow.motion_weight must be a number >= 0"):
        tiny_cfg(tmp_path, **{"flow.motion_weight": -1})


def test_frame_embedding_trains_from_scratch(tmp_path):
    """model.architecture.frame_embedding (TransformerConfig.frame_embedding): created zero, then learned."""
    t, _ = run(tiny_cfg(tmp_path, max_steps=2, **{"model.architecture.frame_embedding": 2}))
    emb = dict(t.model.named_parameters())["frame_embedding.weight"]
    assert emb.shape == (2, ARCH["dim"]) and emb.abs().sum() > 0
    assert json.loads((tmp_path / "run" / "model_config.json").read_text())["frame_embedding"] == 2


def test_latents_that_do_not_fit_the_model_fail_at_start_up(tmp_path):
    """The data's latent shape is checked against the model before any step: frame embedding too short, a patch
    size that does not divide the latent grid; each a ConfigError that names the fix, and no run folder written."""
    from flashi2v.train.trainer import Trainer

    cases = [({"model.architecture.frame_embedding": 1}, "data has 2 latent frames but model.architecture "
              "frame_embedding covers 1; set frame_embedding >= 2"),
             ({"data.height": 48, "model.architecture.patch_size": [1, 4, 4]}, "latent height (6) is not divisible"),
             ({"data.num_frames": 9, "model.architecture.patch_size": [2, 2, 2]}, "latent frames (3) is not divisible")]
    for over, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Trainer(tiny_cfg(tmp_path, **over))
        assert not (tmp_path / "run").exists()


def test_preload_and_tf32_options_are_checked(tmp_path):
    """data.preload needs a latent cache; both switches take booleans only (a YAML typo is an error, not truthy)."""
    with pytest.raises(ConfigError, match="data.preload reads a latent cache into memory; data.source is 'random'"):
        tiny_cfg(tmp_path, **{"data.preload": True})
    with pytest.raises(ConfigError, match="data.preload must be true or false"):
        tiny_cfg(tmp_path, **{"data.preload": "yes"})
    with pytest.raises(ConfigError, match="parallel.tf32 must be true or false"):
        tiny_cfg(tmp_path, **{"parallel.tf32": 1})
    assert tiny_cfg(tmp_path, **{"parallel.tf32": True}).parallel.tf32 is True  # a no-op on the CPU
