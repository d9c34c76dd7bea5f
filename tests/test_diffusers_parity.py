"""Parity with a second, independent implementation: diffusers' ``WanTransformer3DModel`` (diffusers 0.42.1).

A tiny diffusers model with random weights is saved *sharded*, loaded with :func:`load_diffusers_folder` into our
:class:`WanTransformer`, and both are run on the same inputs. Our reference is the official Wan code (verified by the
golden data elsewhere); diffusers differs from it in exactly one documented place:

* the 256-d sinusoidal timestep embedding is computed in **float32** by diffusers
  (``embeddings.get_timestep_embedding``: exponent, ``t * freq`` and sin/cos all fp32) but in **float64** by the
  official code (and ours). The angles reach ~1000 rad, so diffusers' sinusoid is off by up to ~1e-4 absolute at
  t ~ 1000, which moves the model output by ~2e-5 (> the fp32 tolerance used here). It is exact at t = 0 and
  negligible for small t.

The parity test therefore (a) replaces diffusers' ``timesteps_proj`` by the official float64 sinusoid and requires
agreement within |d| <= 1e-5 + 1e-4 |ref| at realistic timesteps, (b) requires the same tolerance *without* any patch
at small timesteps, and (c) checks the sinusoid difference itself (same convention: cos first, 10000^(-j/128)).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import WanTransformer3DModel  # noqa: E402
from diffusers.models.embeddings import Timesteps  # noqa: E402

from flashi2v.config import preset  # noqa: E402
from flashi2v.errors import CheckpointError, ConfigError  # noqa: E402
from flashi2v.models.wan import WanTransformer, sinusoidal_embedding  # noqa: E402
from flashi2v.weights.diffusers import (  # noqa: E402
    KEY_RULES,
    config_from_diffusers,
    config_to_diffusers,
    diffusers_to_official,
    load_diffusers_folder,
    official_to_diffusers,
)

MANIFEST = Path("/work/shared/golden/manifests/wan_t2v_1_3b.tsv")

TINY = dict(
    patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, in_channels=16, out_channels=16, text_dim=32,
    freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
)
WAN_1_3B_DIFFUSERS = dict(  # transformer/config.json of Wan-AI/Wan2.1-T2V-1.3B-Diffusers
    _class_name="WanTransformer3DModel", added_kv_proj_dim=None, attention_head_dim=128, cross_attn_norm=True,
    eps=1e-6, ffn_dim=8960, freq_dim=256, image_dim=None, in_channels=16, num_attention_heads=12, num_layers=30,
    out_channels=16, patch_size=[1, 2, 2], qk_norm="rms_norm_across_heads", rope_max_seq_len=1024, text_dim=4096,
)


def _tol_ratio(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / (1e-5 + 1e-4 |ref|); <= 1 means within tolerance."""
    return ((out.double() - ref.double()).abs() / (1e-5 + 1e-4 * ref.double().abs())).max().item()


def _official_sinusoid(freq_dim: int):
    return lambda timesteps: sinusoidal_embedding(timesteps, freq_dim).float()


