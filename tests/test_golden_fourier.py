"""Parity of the high-frequency extractor with the official one: every output and its cutoff radii (exact)."""

import json

import pytest
import torch

from conftest import assert_close_golden, golden_path, load_golden
from flashi2v.fourier import high_frequency_features

HFE_ATOL = 1e-6  # golden README: "HFE outputs should match to about 1e-6 (FFT libraries differ)"


@pytest.mark.parametrize("name", ["z_small", "z_480p", "z_odd"])
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_ratio_outputs_and_radii(name, ratio):
    g = load_golden("hfe", "hfe.safetensors")
    meta = json.loads(golden_path("hfe", "hfe.json").read_text())
    key = f"{name}_ratio{ratio}_abs"
    out = high_frequency_features(g[name], ratio=ratio)
    assert out.cutoff_radius.tolist() == meta[key]["cutoff_radius_per_sample"]  # exact
    assert_close_golden(out.features, g[key], atol=HFE_ATOL, rtol=1e-6, name=key)


def test_real_part_explicit_cutoff_and_ratio_range():
    g = load_golden("hfe", "hfe.safetensors")
    meta = json.loads(golden_path("hfe", "hfe.json").read_text())
    out = high_frequency_features(g["z_small"], ratio=0.5, return_abs=False)
    assert_close_golden(out.features, g["z_small_ratio0.5_real"], atol=HFE_ATOL, rtol=1e-6)
    out = high_frequency_features(g["z_small"], ratio=None, cutoff=2.5)
    assert out.cutoff_radius.tolist() == [2.5, 2.5]
    assert_close_golden(out.features, g["z_small_cutoff2.5_abs"], atol=HFE_ATOL, rtol=1e-6)
    torch.manual_seed(3)  # the official draws the per-sample ratio with torch.rand(B) from the global RNG
    out = high_frequency_features(g["z_small"], ratio=[0.05, 0.95])
    m = meta["z_small_ratiolist_seed3_abs"]
    torch.testing.assert_close(out.ratio, torch.tensor(m["ratios_drawn"]), atol=1e-6, rtol=0)
    assert out.cutoff_radius.tolist() == m["cutoff_radius_per_sample"]
    assert_close_golden(out.features, g["z_small_ratiolist_seed3_abs"], atol=HFE_ATOL, rtol=1e-6)


def test_time_axis_and_argument_errors():
    z = torch.randn(2, 16, 1, 8, 8)
    out = high_frequency_features(z, ratio=0.3)
    assert out.features.shape == z.shape
    with pytest.raises(ValueError):
        high_frequency_features(z, ratio=0.3, cutoff=1.0)
    with pytest.raises(ValueError):
        high_frequency_features(torch.randn(2, 16, 3, 8, 8))
    with pytest.raises(ValueError):
        high_frequency_features(z, ratio=(0.9, 0.1))


def test_ratio_extremes():
    z = torch.randn(1, 4, 8, 8)
    # ratio 0 keeps every frequency: the magnitude of the original signal
    torch.testing.assert_close(high_frequency_features(z, ratio=0.0).features, torch.sqrt(z**2 + 1e-12), atol=1e-5, rtol=0)
    # a radius beyond the corner removes everything: sqrt(1e-12)
    out = high_frequency_features(z, ratio=None, cutoff=100.0).features
    torch.testing.assert_close(out, torch.full_like(z, 1e-6))
