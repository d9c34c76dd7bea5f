"""Gradient clipping, including the official adaptive clipper with a *correct* gradient norm.

The adaptive rule (official ``AdaptiveGradClipper``): the first call sets the moving average to ``max_norm`` and the
variance to 0; every call clips at ``threshold = avg + num_std * sqrt(var)``; when the measured norm is at most the
threshold the statistics are updated (avg <- d*avg + (1-d)*norm, then var <- d*var + (1-d)*(avg - norm)^2), so
spikes never move the threshold. The official code computes the norm of FSDP2 DTensor gradients (already global)
and then sums it again over the shard group, inflating it by sqrt(fsdp_size) (spec §12.4). Here the norm comes from
``torch.nn.utils.get_total_norm`` once; DTensor norms are materialised with ``full_tensor()``, which is the global
norm whatever the mesh — the same number a single process would compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def total_grad_norm(params) -> torch.Tensor:
    """The global L2 norm of the gradients of ``params`` (a float32 scalar; DTensors reduced over their mesh)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False, foreach=None)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm.float()


@dataclass
class ClipResult:
    norm: float  # the true gradient norm before clipping
    threshold: float  # inf when nothing is clipped
    clipped: bool
    finite: bool


class GradClipper:
    """``mode``: ``adaptive`` (above), ``fixed`` (clip at ``max_norm``) or ``none`` (measure only)."""

    def __init__(self, mode: str = "adaptive", max_norm: float = 1.0, ema_decay: float = 0.99, num_std: float = 3.0):
        if mode not in ("adaptive", "fixed", "none"):
            raise ValueError(f"mode must be adaptive, fixed or none, got {mode!r}")
        self.mode, self.max_norm, self.ema_decay, self.num_std = mode, float(max_norm), float(ema_decay), float(num_std)
        self.avg = float(max_norm)
        self.var = 0.0
        self.initialized = False
        self.num_clipped = 0
        self.num_nonfinite = 0

    def threshold(self) -> float:
        if self.mode == "none":
            return math.inf
        if self.mode == "fixed":
            return self.max_norm
        return self.avg + self.num_std * math.sqrt(max(self.var, 0.0))

    @torch.no_grad()
    def __call__(self, params) -> ClipResult:
        params = [p for p in params if p.grad is not None]
        if self.mode == "adaptive" and not self.initialized:
            self.avg, self.var, self.initialized = self.max_norm, 0.0, True
        norm = float(total_grad_norm(params))
        if not math.isfinite(norm):
            self.num_nonfinite += 1
            return ClipResult(norm, self.threshold(), False, False)
        threshold = self.threshold()
        clipped = norm > threshold
        if clipped:
            coef = threshold / (norm + 1e-6)
            grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in params]
            torch._foreach_mul_(grads, coef)
            self.num_clipped += 1
        elif self.mode == "adaptive":
            d = self.ema_decay
            self.avg = d * self.avg + (1 - d) * norm
            self.var = d * self.var + (1 - d) * (self.avg - norm) ** 2
        return ClipResult(norm, threshold, clipped, True)

    def state_dict(self) -> dict:
        return dict(mode=self.mode, max_norm=self.max_norm, ema_decay=self.ema_decay, num_std=self.num_std,
                    avg=self.avg, var=self.var, initialized=self.initialized, num_clipped=self.num_clipped,
                    num_nonfinite=self.num_nonfinite)

    def load_state_dict(self, sd: dict) -> None:
        for k in ("avg", "var", "initialized", "num_clipped", "num_nonfinite"):
            setattr(self, k, sd[k])
