"""``flashi2v export``: turn a training run's checkpoint into a model folder (EMA or raw weights, LoRA merged).

Works in one process whatever the training world size (DCP reshards the sharded checkpoint into full tensors).
With a pipeline folder (the run's ``model.pipeline`` or ``--pipeline``) the result is a complete model folder
(transformer + that folder's VAE and text encoder, ready for ``flashi2v generate``); otherwise a transformer folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from ..config import TransformerConfig
from ..errors import CheckpointError, InputError
from ..weights.io import atomic_directory, check_output_path, read_json_object
from .checkpoint import COMPLETE, list_checkpoints, quiet_single_process, verify
from .config import TrainConfig

MODEL_CONFIG_NAME = "model_config.json"


def find_run(path: str | Path, step: Optional[int] = None) -> tuple[Path, Path]:
    """(run output dir, checkpoint dir) for a run folder (newest complete checkpoint, or ``step``) or a step dir."""
    path = Path(path)
    if (path / COMPLETE).is_file():
        run, ckpt = path.parents[1], path
    else:
        run = path
        if not (run / "config.yaml").is_file():
            raise InputError(f"{run} is not a training run (no config.yaml) nor a checkpoint (no {COMPLETE})")
        found = list_checkpoints(run)
        if step is not None:
            found = [(s, p) for s, p in found if s == step]
        if not found:
            raise InputError(f"no complete checkpoint{f' for step {step}' if step is not None else ''} in {run}")
        ckpt = found[0][1]
    problem = verify(ckpt)
    if problem:
        raise CheckpointError(f"checkpoint {ckpt} is damaged: {problem}")
    return run, ckpt


def load_trained_model(run: Path, ckpt: Path, weights: str = "ema"):
    """The trained DiT (float32, CPU) from ``ckpt``; ``weights``: ``ema`` or ``raw``. LoRA adapters are merged."""
    import torch.distributed.checkpoint as dcp

    from ..models.flashi2v import build_transformer
    from .lora import add_lora, merge_lora
    from .trainer import freeze

    if weights not in ("ema", "raw"):
        raise InputError(f"weights must be 'ema' or 'raw', got {weights!r}")
    cfg = TrainConfig.from_yaml(run / "config.yaml")
    config = TransformerConfig.from_dict(read_json_object(run / MODEL_CONFIG_NAME))
    model = build_transformer(config, device="cpu")
    freeze(model, cfg.model.freeze)  # as the trainer does; frozen parameters have no EMA and keep their raw values
    if cfg.lora.enabled:
        add_lora(model, cfg.lora)
    state = {"model": model.state_dict()}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if weights == "ema":
        if not cfg.ema.enabled:
            raise InputError(f"the run {run} trained without EMA (ema.enabled false); export with --weights raw")
        state["ema"] = {n: torch.empty_like(p, dtype=torch.float32) for n, p in trainable.items()}
    with quiet_single_process():
        dcp.load(state, checkpoint_id=str(ckpt))
    model.load_state_dict(state["model"])
    if weights == "ema":
        with torch.no_grad():
            for n, p in trainable.items():
                p.copy_(state["ema"][n])
    if cfg.lora.enabled:
        merge_lora(model)
    return model.eval(), cfg


def export(run_or_checkpoint: str | Path, output: str | Path, *, weights: str = "ema", step: Optional[int] = None,
           pipeline: Optional[str] = None, overwrite: bool = False) -> Path:
    from ..weights.transformer import save_transformer

    run, ckpt = find_run(run_or_checkpoint, step)
    output = Path(output)
    if output.exists() and not overwrite:
        raise InputError(f"{output} already exists; pass --overwrite or choose another --output")
    check_output_path(output)
    model, cfg = load_trained_model(run, ckpt, weights)
    src = pipeline or cfg.model.pipeline
    if not src:
        return save_transformer(model, output, overwrite=overwrite)
    src = Path(src)
    index_path = src / "model_index.json"
    if not index_path.is_file():
        raise InputError(f"pipeline folder {src} has no model_index.json; pass --pipeline with a model folder")
    index = read_json_object(index_path)
    parts = {part: src / index.get(part, part) for part in ("vae", "text_encoder")}
    _check_parts_fit(model.config, parts, src)
    with atomic_directory(output, overwrite=overwrite) as tmp:
        save_transformer(model, tmp / "transformer")
        for part, folder in parts.items():
            shutil.copytree(folder, tmp / part)
        index.update(model_type=model.config.model_type, transformer="transformer", vae="vae",
                     text_encoder="text_encoder",
                     trained=dict(run=str(run.resolve()), checkpoint=ckpt.name, weights=weights))
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return output


def _check_parts_fit(config: TransformerConfig, parts: dict, src: Path) -> None:
    """Refuse (one line, before anything is written) a pipeline folder whose VAE or text encoder is missing or does
    not fit the trained transformer, as ``FlashI2VPipeline`` would when the exported folder is loaded."""
    for part, folder in parts.items():
        if not folder.is_dir():
            raise InputError(f"pipeline folder {src} has no {part} folder ({folder}); pass --pipeline with a complete "
                             "model folder")
    text_dim = read_json_object(parts["text_encoder"] / "config.json").get("dim")
    if text_dim is not None and text_dim != config.text_dim:
        raise InputError(f"the text encoder of {src} gives {text_dim}-d states but the trained transformer expects "
                         f"text_dim {config.text_dim}; pass --pipeline with the model folder the run trained with")
    z_dim = read_json_object(parts["vae"] / "config.json").get("z_dim")
    if z_dim is not None and z_dim != config.latent_channels:
        raise InputError(f"the VAE of {src} makes {z_dim}-channel latents but the trained transformer works on "
                         f"{config.latent_channels}; pass --pipeline with the model folder the run trained with")
