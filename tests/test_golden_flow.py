"""Parity of the flow-matching maths: every schedule, dynamic shift, q_sample and the loss."""

import json

import pytest
import torch

from conftest import assert_close_golden, golden_path, load_golden
from flashi2v.flow_matching import (
    TimeSampler,
    dynamic_shift,
    dynamic_shift_mu,
    flow_matching_loss,
    image_seq_len,
    inference_sigmas,
    interpolate,
    shift_sigmas,
    sigmas_to_timesteps,
)


def _schedules():
    return json.loads(golden_path("scheduler", "schedules.json").read_text())


def test_every_inference_schedule():
    d = _schedules()
    assert len(d["inference_sigmas"]) == 8
    for key, ref in d["inference_sigmas"].items():
        steps, shift = int(key.split("_")[0][5:]), float(key.split("shift")[1])
        sig = inference_sigmas(steps, shift)
        assert sig.dtype == torch.float32 and sig[-1] == 0
        assert torch.equal(sig, torch.tensor(ref)), key  # exact (<= 1 ulp required)
        assert torch.equal(sigmas_to_timesteps(sig), torch.tensor(d["inference_timesteps"][key])), key


def test_dynamic_shift_values():
    ds = _schedules()["dynamic_shift"]
    u = torch.tensor(ds["u"])
    for key, v in ds["values"].items():
        n = int(key.rsplit("_", 1)[1])
        assert dynamic_shift_mu(n) == pytest.approx(v["mu"], abs=1e-12)
        assert dynamic_shift(n) == pytest.approx(v["shift"], abs=1e-12)
        assert torch.equal(shift_sigmas(u, dynamic_shift(n)), torch.tensor(v["shifted_u"])), key
    assert image_seq_len(60, 104) == 1560


def test_logit_normal_draw_matches_official_global_rng():
    ref = _schedules()["logitnorm_draw_seed5_bs6_L1560"]
    torch.manual_seed(5)
    sig = TimeSampler()((6, 16, 13, 60, 104))
    assert torch.equal(sig, torch.tensor(ref))


def test_q_sample_and_loss():
    g = load_golden("scheduler", "q_sample.safetensors")
    u, shape = g["sigmas_in"], g["latents"].shape
    dyn = TimeSampler(shift="dynamic").apply_shift(u, shape)
    assert_close_golden(dyn, g["dyn_sigmas"].flatten(), atol=0, rtol=1.2e-7)
    assert_close_golden(sigmas_to_timesteps(dyn), g["dyn_timesteps"], atol=0, rtol=1.2e-7)
    assert_close_golden(interpolate(g["latents"], g["prior_dist"], dyn, g["start_frame_latents_proj"]), g["dyn_x_t"])
    plain = TimeSampler(shift=1.0).apply_shift(u, shape)
    assert torch.equal(plain, g["plain_sigmas"].flatten())
    assert_close_golden(interpolate(g["latents"], g["prior_dist"], plain, g["start_frame_latents_proj"]), g["plain_x_t"])
    assert_close_golden(interpolate(g["latents"], g["prior_dist"], dyn), g["t2v_dyn_x_t"])
    loss = flow_matching_loss(g["model_output"], g["latents"], g["prior_dist"])
    assert loss.item() == pytest.approx(g["loss"].item(), rel=1e-6)


def test_time_sampler_options():
    s = TimeSampler(distribution="uniform", shift=1.0)
    x = s((1000, 16, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert 0 <= x.min() and x.max() <= 1 and abs(x.mean().item() - 0.5) < 0.05
    with pytest.raises(ValueError):
        TimeSampler(distribution="beta")
    with pytest.raises(ValueError):
        TimeSampler(shift=-1)
    with pytest.raises(ValueError):
        inference_sigmas(0)
