"""Loading and saving the DiT in every supported format.

Formats (:func:`load_transformer` detects them):

1. **Official single file** (``.safetensors`` or ``.pt``/``.pth``) with official Wan names: Wan2.1-T2V
   ``diffusion_pytorch_model.safetensors``, FlashI2V training checkpoints (``model_state_dict.pt``...).
2. **Diffusers folder** (``config.json`` of a ``WanTransformer3DModel`` + sharded safetensors + index), converted by
   the explicit key map in :mod:`flashi2v.weights.diffusers`.
3. **An image-to-video model from Wan2.1-T2V** (the paper's recipe): ``from_t2v=True`` loads a T2V checkpoint into a
   FlashI2V model (default) or, with ``model_type="i2v-concat-mask"`` / ``"i2v-concat-noise"``, into a
   channel-concatenation baseline. FlashI2V's branches keep their (zero-output) init; the concat models get the T2V
   patch embedding with the extra input channels zero-initialised. Either way the new model starts out computing
   exactly the T2V model, and the :class:`LoadReport` lists what was filled and what was initialised.
4. **MindSpeed-style names** (the released FlashI2V-1.3B, spec §9): renamed automatically by
   :mod:`flashi2v.weights.mindspeed` when recognised.
5. **Our model folder**: ``config.json`` + ``model.safetensors`` (:func:`save_transformer` / :func:`load_transformer`).

Loading is strict: missing keys, unexpected keys and shape mismatches raise one :class:`CheckpointError` listing
them. The model is built on the meta device and the checkpoint tensors are assigned, so nothing is ever left
uninitialised and no memory is spent on a throw-away init.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from ..config import MODEL_TYPES, TRANSFORMER_FOLDER_FORMAT, TransformerConfig, required_in_dim
from ..errors import CheckpointError, ConfigError
from ..models.flashi2v import FlashI2VTransformer, build_transformer
from ..models.wan import WanTransformer
from ..precision import apply_precision, parameter_dtype
from .io import aligned, atomic_directory, compare_keys, read_json_object, read_state_dict, save_safetensors
from .mindspeed import is_mindspeed, mindspeed_to_official

FOLDER_FORMAT = TRANSFORMER_FOLDER_FORMAT
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WAN_HEAD_DIM = 128  # every released Wan2.1 model uses 128-dim heads


@dataclass
class LoadReport:
    """What a load did: where from, which format, which keys were filled and which were initialised."""

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)
    renamed: int = 0
    padded: dict[str, int] = field(default_factory=dict)  # tensor -> input channels added (zero) to a T2V tensor

    def summary(self) -> str:
        s = f"loaded {len(self.loaded)} tensors from {self.source} ({self.format} format)"
        if self.renamed:
            s += f", {self.renamed} keys renamed"
        if self.initialized:
            prefixes = sorted({k.split(".")[0] for k in self.initialized})
            s += f"; initialised {len(self.initialized)} tensors ({', '.join(prefixes)})"
        for k, n in self.padded.items():
            s += f"; zero-initialised {n} extra input channels of {k}"
        return s


# ------------------------------------------------------------------------------------------- config inference
def infer_config(sd: Mapping[str, torch.Tensor], num_heads: int | None = None, **overrides) -> TransformerConfig:
    """Read the architecture off the tensor shapes of an official-names state dict.

    Heads cannot be read from shapes; they default to dim / 128 (true of every released Wan2.1 model). The model
    type is ``"flashi2v"`` if the FlashI2V branches are present, otherwise read off the patch embedding's input
    channels: out_dim -> ``"t2v"``, 2·out_dim + 4 -> ``"i2v-concat-mask"``, 2·out_dim -> ``"i2v-concat-noise"``.
    """
    if any(k.startswith("img_emb.") for k in sd):
        raise CheckpointError(
            "this looks like a Wan2.1-I2V checkpoint (CLIP image branch img_emb): not supported; the "
            "'i2v-concat-mask' model type is its channel-concatenation part without the CLIP image branch"
        )
    try:
        pe = sd["patch_embedding.weight"]
        dim, in_dim, *patch = pe.shape
        head_w = sd["head.head.weight"]
        layers = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
        kw = dict(
            dim=dim,
            in_dim=in_dim,
            patch_size=tuple(patch),
            out_dim=head_w.shape[0] // math.prod(patch),
            num_layers=len(layers),
            ffn_dim=sd["blocks.0.ffn.0.weight"].shape[0],
            text_dim=sd["text_embedding.0.weight"].shape[1],
            freq_dim=sd["time_embedding.0.weight"].shape[1],
            num_heads=num_heads if num_heads is not None else max(1, dim // WAN_HEAD_DIM),
            qk_norm="blocks.0.self_attn.norm_q.weight" in sd,
            cross_attn_norm="blocks.0.norm3.weight" in sd,
        )
        if "frame_embedding.weight" in sd:
            kw["frame_embedding"] = sd["frame_embedding.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"cannot infer the model config from the checkpoint (no {e}); pass a config") from None
    if layers != list(range(len(layers))):
        raise CheckpointError(f"checkpoint block indices are not contiguous: {layers[:5]}...")
    if "learnable_proj.proj.0.weight" in sd:
        kw["model_type"] = "flashi2v"
        kw["conv3x3x3_proj"] = sd["learnable_proj.proj.0.weight"].shape[2] == 3
    elif "model_type" not in overrides:
        by_in_dim = {required_in_dim(t, kw["out_dim"]): t for t in MODEL_TYPES if t != "flashi2v"}
        if kw["in_dim"] not in by_in_dim:
            known = ", ".join(f"{t} {n}" for n, t in by_in_dim.items())
            raise CheckpointError(
                f"patch_embedding has {kw['in_dim']} input channels for {kw['out_dim']} output channels, which fits "
                f"no model type ({known}); pass a config"
            )
        kw["model_type"] = by_in_dim[kw["in_dim"]]
    kw.update(overrides)
    return TransformerConfig(**kw)


# -------------------------------------------------------------------------------------------------- building
def model_from_state_dict(
    config: TransformerConfig,
    sd: Mapping[str, torch.Tensor],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    from_t2v: bool = False,
    source: str = "checkpoint",
    fmt: str = "official",
) -> tuple[WanTransformer, LoadReport]:
    """Build ``config``'s model on the meta device and assign ``sd`` (official names) to it, strictly.

    With ``from_t2v`` and a concat model type, a T2V ``patch_embedding.weight`` (out_dim input channels) is widened
    to in_dim input channels with zeros, so the model starts as the T2V model.
    """
    sd, padded = _pad_t2v_patch_embedding(config, sd, from_t2v, source)
    model = build_transformer(config, device="meta")
    shapes = {k: tuple(p.shape) for k, p in model.state_dict(keep_vars=True).items()}
    branch_prefixes = FlashI2VTransformer.FLASHI2V_PREFIXES if config.is_flashi2v else ()
    if config.is_flashi2v and not from_t2v and not any(k.startswith(branch_prefixes) for k in sd):
        raise CheckpointError(
            f"{source} has no FlashI2V branches (fourier_embedding, learnable_proj): it looks like a Wan2.1-T2V "
            "checkpoint; load it as a T2V model, or pass from_t2v=True to initialise the branches (training)"
        )
    allowed = compare_keys(shapes, sd, allow_missing=branch_prefixes if from_t2v else (), source=source)
    missing_prefixes = sorted({p for p in branch_prefixes for k in allowed if k.startswith(p)})
    for p in missing_prefixes:  # a branch is either complete in the checkpoint or absent
        partial = [k for k in shapes if k.startswith(p) and k in sd]
        if partial:
            raise CheckpointError(f"{source} has only part of the {p.rstrip('.')} branch ({', '.join(partial)})")
    tensors = {k: aligned(v.to(device=device, dtype=parameter_dtype(k, dtype))) for k, v in sd.items()}
    model.load_state_dict(tensors, strict=False, assign=True)
    for p in missing_prefixes:
        sub = model.get_submodule(p.rstrip("."))
        sub.to_empty(device=device)
        model.init_weights(sub)
    apply_precision(model, dtype)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # cannot happen after the checks above; never run with uninitialised memory
        raise CheckpointError(f"internal error: parameters left uninitialised: {leftover[:5]}")
    report = LoadReport(source=source, format=fmt, loaded=list(sd), initialized=sorted(allowed), padded=padded)
    return model, report


PATCH_EMBEDDING = "patch_embedding.weight"


def _pad_t2v_patch_embedding(config, sd, from_t2v, source):
    """For the concat types: widen a T2V patch embedding with zero input channels (from_t2v) or explain the error."""
    w = sd.get(PATCH_EMBEDDING)
    if not config.is_concat or w is None or w.ndim != 5 or w.shape[1] != config.out_dim or config.in_dim == w.shape[1]:
        return sd, {}
    if not from_t2v:
        raise CheckpointError(
            f"{source} has a {w.shape[1]}-channel patch embedding (a text-to-video checkpoint) but model_type "
            f"{config.model_type!r} needs {config.in_dim}; pass from_t2v=True to zero-initialise the extra channels"
        )
    extra = config.in_dim - w.shape[1]
    sd = dict(sd)
    sd[PATCH_EMBEDDING] = torch.cat([w, w.new_zeros((w.shape[0], extra, *w.shape[2:]))], dim=1)
    return sd, {PATCH_EMBEDDING: extra}


def init_from_t2v(
    t2v: WanTransformer,
    model_type: str = "flashi2v",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[WanTransformer, LoadReport]:
    """A new image-to-video model of ``model_type`` initialised from an in-memory T2V model (weights copied, not
    shared): FlashI2V branches zero-output, concat models' extra patch-embedding input channels zero. The result
    computes exactly what ``t2v`` computes (given the same state); returned in ``eval()`` mode."""
    if t2v.config.model_type != "t2v":
        raise ConfigError(f"init_from_t2v needs a 't2v' model, got {t2v.config.model_type!r}")
    p = next(t2v.parameters())
    sd = {k: v.detach().clone() for k, v in t2v.state_dict().items()}
    model, report = model_from_state_dict(
        t2v.config.with_model_type(model_type), sd, device or p.device, dtype or t2v.dtype, from_t2v=True,
        source="T2V model", fmt="model",
    )
    return model.eval(), report


# ---------------------------------------------------------------------------------------------------- loading
def _is_diffusers_config(cfg: Mapping) -> bool:
    return cfg.get("_class_name") == "WanTransformer3DModel" or "num_attention_heads" in cfg


def load_transformer(
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    config: TransformerConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    from_t2v: bool = False,
    num_heads: int | None = None,
    model_type: str | None = None,
) -> tuple[WanTransformer, LoadReport]:
    """Load a DiT from any supported format (see the module docstring). Returns ``(model, report)``.

    ``config`` is needed only for single files whose architecture you want to pin (otherwise it is inferred from
    the tensor shapes, with ``num_heads`` defaulting to dim/128). With ``from_t2v=True`` a Wan2.1-T2V checkpoint
    initialises a FlashI2V model (``config`` then defaults to the inferred T2V architecture as FlashI2V), or the
    image-to-video ``model_type`` given (``"i2v-concat-mask"``, ``"i2v-concat-noise"``). ``model_type`` turns any
    config (inferred, from a folder or passed) into that type with the same backbone (in_dim adjusted).
    The model is returned in ``eval()`` mode.
    """
    fmt = "official"
    if isinstance(source, Mapping):
        sd, src = dict(source), "state dict"
    else:
        path = Path(source)
        src = str(path)
        if path.is_dir():
            cfg_path = path / CONFIG_NAME
            if not cfg_path.is_file():
                raise CheckpointError(f"{path} is a folder without {CONFIG_NAME}; expected a model folder")
            raw = read_json_object(cfg_path)
            if _is_diffusers_config(raw):
                from .diffusers import load_diffusers_folder

                dcfg, sd = load_diffusers_folder(path)
                fmt = "diffusers"
                config = config or dcfg
            else:
                if raw.get("format") != FOLDER_FORMAT:
                    raise CheckpointError(f"{cfg_path} is neither a flashi2v transformer config nor a diffusers one")
                try:
                    config = config or TransformerConfig.from_saved_dict(raw)
                except ConfigError as e:
                    raise CheckpointError(f"{cfg_path}: {e}") from None
                sd = read_state_dict(path / WEIGHTS_NAME)
                fmt = "folder"
        else:
            sd = read_state_dict(path)
    renamed = 0
    if is_mindspeed(sd):
        new = mindspeed_to_official(sd)
        renamed = sum(1 for a, b in zip(sd, new) if a != b)
        sd, fmt = new, "mindspeed"
    if config is None:
        config = infer_config(sd, num_heads=num_heads)
        if from_t2v and not config.is_i2v and model_type is None:
            config = config.with_model_type("flashi2v")
    if model_type is not None and config.model_type != model_type:
        config = config.with_model_type(model_type)
    model, report = model_from_state_dict(config, sd, device, dtype, from_t2v=from_t2v, source=src, fmt=fmt)
    report.renamed = renamed
    return model.eval(), report


def save_transformer(model: WanTransformer, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write our model folder (``config.json`` + ``model.safetensors``) atomically; tensors keep their dtypes."""
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        cfg = {"format": FOLDER_FORMAT, "format_version": 1, **model.config.to_dict()}
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
        save_safetensors(model.state_dict(), tmp / WEIGHTS_NAME, metadata={"format": FOLDER_FORMAT})
    return Path(folder)
