"""Parity of the DiT with the official code: forward, every recorded intermediate, RoPE tables and rope_apply."""

import torch

from conftest import assert_close_golden, load_golden
from flashi2v.models.rope import rope_apply, rope_table
from flashi2v.models.wan import sinusoidal_embedding


def _capture(model):
    inter, handles = {}, []

    def out_hook(name):
        return lambda mod, inp, out: inter.__setitem__(name, out)

    def in_hook(name):
        return lambda mod, inp: inter.__setitem__(name, inp[0])

    for name in ("patch_embedding", "fourier_embedding", "text_embedding", "head"):
        handles.append(getattr(model, name).register_forward_hook(out_hook(f"inter.{name}")))
    for i, block in enumerate(model.blocks):
        handles.append(block.register_forward_hook(out_hook(f"inter.blocks.{i}")))
    for sub in ("self_attn", "cross_attn", "ffn"):
        m = getattr(model.blocks[0], sub)
        handles.append(m.register_forward_pre_hook(in_hook(f"inter.blocks.0.{sub}.input")))
        handles.append(m.register_forward_hook(out_hook(f"inter.blocks.0.{sub}.output")))
    return inter, handles


def test_tiny_forward_and_every_intermediate(tiny_model):
    g = load_golden("tiny_dit", "forward.safetensors")
    inter, handles = _capture(tiny_model)
    with torch.no_grad():
        out = tiny_model(g["x"], g["t"], g["context"], fourier_features=g["fourier_features"])
        e, e0 = tiny_model.embed_time(g["t"])
    for h in handles:
        h.remove()
    assert out.dtype == torch.float32
    inter["output"] = out
    inter["inter.time_embedding"] = e
    inter["inter.time_projection"] = e0.flatten(1)
    expected = [k for k in g if k == "output" or k.startswith("inter.")]
    assert len(expected) == 15  # output + 14 intermediates
    for k in expected:
        assert_close_golden(inter[k], g[k], name=k)


def test_sinusoidal_time_embedding_f64():
    g = load_golden("tiny_dit", "forward.safetensors")
    s = sinusoidal_embedding(g["t"], 256)
    assert s.dtype == torch.float64
    torch.testing.assert_close(s, g["sinusoidal_t_f64"], atol=1e-12, rtol=0)


def test_rope_tables_and_apply():
    g = load_golden("tiny_dit", "rope.safetensors")
    for d in (16, 128):
        table = torch.view_as_real(rope_table(d))
        assert torch.equal(table, g[f"freqs_headdim{d}_real_imag"]), f"RoPE table d={d}"
        grid = tuple(g[f"grid_headdim{d}"][0].tolist())
        out = rope_apply(g[f"q_headdim{d}"], grid)
        assert out.dtype == torch.float32
        assert_close_golden(out, g[f"q_headdim{d}_roped"], atol=1e-6, rtol=1e-6, name=f"rope d={d}")


def test_rope_passes_extra_tokens_through():
    q = torch.randn(1, 10, 2, 16)
    out = rope_apply(q, (1, 2, 4))  # 8 tokens on the grid, 2 padding tokens
    assert torch.equal(out[:, 8:], q[:, 8:])
    assert not torch.allclose(out[:, 1:8], q[:, 1:8])
