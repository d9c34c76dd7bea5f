"""Distributed training of the DiT, torchtitan style: a named device mesh and one ``parallelize()``.

* :mod:`.mesh`             — ``init_distributed()``, :class:`ParallelConfig`, ``build_mesh()`` and rank accessors
* :mod:`.context_parallel` — the Ulysses collectives used inside the model when context parallelism is on
* :mod:`.apply`            — ``parallelize(model, mesh, cfg)``: checkpointing -> compile -> CP -> FSDP2
* :mod:`.state_dict`       — full (unsharded, fp32) state dicts for export and loading

Typical use (launch with ``torchrun --nproc-per-node N train.py``)::

    info = init_distributed()
    cfg = ParallelConfig(cp=2, activation_checkpointing=True)
    mesh = build_mesh(cfg, info.world_size, info.device.type)
    model = parallelize(model, mesh, cfg)           # then build the optimizer
    # rank dp_rank(mesh) of dp_size(mesh) loads its own samples; CP peers load the same ones

See docs/parallel.md. Only :mod:`.context_parallel` is imported eagerly (the model uses it); the rest loads on first
use so that ``import flashi2v`` stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "init_distributed": "mesh", "DistInfo": "mesh", "ParallelConfig": "mesh", "build_mesh": "mesh",
    "MESH_DIMS": "mesh", "dp_rank": "mesh", "dp_size": "mesh", "cp_group": "mesh", "cp_rank": "mesh",
    "cp_size": "mesh", "mesh_shape": "mesh", "submesh": "mesh", "fsdp_mesh": "mesh",
    "parallelize": "apply",
    "full_state_dict": "state_dict", "load_full_state_dict": "state_dict",
}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
