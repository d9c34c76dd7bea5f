"""Conversion between diffusers' ``WanTransformer3DModel`` checkpoints and the official Wan2.1 parameter names.

Our :class:`flashi2v.models.wan.WanTransformer` uses the official ``WanModel`` names (``blocks.N.self_attn.q``...).
Hugging Face ships the Wan2.1 T2V models also as *diffusers* folders (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``,
``transformer/config.json`` + ``diffusion_pytorch_model*.safetensors``). This module renames those tensors
(no value changes: every shape is identical on both sides, see :data:`KEY_RULES`) and translates the config.

The map was checked against the diffusers 0.42.1 source (``models/transformers/transformer_wan.py``) and its own
official -> diffusers converter (``loaders/single_file_utils.convert_wan_transformer_to_diffusers``); it is also
tested at full 1.3B size (every diffusers name + shape maps onto ``golden/manifests/wan_t2v_1_3b.tsv``, 825 tensors).

Naming traps, diffusers -> official:

* diffusers ``blocks.N.norm2`` is the *affine* LayerNorm before cross-attention = official ``norm3``; diffusers
  ``norm1`` / ``norm3`` (pre-self-attention / pre-FFN) are the non-affine official ``norm1`` / ``norm2`` and have no
  parameters, so they never appear in a state dict.
* ``scale_shift_table`` is the adaLN ``modulation``: ``[1, 6, D]`` in every block, ``[1, 2, D]`` at the top level
  (= ``head.modulation``). Same chunk order (shift, scale, gate, c_shift, c_scale, c_gate) on both sides.
* ``condition_embedder.*`` holds the time MLP (``time_embedder.linear_{1,2}``), the 6-way projection
  (``time_proj``, applied after a SiLU like official ``time_projection = SiLU, Linear``) and the text MLP
  (``text_embedder.linear_{1,2}``, GELU-tanh between).
* ``proj_out`` is the output linear ``head.head``; ``norm_out`` is the non-affine head LayerNorm.

Wan-I2V (CLIP image cross-attention: ``add_k_proj``, ``norm_added_k``, ``condition_embedder.image_embedder``),
VACE, Animate and Wan2.2 models are different architectures: their keys are not in the map and are rejected with a
:class:`~flashi2v.errors.CheckpointError` (never silently dropped), and their configs with a
:class:`~flashi2v.errors.ConfigError`.

Numerical note (see ``tests/test_diffusers_parity.py``): diffusers computes the 256-d sinusoidal timestep embedding in
float32 while the official code (and ours) uses float64, so the two models differ by ~1e-5 relative at t ~ 1000
(angles up to 1000 rad lose ~6e-5 rad in fp32). With identical timestep sinusoids the two agree to fp32 round-off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..config import TransformerConfig
from ..errors import CheckpointError, ConfigError
from .io import read_json_object, read_safetensors

__all__ = [
    "KEY_RULES",
    "diffusers_to_official",
    "official_to_diffusers",
    "config_from_diffusers",
    "config_to_diffusers",
    "load_diffusers_folder",
]


# ---------------------------------------------------------------------------------------------------- key map
@dataclass(frozen=True)
class KeyRule:
    """One renaming rule. ``{i}`` = block index, ``{p}`` = ``weight`` | ``bias``; both sides use the same fields."""

    diffusers: str
    official: str
    note: str


KEY_RULES: tuple[KeyRule, ...] = (
    # --- embeddings ------------------------------------------------------------------------------------------------
    KeyRule("patch_embedding.{p}", "patch_embedding.{p}",
            "Conv3d(in, D, kernel=stride=patch): same module, same name"),
    KeyRule("condition_embedder.time_embedder.linear_1.{p}", "time_embedding.0.{p}",
            "TimestepEmbedding.linear_1 = Linear(freq_dim, D), first layer of time MLP (SiLU follows)"),
    KeyRule("condition_embedder.time_embedder.linear_2.{p}", "time_embedding.2.{p}",
            "TimestepEmbedding.linear_2 = Linear(D, D) -> e"),
    KeyRule("condition_embedder.time_proj.{p}", "time_projection.1.{p}",
            "Linear(D, 6D) applied to SiLU(e) -> e0 (official time_projection = Sequential(SiLU, Linear))"),
    KeyRule("condition_embedder.text_embedder.linear_1.{p}", "text_embedding.0.{p}",
            "PixArtAlphaTextProjection.linear_1 = Linear(text_dim, D) (GELU-tanh follows)"),
    KeyRule("condition_embedder.text_embedder.linear_2.{p}", "text_embedding.2.{p}",
            "PixArtAlphaTextProjection.linear_2 = Linear(D, D)"),
    # --- transformer blocks ------------------------------------------------------------------------------------------
    KeyRule("blocks.{i}.scale_shift_table", "blocks.{i}.modulation",
            "adaLN table [1, 6, D], same shape and chunk order"),
    KeyRule("blocks.{i}.attn1.to_q.{p}", "blocks.{i}.self_attn.q.{p}", "self-attention query projection"),
    KeyRule("blocks.{i}.attn1.to_k.{p}", "blocks.{i}.self_attn.k.{p}", "self-attention key projection"),
    KeyRule("blocks.{i}.attn1.to_v.{p}", "blocks.{i}.self_attn.v.{p}", "self-attention value projection"),
    KeyRule("blocks.{i}.attn1.to_out.0.{p}", "blocks.{i}.self_attn.o.{p}",
            "self-attention output projection (to_out.1 is a parameter-free Dropout)"),
    KeyRule("blocks.{i}.attn1.norm_q.weight", "blocks.{i}.self_attn.norm_q.weight",
            "RMSNorm over all heads jointly (qk_norm='rms_norm_across_heads')"),
    KeyRule("blocks.{i}.attn1.norm_k.weight", "blocks.{i}.self_attn.norm_k.weight", "RMSNorm over all heads"),
    KeyRule("blocks.{i}.norm2.{p}", "blocks.{i}.norm3.{p}",
            "SWAPPED NAME: diffusers norm2 = affine LayerNorm before cross-attention = official norm3"),
    KeyRule("blocks.{i}.attn2.to_q.{p}", "blocks.{i}.cross_attn.q.{p}", "cross-attention query projection"),
    KeyRule("blocks.{i}.attn2.to_k.{p}", "blocks.{i}.cross_attn.k.{p}", "cross-attention key projection (text)"),
    KeyRule("blocks.{i}.attn2.to_v.{p}", "blocks.{i}.cross_attn.v.{p}", "cross-attention value projection (text)"),
    KeyRule("blocks.{i}.attn2.to_out.0.{p}", "blocks.{i}.cross_attn.o.{p}", "cross-attention output projection"),
    KeyRule("blocks.{i}.attn2.norm_q.weight", "blocks.{i}.cross_attn.norm_q.weight", "RMSNorm over all heads"),
    KeyRule("blocks.{i}.attn2.norm_k.weight", "blocks.{i}.cross_attn.norm_k.weight", "RMSNorm over all heads"),
    KeyRule("blocks.{i}.ffn.net.0.proj.{p}", "blocks.{i}.ffn.0.{p}",
            "FeedForward 'gelu-approximate': GELU module holding Linear(D, ffn) + tanh-GELU"),
    KeyRule("blocks.{i}.ffn.net.2.{p}", "blocks.{i}.ffn.2.{p}", "Linear(ffn, D) (net.1 is a parameter-free Dropout)"),
    # --- output head ---------------------------------------------------------------------------------------------
    KeyRule("scale_shift_table", "head.modulation", "head adaLN table [1, 2, D] (shift, scale), added to e"),
    KeyRule("proj_out.{p}", "head.head.{p}", "Linear(D, out * prod(patch)); diffusers norm_out has no parameters"),
)

_FIELDS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"(\{[ip]\})", template)
    return re.compile("".join(_FIELDS[s[1]] if s in ("{i}", "{p}") else re.escape(s) for s in parts))


_D2O = tuple((_compile(r.diffusers), r.official) for r in KEY_RULES)
_O2D = tuple((_compile(r.official), r.diffusers) for r in KEY_RULES)


def _rename_key(key: str, rules) -> str | None:
    for pattern, target in rules:
        m = pattern.fullmatch(key)
        if m:
            return target.format(**m.groupdict())
    return None


def _rename(state_dict: Mapping[str, Any], rules, what: str, hint: str) -> dict:
    out: dict = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        new = _rename_key(key, rules)
        if new is None:
            unknown.append(key)
        elif new in out:
            raise CheckpointError(f"{what}: two tensors map to {new!r}; the state dict is inconsistent")
        else:
            out[new] = value
    if unknown:
        shown = ", ".join(sorted(unknown)[:12]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 12 else "")
        raise CheckpointError(f"{what}: {len(unknown)} key(s) not covered by the Wan2.1 T2V key map: {shown}; {hint}")
    return out


def diffusers_to_official(state_dict: Mapping[str, Any]) -> dict:
    """Rename a diffusers ``WanTransformer3DModel`` state dict to official Wan names (values are not copied).

    Raises :class:`CheckpointError` listing every key the map does not cover (Wan-I2V/VACE/Wan2.2 parts, fused
    ``to_qkv`` projections, ...).
    """
    return _rename(state_dict, _D2O, "diffusers -> official",
                   "only the Wan2.1 text-to-video WanTransformer3DModel (unfused projections) is supported")


def official_to_diffusers(state_dict: Mapping[str, Any]) -> dict:
    """Rename an official-name Wan2.1 T2V state dict to diffusers ``WanTransformer3DModel`` names.

    Keys with no diffusers counterpart (e.g. FlashI2V's ``fourier_embedding.*``, ``learnable_proj.*``) raise
    :class:`CheckpointError`; strip them first if you want to export the plain T2V backbone.
    """
    return _rename(state_dict, _O2D, "official -> diffusers",
                   "diffusers' WanTransformer3DModel has no place for them (FlashI2V branches cannot be exported)")


# ------------------------------------------------------------------------------------------------------- config
# config.json keys of WanTransformer3DModel (diffusers 0.42.1 __init__ signature).
_DIFFUSERS_ARCH_KEYS = (
    "patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_dim",
    "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm", "qk_norm", "eps", "image_dim", "added_kv_proj_dim",
    "rope_max_seq_len", "pos_embed_seq_len",
)
_DIFFUSERS_DEFAULTS = dict(  # the __init__ defaults, used for keys absent from config.json (as diffusers does)
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024, pos_embed_seq_len=None,
)
# Keys older diffusers releases wrote that carry no architecture (window_size is checked below).
_DIFFUSERS_LEGACY_KEYS = ("window_size", "add_img_emb")
_WAN_QK_NORM = "rms_norm_across_heads"
_ROPE_MAX = 1024


def config_from_diffusers(config_json: Mapping[str, Any], text_len: int = 512) -> TransformerConfig:
    """Translate a diffusers ``WanTransformer3DModel`` ``config.json`` mapping into a T2V :class:`TransformerConfig`.

    ``dim = num_attention_heads * attention_head_dim``; ``in_channels/out_channels`` -> ``in_dim/out_dim``; the
    other names are shared. Keys starting with ``_`` (``_class_name``, ``_diffusers_version``) are metadata.
    Raises :class:`ConfigError` for another model class, Wan-I2V/FLF2V configs (``image_dim``,
    ``added_kv_proj_dim`` or ``pos_embed_seq_len`` set), a ``qk_norm`` other than ``"rms_norm_across_heads"``, a
    RoPE table shorter than 1024 positions, local attention, or unknown keys.
    """
    if not isinstance(config_json, Mapping):
        raise ConfigError(f"diffusers config must be a JSON object, got {type(config_json).__name__}")
    cls = config_json.get("_class_name", "WanTransformer3DModel")
    if cls != "WanTransformer3DModel":
        raise ConfigError(f"diffusers config is for {cls!r}; only 'WanTransformer3DModel' (Wan2.1 T2V) is supported")
    unknown = [k for k in config_json if not k.startswith("_") and k not in _DIFFUSERS_ARCH_KEYS + _DIFFUSERS_LEGACY_KEYS]
    if unknown:
        raise ConfigError(f"unknown keys in diffusers WanTransformer3DModel config: {sorted(unknown)}")
    c = {**_DIFFUSERS_DEFAULTS, **{k: v for k, v in config_json.items() if k in _DIFFUSERS_ARCH_KEYS}}

    i2v = {k: c[k] for k in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len") if c[k] is not None}
    if i2v:
        raise ConfigError(
            f"diffusers config is a Wan-I2V/FLF2V model ({', '.join(f'{k}={v}' for k, v in i2v.items())}); "
            "that is a different architecture (CLIP image cross-attention), only Wan2.1 T2V can be loaded"
        )
    if c["qk_norm"] != _WAN_QK_NORM:
        raise ConfigError(
            f"diffusers qk_norm={c['qk_norm']!r} is not supported; Wan2.1 uses {_WAN_QK_NORM!r} "
            "(diffusers 0.42.1 builds that norm whatever the value, so any other value is ambiguous)"
        )
    if int(c["rope_max_seq_len"]) < _ROPE_MAX:
        raise ConfigError(f"rope_max_seq_len={c['rope_max_seq_len']} is shorter than Wan's {_ROPE_MAX} positions")
    window = config_json.get("window_size", (-1, -1))
    if window is not None and tuple(window) != (-1, -1):
        raise ConfigError(f"only global attention (window_size (-1, -1)) is supported, got {tuple(window)}")
    if not isinstance(c["cross_attn_norm"], bool):
        raise ConfigError(f"cross_attn_norm must be true or false, got {c['cross_attn_norm']!r}")
    heads, head_dim = int(c["num_attention_heads"]), int(c["attention_head_dim"])
    return TransformerConfig(
        dim=heads * head_dim,
        ffn_dim=int(c["ffn_dim"]),
        num_heads=heads,
        num_layers=int(c["num_layers"]),
        freq_dim=int(c["freq_dim"]),
        in_dim=int(c["in_channels"]),
        out_dim=int(c["out_channels"] or c["in_channels"]),  # diffusers: out_channels = out_channels or in_channels
        text_dim=int(c["text_dim"]),
        text_len=int(text_len),
        eps=float(c["eps"]),
        patch_size=tuple(int(p) for p in c["patch_size"]),
        qk_norm=True,
        cross_attn_norm=c["cross_attn_norm"],
        model_type="t2v",
    )


def config_to_diffusers(config: TransformerConfig) -> dict:
    """The diffusers ``WanTransformer3DModel`` constructor kwargs for a T2V :class:`TransformerConfig` (export)."""
    if config.is_flashi2v:
        raise ConfigError("a FlashI2V config has no diffusers equivalent; export the t2v backbone (model_type='t2v')")
    if config.frame_embedding:
        raise ConfigError("diffusers' WanTransformer3DModel has no frame embedding; frame_embedding > 0 cannot be exported")
    if not config.qk_norm:
        raise ConfigError("diffusers' WanTransformer3DModel always has qk-norm; qk_norm=False cannot be exported")
    return dict(
        patch_size=list(config.patch_size), num_attention_heads=config.num_heads, attention_head_dim=config.head_dim,
        in_channels=config.in_dim, out_channels=config.out_dim, text_dim=config.text_dim, freq_dim=config.freq_dim,
        ffn_dim=config.ffn_dim, num_layers=config.num_layers, cross_attn_norm=config.cross_attn_norm,
        qk_norm=_WAN_QK_NORM, eps=config.eps, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=_ROPE_MAX,
        pos_embed_seq_len=None,
    )


# --------------------------------------------------------------------------------------------------- loading
_WEIGHTS = "diffusion_pytorch_model"


def _expected_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
    from ..models.wan import WanTransformer

    model = WanTransformer(config, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_diffusers_folder(folder: str | Path, variant: str | None = None) -> tuple[TransformerConfig, dict]:
    """Read a diffusers ``WanTransformer3DModel`` folder -> (T2V config, state dict in official names).

    ``folder`` holds ``config.json`` and either ``diffusion_pytorch_model.safetensors`` or the shards listed in
    ``diffusion_pytorch_model.safetensors.index.json``; a pipeline root with a ``transformer/`` sub-folder is also
    accepted. ``variant`` selects e.g. ``diffusion_pytorch_model.fp16.safetensors``. Tensors keep their stored
    dtype. The result is checked against :class:`~flashi2v.models.wan.WanTransformer` built from the config (names
    and shapes), so ``WanTransformer(config).load_state_dict(sd, strict=True)`` succeeds.

    Every problem (missing folder/config/shard, unreadable file, unmapped/missing keys, shape mismatch) raises a
    one-line :class:`CheckpointError`; a bad config raises :class:`ConfigError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"diffusers model folder not found: {folder}")
    if not (folder / "config.json").is_file() and (folder / "transformer" / "config.json").is_file():
        folder = folder / "transformer"
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder} has no config.json; pass the diffusers transformer folder")
    config = config_from_diffusers(read_json_object(cfg_path))

    stem = _WEIGHTS + (f".{variant}" if variant else "")
    index_path = folder / f"{stem}.safetensors.index.json"
    single_path = folder / f"{stem}.safetensors"
    if index_path.is_file():
        weight_map = read_json_object(index_path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path} is not a valid safetensors index (no weight_map object)")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(f"{len(missing)} shard(s) listed in {index_path.name} are missing from {folder}: {', '.join(missing)}")
        state_dict: dict = {}
        for shard in shards:
            state_dict.update(read_safetensors(folder / shard))
        absent = sorted(set(weight_map) - set(state_dict))
        if absent:
            raise CheckpointError(f"{len(absent)} tensor(s) listed in {index_path.name} are not in their shards, e.g. {absent[0]!r}")
    elif single_path.is_file():
        state_dict = read_safetensors(single_path)
    else:
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".safetensors", ".pt", ".pth"))
        hint = f" (found {', '.join(others)})" if others else ""
        raise CheckpointError(f"no {stem}.safetensors or {index_path.name} in {folder}{hint}")

    official = diffusers_to_official(state_dict)
    expected = _expected_shapes(config)
    missing_keys = sorted(set(expected) - set(official))
    if missing_keys:
        raise CheckpointError(
            f"diffusers checkpoint in {folder} lacks {len(missing_keys)} tensor(s) of the configured model, "
            f"e.g. {missing_keys[:3]} (official names)"
        )
    extra = sorted(set(official) - set(expected))
    if extra:
        raise CheckpointError(f"diffusers checkpoint in {folder} has tensors the config does not describe: {extra[:3]}")
    bad = [(k, tuple(v.shape), expected[k]) for k, v in official.items() if tuple(v.shape) != expected[k]]
    if bad:
        k, got, want = bad[0]
        raise CheckpointError(f"{len(bad)} tensor shape(s) in {folder} do not match config.json, e.g. {k}: {got} vs {want}")
    return config, official
