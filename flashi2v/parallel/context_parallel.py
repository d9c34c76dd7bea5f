"""Ulysses context parallelism (CP): the three collectives the DiT needs when its tokens are split over a CP group.

With CP size ``cp`` every rank of the group receives the *same* inputs and computes the patch embedding of the full
latent; then

1. :func:`split_sequence` keeps this rank's contiguous chunk of the token sequence [B, L, D] -> [B, Lp/cp, D]
   (zero-padded to ``Lp``, the next multiple of ``cp``; no communication);
2. inside self-attention, :func:`sequence_to_heads` (all-to-all) turns local tokens x all heads [.., Lp/cp, H, d]
   into all tokens x local heads [.., Lp, H/cp, d]; the padding is sliced off, RoPE + attention run on the full
   sequence for this rank's heads, the padding is put back and :func:`heads_to_sequence` returns to local tokens;
3. :func:`gather_sequence` (all-gather) rebuilds the full sequence after the head, on every rank.

Everything else (time embedding, modulation, norms, cross-attention to the replicated text, FFN, head) is per token.

Gradients: every CP rank computes the same full output and therefore the same loss. The backward of
:func:`gather_sequence` returns only this rank's slice of the output gradient (it does *not* sum over ranks), so each
rank's parameter gradients are the contribution of its own tokens, and the full gradient is their SUM over the CP
group (FSDP in :func:`flashi2v.parallel.parallelize` does this; see docs/parallel.md).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def group_size(group: dist.ProcessGroup | None) -> int:
    return 1 if group is None else dist.get_world_size(group)


def _all_to_all(x: torch.Tensor, group: dist.ProcessGroup, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    """Chunk ``x`` along ``scatter_dim``, send chunk j to rank j, concatenate what arrives along ``gather_dim``."""
    inputs = [c.contiguous() for c in x.chunk(dist.get_world_size(group), dim=scatter_dim)]
    outputs = [torch.empty_like(c) for c in inputs]
    dist.all_to_all(outputs, inputs, group=group)
    return torch.cat(outputs, dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    """Autograd-aware all-to-all; its backward is the inverse all-to-all (scatter and gather dims swapped)."""

    @staticmethod
    def forward(ctx, x, group, scatter_dim, gather_dim):
        ctx.group, ctx.scatter_dim, ctx.gather_dim = group, scatter_dim, gather_dim
        return _all_to_all(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad):
        return _all_to_all(grad, ctx.group, ctx.gather_dim, ctx.scatter_dim), None, None, None


def sequence_to_heads(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """[..., L/cp, H, d] (local tokens, all heads) -> [..., L, H/cp, d] (all tokens, this rank's heads)."""
    return _AllToAll.apply(x, group, -2, -3)


def heads_to_sequence(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Inverse of :func:`sequence_to_heads`: [..., L, H/cp, d] -> [..., L/cp, H, d]."""
    return _AllToAll.apply(x, group, -3, -2)


def pad_sequence(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 1 of ``x`` [B, L, ...] to ``length``."""
    pad = [0, 0] * (x.ndim - 2) + [0, length - x.shape[1]]
    return F.pad(x, pad) if length > x.shape[1] else x


def split_sequence(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """This rank's contiguous chunk of dim 1 of ``x`` [B, L, ...], after zero-padding L to a multiple of the group
    size. Backward: the gradient is placed in the chunk and zero elsewhere (no communication)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    local = -(-x.shape[1] // world)
    return pad_sequence(x, local * world).narrow(1, rank * local, local)


class _GatherSequence(torch.autograd.Function):
    """All-gather along dim 1. Backward returns this rank's slice of the gradient only (no reduction), because every
    rank of the group computes the same loss from the same gathered output."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group, ctx.local = group, x.shape[1]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad):
        rank = dist.get_rank(ctx.group)
        return grad.narrow(1, rank * ctx.local, ctx.local).contiguous(), None


def gather_sequence(x: torch.Tensor, group: dist.ProcessGroup, length: int) -> torch.Tensor:
    """The full sequence [B, length, ...] from every rank's chunk [B, Lp/cp, ...] (the padding is dropped)."""
    return _GatherSequence.apply(x, group)[:, :length]
