"""Tests of flashi2v.vae.WanVAE (the Wan2.1 VAE; its network flashi2v.models.wan_vae checked against diffusers').

Golden data is read from ../shared/golden (relative to the repo root) at test time; tests that need it are skipped
when it is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from flashi2v.errors import CheckpointError, ConfigError, FlashI2VError, InputError
from flashi2v.vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, WanVAE, official_to_diffusers_key_map

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
VAE_DIR = GOLDEN / "vae"
MANIFEST = GOLDEN / "manifests" / "wan_vae.tsv"

needs_golden = pytest.mark.skipif(
    not (VAE_DIR / "tiny_vae_weights.safetensors").is_file(),
    reason=f"golden VAE data not found at {VAE_DIR} (expected ../shared/golden next to the repo)",
)

TINY_ARCH = dict(base_dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, attn_scales=(),
                 temperal_downsample=(False, True, True))  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)  # the golden data was produced with 2 threads
    yield
    torch.set_num_threads(old)


def _tiny_stats():
    stats = json.loads((VAE_DIR / "vae.json").read_text())
    return dict(latents_mean=stats["mean"], latents_std=stats["std"])


@pytest.fixture(scope="module")
def tiny_official_sd():
    if not (VAE_DIR / "tiny_vae_weights.safetensors").is_file():
        pytest.skip(f"golden VAE data not found at {VAE_DIR}")
    return load_file(str(VAE_DIR / "tiny_vae_weights.safetensors"))


@pytest.fixture(scope="module")
def tiny_vae(tiny_official_sd):
    return WanVAE.from_official_state_dict(tiny_official_sd, **TINY_ARCH, **_tiny_stats())


@pytest.fixture(scope="module")
def golden_io():
    if not (VAE_DIR / "tiny_vae_io.safetensors").is_file():
        pytest.skip(f"golden VAE data not found at {VAE_DIR}")
    return load_file(str(VAE_DIR / "tiny_vae_io.safetensors"))


def _diffusers_twin(vae: WanVAE, folder):
    """diffusers' AutoencoderKLWan (a test dependency) loaded from ``vae.save_diffusers_folder(folder)``."""
    from diffusers import AutoencoderKLWan

    vae.save_diffusers_folder(folder)
    twin = AutoencoderKLWan.from_pretrained(folder)
    assert twin.config.scale_factor_spatial == vae.spatial_factor
    assert twin.config.scale_factor_temporal == vae.temporal_factor
    assert list(twin.config.latents_std) == vae.config["latents_std"]
    return twin.eval()


def _assert_golden(actual: torch.Tensor, ref: torch.Tensor, name: str) -> None:
    assert actual.shape == ref.shape, f"{name}: shape {tuple(actual.shape)} vs golden {tuple(ref.shape)}"
    assert actual.dtype == torch.float32
    err = (actual - ref).abs()
    tol = 1e-5 + 1e-4 * ref.abs()
    worst = (err / tol).max().item()
    assert worst <= 1.0, f"{name}: max |diff| {err.max().item():.3g}, worst diff/tol {worst:.3g}"


# ----------------------------------------------------------------------------------------------------------------------
# golden parity
# ----------------------------------------------------------------------------------------------------------------------


@needs_golden
def test_golden_parity_tiny_vae(tiny_vae, golden_io):
    v5, v9 = golden_io["video5"], golden_io["video9"]
    _assert_golden(tiny_vae.encode(v5), golden_io["latents5"], "latents5")
    _assert_golden(tiny_vae.encode(v5[:, :, :1]), golden_io["latents5_first_frame_only"], "latents5_first_frame_only")
    _assert_golden(tiny_vae.encode_raw(v5), golden_io["raw_mu5"], "raw_mu5")
    _assert_golden(tiny_vae.encode(v5, normalize=False), golden_io["raw_mu5"], "raw_mu5 (flag)")
    _assert_golden(tiny_vae.decode(golden_io["latents5"]), golden_io["recon5"], "recon5")
    _assert_golden(tiny_vae.encode(v9), golden_io["latents9"], "latents9")
    _assert_golden(tiny_vae.decode(golden_io["latents9"]), golden_io["recon9"], "recon9")


