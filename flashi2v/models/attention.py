"""Every attention call of the DiT goes through :func:`attention`.

Backends: PyTorch ``scaled_dot_product_attention`` (default; works on CPU and GPU), FlashAttention-3
(``flash_attn_interface``) and FlashAttention-2 (``flash_attn``), used automatically on CUDA with half-precision
inputs when installed. Nothing here depends on flash-attn being present.

Select explicitly with :func:`set_attention_backend` or the ``FLASHI2V_ATTENTION`` environment variable
(``auto`` | ``sdpa`` | ``flash2`` | ``flash3``).
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..errors import ConfigError

BACKENDS = ("auto", "sdpa", "flash2", "flash3")
_backend = os.environ.get("FLASHI2V_ATTENTION", "auto")


@lru_cache(maxsize=None)
def _flash_fn(version: int):
    """The flash-attn ``flash_attn_func`` of the given major version, or None when not installed."""
    module = "flash_attn_interface" if version == 3 else "flash_attn"
    try:
        return importlib.import_module(module).flash_attn_func
    except Exception:  # ImportError, or a broken CUDA extension
        return None


def set_attention_backend(name: str) -> None:
    """Choose the attention kernel for every later call (``auto``, ``sdpa``, ``flash2`` or ``flash3``)."""
    global _backend
    if name not in BACKENDS:
        raise ConfigError(f"unknown attention backend {name!r}; choose one of {BACKENDS}")
    if name in ("flash2", "flash3") and _flash_fn(int(name[-1])) is None:
        raise ConfigError(f"attention backend {name!r} needs the flash-attn package ({'flash_attn_interface' if name == 'flash3' else 'flash_attn'}), which is not installed")
    _backend = name


def get_attention_backend() -> str:
    return _backend


def _resolve(q: torch.Tensor) -> str:
    if _backend != "auto":
        return _backend
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        if _flash_fn(3) is not None and torch.cuda.get_device_capability(q.device)[0] >= 9:
            return "flash3"
        if _flash_fn(2) is not None:
            return "flash2"
    return "sdpa"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Full (non-causal, unmasked) multi-head attention with scale 1/sqrt(d).

    q: [B, Lq, H, d], k/v: [B, Lk, H, d] -> [B, Lq, H, d] in the dtype of ``v``.
    """
    dtype = v.dtype
    q, k = q.to(dtype), k.to(dtype)
    backend = _resolve(q)
    if backend in ("flash2", "flash3") and q.is_cuda and dtype in (torch.float16, torch.bfloat16):
        out = _flash_fn(int(backend[-1]))(q, k, v)
        return (out[0] if isinstance(out, tuple) else out).to(dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
