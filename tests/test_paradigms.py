"""The I2V conditioning paradigms (flashi2v.paradigms): input layouts, noise augmentation, losses, denoisers,
T2V initialisation and sampling, on tiny models (dim 32, 1 layer, 3x4x4 latents)."""

import math

import pytest
import torch

from conftest import randomize_
from flashi2v import ConfigError, FlashI2VTransformer, TransformerConfig, WanTransformer, build_transformer, preset
from flashi2v import method
from flashi2v.config import required_in_dim
from flashi2v.flow_matching import TimeSampler, inference_sigmas, interpolate
from flashi2v.paradigms import (
    ConcatDenoiser, ConcatMaskParadigm, ConcatNoiseParadigm, Draws, FlashI2VParadigm, T2VParadigm, paradigm_for,
)
from flashi2v.samplers import guided_velocity, sample_euler
from flashi2v.weights import load_transformer
from flashi2v.weights.transformer import init_from_t2v

I2V_TYPES = ["flashi2v", "i2v-concat-mask", "i2v-concat-noise"]
ALL_TYPES = ["t2v", *I2V_TYPES]
B, C, T, H, W = 2, 16, 3, 4, 4


def cfg(model_type="t2v", **kw):
    base = dict(dim=32, ffn_dim=32, num_heads=2, num_layers=1, text_dim=16, text_len=8, model_type=model_type)
    return TransformerConfig(**{**base, **kw})


def tiny(model_type, seed=0):
    return randomize_(build_transformer(cfg(model_type)), seed=seed).eval()


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, C, T, H, W, generator=g)
    z = x0[:, :, :1].clone()
    ctx = torch.randn(B, 5, 16, generator=g)
    return x0, z, ctx


def capture_inputs(model):
    """Record every forward's x (the concatenated input) through a forward pre-hook."""
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