@needs_golden
def test_decode_raw_mu_matches_normalised_decode(tiny_vae, golden_io):
    a = tiny_vae.decode(golden_io["raw_mu5"][:, :, :1], normalized=False)
    b = tiny_vae.decode(golden_io["latents5"][:, :, :1])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert a.min() >= -1 and a.max() <= 1


# ----------------------------------------------------------------------------------------------------------------------
# key map vs the official manifest
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"official VAE manifest not found at {MANIFEST}")
def test_key_map_matches_official_manifest():
    rows = [line.rstrip("\n").split("\t") for line in MANIFEST.read_text().splitlines()[1:] if line.strip()]
    manifest = {r[0]: tuple(int(x) for x in r[1].split(",")) for r in rows}
    assert len(manifest) == 194

    vae = WanVAE._empty()  # full-size, meta device: no memory
    assert all(p.is_meta for p in vae.parameters())
    mapped = {name: tuple(t.shape) for name, t in vae.official_state_dict().items()}
    assert mapped == manifest
    assert sum(t.numel() for t in vae.official_state_dict().values()) == 126_892_531

    key_map = official_to_diffusers_key_map()
    assert set(key_map) == set(manifest)
    # a bijection onto diffusers' parameter names
    assert sorted(key_map.values()) == sorted(vae.model.state_dict())
    assert len(set(key_map.values())) == len(key_map)
    # a few documented entries
    assert key_map["encoder.conv1.weight"] == "encoder.conv_in.weight"
    assert key_map["conv1.weight"] == "quant_conv.weight"
    assert key_map["conv2.bias"] == "post_quant_conv.bias"
    assert key_map["encoder.downsamples.3.shortcut.weight"] == "encoder.down_blocks.3.conv_shortcut.weight"
    assert key_map["decoder.upsamples.3.resample.1.weight"] == "decoder.up_blocks.0.upsamplers.0.resample.1.weight"
    assert key_map["decoder.upsamples.4.shortcut.bias"] == "decoder.up_blocks.1.resnets.0.conv_shortcut.bias"
    assert key_map["decoder.upsamples.6.residual.3.gamma"] == "decoder.up_blocks.1.resnets.2.norm2.gamma"
    assert key_map["decoder.upsamples.7.time_conv.weight"] == "decoder.up_blocks.1.upsamplers.0.time_conv.weight"
    assert key_map["decoder.middle.1.to_qkv.weight"] == "decoder.mid_block.attentions.0.to_qkv.weight"
    assert key_map["decoder.head.2.weight"] == "decoder.conv_out.weight"


def test_default_architecture_constants():
    vae = WanVAE._empty()
    assert vae.config["base_dim"] == 96 and vae.config["z_dim"] == 16
    assert vae.config["dim_mult"] == [1, 2, 4, 4] and vae.config["num_res_blocks"] == 2
    assert vae.config["temperal_downsample"] == [False, True, True] and vae.config["attn_scales"] == []
    assert tuple(vae.config["latents_mean"]) == WAN21_LATENTS_MEAN
    assert tuple(vae.config["latents_std"]) == WAN21_LATENTS_STD
    assert vae.config["latents_mean"][7] == 1.5508 and vae.config["latents_std"][0] == 2.8184


# ----------------------------------------------------------------------------------------------------------------------
# input errors
# ----------------------------------------------------------------------------------------------------------------------


