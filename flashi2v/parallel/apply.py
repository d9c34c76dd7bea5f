"""``parallelize(model, mesh, cfg)``: everything that makes one DiT train on many devices, in one place.

Order (each step only sees the model as the previous one left it):

1. activation checkpointing — ``model.gradient_checkpointing``: every block is recomputed in backward;
2. ``torch.compile`` of each block, in place (parameter names unchanged);
3. context parallelism — ``model.enable_context_parallel(cp group)`` (Ulysses, see :mod:`.context_parallel`);
4. FSDP2: ``fully_shard`` on the bf16 groups and the fp32 groups of each block, then on the embeddings, φ and the
   root, over the (dp_shard x cp) ranks (HSDP over (dp_replicate, dp_shard x cp) when dp_replicate > 1), with
   fp32 master weights and the gradient rule "SUM over CP, AVERAGE over data parallel".

Precision groups (one FSDP unit each; master weights are fp32 everywhere):

==========================================================  ==============  ======================================
unit                                                        compute dtype   parameters
==========================================================  ==============  ======================================
``blocks.i.self_attn.{q,k,v,o}`` (one unit)                  param_dtype     attention projections
``blocks.i.cross_attn.{q,k,v,o}`` (one unit)                 param_dtype     attention projections
``blocks.i.ffn``                                             param_dtype     FFN
``blocks.i`` (the rest of the block)                         fp32            ``modulation``, ``norm3``, q/k RMSNorms
``patch_embedding``, ``fourier_embedding``, ``text_embedding`` param_dtype   embeddings
``learnable_proj`` (φ, called outside forward)               fp32            φ
root (the rest)                                              fp32            time embedding/projection, ``head``
==========================================================  ==============  ======================================

The param_dtype units cast their floating inputs to param_dtype; the fp32 units and the root cast nothing, so the
latents, σ and the ODE state stay fp32 (the official code casts the root's inputs to bf16, spec §12.5).
"""

from __future__ import annotations

import warnings
from functools import partial

import torch
import torch.nn as nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from ..errors import ConfigError
from .mesh import ParallelConfig, cp_group, cp_size, dp_size, fsdp_mesh, submesh

# FSDP2 warns once per module type when a unit's forward returns a view (nn.Linear on [B, L, D] inputs does); our
# model never modifies those outputs in place, which is what the warning is about.
warnings.filterwarnings("ignore", message=r".*FSDP2-wrapped module.*returned a view tensor.*")


def parallelize(model: nn.Module, mesh, cfg: ParallelConfig) -> nn.Module:
    """Apply activation checkpointing, compile, context parallelism and FSDP2 to a Wan/FlashI2V DiT, in place.

    ``mesh`` comes from :func:`flashi2v.parallel.build_mesh` (every rank calls this with the same arguments).
    ``mesh=None`` applies only steps 1-2 (a plain single-device model; needs ``param_dtype="fp32"``). Build the
    optimizer *after* this call: FSDP replaces the parameters by sharded fp32 DTensors.
    """
    if mesh is None and cfg.param_dtype != "fp32":
        raise ConfigError(
            f"param_dtype {cfg.param_dtype!r} needs a device mesh (FSDP mixed precision keeps fp32 master weights); "
            "pass build_mesh(...) or use param_dtype='fp32'"
        )
    if mesh is not None and cp_size(mesh) != cfg.cp:
        raise ConfigError(f"parallel.cp {cfg.cp} != the mesh's cp size {cp_size(mesh)}")

    # 1. Activation checkpointing: recompute each block in backward (no wrapper module, so state-dict keys stay).
    model.gradient_checkpointing = cfg.activation_checkpointing

    # 2. torch.compile each block in place (Module.compile keeps parameter names, unlike torch.compile(module)).
    if cfg.compile:
        for block in model.blocks:
            block.compile()

    # 3. Context parallelism: split the token sequence over the "cp" mesh dim (raises if heads % cp != 0).
    model.enable_context_parallel(cp_group(mesh))

    # 4. FSDP2 (or replication with fsdp=False), bottom-up: blocks, embeddings, φ, then the root.
    if mesh is not None:
        compute = MixedPrecisionPolicy(param_dtype=cfg.torch_param_dtype, reduce_dtype=cfg.torch_reduce_dtype)
        fp32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32, cast_forward_inputs=False)
        shard = _shard_fn(mesh, cfg)
        for block in model.blocks:
            for attn in (block.self_attn, block.cross_attn):
                shard([attn.q, attn.k, attn.v, attn.o], mp_policy=compute)  # the q/k RMSNorms stay fp32 (below)
            shard(block.ffn, mp_policy=compute)
            shard(block, mp_policy=fp32)  # modulation, norm3, q/k RMSNorms
        for name in ("patch_embedding", "fourier_embedding", "text_embedding"):
            if hasattr(model, name):
                shard(getattr(model, name), mp_policy=compute)
        if hasattr(model, "learnable_proj"):
            shard(model.learnable_proj, mp_policy=fp32)  # own unit: project_first_frame runs outside forward
        shard(model, mp_policy=fp32)  # root: time embedding/projection, head; its inputs are not cast

        # Gradients: FSDP sums over all dp x cp ranks; dividing by the data-parallel size only gives
        # "SUM over CP (each rank holds its tokens' share), AVERAGE over data parallel".
        # gloo has no pre-multiplied SUM, so on CPU the division follows a plain SUM reduce-scatter (not with a
        # single shard rank: torch then skips the reduce-scatter and already divides before the all-reduce).
        force_sum = mesh.device_type == "cpu" and cfg.fsdp and submesh(mesh, "dp_shard_cp").size() > 1
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_gradient_divide_factor(float(dp_size(mesh)))
                module.set_force_sum_reduction_for_comms(force_sum)
        # FSDP makes the first unit to run its root, but φ runs (project_first_frame) before the model's forward:
        # let the real root initialise first (idempotent, so only the first call does anything).
        if hasattr(model, "learnable_proj"):
            root = model._get_fsdp_state()
            model.learnable_proj.register_forward_pre_hook(lambda *_: root._lazy_init(), prepend=True)
    return model


def _shard_fn(mesh, cfg: ParallelConfig):
    """``fully_shard`` over the dp_shard x cp ranks (HSDP if dp_replicate > 1), or ``replicate`` when fsdp=False."""
    if not cfg.fsdp:
        from torch.distributed._composable.replicate_with_fsdp import replicate

        return partial(replicate, mesh=submesh(mesh, "dp_cp"))
    return partial(fully_shard, mesh=fsdp_mesh(mesh))
