"""Model construction: official config mapping, presets vs manifests, initialisation on every path, precision."""

import math

import pytest
import torch

from conftest import golden_path, load_example, small_config
from flashi2v import ConfigError, FlashI2VTransformer, TransformerConfig, WanTransformer, build_transformer, preset
from flashi2v.method import FlashI2VDenoiser
from flashi2v.models.attention import attention, get_attention_backend, set_attention_backend
from flashi2v.precision import apply_precision, keeps_fp32
from flashi2v.samplers import sample_euler
from flashi2v.flow_matching import inference_sigmas

MANIFESTS = {
    "flashi2v-1.3b": "flashi2v_1_3b",
    "flashi2v-1.3b-conv3x3x3": "flashi2v_1_3b_conv3x3x3",
    "flashi2v-14b": "flashi2v_14b",
    "wan2.1-t2v-1.3b": "wan_t2v_1_3b",
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_presets_on_meta_equal_official_manifests(name):
    rows = golden_path("manifests", f"{MANIFESTS[name]}.tsv").read_text().splitlines()[1:]
    ref = [(r.split("\t")[0], tuple(int(x) for x in r.split("\t")[1].split(","))) for r in rows]
    model = build_transformer(preset(name), device="meta")
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == ref  # names, shapes, count and order
    assert sum(int(r.split("\t")[3]) for r in rows) == model.num_parameters()


def test_from_official_model_config_mapping():
    yaml_cfg = {  # configs/train/gpu/flashi2v_1_3b.yaml model_config
        "dim": 1536, "ffn_dim": 8960, "freq_dim": 256, "in_dim": 16, "num_heads": 12, "num_layers": 30,
        "out_dim": 16, "text_len": 512, "low_freq_energy_ratio": [0.05, 0.95], "fft_return_abs": True,
        "conv3x3x3_proj": False, "pretrained_model_dir_or_checkpoint": "Wan2.1-T2V-1.3B/x.safetensors",
    }
    cfg = TransformerConfig.from_official(yaml_cfg)
    assert cfg == preset("flashi2v-1.3b").replace(extra=cfg.extra)
    tiny = dict(yaml_cfg, dim=64, ffn_dim=32, num_heads=4, num_layers=1, text_dim=32)
    model = FlashI2VTransformer.from_official_config(tiny, device="meta")
    assert isinstance(model, FlashI2VTransformer) and model.config.num_layers == 1
    assert type(WanTransformer.from_official_config(tiny, device="meta")) is WanTransformer
    assert cfg.extra["low_freq_energy_ratio"] == [0.05, 0.95]
    m14 = dict(yaml_cfg, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
    del m14["text_len"]
    m14['text_len"'] = 512  # the official 14B yaml's stray quote
    assert TransformerConfig.from_official(m14).text_len == 512
    opt = dict(yaml_cfg, text_dim=32, eps=1e-5, patch_size=[1, 2, 2], qk_norm=True, cross_attn_norm=True, conv3x3x3_proj=True)
    assert TransformerConfig.from_official(opt).conv3x3x3_proj
    with pytest.raises(ConfigError, match="unknown keys"):
        TransformerConfig.from_official(dict(yaml_cfg, dimm=3))
    with pytest.raises(ConfigError, match="missing"):
        TransformerConfig.from_official({"dim": 64})
    with pytest.raises(ConfigError, match="not divisible"):
        TransformerConfig(dim=65, ffn_dim=8, num_heads=4, num_layers=1)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("flashi2v-7b")


def test_config_load_reads_saved_files_and_model_folders(tmp_path):
    from flashi2v.weights import save_transformer

    cfg = TransformerConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=16, text_len=8)
    cfg.save(tmp_path / "cfg.json")
    assert TransformerConfig.load(tmp_path / "cfg.json") == cfg
    save_transformer(build_transformer(cfg), tmp_path / "folder")
    assert TransformerConfig.load(tmp_path / "folder") == cfg  # the folder's config.json, format keys dropped
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected an object"):
        TransformerConfig.load(tmp_path / "list.json")
    with pytest.raises(ConfigError, match="not found"):
        TransformerConfig.load(tmp_path / "missing.json")


def _check_init(model: torch.nn.Module, dim: int):
    sd = dict(model.named_parameters())
    for name, p in sd.items():
        assert torch.isfinite(p).all(), name
        if name.endswith("modulation"):
            assert abs(p.std().item() * math.sqrt(dim) - 1) < 0.25 and abs(p.mean().item()) < 0.1, name
        elif name.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight")):
            assert torch.equal(p, torch.ones_like(p)), name
        elif name.endswith("norm3.bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif name.startswith(("fourier_embedding.1.", "learnable_proj.proj.2.")) or name in (
            "fourier_embedding.0.bias", "learnable_proj.proj.0.bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif name in ("fourier_embedding.0.weight", "learnable_proj.proj.0.weight"):
            bound = math.sqrt(6 / (p[0].numel() + p.shape[0]))  # xavier on weight.flatten(1)
            assert p.abs().max() <= bound and p.abs().max() > 0.8 * bound, name
        elif name.endswith("weight") and p.ndim >= 2:  # kaiming_uniform(a=sqrt(5)) -> bound 1/sqrt(fan_in)
            bound = 1 / math.sqrt(p[0].numel())
            assert p.abs().max() <= bound + 1e-7 and p.abs().max() > 0.8 * bound, name


def test_initialisation_direct_and_meta_materialised_are_identical_and_correct():
    cfg = small_config(dim=128, num_heads=2)
    torch.manual_seed(0)
    direct = FlashI2VTransformer(cfg)
    torch.manual_seed(0)
    meta = FlashI2VTransformer(cfg, device="meta")
    meta.to_empty(device="cpu")  # garbage memory ...
    with torch.no_grad():
        for p in meta.parameters():
            p.fill_(float("nan"))
    meta.init_weights()  # ... fully replaced, including modulation and RMSNorm weights (official bug §1.4)
    for (n, a), (_, b) in zip(direct.named_parameters(), meta.named_parameters()):
        assert torch.equal(a, b), n
    _check_init(direct, cfg.dim)


def test_flashi2v_from_t2v_weights_is_exactly_the_t2v_model():
    cfg = small_config(model_type="t2v")
    torch.manual_seed(1)
    t2v = WanTransformer(cfg).eval()
    fl = FlashI2VTransformer(cfg.replace(model_type="flashi2v"))
    missing, unexpected = fl.load_state_dict(t2v.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("fourier_embedding.", "learnable_proj.")) for k in missing)
    fl.eval()
    x, t, ctx = torch.randn(2, 16, 3, 8, 8), torch.tensor([900.0, 10.0]), torch.randn(2, 7, 32)
    z = torch.randn(2, 16, 1, 8, 8)
    den = FlashI2VDenoiser(fl, z, 3)
    assert torch.equal(den.condition.shift, torch.zeros_like(den.condition.shift))  # φ ≡ 0 at init
    with torch.no_grad():
        assert torch.equal(den(x, t, ctx), t2v(x, t, ctx))


def test_input_validation():
    m = FlashI2VTransformer(small_config()).eval()
    x, t, ctx = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, 5, 32)
    with pytest.raises(ValueError, match="fourier_features"):
        m(x, t, ctx)
    with pytest.raises(ValueError, match="x must be"):
        m(torch.randn(1, 4, 2, 8, 8), t, ctx, torch.randn(1, 4, 2, 8, 8))
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(1, 16, 2, 7, 8), t, ctx, torch.randn(1, 16, 2, 7, 8))
    with pytest.raises(ValueError, match="context"):
        m(x, t, torch.randn(1, 5, 31), x)
    with pytest.raises(ValueError):
        FlashI2VTransformer(small_config(model_type="t2v"))