@torch.no_grad()
def _fill_(model: torch.nn.Module, seed: int = 1) -> None:
    """Seeded random values for every parameter (none left at a zero/one init): scaled like a trained model."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=g)
        if ".norm" in name:  # RMSNorm / affine LayerNorm weights and biases
            p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * r)
        elif "scale_shift_table" in name:
            p.copy_(r / p.shape[-1] ** 0.5)
        elif p.ndim == 1:  # biases
            p.copy_(0.1 * r)
        else:  # weights: unit-variance outputs
            p.copy_(r / math.prod(p.shape[1:]) ** 0.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(diffusers model, sharded folder) for the tiny config."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(**TINY).eval()
    _fill_(model)
    assert all(p.count_nonzero() == p.numel() and p.std() > 0 for p in model.parameters())
    folder = tmp_path_factory.mktemp("wan_diffusers_sharded")
    model.save_pretrained(folder, max_shard_size="60KB")
    return model, folder


def _inputs(seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 3, 6, 10, generator=g)  # grid (3, 3, 5): distinct frame / row / column extents
    context = torch.randn(2, 7, 32, generator=g)
    return x, context


# ------------------------------------------------------------------------------------------------- key map
@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"golden manifest {MANIFEST} not available")
def test_key_map_full_size_matches_official_manifest():
    """Every diffusers 1.3B tensor maps onto the official 1.3B manifest, names and shapes, 825/825."""
    with torch.device("meta"):
        model = WanTransformer3DModel(**{k: v for k, v in WAN_1_3B_DIFFUSERS.items() if not k.startswith("_")})
    d_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = diffusers_to_official(d_shapes)
    with MANIFEST.open() as f:
        manifest = {r["name"]: tuple(int(s) for s in r["shape"].split(",")) for r in csv.DictReader(f, delimiter="\t")}
    assert len(manifest) == 825
    assert mapped == manifest
    # and back: the official names produce exactly diffusers' names
    assert official_to_diffusers(manifest) == d_shapes
    # every rule is used at full size (no dead rule hiding a typo)
    for rule in KEY_RULES:
        pattern = re.escape(rule.official).replace(r"\{i\}", r"\d+").replace(r"\{p\}", "(weight|bias)")
        assert any(re.fullmatch(pattern, k) for k in manifest), rule


def test_config_from_diffusers_1_3b():
    cfg = config_from_diffusers(WAN_1_3B_DIFFUSERS)
    ref = preset("wan2.1-t2v-1.3b")
    assert cfg.to_dict() == ref.to_dict()
    assert config_from_diffusers({**config_to_diffusers(cfg), "_class_name": "WanTransformer3DModel"}) == cfg


def test_round_trip(tiny):
    model, _ = tiny
    sd = model.state_dict()
    back = official_to_diffusers(diffusers_to_official(sd))
    assert list(back) == list(sd)
    assert all(back[k] is sd[k] for k in sd)
    off = diffusers_to_official(sd)
    assert diffusers_to_official(official_to_diffusers(off)) == off


def test_unknown_keys_are_errors(tiny):
    model, _ = tiny
    sd = dict(model.state_dict())
    sd["blocks.0.attn2.add_k_proj.weight"] = torch.zeros(1)  # Wan-I2V image cross-attention
    sd["condition_embedder.image_embedder.norm1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"2 key\(s\).*add_k_proj.*image_embedder"):
        diffusers_to_official(sd)
    off = diffusers_to_official(model.state_dict())
    off["fourier_embedding.0.weight"] = torch.zeros(1)  # FlashI2V branch: no diffusers counterpart
    with pytest.raises(CheckpointError, match="fourier_embedding"):
        official_to_diffusers(off)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(image_dim=1280, added_kv_proj_dim=1536), "Wan-I2V"),
        (dict(added_kv_proj_dim=1536), "Wan-I2V"),
        (dict(pos_embed_seq_len=514), "Wan-I2V"),
        (dict(qk_norm="rms_norm"), "qk_norm"),
        (dict(qk_norm=None), "qk_norm"),
        (dict(_class_name="WanVACETransformer3DModel"), "WanVACETransformer3DModel"),
        (dict(vace_layers=[0, 2]), "unknown keys"),
        (dict(window_size=[256, 256]), "global attention"),
    ],
)
def test_config_rejections(change, match):
    with pytest.raises(ConfigError, match=match):
        config_from_diffusers({**WAN_1_3B_DIFFUSERS, **change})


# ------------------------------------------------------------------------------------------------- loading
def test_sharded_folder_loads(tiny):
    model, folder = tiny
    assert (folder / "diffusion_pytorch_model.safetensors.index.json").is_file()
    shards = sorted(folder.glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) >= 3
    cfg, sd = load_diffusers_folder(folder)
    assert cfg.model_type == "t2v" and (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.text_dim) == (64, 4, 2, 32)
    ref = diffusers_to_official(model.state_dict())
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)


def test_folder_errors(tiny, tmp_path):
    _, folder = tiny
    with pytest.raises(CheckpointError, match="not found"):
        load_diffusers_folder(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_diffusers_folder(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    victim = sorted(broken.glob("diffusion_pytorch_model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"missing.*{victim.name}") as e:
        load_diffusers_folder(broken)
    assert "\n" not in str(e.value)
    (broken / "diffusion_pytorch_model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match="no diffusion_pytorch_model.safetensors"):
        load_diffusers_folder(broken)


def test_single_file_pipeline_root_and_shape_check(tiny, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path / "transformer")  # one file, under a pipeline-style root
    cfg, sd = load_diffusers_folder(tmp_path)
    assert len(sd) == len(model.state_dict())
    cfg_path = tmp_path / "transformer" / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg_json, "ffn_dim": 96}))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        load_diffusers_folder(tmp_path)


# ------------------------------------------------------------------------------------------------- parity
def _ours(folder) -> WanTransformer:
    cfg, sd = load_diffusers_folder(folder)
    ours = WanTransformer(cfg)
    ours.load_state_dict(sd, strict=True)
    return ours.eval()


@torch.no_grad()
def test_parity_with_diffusers_official_sinusoid(tiny, monkeypatch):
    """Same output as diffusers (fp32 tolerance) once both use the official float64 timestep sinusoid."""
    model, folder = tiny
    ours = _ours(folder)
    monkeypatch.setattr(model.condition_embedder.timesteps_proj, "forward", _official_sinusoid(TINY["freq_dim"]))
    x, context = _inputs()
    worst = 0.0
    for t in ([999.0, 500.0], [987.654, 12.5], [250.0, 1000.0]):
        t = torch.tensor(t)
        ref = model(x, t, context, return_dict=False)[0]
        out = ours(x, t, context)
        assert out.dtype == ref.dtype == torch.float32 and out.shape == ref.shape == x.shape
        worst = max(worst, _tol_ratio(out, ref))
    assert worst <= 1.0, worst


@torch.no_grad()
def test_parity_with_unpatched_diffusers_small_t(tiny):
    """No patch at all: identical within fp32 tolerance where diffusers' fp32 sinusoid is exact (small t)."""
    model, folder = tiny
    ours = _ours(folder)
    x, context = _inputs(3)
    for t in ([0.0, 0.0], [1.0, 3.0]):
        t = torch.tensor(t)
        assert _tol_ratio(ours(x, t, context), model(x, t, context, return_dict=False)[0]) <= 1.0


def test_timestep_sinusoid_difference_is_fp32_rounding_only():
    """Same convention (cos first, freq 10000^(-j/128)); the only difference is diffusers' fp32 arithmetic."""
    t = torch.tensor([0.0, 1.0, 37.5, 500.0, 999.0, 1000.0])
    theirs = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)(t).double()
    ours = sinusoidal_embedding(t, 256)
    diff = (theirs - ours).abs().max(dim=1).values
    assert diff[0] == 0 and diff[1] < 1e-6  # t = 0 exact; t = 1 round-off
    assert diff.max() < 2e-4  # t ~ 1000: ~6e-5 rad of fp32 angle error, a convention mismatch would give O(1)