def _small_vae():
    torch.manual_seed(0)
    return WanVAE(base_dim=4)


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("frames,trim,pad", [(2, 1, 5), (4, 1, 5), (6, 5, 9), (8, 5, 9), (48, 45, 49)])
def test_frame_count_not_1_plus_4k_is_an_error(frames, trim, pad):
    vae = _small_vae()
    with pytest.raises(InputError) as ei:
        vae.encode(torch.zeros(1, 3, frames, 16, 16))
    msg = _one_line(ei.value)
    assert f"{frames} frames" in msg and f"trim it to {trim}" in msg and f"pad it to {pad}" in msg


@pytest.mark.parametrize("h,w", [(20, 16), (16, 12), (4, 16), (66, 64)])
def test_size_not_multiple_of_8_is_an_error(h, w):
    with pytest.raises(InputError) as ei:
        _small_vae().encode(torch.zeros(1, 3, 1, h, w))
    assert f"{h}x{w}" in _one_line(ei.value) and "multiples of 8" in str(ei.value)


@pytest.mark.parametrize(
    "shape,needle",
    [((3, 5, 16, 16), "unsqueeze(0)"), ((1, 5, 3, 16, 16), "3 (RGB) channels"), ((1, 1, 5, 16, 16), "channels"),
     ((1, 3, 0, 16, 16), "0 frames"), ((1, 3, 1, 16, 16, 1), "[B, 3, F, H, W]")],
)  # fmt: skip
def test_bad_video_shape_is_an_error(shape, needle):
    with pytest.raises(InputError) as ei:
        _small_vae().encode(torch.zeros(shape))
    assert needle in _one_line(ei.value)