# -------------------------------------------------------------------------------------------------- config
def test_config_model_types_in_dim_and_presets():
    assert [required_in_dim(t) for t in ALL_TYPES] == [16, 16, 36, 32]
    assert cfg("i2v-concat-mask").in_dim == 36 and cfg("i2v-concat-noise").in_dim == 32  # in_dim unset -> derived
    assert cfg("i2v-concat-mask", in_dim=36).is_concat and cfg("i2v-concat-mask").is_i2v and not cfg().is_i2v
    for model_type, bad, need in [("i2v-concat-mask", 32, 36), ("i2v-concat-noise", 36, 32), ("t2v", 36, 16),
                                  ("flashi2v", 32, 16)]:
        with pytest.raises(ConfigError, match=f"needs in_dim {need}") as e:
            cfg(model_type, in_dim=bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model_type must be one of"):
        cfg("i2v-concat")
    c = cfg("t2v").with_model_type("i2v-concat-mask")
    assert c.in_dim == 36 and c.out_dim == 16 and c.with_model_type("t2v") == cfg("t2v")
    assert TransformerConfig.from_dict(c.to_dict()) == c
    for name, in_dim in [("i2v-concat-mask-1.3b", 36), ("i2v-concat-noise-1.3b", 32)]:
        p = preset(name)
        assert p.in_dim == in_dim and p.out_dim == 16 and p.dim == preset("wan2.1-t2v-1.3b").dim
        m = build_transformer(p, device="meta")
        assert type(m) is WanTransformer and m.patch_embedding.weight.shape[:2] == (1536, in_dim)


def test_paradigm_dispatch_and_hyperparameters():
    expected = {"t2v": T2VParadigm, "flashi2v": FlashI2VParadigm, "i2v-concat-mask": ConcatMaskParadigm,
                "i2v-concat-noise": ConcatNoiseParadigm}
    for t, cls in expected.items():
        assert type(paradigm_for(t)) is cls and type(paradigm_for(cfg(t))) is cls
        assert type(paradigm_for(tiny(t))) is cls
    p = paradigm_for("flashi2v", train_cutoff_ratio=(0.2, 0.3), inference_cutoff_ratio=0.4)
    assert p.train_cutoff_ratio == (0.2, 0.3) and p.inference_cutoff_ratio == 0.4
    assert paradigm_for("flashi2v").train_cutoff_ratio == (0.05, 0.95)
    assert paradigm_for("flashi2v").inference_cutoff_ratio == 0.1
    n = paradigm_for("i2v-concat-noise")
    assert (n.aug_log_mean, n.aug_log_std, n.inference_aug_sigma) == (-3.0, 0.5, 0.0)
    with pytest.raises(ConfigError, match="unknown paradigm hyperparameters \\['cutoff'\\]"):
        paradigm_for("i2v-concat-mask", cutoff=1)
    # another paradigm's hyperparameter is ignored: one training config can name them all
    assert type(paradigm_for("i2v-concat-mask", train_cutoff_ratio=(0.1, 0.2))) is ConcatMaskParadigm
    assert paradigm_for("i2v-concat-noise", train_cutoff_ratio=0.3, aug_log_std=0.1).aug_log_std == 0.1
    with pytest.raises(ConfigError, match="unknown model type"):
        paradigm_for("i2v")


# ------------------------------------------------------------------------------------------- input layouts
def test_concat_mask_input_layout():
    model, (x0, z, ctx) = tiny("i2v-concat-mask"), data()
    seen = capture_inputs(model)
    sig = torch.tensor([0.3, 0.8])
    out = paradigm_for(model).training_loss(model, x0, z, ctx, sigmas=sig, generator=torch.Generator().manual_seed(0))
    (x,) = seen
    assert x.shape == (B, 36, T, H, W)
    assert torch.equal(x[:, :16], out.noisy) and torch.equal(out.noisy, interpolate(x0, out.noise, sig))
    mask, y = x[:, 16:20], x[:, 20:]
    assert torch.equal(mask[:, :, 0], torch.ones_like(mask[:, :, 0]))
    assert torch.equal(mask[:, :, 1:], torch.zeros_like(mask[:, :, 1:]))
    assert torch.equal(y[:, :, :1], z) and torch.equal(y[:, :, 1:], torch.zeros_like(y[:, :, 1:]))  # clean z
    assert torch.equal(out.condition, x[:, 16:])
    # the denoiser feeds the same conditioning next to the state, for both CFG branches
    seen.clear()
    den = paradigm_for(model).denoiser(model, z, T)
    assert isinstance(den, ConcatDenoiser)
    state = torch.randn(B, C, T, H, W)
    with torch.no_grad():
        guided_velocity(den, state, torch.full((B,), 500.0), ctx, -ctx, 5.0)
    (x,) = seen
    assert x.shape == (2 * B, 36, T, H, W) and torch.equal(x[:B, 16:], x[B:, 16:]) and torch.equal(x[:B, 16:], out.condition)
    assert torch.equal(x[:B, :16], state) and torch.equal(x[B:, :16], state)


def test_concat_noise_input_layout_and_augmentation():
    model, (x0, z, ctx) = tiny("i2v-concat-noise"), data()
    par = paradigm_for(model)
    seen = capture_inputs(model)
    out = par.training_loss(model, x0, z, ctx, generator=torch.Generator().manual_seed(3))
    (x,) = seen
    assert x.shape == (B, 32, T, H, W) and torch.equal(x[:, :16], out.noisy)
    img = x[:, 16:]
    assert torch.equal(img[:, :, 1:], torch.zeros_like(img[:, :, 1:]))  # zero padding over time
    aug = out.extras["image_noise_sigma"]
    assert aug.shape == (B,) and (aug > 0).all()
    delta = img[:, :, 0] - z[:, :, 0]
    assert (delta.abs() > 0).all()  # the image latent is noised...
    eps = delta / aug.view(-1, 1, 1, 1)
    assert 0.6 < eps.std() < 1.4  # ...by σ_aug · N(0, 1)
    # same generator -> same augmentation; another seed -> another one
    again = par.training_loss(model, x0, z, ctx, generator=torch.Generator().manual_seed(3))
    other = par.training_loss(model, x0, z, ctx, generator=torch.Generator().manual_seed(4))
    assert torch.equal(again.condition, out.condition) and torch.equal(again.loss, out.loss)
    assert not torch.equal(other.extras["image_noise_sigma"], aug)
    # the generator order: sigmas and noise are drawn exactly as for t2v / concat-mask, the augmentation after
    t2v = paradigm_for("t2v").training_loss(tiny("t2v"), x0, None, ctx, generator=torch.Generator().manual_seed(3))
    mask = paradigm_for("i2v-concat-mask").training_loss(tiny("i2v-concat-mask"), x0, z, ctx,
                                                         generator=torch.Generator().manual_seed(3))
    for o in (t2v, mask):
        assert torch.equal(o.sigmas, out.sigmas) and torch.equal(o.noise, out.noise)
    # inference: σ_aug = 0 by default (clean z), a fixed σ_aug on request
    d0 = par.denoiser(model, z, T)
    assert torch.equal(d0.condition[:, :, :1], z) and torch.equal(d0.condition[:, :, 1:], torch.zeros(B, C, T - 1, H, W))
    e = torch.randn(z.shape)
    d1 = par.denoiser(model, z, T, aug_sigma=0.2, aug_noise=e)
    torch.testing.assert_close(d1.condition[:, :, :1], z + 0.2 * e, rtol=0, atol=1e-6)
    g1 = par.denoiser(model, z, T, aug_sigma=0.2, generator=torch.Generator().manual_seed(9)).condition
    g2 = par.denoiser(model, z, T, aug_sigma=0.2, generator=torch.Generator().manual_seed(9)).condition
    assert torch.equal(g1, g2) and not torch.equal(g1, d0.condition)
    fixed = paradigm_for("i2v-concat-noise", inference_aug_sigma=0.1).denoiser(model, z, T, aug_noise=e)
    torch.testing.assert_close(fixed.condition[:, :, 0], (z + 0.1 * e)[:, :, 0], rtol=0, atol=1e-6)


def test_noise_augmentation_distribution_and_generator():
    par = ConcatNoiseParadigm()
    s = par.draw_aug_sigmas(200_000, generator=torch.Generator().manual_seed(0))
    log = s.log()
    assert abs(log.mean().item() + 3.0) < 0.01 and abs(log.std().item() - 0.5) < 0.01
    assert abs(s.median().item() - math.exp(-3.0)) < 0.001
    a = par.draw_aug_sigmas(8, generator=torch.Generator().manual_seed(1))
    b = par.draw_aug_sigmas(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    torch.manual_seed(0)  # the global RNG is not used: a generator alone determines the draw
    c = par.draw_aug_sigmas(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, c)
    custom = ConcatNoiseParadigm(aug_log_mean=-1.0, aug_log_std=0.0).draw_aug_sigmas(4)
    torch.testing.assert_close(custom, torch.full((4,), math.exp(-1.0)))


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("model_type", ["i2v-concat-mask", "i2v-concat-noise"])
def test_training_loss_backward_reaches_the_extra_patch_channels(model_type):
    t2v = tiny("t2v")
    model, _ = init_from_t2v(t2v, model_type)
    model.train()
    extra = model.patch_embedding.weight[:, 16:]
    assert torch.equal(extra, torch.zeros_like(extra))  # zero-initialised
    x0, z, ctx = data()
    out = paradigm_for(model).training_loss(model, x0, z, ctx, generator=torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and out.prediction.shape == x0.shape
    out.loss.backward()
    grad = model.patch_embedding.weight.grad
    assert grad is not None and grad[:, 16:].abs().sum() > 0 and grad[:, :16].abs().sum() > 0
    # the T2V paradigm on the T2V model sees the same state and noise: the same loss at step 0
    ref = paradigm_for("t2v").training_loss(t2v, x0, None, ctx, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ref.noisy, out.noisy)
    torch.testing.assert_close(ref.loss, out.loss.detach())


def test_flashi2v_paradigm_loss_is_method_training_loss_bit_for_bit():
    model, (x0, z, ctx) = tiny("flashi2v"), data(1)
    for kw in [dict(), dict(sigmas=torch.tensor([0.2, 0.9]), noise=torch.randn(x0.shape)),
               dict(time_sampler=TimeSampler(shift=3.0))]:
        a = paradigm_for(model).training_loss(model, x0, z, ctx, generator=torch.Generator().manual_seed(5), **kw)
        b = method.training_loss(model, x0, z, ctx, generator=torch.Generator().manual_seed(5), **kw)
        assert torch.equal(a.loss, b.loss) and torch.equal(a.prediction, b.prediction)
        assert torch.equal(a.sigmas, b.sigmas) and torch.equal(a.noise, b.noise) and torch.equal(a.noisy, b.noisy)
        assert torch.equal(a.extras["cutoff_radius"], b.condition.cutoff_radius)
    # the training cutoff range is a hyperparameter
    a = paradigm_for(model, train_cutoff_ratio=0.3).training_loss(model, x0, z, ctx, generator=torch.Generator().manual_seed(5))
    b = method.training_loss(model, x0, z, ctx, cutoff_ratio=0.3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.loss, b.loss)


def test_t2v_paradigm_ignores_the_image_and_i2v_needs_it():
    model, (x0, z, ctx) = tiny("t2v"), data()
    a = paradigm_for(model).training_loss(model, x0, None, ctx, generator=torch.Generator().manual_seed(0))
    b = paradigm_for(model).training_loss(model, x0, z, ctx, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.loss, b.loss) and a.condition is None
    assert paradigm_for(model).denoiser(model, None, T) is model
    for t in I2V_TYPES:
        with pytest.raises(ValueError, match="first_frame_latent"):
            paradigm_for(t).training_loss(tiny(t), x0, None, ctx)
    with pytest.raises(ValueError, match="does not match"):
        paradigm_for("i2v-concat-mask").training_loss(tiny("i2v-concat-mask"), x0, z[:, :, :, :2], ctx)


# --------------------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_denoiser_shapes_and_one_euler_sample(model_type):
    model, (_, z, ctx) = tiny(model_type), data()
    den = paradigm_for(model).denoiser(model, z if model_type != "t2v" else None, T)
    y, t = torch.randn(B, C, T, H, W), torch.full((B,), 700.0)
    with torch.no_grad():
        assert den(y, t, ctx).shape == (B, C, T, H, W)
        assert den(torch.cat([y, y]), torch.cat([t, t]), torch.cat([ctx, -ctx])).shape == (2 * B, C, T, H, W)
    out = sample_euler(den, torch.randn(B, C, T, H, W, generator=torch.Generator().manual_seed(0)),
                       inference_sigmas(2, 5.0), ctx, -ctx, 4.0, progress=False)
    assert out.shape == (B, C, T, H, W) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("model_type", I2V_TYPES)
def test_from_t2v_is_exactly_the_t2v_model(model_type):
    t2v, (_, z, ctx) = tiny("t2v", seed=4), data(2)
    y, t = torch.randn(B, C, T, H, W), torch.tensor([900.0, 15.0])
    with torch.no_grad():
        ref = t2v(y, t, ctx)
    model, report = init_from_t2v(t2v, model_type)
    assert model.config == cfg("t2v").with_model_type(model_type) and not model.training
    assert model.patch_embedding.weight.data_ptr() != t2v.patch_embedding.weight.data_ptr()  # copied, not shared
    if model_type == "flashi2v":
        assert isinstance(model, FlashI2VTransformer) and not report.padded
    else:
        extra = model.config.in_dim - 16
        assert type(model) is WanTransformer and report.padded == {"patch_embedding.weight": extra}
        assert f"zero-initialised {extra} extra input channels of patch_embedding.weight" in report.summary()
        assert torch.equal(model.patch_embedding.weight[:, :16], t2v.patch_embedding.weight)
    with torch.no_grad():
        for kw in ([{}, {"aug_sigma": 0.3}] if model_type == "i2v-concat-noise" else [{}]):
            den = paradigm_for(model).denoiser(model, z, T, **kw)
            assert torch.equal(den(y, t, ctx), ref)
    # the same through load_transformer on a state dict (the checkpoint path)
    loaded, _ = load_transformer(t2v.state_dict(), cfg("t2v"), from_t2v=True, model_type=model_type)
    assert loaded.config.model_type == model_type
    with torch.no_grad():
        assert torch.equal(paradigm_for(loaded).denoiser(loaded, z, T)(y, t, ctx), ref)


# ------------------------------------------------------------------------------------- pre-drawn randomness
@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_draws_single_generator_equals_generator_path_and_per_sample_is_layout_free(model_type):
    model, (x0, z, ctx) = tiny(model_type), data(3)
    par = paradigm_for(model)
    ts = TimeSampler(shift=2.0)
    d = par.draw(x0.shape, torch.Generator().manual_seed(11), time_sampler=ts)
    assert isinstance(d, Draws) and d.sigmas.shape == (B,) and d.noise.shape == x0.shape
    assert (d.cutoff_ratio is not None) == (model_type == "flashi2v")
    assert (d.aug_sigma is not None and d.aug_noise.shape == z.shape) == (model_type == "i2v-concat-noise")
    a = par.training_loss(model, x0, z, ctx, draws=d)
    b = par.training_loss(model, x0, z, ctx, time_sampler=ts, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.noise, b.noise) and torch.equal(a.sigmas, b.sigmas)
    # one generator per sample: sample i's draws depend on generators[i] only (not on the batch layout)
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(B)]  # noqa: E731
    both = par.draw(x0.shape, gens(), time_sampler=ts)
    second = par.draw((1, *x0.shape[1:]), gens()[1:], time_sampler=ts)
    for name, v in vars(second).items():
        assert (v is None and getattr(both, name) is None) or torch.equal(getattr(both, name)[1:], v), name
    out = par.training_loss(model, x0, z, ctx, draws=both)
    one = par.training_loss(model, x0[1:], z[1:], ctx[1:], draws=second)
    torch.testing.assert_close(out.prediction[1:], one.prediction, rtol=1e-5, atol=1e-5)
    if model_type == "flashi2v":
        assert ((both.cutoff_ratio >= 0.05) & (both.cutoff_ratio <= 0.95)).all()
        b2 = method.training_loss(model, x0, z, ctx, sigmas=both.sigmas, noise=both.noise, cutoff_ratio=both.cutoff_ratio)
        assert torch.equal(out.loss, b2.loss)
    with pytest.raises(ValueError, match="either draws"):
        par.training_loss(model, x0, z, ctx, draws=both, generator=torch.Generator())
    with pytest.raises(ValueError, match="generators for a batch"):
        par.draw(x0.shape, gens()[:1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to detect host-device synchronisation")
@pytest.mark.parametrize("model_type", I2V_TYPES)
def test_a_cuda_training_step_with_per_sample_generators_never_waits_for_the_gpu(model_type):
    """The trainer's per-sample draws (one CUDA generator per sample), the loss and its backward queue GPU work
    without a single synchronisation: a ``.cpu()`` or ``.item()`` per sample made a batch of 64 wait 64 times."""
    dev = torch.device("cuda")
    model = tiny(model_type).to(dev).train()
    par = paradigm_for(model)
    x0, z, ctx = (t.to(dev) for t in data(3))
    draws = [None]

    def step():
        gens = [torch.Generator(dev).manual_seed(100 + i) for i in range(B)]
        draws[0] = par.draw(x0.shape, gens, time_sampler=TimeSampler(), device=dev)
        par.training_loss(model, x0, z, ctx, draws=draws[0]).loss.backward()

    step()  # first call: lazy CUDA initialisation (cuBLAS handles, ...) may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v is None or v.device.type == "cuda" for v in vars(draws[0]).values())
    # a CPU generator serves CUDA latents (drawn on the host, then moved), as in examples/text_motion_probe.py
    cpu = par.training_loss(model, x0, z, ctx, generator=torch.Generator().manual_seed(5))
    ref = par.training_loss(model.cpu(), *(t.cpu() for t in (x0, z, ctx)), generator=torch.Generator().manual_seed(5))
    assert cpu.noise.device.type == "cuda" and torch.equal(cpu.noise.cpu(), ref.noise)
