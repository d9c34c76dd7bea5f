"""Parity of sampling and of a training step with the official wrappers and scheduler."""

import pytest
import torch

from conftest import assert_close_golden, load_golden
from flashi2v.flow_matching import TimeSampler, inference_sigmas
from flashi2v.method import FlashI2VDenoiser, training_loss
from flashi2v.samplers import guided_velocity, sample_euler


def test_sample_4steps_every_step(tiny_model):
    g = load_golden("sampling", "sample_4steps.safetensors")
    sigmas = inference_sigmas(4, 7.0)
    assert torch.equal(sigmas, g["sigmas"])
    den = FlashI2VDenoiser(tiny_model, g["start_frame_latents"], num_latent_frames=3, cutoff_ratio=0.1)
    assert_close_golden(den.condition.fourier_features, g["fourier_features"], atol=1e-6, rtol=1e-6)
    assert_close_golden(den.condition.shift, g["start_frame_latents_proj"])
    steps = []
    out = sample_euler(den, g["noise"], sigmas, g["prompt_embeds"], g["negative_prompt_embeds"], 5.0,
                       callback=steps.append, progress=False)
    assert len(steps) == 4
    for s in steps:
        i = s["i"]
        assert_close_golden(s["x"], g[f"step{i}.latents_in"], name=f"step{i}.latents_in")
        t = (s["sigma"] * 1000).expand(2)
        assert torch.equal(t, g[f"step{i}.timestep"])
        with torch.no_grad():  # the two branches, recomputed separately
            cond = den(s["x"], t, g["prompt_embeds"])
            uncond = den(s["x"], t, g["negative_prompt_embeds"])
        assert_close_golden(cond, g[f"step{i}.cond_output"], name=f"step{i}.cond")
        assert_close_golden(uncond, g[f"step{i}.uncond_output"], name=f"step{i}.uncond")
        assert_close_golden(s["velocity"], g[f"step{i}.guided_velocity"], name=f"step{i}.v")
        assert_close_golden(s["x_next"], g[f"step{i}.latents_out"], name=f"step{i}.latents_out")
    assert out.dtype == torch.float32
    assert_close_golden(out, g["final_latents"], name="final")


def test_one_step_of_the_production_schedule(tiny_model):
    g = load_golden("sampling", "one_step_50sched.safetensors")
    sigmas = inference_sigmas(50, 7.0)
    assert sigmas[0] == g["sigma_0"] and sigmas[1] == g["sigma_1"]
    den = FlashI2VDenoiser(tiny_model, g["start_frame_latents"], 3)
    assert_close_golden(g["noise"] - den.condition.shift, g["model_input"])
    steps = []
    sample_euler(den, g["noise"], sigmas[:2], g["prompt_embeds"], g["negative_prompt_embeds"], 5.0,
                 callback=steps.append, progress=False)
    assert torch.equal((steps[0]["sigma"] * 1000).expand(2), g["timestep"])
    assert_close_golden(steps[0]["velocity"], g["guided_velocity"])
    assert_close_golden(steps[0]["x_next"], g["latents_out"])


def test_training_step_loss_and_all_gradients(tiny_model):
    g = load_golden("train_step", "train_step.safetensors")
    model = tiny_model.train()
    sigmas = TimeSampler().apply_shift(g["sigmas_in"], g["latents"].shape)  # logit-normal + dynamic shift recipe
    assert_close_golden(sigmas, g["sigmas_shifted"].flatten(), atol=0, rtol=1.2e-7)
    out = training_loss(model, g["latents"], g["start_frame_latents"], g["context"], sigmas=sigmas,
                        noise=g["prior_dist"], cutoff_ratio=0.5)
    assert_close_golden(out.condition.fourier_features, g["fourier_features"], atol=1e-6, rtol=1e-6)
    assert_close_golden(out.condition.shift, g["start_frame_latents_proj"])
    assert_close_golden(out.noisy, g["x_t"])
    assert_close_golden(sigmas * 1000, g["timesteps"], atol=0, rtol=1.2e-7)
    assert_close_golden(out.prediction, g["model_output"])
    assert out.loss.item() == pytest.approx(g["loss"].item(), rel=1e-5)
    out.loss.backward()
    grads = {k[len("grad."):]: v for k, v in g.items() if k.startswith("grad.")}
    assert len(grads) == 77 == len(list(model.parameters()))
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert_close_golden(p.grad, grads[name], name=f"grad.{name}")


def test_batched_cfg_equals_two_passes(tiny_model):
    g = load_golden("sampling", "sample_4steps.safetensors")
    den = FlashI2VDenoiser(tiny_model, g["start_frame_latents"], 3)
    t = torch.tensor([700.0, 700.0])
    with torch.no_grad():
        one = guided_velocity(den, g["noise"], t, g["prompt_embeds"], g["negative_prompt_embeds"], 5.0, batched=True)
        two = guided_velocity(den, g["noise"], t, g["prompt_embeds"], g["negative_prompt_embeds"], 5.0, batched=False)
    torch.testing.assert_close(one, two, atol=1e-5, rtol=1e-5)
    a = sample_euler(den, g["noise"], inference_sigmas(3, 7.0), g["prompt_embeds"], g["negative_prompt_embeds"], progress=False)
    b = sample_euler(den, g["noise"], inference_sigmas(3, 7.0), g["prompt_embeds"], g["negative_prompt_embeds"],
                     batched_cfg=False, progress=False)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_guidance_at_most_one_runs_a_single_branch(tiny_model):
    g = load_golden("sampling", "sample_4steps.safetensors")
    den = FlashI2VDenoiser(tiny_model, g["start_frame_latents"], 3)
    batches = []

    def counting(x, t, c):
        batches.append(x.shape[0])
        return den(x, t, c)

    sample_euler(counting, g["noise"], inference_sigmas(2, 7.0), g["prompt_embeds"], g["negative_prompt_embeds"],
                 guidance_scale=1.0, progress=False)
    assert batches == [2, 2]  # one branch, never the doubled batch
    batches.clear()
    sample_euler(counting, g["noise"], inference_sigmas(2, 7.0), g["prompt_embeds"], g["negative_prompt_embeds"],
                 guidance_scale=5.0, progress=False)
    assert batches == [4, 4]  # one batched forward per step
