"""The trainer under gloo with 2-4 local processes: FSDP2 and dp x cp equal one process; distributed export."""

import json
import math

import pytest
import torch

from dist import run_distributed
from test_train import tiny_cfg

# Adam eps 1e-8 (not the recipe's 1e-15) so gradients that are zero up to rounding do not become +-lr steps whose
# sign depends on the reduction order (see test_grad_accum_equals_big_batch).
COMMON = {"optim.eps": 1e-8, "clip.mode": "fixed", "clip.max_norm": 1.0, "ema.decay": 0.5, "parallel.param_dtype": "fp32"}


def _train(rank, world, cfg_dict):
    from flashi2v.parallel import full_state_dict
    from flashi2v.train.config import TrainConfig
    from flashi2v.train.trainer import Trainer

    t = Trainer(TrainConfig.from_dict(cfg_dict))
    hist = t.fit()
    sd = full_state_dict(t.model)  # collective
    ema = {n: (s.full_tensor() if hasattr(s, "full_tensor") else s).clone() for n, s in t.ema.shadow.items()}
    return dict(losses=[h["loss"] for h in hist], norms=[h["grad_norm"] for h in hist],
                params=sd if rank == 0 else None, ema=ema if rank == 0 else None)


def _reference(tmp_path, **over):
    from flashi2v.train.trainer import Trainer

    t = Trainer(tiny_cfg(tmp_path / "ref", max_steps=3, **{**COMMON, **over}))
    hist = t.fit()
    return t, hist


def _compare(ref_trainer, ref_hist, result):
    for a, b in zip(ref_hist, result["losses"]):
        assert math.isclose(a["loss"], b, rel_tol=1e-5), (a["loss"], b)
    for a, b in zip(ref_hist, result["norms"]):  # the true norm, not inflated by sqrt(world) (official bug §12.4)
        assert math.isclose(a["grad_norm"], b, rel_tol=1e-5), (a["grad_norm"], b)
    for n, p in ref_trainer.model.named_parameters():
        torch.testing.assert_close(result["params"][n], p.detach(), rtol=1e-5, atol=1e-5, msg=lambda m: f"{n}: {m}")
        torch.testing.assert_close(result["ema"][n], ref_trainer.ema.shadow[n], rtol=1e-5, atol=1e-5)


def test_fsdp2_two_processes_equal_one(tmp_path):
    """Global batch 4: one process with batch 4 vs two FSDP2 ranks with batch 2 each, 3 AdamW steps."""
    ref, hist = _reference(tmp_path, **{"data.batch_size": 4})
    cfg = tiny_cfg(tmp_path / "fsdp", max_steps=3, **{**COMMON, "data.batch_size": 2})
    res = run_distributed(_train, 2, cfg.to_dict(), timeout_s=240)
    _compare(ref, hist, res[0])
    assert res[0]["losses"] == res[1]["losses"]


@pytest.mark.slow
def test_dp2_cp2_four_processes_equal_one(tmp_path):
    """dp 2 x cp 2: CP peers share a batch and split its tokens; 35 tokens per sample (padding needed for cp 2)."""
    shape = {"data.height": 80, "data.width": 112, "data.num_frames": 1}  # 1 x 5 x 7 = 35 tokens
    ref, hist = _reference(tmp_path, **{"data.batch_size": 4, **shape})
    cfg = tiny_cfg(tmp_path / "dpcp", max_steps=3, **{**COMMON, "data.batch_size": 2, "parallel.cp": 2, **shape})
    res = run_distributed(_train, 4, cfg.to_dict(), timeout_s=300)
    _compare(ref, hist, res[0])


def _train_then_resume(rank, world, cfg_dict, steps):
    from flashi2v.train.config import TrainConfig
    from flashi2v.train.trainer import Trainer

    d = json.loads(json.dumps(cfg_dict))
    d["max_steps"] = steps
    return [h["loss"] for h in Trainer(TrainConfig.from_dict(d)).fit()]


def test_fsdp_checkpoint_resumes_and_exports_in_one_process(tmp_path):
    """A checkpoint written by 2 FSDP ranks resumes on 2 ranks exactly and exports (resharded) in one process."""
    from flashi2v.train.export import export
    from flashi2v.weights.transformer import load_transformer

    cfg = tiny_cfg(tmp_path / "run", max_steps=4, **{**COMMON, "data.batch_size": 2, "checkpoint.every": 2})
    full = run_distributed(_train, 2, cfg.to_dict(), timeout_s=240)[0]
    cfg2 = tiny_cfg(tmp_path / "run2", max_steps=4, **{**COMMON, "data.batch_size": 2, "checkpoint.every": 2})
    run_distributed(_train_then_resume, 2, cfg2.to_dict(), 2, timeout_s=240)
    tail = run_distributed(_train_then_resume, 2, cfg2.to_dict(), 4, timeout_s=240)[0]
    assert tail == full["losses"][2:]
    model, _ = load_transformer(export(cfg.output_dir, tmp_path / "raw", weights="raw"))
    for n, p in model.state_dict().items():
        torch.testing.assert_close(p, full["params"][n], rtol=0, atol=0)
    ema, _ = load_transformer(export(cfg.output_dir, tmp_path / "ema", weights="ema"))
    for n, p in ema.state_dict().items():
        torch.testing.assert_close(p, full["ema"][n], rtol=0, atol=0)


def _train_signal_on_rank_1(rank, world, cfg_dict):
    import os
    import signal

    from flashi2v.train.config import TrainConfig
    from flashi2v.train.trainer import Trainer

    t = Trainer(TrainConfig.from_dict(cfg_dict))
    orig = t.train_step

    def step(batches):
        if rank == 1 and t.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # only rank 1 is told to stop, while step 2 runs
        return orig(batches)

    t.train_step = step
    hist = t.fit()
    return dict(steps=[h["step"] for h in hist], reason=t.stop_reason)


def test_a_stop_signal_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    from flashi2v.train.checkpoint import list_checkpoints, verify

    cfg = tiny_cfg(tmp_path / "sig", max_steps=5, **{**COMMON, "checkpoint.every": 100})
    res = run_distributed(_train_signal_on_rank_1, 2, cfg.to_dict(), timeout_s=240)
    assert res[0]["steps"] == res[1]["steps"] == [1, 2]
    assert "SIGTERM" in res[1]["reason"] and "another rank" in res[0]["reason"]
    (step, path), = list_checkpoints(cfg.output_dir)
    assert step == 2 and verify(path) is None


def test_sigterm_to_torchrun_saves_every_rank_at_the_same_step(tmp_path):
    """The scheduler's way: SIGTERM to the torchrun launcher, which forwards it to its workers (and kills them 30 s
    later): both ranks finish the step and save one complete checkpoint, the last logged step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from flashi2v.train.checkpoint import list_checkpoints, verify

    cfg = tiny_cfg(tmp_path, max_steps=100000, **{**COMMON, "device": "cpu", "checkpoint.every": 100000,
                                                   "log.every": 1})
    y = tmp_path / "cfg.yaml"
    cfg.save(y)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",  # a free port
           "-m", "flashi2v.cli", "train", "--config", str(y)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert p.poll() is None and time.monotonic() < deadline, p.stdout.read()[-3000:]
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    stopped = [line for line in out.splitlines() if line.startswith("stopped at step")]
    assert len(stopped) == 1 and "stop signal (SIGTERM)" in stopped[0], out[-3000:]
    (step, path), = list_checkpoints(cfg.output_dir)
    assert verify(path) is None and f"stopped at step {step} of 100000" in stopped[0]
    assert json.loads(metrics.read_text().splitlines()[-1])["step"] == step