def test_config_values_of_the_wrong_type_are_one_line_config_errors():
    """A string, float or zero size (from a hand-edited config.json or a YAML override) is a ConfigError, not a
    ValueError/TypeError traceback from deep inside the checks."""
    for kw, msg in [
        (dict(num_layers="two"), "num_layers must be a positive integer, got 'two'"),
        (dict(num_heads="4"), "num_heads must be a positive integer, got '4'"),
        (dict(dim=64.0), "dim must be a positive integer, got 64.0"),
        (dict(out_dim="x"), "out_dim must be a positive integer, got 'x'"),
        (dict(text_len=0), "text_len must be a positive integer, got 0"),
        (dict(num_layers=True), "num_layers must be a positive integer, got True"),
        (dict(patch_size="ab"), "patch_size must be 3 integers"),
        (dict(patch_size=2), "patch_size must be 3 integers"),
    ]:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            small_config(**kw)
    assert small_config(num_layers=1).num_layers == 1


def test_conv3x3x3_projection_option():
    m = FlashI2VTransformer(small_config(conv3x3x3_proj=True))
    assert m.learnable_proj.proj[0].weight.shape == (64, 16, 3, 3, 3)
    with torch.no_grad():
        m.learnable_proj.proj[2].weight.normal_()
    out = m.project_first_frame(torch.randn(2, 16, 1, 8, 8))
    assert out.shape == (2, 16, 1, 8, 8) and out.dtype == torch.float32


