"""Typed configuration of the Wan2.1 / FlashI2V diffusion transformer, with the official presets.

The official code builds the model from the ``model_config`` mapping of its YAML files (keys ``dim, ffn_dim,
freq_dim, in_dim, num_heads, num_layers, out_dim, text_len`` plus optional ``text_dim, eps, patch_size, qk_norm,
cross_attn_norm, conv3x3x3_proj``). :meth:`TransformerConfig.from_official` accepts exactly that mapping.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

#: The ``format`` tag of a transformer folder's ``config.json`` (:mod:`flashi2v.weights.transformer`).
TRANSFORMER_FOLDER_FORMAT = "flashi2v-transformer"

# "t2v": plain Wan2.1 text-to-video. "flashi2v": latent shifting + Fourier guidance (flashi2v.method).
# The two classic image-to-video baselines on the same plain Wan backbone (flashi2v.paradigms, docs/paradigms.md):
# "i2v-concat-mask": Wan2.1-I2V style, input = [noisy latent, 4 mask channels, clean first-frame latent] -> in_dim 36;
# "i2v-concat-noise": CogVideoX-I2V style, input = [noisy latent, noise-augmented image latent padded with zeros
# over time] -> in_dim 32.
MODEL_TYPES = ("t2v", "flashi2v", "i2v-concat-mask", "i2v-concat-noise")
CONCAT_MODEL_TYPES = ("i2v-concat-mask", "i2v-concat-noise")
MASK_CHANNELS = 4  # Wan2.1-I2V: one mask channel per pixel frame folded into a latent frame (temporal stride 4)


def required_in_dim(model_type: str, out_dim: int = 16) -> int:
    """The patch-embedding input channels ``model_type`` needs for ``out_dim`` latent channels (16 -> 16/16/36/32)."""
    if model_type == "i2v-concat-mask":
        return out_dim + MASK_CHANNELS + out_dim
    if model_type == "i2v-concat-noise":
        return out_dim + out_dim
    return out_dim

# Keys of the official ``model_config`` that describe the architecture.
_OFFICIAL_REQUIRED = ("dim", "ffn_dim", "freq_dim", "in_dim", "num_heads", "num_layers", "out_dim", "text_len")
_OFFICIAL_OPTIONAL = ("text_dim", "eps", "patch_size", "qk_norm", "cross_attn_norm", "conv3x3x3_proj")
# Keys that appear in official ``model_config`` mappings but do not describe the architecture. They are accepted
# (so an official YAML section can be passed as is) and returned separately by ``from_official``.
_OFFICIAL_NON_ARCH = (
    "low_freq_energy_ratio",
    "fft_return_abs",
    "pretrained_model_dir_or_checkpoint",
    "window_size",
    "model_type",
    "text_len\"",  # the official 14B yaml misspells text_len with a stray quote (spec §12.11)
)


@dataclass
class TransformerConfig:
    """Architecture of a Wan2.1 DiT, optionally with the two FlashI2V branches.

    ``model_type`` is ``"flashi2v"`` (Wan backbone + learnable projection φ + Fourier embedding), ``"t2v"``
    (the plain Wan2.1 text-to-video model), or one of the channel-concatenation image-to-video baselines
    ``"i2v-concat-mask"`` (in_dim = out_dim + 4 + out_dim = 36) and ``"i2v-concat-noise"`` (in_dim = 2·out_dim = 32),
    which are plain Wan backbones with a wider patch embedding (see :mod:`flashi2v.paradigms`). ``in_dim`` left
    unset (None) takes the value the model type needs (:func:`required_in_dim`).
    """

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    freq_dim: int = 256
    in_dim: int | None = None  # None: required_in_dim(model_type, out_dim), i.e. 16, or 36 / 32 for the concat types
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    eps: float = 1e-6
    patch_size: tuple[int, int, int] = (1, 2, 2)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    model_type: str = "flashi2v"
    conv3x3x3_proj: bool = False
    # Not in Wan or FlashI2V: N > 0 adds a learned, zero-initialised vector per latent-frame index (up to N latent
    # frames) to the patch tokens (flashi2v.models.wan.FrameEmbedding). 0 (default) = the plain architecture.
    frame_embedding: int = 0
    extra: dict = field(default_factory=dict, repr=False)  # free-form metadata saved with the config

    def __post_init__(self) -> None:
        try:
            self.patch_size = tuple(int(p) for p in self.patch_size)
        except (TypeError, ValueError):
            raise ConfigError(f"patch_size must be 3 integers (t, h, w), got {self.patch_size!r}") from None
        if len(self.patch_size) != 3:
            raise ConfigError(f"patch_size must have 3 entries (t, h, w), got {self.patch_size}")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        for name in ("dim", "ffn_dim", "num_heads", "num_layers", "freq_dim", "out_dim", "in_dim", "text_dim",
                     "text_len"):
            if name == "in_dim" and self.in_dim is None:
                self.in_dim = required_in_dim(self.model_type, self.out_dim)
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.num_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if (self.dim // self.num_heads) % 2:
            raise ConfigError(f"head dim {self.dim // self.num_heads} must be even for RoPE")
        if self.freq_dim % 2:
            raise ConfigError(f"freq_dim must be even, got {self.freq_dim}")
        if isinstance(self.frame_embedding, bool) or not isinstance(self.frame_embedding, int) or self.frame_embedding < 0:
            raise ConfigError(
                f"frame_embedding must be 0 (off) or the number of latent frames to embed, got {self.frame_embedding!r}"
            )
        if self.conv3x3x3_proj and self.model_type != "flashi2v":
            raise ConfigError("conv3x3x3_proj only applies to model_type='flashi2v'")
        need = required_in_dim(self.model_type, self.out_dim)
        if self.in_dim != need:
            layout = {
                "i2v-concat-mask": f"noisy latent {self.out_dim} + mask {MASK_CHANNELS} + image latent {self.out_dim}",
                "i2v-concat-noise": f"noisy latent {self.out_dim} + image latent {self.out_dim}",
            }.get(self.model_type, "the latent channels")
            raise ConfigError(
                f"model_type {self.model_type!r} needs in_dim {need} ({layout}) for out_dim {self.out_dim}, "
                f"got in_dim {self.in_dim}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def is_flashi2v(self) -> bool:
        return self.model_type == "flashi2v"

    @property
    def is_i2v(self) -> bool:
        """True for every image-to-video type (all but ``"t2v"``)."""
        return self.model_type != "t2v"

    @property
    def is_concat(self) -> bool:
        """True for the channel-concatenation baselines (``"i2v-concat-mask"``, ``"i2v-concat-noise"``)."""
        return self.model_type in CONCAT_MODEL_TYPES

    @property
    def latent_channels(self) -> int:
        """Channels of the video latent (the VAE's z_dim): the model's output channels."""
        return self.out_dim

    @property
    def unseen_latent_dims(self) -> int:
        """How many directions of each patch of the noisy latent the model can never see, at least: the patch
        embedding maps ``latent_channels * prod(patch_size)`` numbers (more with concatenated channels) to ``dim``. The
        sampler cannot remove the noise in those directions, so every sample keeps that part of its initial noise
        (measured on the previous shipped default, 4x4 patch and dim 192: 64 of 256 dims, frame-0 error there 1.16
        per dim against 0.04 in the visible ones; the current default has dim 256). 0 for the real Wan configs
        (64 -> 1536 / 5120)."""
        pt, ph, pw = self.patch_size
        return max(0, self.latent_channels * pt * ph * pw - self.dim)

    def with_model_type(self, model_type: str) -> "TransformerConfig":
        """The same backbone as another model type, ``in_dim`` adjusted (e.g. a T2V config -> ``"i2v-concat-mask"``).

        ``conv3x3x3_proj`` is dropped when leaving ``"flashi2v"``.
        """
        return self.replace(
            model_type=model_type,
            in_dim=required_in_dim(model_type, self.out_dim),
            conv3x3x3_proj=self.conv3x3x3_proj and model_type == "flashi2v",
        )

    # ----------------------------------------------------------------------------------------------- conversion
    @classmethod
    def from_official(cls, model_config: Mapping[str, Any], model_type: str = "flashi2v") -> "TransformerConfig":
        """Build from the official YAML ``model_config`` mapping.

        Unknown keys raise :class:`ConfigError` (a typo must not silently fall back to a default). Non-architecture
        keys of the official files (``low_freq_energy_ratio``, ``pretrained_model_dir_or_checkpoint``, ...) are kept
        in ``config.extra``.
        """
        missing = [k for k in _OFFICIAL_REQUIRED if k not in model_config and not (k == "text_len" and "text_len\"" in model_config)]
        if missing:
            raise ConfigError(f"official model_config is missing {missing}; it needs {list(_OFFICIAL_REQUIRED)}")
        unknown = [k for k in model_config if k not in _OFFICIAL_REQUIRED + _OFFICIAL_OPTIONAL + _OFFICIAL_NON_ARCH]
        if unknown:
            raise ConfigError(f"unknown keys in official model_config: {unknown}")
        window = model_config.get("window_size", (-1, -1))
        if tuple(window) != (-1, -1):
            raise ConfigError(f"only global attention (window_size (-1, -1)) is supported, got {tuple(window)}")
        kwargs = {k: model_config[k] for k in _OFFICIAL_REQUIRED + _OFFICIAL_OPTIONAL if k in model_config}
        if "text_len" not in kwargs and "text_len\"" in model_config:
            kwargs["text_len"] = model_config["text_len\""]
        extra = {k: model_config[k] for k in _OFFICIAL_NON_ARCH if k in model_config}
        return cls(**kwargs, model_type=model_type, extra=extra)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        if not d["extra"]:
            d.pop("extra")
        if not d["frame_embedding"]:
            d.pop("frame_embedding")  # off: the config file of the plain architecture stays as it was
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TransformerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown keys in transformer config: {unknown}")
        return cls(**dict(d))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TransformerConfig":
        """From a JSON file written by :meth:`save`, or the ``config.json`` of a transformer folder (or the folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path} holds a JSON {type(d).__name__}, expected an object of config keys")
        return cls.from_saved_dict(d)

    @classmethod
    def from_saved_dict(cls, d: Mapping[str, Any]) -> "TransformerConfig":
        """:meth:`from_dict`, after dropping the format keys of a transformer folder's ``config.json``
        (:data:`TRANSFORMER_FOLDER_FORMAT`, written by ``flashi2v.weights.save_transformer``)."""
        if d.get("format") == TRANSFORMER_FOLDER_FORMAT:
            d = {k: v for k, v in d.items() if k not in ("format", "format_version")}
        return cls.from_dict(d)

    def replace(self, **changes) -> "TransformerConfig":
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------------------------------------ presets
_WAN_1_3B = dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
_WAN_14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

PRESETS: dict[str, dict] = {
    "flashi2v-1.3b": dict(_WAN_1_3B, model_type="flashi2v"),
    # The released FlashI2V-1.3B (MindSpeed/NPU lineage) most likely uses a 3x3x3 projection (spec §9).
    "flashi2v-1.3b-conv3x3x3": dict(_WAN_1_3B, model_type="flashi2v", conv3x3x3_proj=True),
    "flashi2v-14b": dict(_WAN_14B, model_type="flashi2v"),
    "wan2.1-t2v-1.3b": dict(_WAN_1_3B, model_type="t2v"),
    "wan2.1-t2v-14b": dict(_WAN_14B, model_type="t2v"),
    # The classic I2V baselines on the Wan2.1-T2V-1.3B backbone (flashi2v.paradigms; no CLIP image branch).
    "i2v-concat-mask-1.3b": dict(_WAN_1_3B, model_type="i2v-concat-mask", in_dim=36),
    "i2v-concat-noise-1.3b": dict(_WAN_1_3B, model_type="i2v-concat-noise", in_dim=32),
}


def preset(name: str, **overrides) -> TransformerConfig:
    """A named configuration: one of :data:`PRESETS` (``flashi2v-1.3b``, ``flashi2v-14b``, ``wan2.1-t2v-1.3b``,
    ``i2v-concat-mask-1.3b``, ``i2v-concat-noise-1.3b``...)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return TransformerConfig(**{**PRESETS[name], **overrides})
