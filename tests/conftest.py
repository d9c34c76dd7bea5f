"""Shared fixtures. Golden data is read from ../shared/golden (beside the repository), never copied into it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("FLASHI2V_GOLDEN", REPO.parent / "shared" / "golden"))

torch.set_num_threads(2)  # the golden data was produced with 2 threads (bit-identical runs)


def golden_path(*parts: str) -> Path:
    p = GOLDEN.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"golden data not found at {p} (set FLASHI2V_GOLDEN)")
    return p


def load_golden(*parts: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(golden_path(*parts)))


def assert_close_golden(actual: torch.Tensor, ref: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4, name: str = ""):
    """The golden README's acceptance rule: elementwise |actual - ref| <= atol + rtol * |ref|."""
    assert actual.shape == ref.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
    diff = (actual.detach().to(ref.dtype) - ref).abs()
    bound = atol + rtol * ref.abs()
    bad = diff > bound
    assert not bad.any(), f"{name}: {int(bad.sum())} elements out of tolerance, max |diff| {diff.max().item():.3g}"


@pytest.fixture(scope="session")
def tiny_config():
    from flashi2v.config import TransformerConfig

    cfg = json.loads(golden_path("tiny_dit", "config.json").read_text())
    assert tuple(cfg.pop("window_size")) == (-1, -1)
    return TransformerConfig(**cfg, model_type="flashi2v")


@pytest.fixture()
def tiny_model(tiny_config):
    """The golden tiny FlashI2V DiT (dim 64, 2 layers) with the golden name-seeded weights, in eval mode."""
    from flashi2v.models import FlashI2VTransformer

    model = FlashI2VTransformer(tiny_config)
    model.load_state_dict(load_golden("tiny_dit", "weights.safetensors"), strict=True)
    return model.eval()


def small_config(**kw):
    """A small random config for tests that do not need golden weights."""
    from flashi2v.config import TransformerConfig

    base = dict(dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32, text_len=16, model_type="flashi2v")
    base.update(kw)
    return TransformerConfig(**base)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with seeded random values (so zero-initialised branches are exercised too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel() if p.ndim > 1 else 1) ** 0.5 * (0.1 if p.ndim == 1 else 1))
    return model


def make_tiny_t5_tokenizer(folder):
    """A 64-piece Unigram tokenizer with T5 conventions (<pad>=0, </s>=1, <unk>=2, EOS appended), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    letters = list("abcdefghijklmnopqrstuvwxyz")
    words = [
        "▁a", "▁the", "▁cat", "▁dog", "▁on", "▁in", "▁is", "▁runs", "▁running", "▁beach", "▁red", "▁blue",
        "▁sky", "▁of", "▁and", "▁with", "ing", "er", "ed", "s", "▁,", "▁.", ",", ".", "▁A", "▁The", "▁big",
        "▁small", "▁sea", "▁sun", "▁car", "▁man", "▁woman", "▁tree",
    ]  # fmt: skip
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [(c, -4.0) for c in letters] + [(w, -2.0) for w in words]
    assert len(vocab) == 64
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return folder


def load_example(name: str):
    """Import ``examples/<name>.py`` (not a package) as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