def test_bf16_policy_keeps_sensitive_parts_fp32_and_ode_state_fp32():
    torch.manual_seed(0)
    m = apply_precision(FlashI2VTransformer(small_config()), torch.bfloat16).eval()
    for name, p in m.named_parameters():
        assert p.dtype == (torch.float32 if keeps_fp32(name) else torch.bfloat16), name
    assert m.time_embedding[0].weight.dtype == torch.float32 and m.blocks[0].modulation.dtype == torch.float32
    assert m.blocks[0].ffn[0].weight.dtype == torch.bfloat16 and m.dtype == torch.bfloat16
    torch.manual_seed(0)
    ref = FlashI2VTransformer(small_config()).eval()
    z, noise, ctx = torch.randn(1, 16, 1, 8, 8), torch.randn(1, 16, 2, 8, 8), torch.randn(1, 5, 32)
    with torch.no_grad():
        m.learnable_proj.proj[2].weight.normal_(std=0.1)
        ref.learnable_proj.proj[2].weight.copy_(m.learnable_proj.proj[2].weight)
    states = []
    out = sample_euler(FlashI2VDenoiser(m, z, 2), noise, inference_sigmas(3), ctx, -ctx, 5.0, progress=False,
                       callback=lambda s: states.append(s["x_next"].dtype))
    assert out.dtype == torch.float32 and set(states) == {torch.float32}
    out32 = sample_euler(FlashI2VDenoiser(ref, z, 2), noise, inference_sigmas(3), ctx, -ctx, 5.0, progress=False)
    rel = (out - out32).norm() / out32.norm()
    assert rel < 0.05, rel  # bf16 matmuls, fp32 everything else


def test_attention_backend_selection():
    q, k, v = torch.randn(1, 5, 2, 8), torch.randn(1, 7, 2, 8), torch.randn(1, 7, 2, 8)
    ref = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8), -1)
    torch.testing.assert_close(attention(q, k, v), torch.einsum("bhqk,bkhd->bqhd", ref, v))
    assert get_attention_backend() == "auto"
    with pytest.raises(ConfigError):
        set_attention_backend("xformers")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="flash-attn"):
            set_attention_backend("flash2")
    set_attention_backend("sdpa")
    try:
        torch.testing.assert_close(attention(q, k, v), torch.einsum("bhqk,bkhd->bqhd", ref, v))
    finally:
        set_attention_backend("auto")


def test_top_level_api_is_light_and_complete():
    import subprocess
    import sys

    code = ("import sys, flashi2v; assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules; "
            "from flashi2v import WanVAE, FlashI2VPipeline, MiniLMTextEncoder, UMT5TextEncoder, load_text_encoder; "
            "print(WanVAE.__module__, FlashI2VPipeline.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["flashi2v.vae", "flashi2v.pipeline"]


def test_first_frame_anchor_follows_the_straight_path():
    """The anchor constraint keeps state frame 0 at sigma*eps0 + (1 - sigma)*z after every step, whatever the model
    says, and ends on z; the other frames are left to the integrator."""
    from flashi2v.samplers import first_frame_anchor

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 3, 2, 2, generator=g)
    z = torch.randn(2, 4, 1, 2, 2, generator=g)
    sigmas = torch.tensor([1.0, 0.7, 0.3, 0.0])

    def model(x, t, ctx):  # an arbitrary velocity field
        return torch.sin(x) + t[:, None, None, None, None] / 1000

    seen = []
    out = sample_euler(model, noise, sigmas, torch.zeros(2, 1, 1), guidance_scale=1.0, progress=False,
                       constraint=first_frame_anchor(z, noise), callback=lambda d: seen.append(d))
    for d in seen:
        torch.testing.assert_close(d["x_next"][:, :, :1], d["sigma_next"] * noise[:, :, :1] + (1 - d["sigma_next"]) * z)
    torch.testing.assert_close(out[:, :, :1], z)
    free = sample_euler(model, noise, sigmas, torch.zeros(2, 1, 1), guidance_scale=1.0, progress=False)
    assert not torch.allclose(free[:, :, :1], z)
    # frame 1.. of the first step are the unconstrained Euler step
    torch.testing.assert_close(seen[0]["x_next"][:, :, 1:], (noise + model(noise, torch.full((2,), 1000.0), None)
                                                             * (0.7 - 1.0))[:, :, 1:])
    with pytest.raises(ValueError, match="must be"):
        first_frame_anchor(z[:, :, :1, :1], noise)


