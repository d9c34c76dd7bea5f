"""Exponential moving average of the trainable parameters, kept in float32 and sharded like them.

Under FSDP2 the parameters are sharded DTensors; ``clone()`` keeps the sharding, so each rank holds only its shard
of the shadow copy and the update is purely local (no communication). Update rule (the official one, no warm-up):
shadow <- shadow - (1 - decay) * (shadow - param).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a view of its storage), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999):
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] = {
            n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        shadows = [local(s) for s in self.shadow.values()]
        values = [local(params[n].detach()).float() for n in self.shadow]
        torch._foreach_lerp_(shadows, values, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(sd))
        if missing:
            raise KeyError(f"EMA state is missing {len(missing)} parameters, e.g. {missing[:3]}")
        for n, s in self.shadow.items():
            local(s).copy_(local(sd[n]))

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for n, s in self.shadow.items():
            local(params[n]).copy_(local(s))

    @contextmanager
    def swapped_in(self, model: nn.Module):
        """Temporarily give ``model`` the EMA weights (e.g. to sample with them), restoring the raw ones after."""
        params = dict(model.named_parameters())
        backup = {n: local(params[n]).detach().clone() for n in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, b in backup.items():
                    local(params[n]).copy_(b)
