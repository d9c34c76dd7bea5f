"""Precision policy.

CPU: everything float32 (the golden parity tests run this way).

GPU (documented bf16 policy): the large matrix products run in bf16 (attention projections, FFN, text embedding,
patch and Fourier embeddings), while these stay in float32 — like the original Wan2.1, and unlike the official
FlashI2V GPU path, which runs the time embedding and modulation in bf16 (spec §1.5, §12.6):

* time embedding and time projection, every ``modulation`` table, the head (its modulation and output linear);
* all norms (LayerNorm with affine ``norm3``, qk RMSNorm weights) — norms always *compute* in float32;
* the learnable projection φ (its output is subtracted from the float32 ODE state);
* RoPE is applied in float32 for half-precision inputs (float64 for float32 inputs);
* the residual stream between blocks is float32, and the sampler's ODE state is float32.

Use :func:`apply_precision` (or ``load_transformer(..., dtype=torch.bfloat16)``) rather than ``model.to(bf16)``.
"""

from __future__ import annotations

import contextlib
import re

import torch
import torch.nn as nn

# Parameter names (official Wan naming) kept in float32 under a half-precision policy.
FP32_PARAMETER_PATTERN = re.compile(
    r"^(time_embedding\.|time_projection\.|head\.|learnable_proj\.)"
    r"|(^|\.)modulation$"
    r"|\.norm(_q|_k|1|2|3)?\.(weight|bias)$"
)


def keeps_fp32(name: str) -> bool:
    """True if the parameter ``name`` stays float32 under the bf16 policy."""
    return bool(FP32_PARAMETER_PATTERN.search(name))


def parameter_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The storage dtype of parameter ``name`` when the model's compute dtype is ``dtype``."""
    return torch.float32 if (dtype != torch.float32 and keeps_fp32(name)) else dtype


def apply_precision(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast ``model`` in place to the policy for compute dtype ``dtype`` (float32, bfloat16 or float16)."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"unsupported model dtype {dtype}; use float32, bfloat16 or float16")
    for name, p in model.named_parameters():
        target = parameter_dtype(name, dtype)
        if p.dtype != target:
            p.data = p.data.to(target)
    return model


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device (None or "auto": CUDA when available, else the CPU); a one-line InputError for a
    name torch does not know or a CUDA device this machine does not have."""
    from .errors import InputError

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {str(device)!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r}: no CUDA device is available on this machine; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``"auto"``/None -> bf16 on CUDA, float32 on CPU; accepts "fp32", "bf16", "fp16" and torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(names)}")
    return names[dtype]


@contextlib.contextmanager
def full_fp32_matmul():
    """Float32 matrix products and convolutions at full precision (no TF32) inside the block, whatever the global
    switches say (a trainer with ``parallel.tf32`` turns them on for the DiT); restored on exit. The text encoders run
    under it, so text states do not depend on which process made them: a latent cache encoded by ``flashi2v data
    encode`` is reproduced by the trainer's reliance probe (``log.probe_swap_words``), which re-encodes its captions
    after TF32 was switched on."""
    cuda_matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = cuda_matmul, cudnn