def test_unseen_latent_dims_are_directions_the_model_cannot_see():
    """A patch embedding narrower than a patch of the latent (16 channels x 4x4 = 256 numbers -> dim 48 here) has a
    null space: noise along it changes nothing the model computes, so no sampler can remove it. The config property
    counts exactly those directions; the real Wan configs have none."""
    from conftest import randomize_

    assert preset("flashi2v-1.3b").unseen_latent_dims == 0 and preset("flashi2v-14b").unseen_latent_dims == 0
    cfg = small_config(dim=48, num_heads=4, patch_size=(1, 4, 4))
    assert cfg.unseen_latent_dims == 16 * 16 - 48
    assert small_config(dim=256, num_heads=4, patch_size=(1, 4, 4)).unseen_latent_dims == 0
    model = randomize_(FlashI2VTransformer(cfg)).eval()
    w = model.patch_embedding.weight.detach().reshape(cfg.dim, -1)
    null = torch.linalg.svd(w, full_matrices=True).Vh[cfg.dim:]  # rows: directions of one patch, (C, kt, kh, kw) order
    assert null.shape[0] == cfg.unseen_latent_dims
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 8, 8, generator=g)
    bump = (torch.randn(null.shape[0], generator=g) @ null).reshape(16, 1, 4, 4)
    y = x.clone()
    y[0, :, 1:2, 4:8, 0:4] += 3 * bump  # a large push along the null space of one patch (frame 1, patch row 1, col 0)
    t = torch.tensor([500.0])
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    feats = torch.randn(1, 16, 2, 8, 8, generator=g)
    with torch.no_grad():
        out_x = model(x, t, ctx, fourier_features=feats)
        out_y = model(y, t, ctx, fourier_features=feats)
    torch.testing.assert_close(out_y, out_x, atol=1e-4, rtol=1e-4)
    y2 = x.clone()
    seen = torch.linalg.svd(w).Vh[: cfg.dim]
    y2[0, :, 1:2, 4:8, 0:4] += 3 * (torch.randn(cfg.dim, generator=g) @ seen).reshape(16, 1, 4, 4)
    with torch.no_grad():
        assert (model(y2, t, ctx, fourier_features=feats) - out_x).abs().max() > 1e-2  # a visible push does change it


def test_frame_embedding_option_starts_as_the_plain_model_and_tells_frames_apart(tmp_path):
    from flashi2v.weights.transformer import infer_config, load_transformer, save_transformer

    plain_cfg = small_config()
    assert "frame_embedding" not in plain_cfg.to_dict()  # off: saved configs of the plain model do not change
    cfg = plain_cfg.replace(frame_embedding=3)
    torch.manual_seed(0)
    plain = FlashI2VTransformer(plain_cfg).eval()
    torch.manual_seed(0)
    model = FlashI2VTransformer(cfg).eval()
    assert torch.equal(model.frame_embedding.weight, torch.zeros(3, cfg.dim))  # zero init, no RNG drawn
    for (n, a), (_, b) in zip(plain.named_parameters(), (kv for kv in model.named_parameters() if "frame_emb" not in kv[0])):
        assert torch.equal(a, b), n
    # Frames that are identical in the input stay identical without the embedding, and differ with a non-zero one.
    x = torch.randn(1, 16, 1, 8, 8).repeat(1, 1, 3, 1, 1)
    t, ctx, ff = torch.tensor([1000.0]), torch.randn(1, 5, 32), torch.zeros(1, 16, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x, t, ctx, ff), plain(x, t, ctx, ff))
        model.frame_embedding.weight.normal_()
        out = model(x, t, ctx, ff)
    assert (out[:, :, 0] - out[:, :, 2]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="frame embedding covers 3"):
        model(torch.randn(1, 16, 4, 8, 8), t, ctx, torch.zeros(1, 16, 4, 8, 8))
    # saved and loaded with the model; read off an official-names state dict
    assert infer_config(model.state_dict(), num_heads=cfg.num_heads).frame_embedding == 3
    save_transformer(model, tmp_path / "tr")
    loaded, _ = load_transformer(tmp_path / "tr")
    assert loaded.config.frame_embedding == 3
    assert torch.equal(loaded.frame_embedding.weight, model.frame_embedding.weight)
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="frame_embedding"):
            small_config(frame_embedding=bad)


