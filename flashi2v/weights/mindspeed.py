"""Key map for MindSpeed-MM style FlashI2V checkpoints (the released ``yunyangge/FlashI2V-1.3B``, spec §9).

The released FlashI2V-1.3B was published with the NPU (MindSpeed-MM) branch, whose DiT names differ from the
official Wan names this package uses. The real file could not be inspected offline, so this map is the spec's best
reconstruction; it is applied automatically when a state dict contains MindSpeed-style names, and the strict key
check after renaming will list anything it does not cover.

| MindSpeed name                                   | official / flashi2v name                    |
|--------------------------------------------------|---------------------------------------------|
| ``blocks.N.{self,cross}_attn.proj_{q,k,v}``      | ``blocks.N.{self,cross}_attn.{q,k,v}``      |
| ``blocks.N.{self,cross}_attn.proj_out``          | ``blocks.N.{self,cross}_attn.o``            |
| ``blocks.N.{self,cross}_attn.{q,k}_norm``        | ``blocks.N.{self,cross}_attn.norm_{q,k}``   |
| ``text_embedding.linear_{1,2}``                  | ``text_embedding.{0,2}``                    |
| ``learnable_proj.{0,2}``                         | ``learnable_proj.proj.{0,2}``               |

That model also uses a 3x3x3 learnable projection (``conv3x3x3_proj=True``), which the config inference in
:func:`flashi2v.weights.transformer.infer_config` picks up from the kernel shape.
"""

from __future__ import annotations

import re

import torch

# (pattern, replacement), applied in order to each key.
MINDSPEED_TO_OFFICIAL: list[tuple[str, str]] = [
    (r"^(blocks\.\d+\.(?:self|cross)_attn)\.proj_([qkv])\.", r"\1.\2."),
    (r"^(blocks\.\d+\.(?:self|cross)_attn)\.proj_out\.", r"\1.o."),
    (r"^(blocks\.\d+\.(?:self|cross)_attn)\.([qk])_norm\.", r"\1.norm_\2."),
    (r"^text_embedding\.linear_1\.", r"text_embedding.0."),
    (r"^text_embedding\.linear_2\.", r"text_embedding.2."),
    (r"^learnable_proj\.([02])\.", r"learnable_proj.proj.\1."),
]

_SIGNATURES = (
    re.compile(r"^blocks\.\d+\.(self|cross)_attn\.(proj_[qkv]|proj_out|[qk]_norm)\."),
    re.compile(r"^text_embedding\.linear_[12]\."),
    re.compile(r"^learnable_proj\.[02]\."),
)


def is_mindspeed(keys) -> bool:
    """True if any key has a MindSpeed-only name."""
    return any(sig.search(k) for k in keys for sig in _SIGNATURES)


def rename_key(key: str) -> str:
    for pattern, repl in MINDSPEED_TO_OFFICIAL:
        key = re.sub(pattern, repl, key)
    return key


def mindspeed_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        new = rename_key(k)
        if new in out:
            from ..errors import CheckpointError

            raise CheckpointError(f"MindSpeed rename maps two keys onto {new!r}; the checkpoint has duplicate names")
        out[new] = v
    return out


def official_to_mindspeed(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse map (used by tests to write synthetic MindSpeed-style checkpoints, and for export)."""
    inverse = [
        (r"^(blocks\.\d+\.(?:self|cross)_attn)\.([qkv])\.", r"\1.proj_\2."),
        (r"^(blocks\.\d+\.(?:self|cross)_attn)\.o\.", r"\1.proj_out."),
        (r"^(blocks\.\d+\.(?:self|cross)_attn)\.norm_([qk])\.", r"\1.\2_norm."),
        (r"^text_embedding\.0\.", r"text_embedding.linear_1."),
        (r"^text_embedding\.2\.", r"text_embedding.linear_2."),
        (r"^learnable_proj\.proj\.([02])\.", r"learnable_proj.\1."),
    ]
    out = {}
    for k, v in sd.items():
        for pattern, repl in inverse:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out