def test_bad_video_type_and_dtype():
    vae = _small_vae()
    with pytest.raises(InputError, match="uint8"):
        vae.encode(torch.zeros(1, 3, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(InputError, match="torch.Tensor"):
        vae.encode([[0.0]])


@pytest.mark.parametrize(
    "shape,needle", [((16, 2, 2, 2), "unsqueeze(0)"), ((1, 4, 2, 2, 2), "16 channels"), ((1, 16, 0, 2, 2), "empty")]
)
def test_bad_latents_shape_is_an_error(shape, needle):
    with pytest.raises(InputError) as ei:
        _small_vae().decode(torch.zeros(shape))
    assert needle in _one_line(ei.value)


def test_shapes_and_dtypes_of_a_random_model():
    vae = _small_vae()
    z = vae.encode(torch.rand(2, 3, 5, 24, 16) * 2 - 1)
    assert z.shape == (2, 16, 2, 3, 2) and z.dtype == torch.float32
    x = vae.decode(z)
    assert x.shape == (2, 3, 5, 24, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    # slicing (one video at a time) gives the same numbers
    vae.enable_slicing()
    torch.testing.assert_close(vae.decode(z), x, atol=1e-5, rtol=1e-4)  # batch-size dependent kernels: ~5e-6
    vae.disable_slicing()
    # .to(dtype) works (bf16 compute, float32 outputs)
    vb = vae.to(torch.bfloat16)
    assert vb.dtype == torch.bfloat16 and vb.encode(torch.zeros(1, 3, 1, 8, 8)).dtype == torch.float32


def test_config_errors():
    with pytest.raises(ConfigError):
        WanVAE(base_dim=4, attn_scales=(1.0,))
    with pytest.raises(ConfigError):
        WanVAE(base_dim=4, latents_mean=[0.0] * 4)
    with pytest.raises(ConfigError):
        WanVAE(base_dim=4, temperal_downsample=(True,))
    vae = _small_vae()
    for bad in [dict(tile_sample_min_height=60), dict(tile_sample_stride_width=0),
                dict(tile_sample_min_width=64, tile_sample_stride_width=72)]:  # fmt: skip
        with pytest.raises(ConfigError):
            vae.enable_tiling(**bad)
    assert not vae.tiling_enabled


# ----------------------------------------------------------------------------------------------------------------------
# tiling
# ----------------------------------------------------------------------------------------------------------------------


def _record_decoder_tile_sizes(vae):
    sizes = []
    handle = vae.model.decoder.register_forward_pre_hook(lambda mod, args: sizes.append(tuple(args[0].shape[-2:])))
    return sizes, handle


@needs_golden
def test_tiled_decode_without_overlap_is_exactly_the_stitched_tiles(tiny_vae):
    # tiles of 32 px (4 latents) with stride 32: no blending, so tiling must equal decoding each tile on its own
    # (checks tile placement, per-tile causal caches and stitching).
    z = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    tiny_vae.enable_tiling(32, 32, 32, 32)
    try:
        tiled = tiny_vae.decode(z)
    finally:
        tiny_vae.disable_tiling()
    crops = [[tiny_vae.decode(z[..., i : i + 4, j : j + 4]) for j in (0, 4)] for i in (0, 4)]
    stitched = torch.cat([torch.cat(row, dim=-1) for row in crops], dim=-2)
    torch.testing.assert_close(tiled, stitched, atol=1e-6, rtol=0)


@needs_golden
def test_tiled_vs_untiled_decode_and_encode(tiny_vae):
    """Tiled and untiled results agree within the measured tiling error (docs/vae.md).

    The tiny VAE has random (name-seeded) weights and global attention in its middle block, which makes it far more
    sensitive to tile borders than a trained VAE. Measured on this input (seed 0): decode |diff| mean 0.074,
    99th percentile 0.347, max 1.04 (outputs in [-1, 1], mean |x| 0.40; a wrongly stitched output differs by ~0.40
    on average); encode (normalised latents, mean |z| 0.34): |diff| mean 0.030, 99th percentile 0.152, max 0.357.
    Bounds below are those numbers with margin.
    """
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 16, 2, 12, 12, generator=gen)  # -> 5 x 96 x 96 video
    untiled = tiny_vae.decode(z)
    sizes, handle = _record_decoder_tile_sizes(tiny_vae)
    tiny_vae.enable_tiling(64, 64, 32, 32)  # tiles of 8x8 latents every 4 latents: 3 x 3 tiles, 32 px blends
    try:
        tiled = tiny_vae.decode(z)
    finally:
        tiny_vae.disable_tiling()
        handle.remove()
    assert set(sizes) == {(8, 8), (8, 4), (4, 8), (4, 4)} and len(sizes) == 9 * 2  # 9 tiles x 2 latent frames
    assert tiled.shape == untiled.shape
    d = (tiled - untiled).abs()
    assert d.max() > 1e-3  # tiling really happened
    assert d.mean() <= 0.12 and d.flatten().quantile(0.99) <= 0.55 and d.max() <= 1.4

    video = 2 * torch.rand(1, 3, 5, 96, 96, generator=gen) - 1
    untiled_z = tiny_vae.encode(video)
    tiny_vae.enable_tiling(64, 64, 32, 32)
    try:
        tiled_z = tiny_vae.encode(video)
    finally:
        tiny_vae.disable_tiling()
    d = (tiled_z - untiled_z).abs()
    assert tiled_z.shape == untiled_z.shape == (1, 16, 2, 12, 12)
    assert d.max() > 1e-3
    assert d.mean() <= 0.05 and d.flatten().quantile(0.99) <= 0.25 and d.max() <= 0.55


# ----------------------------------------------------------------------------------------------------------------------
# files and folders
# ----------------------------------------------------------------------------------------------------------------------


def _assert_same_weights(a: WanVAE, b: WanVAE) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


@needs_golden
def test_official_file_round_trip_pth_and_safetensors(tmp_path, tiny_official_sd, tiny_vae, golden_io):
    pth = tmp_path / "Wan2.1_VAE_tiny.pth"
    torch.save(dict(tiny_official_sd), pth)
    st = tmp_path / "Wan2.1_VAE_tiny.safetensors"
    save_file(dict(tiny_official_sd), str(st))
    for path in (pth, st):
        vae = WanVAE.from_official_file(path, **TINY_ARCH, **_tiny_stats())
        _assert_same_weights(vae, tiny_vae)
        assert not any(p.requires_grad for p in vae.parameters())
        _assert_golden(vae.encode(golden_io["video9"]), golden_io["latents9"], f"latents9 via {path.suffix}")
        # and back to official names
        back = vae.official_state_dict()
        assert back.keys() == tiny_official_sd.keys()
        assert all(torch.equal(back[k], tiny_official_sd[k]) for k in back)


def test_network_equals_diffusers_bit_for_bit(tmp_path):
    """Our plain-torch network against diffusers' AutoencoderKLWan 0.42.1 (its engine before): the same random init
    under one seed, and the same floats from encode and decode, untiled, tiled with blended seams, and sliced."""
    from diffusers import AutoencoderKLWan

    arch = dict(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True))
    stats = dict(latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    torch.manual_seed(0)
    ours = WanVAE(**arch, **stats)
    torch.manual_seed(0)
    theirs = AutoencoderKLWan(**{k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}, **stats,
                              attn_scales=[], scale_factor_spatial=4)
    sd = theirs.state_dict()
    assert set(sd) == set(ours.model.state_dict())
    assert all(torch.equal(v, ours.model.state_dict()[k]) for k, v in sd.items())  # the same random init
    with torch.no_grad():  # non-trivial norm gains and biases
        for v in ours.model.state_dict().values():
            v.add_(0.1 * torch.randn_like(v))
    theirs = _diffusers_twin(ours, tmp_path / "diffusers")  # our diffusers folder, loaded by diffusers
    gen = torch.Generator().manual_seed(1)
    video = torch.rand(2, 3, 9, 32, 48, generator=gen) * 2 - 1
    z = torch.randn(2, 4, 3, 8, 12, generator=gen)
    for tiles in (None, (16, 16, 8, 8)):
        if tiles:
            ours.enable_tiling(*tiles)
            theirs.enable_tiling(*tiles)
        with torch.no_grad():
            assert torch.equal(ours.encode_raw(video), theirs.encode(video).latent_dist.mean), tiles
            assert torch.equal(ours.decode(z, normalized=False), theirs.decode(z).sample), tiles
            assert torch.equal(ours.model.encode_moments(video), theirs._encode(video)), tiles
    ours.disable_tiling()
    ours.enable_slicing()
    theirs.disable_tiling()
    theirs.enable_slicing()
    with torch.no_grad():
        assert torch.equal(ours.decode(z, normalized=False), theirs.decode(z).sample)


def test_one_pass_over_the_clip_equals_the_official_chunks():
    """The chunked causal caches only bound memory: the whole clip through the encoder / decoder at once gives
    the same numbers (the module docstring's description of the time axis)."""
    torch.manual_seed(0)
    net = WanVAE(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True),
                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4).model
    video = torch.rand(1, 3, 13, 16, 16) * 2 - 1
    with torch.no_grad():
        moments = net.encode_moments(video)
        assert moments.shape[2] == 4  # 1 + 4k frames -> 1 + k latent frames
        torch.testing.assert_close(net.quant_conv(net.encoder(video)), moments, rtol=1e-4, atol=1e-5)
        z = moments[:, :4]
        frames = net.decode_latents(z, clamp=False)
        assert frames.shape[2] == 13
        torch.testing.assert_close(net.decoder(net.post_quant_conv(z)), frames, rtol=1e-4, atol=1e-5)


@needs_golden
def test_diffusers_folder_load(tmp_path, tiny_vae, golden_io):
    folder = tmp_path / "vae_diffusers"
    # diffusers' own writer (config.json + diffusion_pytorch_model.safetensors) of the VAE it loaded from ours
    _diffusers_twin(tiny_vae, tmp_path / "ours").save_pretrained(str(folder))
    _assert_same_weights(WanVAE.from_diffusers_folder(tmp_path / "ours"), tiny_vae)  # our writer round-trips too
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    vae = WanVAE.from_diffusers_folder(folder)
    _assert_same_weights(vae, tiny_vae)
    assert vae.config == tiny_vae.config  # incl. latents_mean/std from the diffusers config
    _assert_golden(vae.encode(golden_io["video5"]), golden_io["latents5"], "latents5 via diffusers folder")
    with pytest.raises(CheckpointError, match="from_diffusers_folder"):
        WanVAE.from_pretrained(folder)


@needs_golden
def test_our_folder_round_trip_is_lossless(tmp_path, tiny_vae, golden_io):
    folder = tmp_path / "vae"
    tiny_vae.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["base_dim"] == 8 and cfg["latents_mean"] == tiny_vae.config["latents_mean"]
    assert set(load_file(str(folder / "model.safetensors"))) == set(tiny_vae.model.state_dict())  # diffusers names
    vae = WanVAE.from_pretrained(folder)
    _assert_same_weights(vae, tiny_vae)
    assert vae.config == tiny_vae.config
    assert torch.equal(vae.decode(golden_io["latents9"]), tiny_vae.decode(golden_io["latents9"]))
    # a bf16 copy keeps its dtype through the round trip
    bf = WanVAE.from_pretrained(folder, dtype=torch.bfloat16)
    bf.save_pretrained(tmp_path / "vae_bf16")
    _assert_same_weights(WanVAE.from_pretrained(tmp_path / "vae_bf16"), bf)
    with pytest.raises(CheckpointError, match="from_pretrained"):
        WanVAE.from_diffusers_folder(folder)


# ----------------------------------------------------------------------------------------------------------------------
# strict loading
# ----------------------------------------------------------------------------------------------------------------------


@needs_golden
def test_strict_loading_missing_extra_and_shape(tiny_official_sd):
    sd = dict(tiny_official_sd)
    del sd["decoder.head.2.bias"]
    sd["encoder.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as ei:
        WanVAE.from_official_state_dict(sd, **TINY_ARCH)
    msg = _one_line(ei.value)
    assert "1 missing: decoder.head.2.bias" in msg and "1 unexpected: encoder.extra.weight" in msg

    # the tiny weights into the full-size architecture: every conv has the wrong shape
    with pytest.raises(CheckpointError) as ei:
        WanVAE.from_official_state_dict(tiny_official_sd)
    msg = _one_line(ei.value)
    assert "188 shape mismatches" in msg and "(checkpoint (8," in msg and "vs model (96," in msg

    # diffusers-named weights passed as official ones
    with pytest.raises(CheckpointError, match="from_diffusers_folder"):
        WanVAE.from_official_state_dict(WanVAE(**TINY_ARCH).model.state_dict(), **TINY_ARCH)


def test_checkpoint_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        WanVAE.from_official_file(tmp_path / "missing.pth")
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as ei:
        WanVAE.from_official_file(bad)
    _one_line(ei.value)
    with pytest.raises(CheckpointError, match="unsupported"):
        (tmp_path / "w.npz").write_bytes(b"")
        WanVAE.from_official_file(tmp_path / "w.npz")
    with pytest.raises(CheckpointError, match="not found"):
        WanVAE.from_pretrained(tmp_path / "nope")
    assert issubclass(CheckpointError, FlashI2VError) and issubclass(InputError, FlashI2VError)


def test_our_folder_with_missing_weight_fails(tmp_path):
    vae = WanVAE(base_dim=4)
    vae.save_pretrained(tmp_path / "v")
    sd = load_file(str(tmp_path / "v" / "model.safetensors"))
    del sd["post_quant_conv.weight"]
    save_file(sd, str(tmp_path / "v" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 missing: post_quant_conv.weight"):
        WanVAE.from_pretrained(tmp_path / "v")
