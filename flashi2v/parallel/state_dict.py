"""Full (unsharded) state dicts of a parallelized model, for export and for loading pretrained weights.

Both functions are collective (every rank calls them) and also accept a plain, non-distributed model. The keys are
those of the plain model: FSDP, activation checkpointing and per-block compile do not rename parameters.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn


def _distributed(model: nn.Module) -> bool:
    return dist.is_available() and dist.is_initialized() and any(
        isinstance(p, torch.distributed.tensor.DTensor) for p in model.parameters()
    )


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Rank 0: every parameter and buffer, unsharded, float32, on the CPU; other ranks: ``{}``."""
    if _distributed(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = model.state_dict()
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu() for k, v in sd.items()}


def load_full_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load a complete state dict into a (parallelized) model. Only rank 0's ``state_dict`` is read; the other
    ranks may pass ``{}``. Values are cast to each parameter's dtype."""
    if not _distributed(model):
        model.load_state_dict(state_dict, strict=strict)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=strict)
    set_model_state_dict(model, dict(state_dict), options=options)  # a copy: it replaces the dict's values
