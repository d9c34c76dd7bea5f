"""Benchmarks. :mod:`flashi2v.bench.leakage`: conditional image leakage of the image-to-video paradigms on the
procedural world, in and out of domain (``flashi2v bench leakage``; ``docs/leakage_benchmark.md``).

The submodules are imported lazily (they pull in torch, the trainer and the world renderer).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "LeakageConfig": "flashi2v.bench.leakage",
    "EvalSettings": "flashi2v.bench.leakage",
    "GenerationSettings": "flashi2v.bench.leakage",
    "EvalClip": "flashi2v.bench.leakage",
    "ModelEvaluation": "flashi2v.bench.leakage",
    "PipelineModel": "flashi2v.bench.leakage",
    "run_leakage": "flashi2v.bench.leakage",
    "load_eval_clips": "flashi2v.bench.leakage",
    "evaluate_model": "flashi2v.bench.leakage",
    "evaluate_clip": "flashi2v.bench.leakage",
    "summarize": "flashi2v.bench.leakage",
    "static_model": "flashi2v.bench.leakage",
    "oracle_model": "flashi2v.bench.leakage",
    "vae_roundtrip_model": "flashi2v.bench.leakage",
    "image_reliance": "flashi2v.bench.reliance",
    "reliance_from_cache": "flashi2v.bench.reliance",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flashi2v.bench' has no attribute {name!r}")