def test_text_motion_probe_runs_and_its_camera_metric_reads_the_true_pans():
    """examples/text_motion_probe.py (docs/default_model.md): a short run trains and samples; on the true clips its
    camera-shift estimate recovers every prompt's pan direction (or stillness)."""
    probe = load_example("text_motion_probe")
    threads = torch.get_num_threads()
    for captions, extra, text_len in (("short", [], 24), ("short", ["--text-len", "96"], 96), ("world", [], 96),
                                      ("world", ["--mix-short", "0.5"], 96)):
        r = probe.main(["--captions", captions, "--steps", "2", "--eval-clips", "9", "--bank", "9", "--frame-embedding",
                        *extra])
        assert r["truth_direction_right"] == 1.0 and r["text_len"] == text_len
        assert 0.0 <= r["direction_right"] <= 1.0 and math.isfinite(r["loss_last_100"])
    r = probe.main(["--captions", "short", "--steps", "2", "--eval-clips", "9", "--bank", "9", "--size", "8", "--patch",
                    "4", "--dim", "32"])  # the default model's geometry: 4x4 patches
    assert r["truth_direction_right"] == 1.0 and (r["size"], r["patch"], r["dim"], r["canvas"]) == (8, 4, 32, "noise")
    with pytest.raises(SystemExit, match="multiple of --patch"):
        probe.main(["--size", "10", "--patch", "4"])
    with pytest.raises(SystemExit, match="--mix-short needs --captions world"):
        probe.main(["--captions", "short", "--mix-short", "0.5"])
    with pytest.raises(SystemExit, match="--text-len"):
        probe.main(["--captions", "short", "--text-len", "600"])
    assert torch.get_num_threads() == threads  # the probe's --threads does not leak into the caller
    g = torch.Generator().manual_seed(0)
    clips, _, labels = probe.make_clips((torch.zeros(9, 4, 384), torch.arange(9)), 9, g)
    for clip, label in zip(clips, labels):  # a right pan moves the view by 4-8 px to the right, and so on
        dx, dy = probe.camera_shift(clip)
        vx, vy = probe.DIRECTIONS.get(probe.NAMES[label], (0, 0))
        assert (int(math.copysign(1, dx)) if abs(dx) > 1 else 0, int(math.copysign(1, dy)) if abs(dy) > 1 else 0) == (vx, vy)


