"""Distributed generation: ``torchrun --nproc-per-node N -m flashi2v.cli generate ... [--cp C] [--shard]``.

The world is a mesh (dp_shard = N / C, cp = C):

* **data parallel** — the videos to make (prompts × ``--batch``) are dealt round-robin to the N / C data-parallel
  ranks; each video keeps its single-process seed, so the results are those of one process.
* **context parallel** — the C ranks of a CP group make the same video together, each holding 1/C of its tokens
  (Ulysses all-to-all inside self-attention; see :mod:`.context_parallel`).
* **sharding** (``--shard``) — the DiT is FSDP2-sharded over all ranks (``parallelize``) and the text encoder's
  blocks too, for models that do not fit one device (the official 1.3B inference runs fsdp 4 × cp 2). All ranks of
  an FSDP group must run the same number of forwards, so data-parallel ranks with fewer videos run padding
  videos whose results are discarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from .mesh import ParallelConfig, build_mesh, cp_group, cp_rank, dp_rank, dp_size, init_distributed


@dataclass
class InferenceLayout:
    rank: int = 0
    world_size: int = 1
    dp_rank: int = 0
    dp_size: int = 1
    cp_rank: int = 0
    sharded: bool = False
    device: torch.device = torch.device("cpu")
    mesh: Any = None  # the DeviceMesh (None in one process)
    config: Optional[ParallelConfig] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def writes(self) -> bool:
        """Whether this rank writes the videos it makes (one rank per CP group)."""
        return self.cp_rank == 0

    def assign(self, num_items: int) -> list[int | None]:
        """This rank's items, round-robin; ``None`` entries pad to the busiest rank's count when sharded."""
        mine: list[int | None] = list(range(self.dp_rank, num_items, self.dp_size))
        if self.sharded:
            rounds = -(-num_items // self.dp_size)
            mine += [None] * (rounds - len(mine))
        return mine

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def launched_distributed() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (dist.is_available() and dist.is_initialized()
                                                           and dist.get_world_size() > 1)


def init_inference(cp: int = 1, shard: bool = False) -> InferenceLayout:
    """Join the torchrun process group (if any) and describe this rank's share of the work."""
    info = init_distributed()
    if info.world_size == 1:
        if cp > 1:
            from ..errors import InputError

            raise InputError(f"--cp {cp} needs {cp} processes: launch with torchrun --nproc-per-node {cp} (or more)")
        return InferenceLayout(device=info.device)
    cfg = ParallelConfig(cp=cp, param_dtype="fp32")
    mesh = build_mesh(cfg, info.world_size, info.device.type)
    return InferenceLayout(info.rank, info.world_size, dp_rank(mesh), dp_size(mesh), cp_rank(mesh), shard,
                           info.device, mesh, cfg)


def distribute_pipeline(pipe, layout: InferenceLayout) -> None:
    """Turn on context parallelism (and FSDP sharding with ``layout.sharded``) for ``pipe``'s DiT and text encoder."""
    if layout.world_size == 1:
        return
    from dataclasses import replace

    transformer = pipe.transformer
    if layout.sharded:
        from .apply import parallelize

        dtype = "bf16" if transformer.dtype == torch.bfloat16 else "fp32"
        parallelize(transformer, layout.mesh, replace(layout.config, param_dtype=dtype))
        shard_text_encoder(pipe.text_encoder, layout.mesh)
    else:
        transformer.enable_context_parallel(cp_group(layout.mesh))


def shard_text_encoder(text_encoder, mesh) -> None:
    """FSDP2-shard each transformer block of the text encoder (then its root) over all ranks; no mixed precision
    (the encoder keeps its stored dtype, as officially)."""
    from torch.distributed.fsdp import fully_shard

    from .mesh import submesh

    module = getattr(text_encoder, "model", None) or text_encoder
    shard_mesh = submesh(mesh, "dp_cp")
    lists = [m for m in module.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if lists:  # the block stack: the module list holding the most parameters (not a list nested in a block)
        blocks = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))
        for block in blocks:
            fully_shard(block, mesh=shard_mesh)
    fully_shard(module, mesh=shard_mesh)
