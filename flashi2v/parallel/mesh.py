"""Process-group start-up, the typed parallel configuration and the named 3-D device mesh.

The world is laid out as a mesh with dims ``("dp_replicate", "dp_shard", "cp")`` (any of them may have size 1),
rank = (replicate_index * dp_shard + shard_index) * cp + cp_index, so the ranks of one CP group are neighbours
(on GPUs: the same node, where the all-to-alls are cheap). Three flattened dims are added for convenience:

* ``"dp"``          = (dp_replicate, dp_shard): the data-parallel ranks, the ones that load *different* samples;
* ``"dp_shard_cp"`` = (dp_shard, cp): the ranks FSDP shards parameters over (CP ranks hold shards too);
* ``"dp_cp"``       = all three: every rank (used to replicate parameters when ``fsdp=False``).

Get any of them with :func:`submesh` (``mesh["dp"]`` works too but is deprecated for flattened dims).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import ConfigError

MESH_DIMS = ("dp_replicate", "dp_shard", "cp")
FLATTENED = {"dp": ("dp_replicate", "dp_shard"), "dp_shard_cp": ("dp_shard", "cp"), "dp_cp": MESH_DIMS}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: global rank, world size, local rank (GPU index on its node) and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Backend: NCCL when CUDA is available (and ``cuda:LOCAL_RANK`` becomes the current device), gloo otherwise.
    Not launched by torchrun: nothing is initialised and rank 0 of a world of 1 is returned. A process group that
    already exists is reused.
    """
    cuda = torch.cuda.is_available()
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count()) if cuda else 0))
    elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    else:
        return DistInfo(0, 1, 0, torch.device("cuda", 0) if cuda else torch.device("cpu"))
    return DistInfo(rank, world, local, torch.device("cuda", local) if cuda else torch.device("cpu"))


@dataclass(frozen=True)
class ParallelConfig:
    """How to parallelise training. ``dp_shard=-1`` takes whatever the world leaves after dp_replicate and cp.

    * ``dp_replicate`` x ``dp_shard`` data-parallel ranks (HSDP when dp_replicate > 1), ``cp`` context-parallel ranks
      per data-parallel rank; the product must equal the world size.
    * ``param_dtype``: compute dtype of the large matrix products ("bf16" or "fp32"); master weights, optimizer state
      and the numerically sensitive parts (time embedding, modulation, norms, head, φ) stay fp32.
    * ``reduce_dtype``: dtype of the gradient reduction of the bf16 groups ("fp32" or "bf16").
    * ``fsdp=False`` replicates the parameters on every rank (DDP-like) instead of sharding them.
    """

    dp_replicate: int = 1
    dp_shard: int = -1
    cp: int = 1
    activation_checkpointing: bool = False
    param_dtype: str = "bf16"
    reduce_dtype: str = "fp32"
    compile: bool = False
    fsdp: bool = True

    def __post_init__(self) -> None:
        for name in ("dp_replicate", "cp"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"parallel.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.dp_shard, int) or (self.dp_shard < 1 and self.dp_shard != -1):
            raise ConfigError(f"parallel.dp_shard must be a positive integer or -1 (fill the world), got {self.dp_shard!r}")
        for name in ("param_dtype", "reduce_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"parallel.{name} must be one of {sorted(DTYPES)}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "ParallelConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown parallel options {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**d)

    def resolved(self, world_size: int) -> "ParallelConfig":
        """A copy with ``dp_shard`` filled in, checked against ``world_size``."""
        cfg = self
        if self.dp_shard == -1:
            rest = self.dp_replicate * self.cp
            if world_size % rest:
                raise ConfigError(
                    f"world size {world_size} is not divisible by dp_replicate {self.dp_replicate} x cp {self.cp}"
                )
            cfg = replace(self, dp_shard=world_size // rest)
        if cfg.dp_replicate * cfg.dp_shard * cfg.cp != world_size:
            raise ConfigError(
                f"dp_replicate {cfg.dp_replicate} x dp_shard {cfg.dp_shard} x cp {cfg.cp} = "
                f"{cfg.dp_replicate * cfg.dp_shard * cfg.cp} != world size {world_size}"
            )
        return cfg

    @property
    def torch_param_dtype(self) -> torch.dtype:
        return DTYPES[self.param_dtype]

    @property
    def torch_reduce_dtype(self) -> torch.dtype:
        return DTYPES[self.reduce_dtype]


def build_mesh(cfg: ParallelConfig, world_size: int, device_type: str = "cpu"):
    """The named mesh ``("dp_replicate", "dp_shard", "cp")`` (+ flattened "dp", "dp_shard_cp", "dp_cp").

    Collective: every rank must call it. In a process not launched by torchrun (``world_size == 1`` and no process
    group) a one-rank process group is created on an in-memory store, so FSDP's mixed precision works the same way
    on one device as on many.
    """
    from torch.distributed.device_mesh import init_device_mesh

    cfg = cfg.resolved(world_size)
    if not dist.is_initialized():
        if world_size != 1:
            raise ConfigError(f"world size {world_size} needs a process group: launch with torchrun and call init_distributed()")
        backend = "gloo" if device_type == "cpu" else "nccl"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    if dist.get_world_size() != world_size:
        raise ConfigError(f"world_size {world_size} != the process group's size {dist.get_world_size()}")
    mesh = init_device_mesh(device_type, (cfg.dp_replicate, cfg.dp_shard, cfg.cp), mesh_dim_names=MESH_DIMS)
    for name in FLATTENED:
        submesh(mesh, name)  # create the flattened groups now, on every rank
    return mesh


def submesh(mesh, name: str):
    """The 1-D mesh of one dim: one of :data:`MESH_DIMS` or a flattened one (:data:`FLATTENED`)."""
    return mesh[name] if name in MESH_DIMS else mesh[FLATTENED[name]]._flatten(name)  # _flatten is idempotent


def fsdp_mesh(mesh):
    """The mesh FSDP shards over: 1-D "dp_shard_cp", or 2-D ("dp_replicate", "dp_shard_cp") for HSDP."""
    from torch.distributed.device_mesh import DeviceMesh

    shard = submesh(mesh, "dp_shard_cp")
    return shard if mesh["dp_replicate"].size() == 1 else DeviceMesh._concatenate([mesh["dp_replicate"], shard])


# ------------------------------------------------------------------------------------- accessors (mesh may be None)
def dp_rank(mesh) -> int:
    """Index of this rank's data shard: ranks with different ``dp_rank`` load different samples."""
    return 0 if mesh is None else submesh(mesh, "dp").get_local_rank()


def dp_size(mesh) -> int:
    """Number of distinct data shards (dp_replicate x dp_shard)."""
    return 1 if mesh is None else submesh(mesh, "dp").size()


def cp_group(mesh) -> dist.ProcessGroup | None:
    """The context-parallel group of this rank (None without CP): its ranks load the same samples."""
    return None if mesh is None or mesh["cp"].size() == 1 else mesh["cp"].get_group()


def cp_rank(mesh) -> int:
    return 0 if mesh is None else mesh["cp"].get_local_rank()


def cp_size(mesh) -> int:
    return 1 if mesh is None else mesh["cp"].size()


def mesh_shape(mesh) -> dict[str, int]:
    """{"dp_replicate": r, "dp_shard": s, "cp": c} (all 1 without a mesh)."""
    return {name: (1 if mesh is None else mesh[name].size()) for name in MESH_DIMS}