def test_text_motion_probe_canvas_bank_and_whitening():
    """--canvas-bank pans over a fixed bank of random canvases; --whiten flattens the canvases' mean power spectrum
    per channel and standardises them (a smooth canvas's high frequencies are raised to its low ones)."""
    probe = load_example("text_motion_probe")
    smooth = probe.noise_canvases(64, 20, torch.Generator().manual_seed(0))
    power = lambda x: torch.fft.fft2(x.double()).abs().pow(2).mean(0)  # noqa: E731  [C, S, S]
    flat = probe.whiten(smooth)
    assert flat.shape == smooth.shape and flat.dtype == torch.float32
    assert torch.allclose(flat.std((0, 2, 3)), torch.ones(16), atol=1e-4) and flat.mean().abs() < 1e-5
    p_smooth, p_flat = power(smooth), power(flat)
    assert p_smooth.max() / p_smooth.min() > 1e3  # smooth: the low frequencies carry the energy
    p_flat = p_flat.flatten(1)[:, 1:]  # DC is removed by the standardisation
    assert (p_flat.max(1).values / p_flat.min(1).values).max() < 1.01  # flat at every other frequency
    bank = probe.noise_canvases(5, 20, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(0)
    clips, _, labels = probe.make_clips((torch.zeros(9, 4, 384), torch.arange(9)), 9, g, size=8, canvases=bank)
    still = [c for c, lab in zip(clips, labels) if probe.NAMES[lab] == "still"]
    assert still and all(any(torch.allclose(c[:, 0], b[:, 6:14, 6:14], atol=1e-5) for b in bank) for c in still)
    for extra in (["--canvas-bank", "5"], ["--canvas-bank", "5", "--whiten"]):
        r = probe.main(["--captions", "short", "--steps", "2", "--eval-clips", "9", "--bank", "9", "--size", "8",
                        "--dim", "32", *extra])
        assert r["canvas"] == "bank 5" and r["whiten"] == ("--whiten" in extra) and math.isfinite(r["loss_last_100"])
    with pytest.raises(SystemExit, match="--whiten needs --canvas-cache or --canvas-bank"):
        probe.main(["--whiten"])
    with pytest.raises(SystemExit, match="not both"):
        probe.main(["--canvas-bank", "5", "--canvas-cache", "x"])


def test_text_motion_probe_layer_concatenation_and_clause_encoding():
    """--hidden-layer 0,5 gives each token the concatenation of those layers' MiniLM states (the DiT's text_dim
    follows); --clauses encodes each clause alone and concatenates their token states. Both train and sample, and
    bad layer lists are refused."""
    from flashi2v.text.minilm import MiniLMTextEncoder

    probe = load_example("text_motion_probe")
    texts = ["The camera pans left over a cat; a red square slides right.", "A static view."]
    single = {k: MiniLMTextEncoder.from_package(text_len=40, hidden_layer=k) for k in (0, 5)}
    both = probe.PromptEncoder([0, 5], False, 40)
    assert both.dim == 768
    assert torch.equal(both.encode(texts), torch.cat([single[0].encode(texts)[0], single[5].encode(texts)[0]], -1))
    clauses = probe.PromptEncoder([5], True, 40).encode(texts)
    parts, n = single[5].encode(["The camera pans left over a cat;", "a red square slides right."])
    expect = torch.cat([parts[0, :n[0]], parts[1, :n[1]]])
    assert torch.equal(clauses[0, :len(expect)], expect) and clauses[0, len(expect):].abs().sum() == 0
    assert torch.equal(clauses[1], single[5].encode(texts[1:])[0][0])  # one clause: the plain encoding
    assert not torch.equal(clauses[0], single[5].encode(texts[:1])[0][0])  # the clauses no longer see each other
    r = probe.main(["--captions", "world", "--hidden-layer", "0,5", "--clauses", "--steps", "2", "--eval-clips", "9",
                    "--bank", "9", "--size", "4", "--dim", "32"])
    assert r["hidden_layer"] == [0, 5] and r["clauses"] and math.isfinite(r["loss_last_100"])
    for bad in ("x", "0,7", "5,5", "-1,6"):
        with pytest.raises(SystemExit, match="--hidden-layer"):
            probe.main([f"--hidden-layer={bad}"])


def test_text_motion_probe_batch_eval_steps_paradigm_and_condition_init():
    """--batch, --eval-at (one score per listed step, the last one also at the top level), --paradigm
    i2v-concat-mask and --condition-init zero train and sample; the default run is unchanged by the new options'
    defaults (same loss, same score), and bad values are refused before anything loads."""
    probe = load_example("text_motion_probe")
    small = ["--captions", "short", "--steps", "3", "--eval-clips", "9", "--bank", "9", "--size", "4", "--patch", "2",
             "--dim", "32", "--text-len", "8"]
    base = probe.main(small)
    same = probe.main([*small, "--batch", "8", "--eval-at", "3", "--device", "cpu"])
    r = probe.main([*small, "--batch", "3", "--eval-at", "0,1,3", "--paradigm", "i2v-concat-mask"])
    z = probe.main([*small, "--condition-init", "zero", "--batch", "2"])
    assert same["loss_last_100"] == base["loss_last_100"] and same["pans_right"] == base["pans_right"]
    assert [e["step"] for e in r["evals"]] == [0, 1, 3] and r["pans_right"] == r["evals"][-1]["pans_right"]
    assert (r["batch"], r["paradigm"]) == (3, "i2v-concat-mask") and math.isfinite(r["loss_last_100"])
    assert z["condition_init"] == "zero" and z["loss_last_100"] != base["loss_last_100"]
    for bad, match in [(["--batch", "0"], "--batch"), (["--eval-at", "2,x"], "comma-separated"),
                       (["--steps", "5", "--eval-at", "9"], r"\[0, --steps = 5\]"),
                       (["--device", "nonsense"], "--device nonsense")]:
        with pytest.raises(SystemExit, match=match):
            probe.main(bad)
