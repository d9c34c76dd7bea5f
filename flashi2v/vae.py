"""Wan2.1 causal 3-D VAE (the FlashI2V video autoencoder): the user-facing wrapper around the network in
:mod:`flashi2v.models.wan_vae` (plain torch, diffusers' ``AutoencoderKLWan`` parameter names).

What this module adds on top of the network
-------------------------------------------
* The official FlashI2V/Wan2.1 normalisation of the latents (per-channel mean/std, posterior mean only, no sampling),
  computed exactly like the official wrapper: ``(mu - mean) * (1 / std)`` on encode and ``z / (1 / std) + mean`` on
  decode (the official code stores ``scale = [mean, 1 / std]``; dividing by the float32 reciprocal instead of
  multiplying by ``std`` keeps us bit-for-bit on the same rounding path).
* Strict input checks: the official encoder silently drops frames beyond ``1 + 4k`` (spec §12.16); here a frame count
  that is not ``1 + 4k`` or a height/width that is not a multiple of 8 raises :class:`~flashi2v.errors.InputError`.
* Strict checkpoint loading: the model is built on the meta device and every parameter is *assigned* from the
  checkpoint, after checking that there are no missing, unexpected or shape-mismatched keys (the official code silently
  runs with uninitialised memory when the checkpoint path is wrong, spec §12.3).
* An explicit official-name -> diffusers-name key map (:func:`official_to_diffusers_key_map`), loaders for
  ``Wan2.1_VAE.pth`` (or a safetensors file with the same names), for a diffusers VAE folder, and our own model-folder
  format (``config.json`` + ``model.safetensors`` in diffusers naming, see :meth:`WanVAE.save_pretrained`).
* Spatial tiling (encode and decode) and batch slicing switches.

Numerics: the network implements the official ``WanVAE_``'s computation (causal convs carrying 2 frames between
chunks, chunking [1, 4, 4, ...] on encode and one latent frame at a time on decode, the first frame passed through the
temporal re-sampling, ``nearest-exact`` up-sampling in float). The golden test (``tests/test_vae.py``) checks it
against the official outputs to ``1e-5 + 1e-4 |ref|``, and another test against diffusers' ``AutoencoderKLWan``
0.42.1 (bit for bit, tiled and untiled), which was this module's engine before.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from flashi2v.errors import CheckpointError, ConfigError, InputError
from flashi2v.weights.io import (atomic_save_safetensors, atomic_write_text, format_key_problems, read_json_object,
                                read_safetensors, short_list)

__all__ = [
    "WAN21_LATENTS_MEAN",
    "WAN21_LATENTS_STD",
    "WanVAE",
    "official_to_diffusers_key_map",
]

# Per-channel statistics of the Wan2.1 VAE latents (spec §6; identical to diffusers' AutoencoderKLWan defaults).
WAN21_LATENTS_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

# File names of the model-folder formats.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"  # our folder (diffusers parameter names)
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # a diffusers VAE folder
DIFFUSERS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"  # sharded diffusers folder
FORMAT_TAG = "flashi2v.WanVAE"
FORMAT_VERSION = 1

# Architecture arguments (the only things stored in our config.json besides the format tag).
_ARCH_KEYS = (
    "base_dim",
    "z_dim",
    "dim_mult",
    "num_res_blocks",
    "attn_scales",
    "temperal_downsample",
    "dropout",
    "latents_mean",
    "latents_std",
)

# ----------------------------------------------------------------------------------------------------------------------
# Official -> diffusers key map
# ----------------------------------------------------------------------------------------------------------------------
# The official Wan2.1 VAE (`WanVAE_` in flashi2v/modules/vae.py) names its parameters after nn.Sequential positions;
# diffusers uses named sub-modules. Renames *inside* one block (official suffix -> diffusers suffix):

# ResidualBlock: residual = Sequential(RMS_norm[0], SiLU[1], CausalConv3d[2], RMS_norm[3], SiLU[4], Dropout[5],
# CausalConv3d[6]); shortcut = 1x1x1 CausalConv3d if in_dim != out_dim (else Identity, no parameters).
_RESBLOCK_RENAMES: dict[str, str] = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight",
    "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight",
    "residual.6.bias": "conv2.bias",
}
_SHORTCUT_RENAMES: dict[str, str] = {
    "shortcut.weight": "conv_shortcut.weight",
    "shortcut.bias": "conv_shortcut.bias",
}
# AttentionBlock (middle blocks): same names in both.
_ATTENTION_RENAMES: dict[str, str] = {
    "norm.gamma": "norm.gamma",
    "to_qkv.weight": "to_qkv.weight",
    "to_qkv.bias": "to_qkv.bias",
    "proj.weight": "proj.weight",
    "proj.bias": "proj.bias",
}
# Resample: resample = Sequential(ZeroPad2d | Upsample [0], Conv2d [1]); 3-D modes add a causal time_conv. Same names.
_RESAMPLE_RENAMES: dict[str, str] = {
    "resample.1.weight": "resample.1.weight",
    "resample.1.bias": "resample.1.bias",
}
_TIME_CONV_RENAMES: dict[str, str] = {
    "time_conv.weight": "time_conv.weight",
    "time_conv.bias": "time_conv.bias",
}
# Heads: Sequential(RMS_norm[0], SiLU[1], CausalConv3d[2]).
_HEAD_RENAMES: dict[str, str] = {
    "head.0.gamma": "norm_out.gamma",
    "head.2.weight": "conv_out.weight",
    "head.2.bias": "conv_out.bias",
}


def official_to_diffusers_key_map(
    dim_mult: Sequence[int] = (1, 2, 4, 4),
    num_res_blocks: int = 2,
    temperal_downsample: Sequence[bool] = (False, True, True),
) -> dict[str, str]:
    """Return ``{official parameter name: diffusers AutoencoderKLWan parameter name}`` for a Wan2.1 VAE.

    The map is derived from the block layout (it does not depend on ``base_dim``/``z_dim``, only on which blocks
    exist) and covers every parameter of both models exactly once (``tests/test_vae.py`` checks it against the
    official manifest ``wan_vae.tsv``: 194 tensors, 126,892,531 parameters). Layout, official -> diffusers:

    ===============================================  ===================================================
    ``encoder.conv1.*``                              ``encoder.conv_in.*``
    ``encoder.downsamples.{k}.<block>``              ``encoder.down_blocks.{k}.<block>`` (same flat index)
    ``encoder.middle.{0,1,2}.*``                     ``encoder.mid_block.{resnets.0, attentions.0, resnets.1}.*``
    ``encoder.head.{0,2}.*``                         ``encoder.{norm_out, conv_out}.*``
    ``conv1.*`` (1x1x1, 2z -> 2z, after encoder)     ``quant_conv.*``
    ``conv2.*`` (1x1x1, z -> z, before decoder)      ``post_quant_conv.*``
    ``decoder.conv1.*``                              ``decoder.conv_in.*``
    ``decoder.middle.{0,1,2}.*``                     ``decoder.mid_block.{resnets.0, attentions.0, resnets.1}.*``
    ``decoder.upsamples.{k}.<block>`` (flat list)    ``decoder.up_blocks.{stage}.resnets.{j}`` / ``.upsamplers.0``
    ``decoder.head.{0,2}.*``                         ``decoder.{norm_out, conv_out}.*``
    ===============================================  ===================================================

    with the per-block suffix renames ``_RESBLOCK_RENAMES`` (``residual.0/2/3/6`` -> ``norm1/conv1/norm2/conv2``),
    ``_SHORTCUT_RENAMES`` (``shortcut`` -> ``conv_shortcut``, only where the channel count changes), and identical
    names inside attention and resample blocks. Attention inside the stages (``attn_scales``) is not supported (the
    Wan2.1 VAE has none, and diffusers' Wan decoder does not implement it).
    """
    n = len(dim_mult)
    if len(temperal_downsample) != n - 1:
        raise ConfigError(
            f"temperal_downsample has {len(temperal_downsample)} entries but dim_mult has {n}; "
            f"give one flag per down-sampling step ({n - 1})"
        )
    mapping: dict[str, str] = {}

    def add(official_prefix: str, diffusers_prefix: str, renames: Mapping[str, str]) -> None:
        for o, d in renames.items():
            mapping[f"{official_prefix}.{o}"] = f"{diffusers_prefix}.{d}"

    def add_resblock(official_prefix: str, diffusers_prefix: str, in_ch: int, out_ch: int) -> None:
        add(official_prefix, diffusers_prefix, _RESBLOCK_RENAMES)
        if in_ch != out_ch:
            add(official_prefix, diffusers_prefix, _SHORTCUT_RENAMES)

    # ---- encoder -------------------------------------------------------------------------------------------------
    add("encoder", "encoder", {"conv1.weight": "conv_in.weight", "conv1.bias": "conv_in.bias"})
    mults = [1, *dim_mult]  # channel multipliers; channels = base_dim * mult
    k = 0
    for i in range(n):
        in_m, out_m = mults[i], mults[i + 1]
        for _ in range(num_res_blocks):
            add_resblock(f"encoder.downsamples.{k}", f"encoder.down_blocks.{k}", in_m, out_m)
            in_m = out_m
            k += 1
        if i != n - 1:  # down-sampling after every stage but the last
            add(f"encoder.downsamples.{k}", f"encoder.down_blocks.{k}", _RESAMPLE_RENAMES)
            if temperal_downsample[i]:
                add(f"encoder.downsamples.{k}", f"encoder.down_blocks.{k}", _TIME_CONV_RENAMES)
            k += 1
    for side in ("encoder", "decoder"):
        add_resblock(f"{side}.middle.0", f"{side}.mid_block.resnets.0", 1, 1)
        add(f"{side}.middle.1", f"{side}.mid_block.attentions.0", _ATTENTION_RENAMES)
        add_resblock(f"{side}.middle.2", f"{side}.mid_block.resnets.1", 1, 1)
        add(side, side, _HEAD_RENAMES)

    # ---- quant convs (1x1x1 convs between encoder / latent space / decoder) ---------------------------------------
    mapping.update(
        {
            "conv1.weight": "quant_conv.weight",
            "conv1.bias": "quant_conv.bias",
            "conv2.weight": "post_quant_conv.weight",
            "conv2.bias": "post_quant_conv.bias",
        }
    )

    # ---- decoder -------------------------------------------------------------------------------------------------
    add("decoder", "decoder", {"conv1.weight": "conv_in.weight", "conv1.bias": "conv_in.bias"})
    dec_mults = [dim_mult[-1], *dim_mult[::-1]]
    temperal_upsample = list(temperal_downsample)[::-1]
    k = 0
    for i in range(n):
        in_m, out_m = dec_mults[i], dec_mults[i + 1]
        if i > 0:
            # The previous stage's up-sampler halved the channels (Conv2d dim -> dim // 2).
            in_m = in_m / 2
        for j in range(num_res_blocks + 1):  # the decoder has one more residual block per stage
            add_resblock(f"decoder.upsamples.{k}", f"decoder.up_blocks.{i}.resnets.{j}", in_m, out_m)
            in_m = out_m
            k += 1
        if i != n - 1:
            add(f"decoder.upsamples.{k}", f"decoder.up_blocks.{i}.upsamplers.0", _RESAMPLE_RENAMES)
            if temperal_upsample[i]:
                add(f"decoder.upsamples.{k}", f"decoder.up_blocks.{i}.upsamplers.0", _TIME_CONV_RENAMES)
            k += 1
    return mapping


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------
def _check_state_dict_values(sd: Mapping, source: str) -> None:
    if not isinstance(sd, Mapping):
        raise CheckpointError(
            f"{source} does not hold a state dict (got {type(sd).__name__}); pass the Wan2.1 VAE weights file "
            "(Wan2.1_VAE.pth) or a safetensors file with the same parameter names"
        )
    bad = [str(k) for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} entries are not name -> tensor pairs ({short_list(bad)}); "
            "pass a plain state dict of tensors"
        )


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


class WanVAE(nn.Module):
    """The Wan2.1 causal 3-D VAE with the official FlashI2V latent normalisation.

    Shapes: ``encode(video[B, 3, F, H, W] in [-1, 1]) -> latents[B, z_dim, (F - 1) / 4 + 1, H / 8, W / 8]`` and
    ``decode(latents) -> video`` clamped to [-1, 1]. ``F`` must be ``1 + 4k``, ``H`` and ``W`` multiples of 8 (for the
    default architecture; in general ``1 + k * 2**sum(temperal_downsample)`` and ``2**(len(dim_mult) - 1)``).

    The constructor builds a model with torch's default (random) initialisation (the same numbers as diffusers'
    ``AutoencoderKLWan`` under the same seed); use :meth:`from_official_file`,
    :meth:`from_official_state_dict`, :meth:`from_diffusers_folder` or :meth:`from_pretrained` to get real weights.
    The parameters are frozen (``requires_grad=False``) and the module is in ``eval()`` mode; encode/decode run under
    ``torch.no_grad()``. It is an ``nn.Module``, so ``.to(device, dtype)`` works; the normalisation is always computed
    in float32 and both ``encode`` and ``decode`` return float32 tensors (as the official wrapper does).
    """

    def __init__(
        self,
        base_dim: int = 96,
        z_dim: int = 16,
        dim_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_scales: Sequence[float] = (),
        temperal_downsample: Sequence[bool] = (False, True, True),
        dropout: float = 0.0,
        latents_mean: Sequence[float] = WAN21_LATENTS_MEAN,
        latents_std: Sequence[float] = WAN21_LATENTS_STD,
    ) -> None:
        super().__init__()
        from .models.wan_vae import WanVAEModel

        dim_mult = [int(m) for m in dim_mult]
        temperal_downsample = [bool(t) for t in temperal_downsample]
        attn_scales = [float(s) for s in attn_scales]
        latents_mean = [float(v) for v in latents_mean]
        latents_std = [float(v) for v in latents_std]
        if int(base_dim) <= 0 or int(z_dim) <= 0 or int(num_res_blocks) <= 0 or not dim_mult:
            raise ConfigError(
                f"invalid WanVAE size (base_dim={base_dim}, z_dim={z_dim}, num_res_blocks={num_res_blocks}, "
                f"dim_mult={dim_mult}); use positive values (Wan2.1: 96, 16, 2, (1, 2, 4, 4))"
            )
        if len(temperal_downsample) != len(dim_mult) - 1:
            raise ConfigError(
                f"temperal_downsample has {len(temperal_downsample)} entries but dim_mult has {len(dim_mult)}; "
                f"give one flag per down-sampling step ({len(dim_mult) - 1})"
            )
        if attn_scales:
            raise ConfigError(
                f"attn_scales={attn_scales} is not supported (the Wan2.1 VAE has no attention inside its stages and "
                "diffusers' Wan decoder, whose weight names we use, does not implement it); use attn_scales=()"
            )
        if len(latents_mean) != z_dim or len(latents_std) != z_dim:
            raise ConfigError(
                f"latents_mean/latents_std must have z_dim={z_dim} values each, got {len(latents_mean)} and "
                f"{len(latents_std)}; pass one mean and one std per latent channel"
            )
        if any(not math.isfinite(s) or s <= 0 for s in latents_std) or any(not math.isfinite(m) for m in latents_mean):
            raise ConfigError("latents_std values must be finite and > 0 and latents_mean finite; fix the config")

        self.config: dict = {
            "base_dim": int(base_dim),
            "z_dim": int(z_dim),
            "dim_mult": dim_mult,
            "num_res_blocks": int(num_res_blocks),
            "attn_scales": attn_scales,
            "temperal_downsample": temperal_downsample,
            "dropout": float(dropout),
            "latents_mean": latents_mean,
            "latents_std": latents_std,
        }
        self.z_dim = int(z_dim)
        self.spatial_factor = 2 ** (len(dim_mult) - 1)
        self.temporal_factor = 2 ** sum(temperal_downsample)
        self.model = WanVAEModel(
            base_dim=int(base_dim),
            z_dim=int(z_dim),
            dim_mult=dim_mult,
            num_res_blocks=int(num_res_blocks),
            temperal_downsample=temperal_downsample,
            dropout=float(dropout),
        )
        self.model.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------------------------------------------------------
    # properties
    # ------------------------------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1/std) as float32 [1, z, 1, 1, 1] tensors, built like the official ``scale = [mean, 1 / std]``."""
        mean = torch.tensor(self.config["latents_mean"], dtype=torch.float32, device=device)
        inv_std = 1.0 / torch.tensor(self.config["latents_std"], dtype=torch.float32, device=device)
        return mean.view(1, -1, 1, 1, 1), inv_std.view(1, -1, 1, 1, 1)

    # ------------------------------------------------------------------------------------------------------------------
    # input checks
    # ------------------------------------------------------------------------------------------------------------------
    def _check_video(self, video: torch.Tensor) -> None:
        if not isinstance(video, torch.Tensor):
            raise InputError(f"video must be a torch.Tensor [B, 3, F, H, W], got {type(video).__name__}")
        if video.ndim != 5:
            hint = " (add a batch dimension with video.unsqueeze(0))" if video.ndim == 4 else ""
            raise InputError(f"video must have shape [B, 3, F, H, W], got {tuple(video.shape)}{hint}")
        b, c, f, h, w = video.shape
        if c != 3:
            raise InputError(
                f"video must have 3 (RGB) channels in dim 1 ([B, 3, F, H, W]), got shape {tuple(video.shape)}; "
                "permute a [B, F, 3, H, W] tensor with video.permute(0, 2, 1, 3, 4)"
            )
        if not video.is_floating_point():
            raise InputError(
                f"video must be a floating-point tensor in [-1, 1], got dtype {video.dtype}; convert uint8 frames "
                "with video.float() / 127.5 - 1"
            )
        if b == 0:
            raise InputError("video has batch size 0; pass at least one video")
        tf = self.temporal_factor
        if f < 1:
            raise InputError(f"video has 0 frames (shape {tuple(video.shape)}); pass at least 1 frame")
        if (f - 1) % tf != 0:
            lo = 1 + ((f - 1) // tf) * tf
            hi = lo + tf
            raise InputError(
                f"video has {f} frames but the Wan VAE needs 1 + {tf}k frames (1, {1 + tf}, {1 + 2 * tf}, ..., "
                f"{1 + 12 * tf}, ...); trim it to {lo} or pad it to {hi} frames"
            )
        s = self.spatial_factor
        if h < 1 or w < 1 or h % s or w % s:
            raise InputError(
                f"video height and width must be positive multiples of {s}, got {h}x{w}; resize or crop it to "
                f"{max(s, h // s * s)}x{max(s, w // s * s)}"
            )

    def _check_latents(self, latents: torch.Tensor) -> None:
        if not isinstance(latents, torch.Tensor):
            raise InputError(f"latents must be a torch.Tensor [B, {self.z_dim}, T, h, w], got {type(latents).__name__}")
        if latents.ndim != 5:
            hint = " (add a batch dimension with latents.unsqueeze(0))" if latents.ndim == 4 else ""
            raise InputError(f"latents must have shape [B, {self.z_dim}, T, h, w], got {tuple(latents.shape)}{hint}")
        if latents.shape[1] != self.z_dim:
            raise InputError(
                f"latents must have {self.z_dim} channels in dim 1 ([B, {self.z_dim}, T, h, w]), got shape "
                f"{tuple(latents.shape)}"
            )
        if not latents.is_floating_point():
            raise InputError(f"latents must be a floating-point tensor, got dtype {latents.dtype}")
        if latents.shape[0] == 0 or any(int(d) == 0 for d in latents.shape[2:]):
            raise InputError(f"latents have an empty dimension {tuple(latents.shape)}; pass a non-empty tensor")

    # ------------------------------------------------------------------------------------------------------------------
    # encode / decode
    # ------------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, video: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Encode ``video [B, 3, F, H, W]`` in [-1, 1] to float32 latents ``[B, z, (F-1)/4+1, H/8, W/8]``.

        Returns the posterior mean mu (no sampling). With ``normalize=True`` (default) the official normalisation
        ``(mu - mean) * (1 / std)`` is applied; ``normalize=False`` returns the raw mu (see :meth:`encode_raw`).
        """
        self._check_video(video)
        x = video.to(device=self.device, dtype=self.dtype)
        mu = self.model.encode_moments(x)[:, : self.z_dim].float()
        if not normalize:
            return mu
        mean, inv_std = self._stats(mu.device)
        return (mu - mean) * inv_std

    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """The un-normalised posterior mean mu (float32), i.e. ``encode(video, normalize=False)``."""
        return self.encode(video, normalize=False)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, normalized: bool = True) -> torch.Tensor:
        """Decode latents ``[B, z, T, h, w]`` to a float32 video ``[B, 3, 1 + 4(T-1), 8h, 8w]`` clamped to [-1, 1].

        ``normalized=True`` (default) expects latents from :meth:`encode` (the DiT's latent space) and undoes the
        normalisation first (``z / (1 / std) + mean``, as the official code); ``normalized=False`` takes raw mu.
        """
        self._check_latents(latents)
        z = latents.to(device=self.device)
        if normalized:
            mean, inv_std = self._stats(z.device)
            z = z.float() / inv_std + mean
        video = self.model.decode_latents(z.to(self.dtype))
        return video.float().clamp_(-1.0, 1.0)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Reconstruction: ``decode(encode(video))``."""
        return self.decode(self.encode(video))

    # ------------------------------------------------------------------------------------------------------------------
    # memory options
    # ------------------------------------------------------------------------------------------------------------------
    def enable_tiling(
        self,
        tile_sample_min_height: int = 256,
        tile_sample_min_width: int = 256,
        tile_sample_stride_height: int = 192,
        tile_sample_stride_width: int = 192,
    ) -> None:
        """Split encode/decode spatially into overlapping tiles (sizes in pixels) that are blended linearly.

        Tiling is used when the video is larger than ``tile_sample_min_*`` in a dimension. Each tile is
        ``tile_sample_min_*`` pixels, tiles start every ``tile_sample_stride_*`` pixels, and the overlap
        (min - stride) is cross-faded. All four values must be multiples of 8 with ``stride <= min``. Tiled results
        differ slightly from untiled ones near tile seams (see docs/vae.md for measured differences).
        """
        vals = {
            "tile_sample_min_height": tile_sample_min_height,
            "tile_sample_min_width": tile_sample_min_width,
            "tile_sample_stride_height": tile_sample_stride_height,
            "tile_sample_stride_width": tile_sample_stride_width,
        }
        s = self.spatial_factor
        for name, v in vals.items():
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v % s:
                raise ConfigError(f"{name} must be a positive multiple of {s} pixels, got {v!r}")
        for axis in ("height", "width"):
            if vals[f"tile_sample_stride_{axis}"] > vals[f"tile_sample_min_{axis}"]:
                raise ConfigError(
                    f"tile_sample_stride_{axis} ({vals[f'tile_sample_stride_{axis}']}) must not exceed "
                    f"tile_sample_min_{axis} ({vals[f'tile_sample_min_{axis}']}); tiles must touch or overlap"
                )
        self.model.use_tiling = True
        for name, v in vals.items():
            setattr(self.model, name, v)

    def disable_tiling(self) -> None:
        self.model.use_tiling = False

    @property
    def tiling_enabled(self) -> bool:
        return bool(self.model.use_tiling)

    def enable_one_pass(self, max_pixels: int = 4 * 17 * 256 * 256) -> None:
        """Encode/decode a batch whose ``videos x frames x height x width`` is at most ``max_pixels`` in one pass over
        time instead of the official chunks (frame 0, then 4 frames; one latent frame at a time). The result is the
        same up to float rounding (largest difference 2e-6 measured on the default model), memory grows with the
        frame count, and on this 2-core CPU a 17 x 128 x 128 clip decodes in 0.7 s instead of 2.2 s. Larger batches
        keep the chunks (with tiling on, each tile is judged by its own size)."""
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
            raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        self.model.one_pass_max_pixels = max_pixels

    def disable_one_pass(self) -> None:
        """Always process the time axis in the official chunks (the default)."""
        self.model.one_pass_max_pixels = 0

    @property
    def one_pass_max_pixels(self) -> int:
        return int(self.model.one_pass_max_pixels)

    def enable_slicing(self) -> None:
        """Encode/decode a batch one video at a time (lower peak memory for B > 1; same results up to float
        rounding, ~5e-6 measured)."""
        self.model.use_slicing = True

    def disable_slicing(self) -> None:
        self.model.use_slicing = False

    # ------------------------------------------------------------------------------------------------------------------
    # loading
    # ------------------------------------------------------------------------------------------------------------------
    @classmethod
    def _empty(cls, **arch_kwargs) -> WanVAE:
        """Build the module on the meta device (no memory, no initialisation); every parameter must then be assigned."""
        with torch.device("meta"):
            return cls(**arch_kwargs)

    def _assign_diffusers_state_dict(
        self,
        sd: Mapping[str, torch.Tensor],
        *,
        source: str,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
        name_of: Mapping[str, str] | None = None,
    ) -> WanVAE:
        """Strictly load a state dict in diffusers naming into this (meta) module with ``assign=True``.

        ``name_of`` maps the diffusers name back to the name the user's file used (for error messages).
        """
        expected = self.model.state_dict()  # meta tensors: names and shapes only
        name_of = name_of or {}
        missing = [name_of.get(k, k) for k in expected if k not in sd]
        unexpected = [name_of.get(k, k) for k in sd if k not in expected]
        mismatched = [(name_of.get(k, k), tuple(v.shape), tuple(expected[k].shape))
                      for k, v in sd.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
        not_float = [name_of.get(k, k) for k, v in sd.items() if k in expected and not v.is_floating_point()]
        arch = ", ".join(f"{k}={self.config[k]}" for k in ("base_dim", "z_dim", "dim_mult", "num_res_blocks"))
        problem = format_key_problems(
            f"{source} (WanVAE({arch}))", missing, unexpected, mismatched,
            hint="pass the matching Wan2.1 VAE file and architecture arguments (nothing was loaded)",
            extra=[f"{len(not_float)} not floating point: {short_list(not_float)}"] if not_float else [],
        )
        if problem:
            raise CheckpointError(problem)
        tensors = {}
        for k, v in sd.items():
            if dtype is not None and v.dtype != dtype:
                v = v.to(dtype)
            if device is not None:
                v = v.to(device)
            tensors[k] = v
        self.model.load_state_dict(tensors, strict=True, assign=True)
        self.model.requires_grad_(False)
        leftover = [n for n, t in [*self.named_parameters(), *self.named_buffers()] if t.is_meta]
        if leftover:  # cannot happen after a strict load, but never run with uninitialised weights
            raise CheckpointError(f"{source}: parameters left uninitialised ({short_list(leftover)}); report this bug")
        self.eval()
        return self

    @classmethod
    def from_official_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        *,
        dtype: torch.dtype | None = torch.float32,
        device: torch.device | str | None = None,
        source: str = "VAE state dict",
        **arch_kwargs,
    ) -> WanVAE:
        """Build a :class:`WanVAE` from a state dict with the official Wan2.1 names (``encoder.conv1.weight``, ...).

        Strict: missing, unexpected or shape-mismatched keys raise one :class:`CheckpointError` listing them. Tensors
        are cast to ``dtype`` (``None`` keeps the stored dtype) and moved to ``device`` (``None``: where they are).
        ``arch_kwargs`` are the constructor's arguments (defaults: the real Wan2.1 VAE).
        """
        _check_state_dict_values(state_dict, source)
        vae = cls._empty(**arch_kwargs)
        key_map = official_to_diffusers_key_map(
            vae.config["dim_mult"], vae.config["num_res_blocks"], vae.config["temperal_downsample"]
        )
        inverse = {d: o for o, d in key_map.items()}
        if not any(k in key_map for k in state_dict) and any(k in inverse for k in state_dict):
            raise CheckpointError(
                f"{source} uses diffusers parameter names (e.g. encoder.conv_in.weight), not the official Wan2.1 "
                "names; load it with WanVAE.from_diffusers_folder or WanVAE.from_pretrained"
            )
        converted: dict[str, torch.Tensor] = {}
        name_of: dict[str, str] = {}
        for k, v in state_dict.items():
            new = key_map.get(k)
            if new is None:
                new = "\x00unmapped." + k  # keep it so that it is reported as unexpected under its own name
            converted[new] = v
            name_of[new] = k
        for d, o in inverse.items():
            name_of.setdefault(d, o)  # report missing keys under their official names
        return vae._assign_diffusers_state_dict(converted, source=source, dtype=dtype, device=device, name_of=name_of)

    @classmethod
    def from_official_file(
        cls,
        path: str | os.PathLike,
        *,
        dtype: torch.dtype | None = torch.float32,
        device: torch.device | str | None = None,
        **arch_kwargs,
    ) -> WanVAE:
        """Load the official ``Wan2.1_VAE.pth`` (``torch.load(weights_only=True, mmap=True)``) or a ``.safetensors``
        file with the same (official) parameter names."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"VAE checkpoint {path} not found{' (it is a folder)' if path.is_dir() else ''}; pass the path of "
                "Wan2.1_VAE.pth (from the Wan2.1 release) or a .safetensors file with the same names"
            )
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            sd = read_safetensors(path)
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            try:
                sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # noqa: BLE001 - unreadable / not a zip-format checkpoint / unsafe pickle
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise CheckpointError(
                    f"cannot load {path} with torch.load(weights_only=True, mmap=True): {type(exc).__name__}: "
                    f"{msg[:200]}; check that it is the complete Wan2.1_VAE.pth (a plain tensor state dict)"
                ) from exc
        else:
            raise CheckpointError(
                f"unsupported VAE checkpoint type '{path.suffix}' ({path}); use Wan2.1_VAE.pth or a .safetensors file"
            )
        return cls.from_official_state_dict(sd, dtype=dtype, device=device, source=str(path), **arch_kwargs)

    @classmethod
    def from_diffusers_folder(
        cls,
        folder: str | os.PathLike,
        *,
        dtype: torch.dtype | None = torch.float32,
        device: torch.device | str | None = None,
    ) -> WanVAE:
        """Load a diffusers ``AutoencoderKLWan`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``,
        or a sharded ``...safetensors.index.json``), e.g. the ``vae/`` folder of ``Wan2.1-*-Diffusers``."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"diffusers VAE folder {folder} not found; pass the folder holding config.json")
        cfg = read_json_object(folder / CONFIG_NAME)
        cls_name = cfg.get("_class_name", "AutoencoderKLWan")
        if cls_name == FORMAT_TAG:
            raise CheckpointError(
                f"{folder} was written by WanVAE.save_pretrained (not a diffusers folder); load it with "
                "WanVAE.from_pretrained"
            )
        if cls_name != "AutoencoderKLWan":
            raise CheckpointError(
                f"{folder / CONFIG_NAME} describes a {cls_name}, not an AutoencoderKLWan; pass the Wan VAE folder"
            )
        unsupported = {
            "is_residual": (False, "the Wan2.2 VAE is not supported"),
            "patch_size": (None, "the Wan2.2 VAE is not supported"),
            "in_channels": (3, "only RGB VAEs are supported"),
            "out_channels": (3, "only RGB VAEs are supported"),
        }
        for key, (want, why) in unsupported.items():
            if key in cfg and cfg[key] != want:
                raise CheckpointError(f"{folder / CONFIG_NAME}: {key}={cfg[key]!r} ({why}); pass a Wan2.1 VAE folder")
        if cfg.get("decoder_base_dim") not in (None, cfg.get("base_dim", 96)):
            raise CheckpointError(
                f"{folder / CONFIG_NAME}: decoder_base_dim={cfg['decoder_base_dim']} differs from base_dim "
                "(not a Wan2.1 VAE); pass a Wan2.1 VAE folder"
            )
        arch = {k: cfg[k] for k in _ARCH_KEYS if k in cfg}
        try:
            vae = cls._empty(**arch)
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{folder / CONFIG_NAME}: {exc}") from exc
        weights = folder / DIFFUSERS_WEIGHTS_NAME
        index = folder / DIFFUSERS_INDEX_NAME
        if weights.is_file():
            sd = read_safetensors(weights)
            source = str(weights)
        elif index.is_file():
            idx = read_json_object(index)
            shards = sorted(set((idx.get("weight_map") or {}).values()))
            if not shards:
                raise CheckpointError(f"{index} has no weight_map; regenerate the folder")
            sd = {}
            for shard in shards:
                sd.update(read_safetensors(folder / shard))
            source = str(index)
        else:
            raise CheckpointError(
                f"{folder} has no {DIFFUSERS_WEIGHTS_NAME}; pass a diffusers AutoencoderKLWan folder "
                f"(for our own format with {WEIGHTS_NAME} use WanVAE.from_pretrained)"
            )
        return vae._assign_diffusers_state_dict(sd, source=source, dtype=dtype, device=device)

    def _write_folder(self, folder: str | os.PathLike, cfg: dict, weights_name: str, metadata: dict) -> None:
        """``folder/weights_name`` (the weights in diffusers naming, stored dtype unchanged) and ``folder/config.json``,
        each written beside itself and renamed into place."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(self.model.state_dict(), folder / weights_name, metadata=metadata)
        atomic_write_text(folder / CONFIG_NAME, json.dumps(cfg, indent=2) + "\n")

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write our model-folder component: ``config.json`` (format tag + architecture arguments, including the
        latent mean/std) and ``model.safetensors`` (the weights in diffusers naming, stored dtype unchanged)."""
        cfg = {"_class_name": FORMAT_TAG, "_format_version": FORMAT_VERSION, **self.config}
        self._write_folder(folder, cfg, WEIGHTS_NAME, {"format": "pt", "flashi2v": FORMAT_TAG})

    def save_diffusers_folder(self, folder: str | os.PathLike) -> None:
        """Write a diffusers ``AutoencoderKLWan`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)
        that ``AutoencoderKLWan.from_pretrained(folder)`` loads as this VAE: the same parameter names and dtype, the
        latent mean/std and the scale factors in its config (diffusers is not needed to write it). The inverse of
        :meth:`from_diffusers_folder`; e.g. to use a VAE trained with ``flashi2v train-vae`` in diffusers."""
        c = self.config
        cfg = {"_class_name": "AutoencoderKLWan", **{k: c[k] for k in _ARCH_KEYS},
               "dim_mult": list(c["dim_mult"]), "attn_scales": list(c["attn_scales"]),
               "temperal_downsample": list(c["temperal_downsample"]),
               "scale_factor_spatial": self.spatial_factor, "scale_factor_temporal": self.temporal_factor}
        self._write_folder(folder, cfg, DIFFUSERS_WEIGHTS_NAME, {"format": "pt"})

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> WanVAE:
        """Load a folder written by :meth:`save_pretrained` (``dtype=None`` keeps the stored dtype: lossless)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"VAE folder {folder} not found; pass a folder written by WanVAE.save_pretrained")
        cfg = read_json_object(folder / CONFIG_NAME)
        if cfg.get("_class_name") != FORMAT_TAG:
            hint = (
                "it is a diffusers folder: use WanVAE.from_diffusers_folder"
                if cfg.get("_class_name") == "AutoencoderKLWan"
                else "pass a folder written by WanVAE.save_pretrained"
            )
            raise CheckpointError(f"{folder / CONFIG_NAME} is not a {FORMAT_TAG} config ({hint})")
        if cfg.get("_format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{folder / CONFIG_NAME} has _format_version {cfg.get('_format_version')!r}, this code reads "
                f"{FORMAT_VERSION}; re-save the VAE with this version of flashi2v"
            )
        unknown = sorted(k for k in cfg if not k.startswith("_") and k not in _ARCH_KEYS)
        if unknown:
            raise CheckpointError(
                f"{folder / CONFIG_NAME} has unknown keys {unknown}; remove them (known: {', '.join(_ARCH_KEYS)})"
            )
        try:
            vae = cls._empty(**{k: cfg[k] for k in _ARCH_KEYS if k in cfg})
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{folder / CONFIG_NAME}: {exc}") from exc
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{weights} not found; the folder must hold {WEIGHTS_NAME} (re-run save_pretrained)")
        sd = read_safetensors(weights)
        return vae._assign_diffusers_state_dict(sd, source=str(weights), dtype=dtype, device=device)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under the official Wan2.1 names (inverse of :meth:`from_official_state_dict`)."""
        key_map = official_to_diffusers_key_map(
            self.config["dim_mult"], self.config["num_res_blocks"], self.config["temperal_downsample"]
        )
        sd = self.model.state_dict()
        return {o: sd[d] for o, d in key_map.items()}

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"base_dim={c['base_dim']}, z_dim={c['z_dim']}, dim_mult={tuple(c['dim_mult'])}, "
            f"num_res_blocks={c['num_res_blocks']}, temperal_downsample={tuple(c['temperal_downsample'])}"
        )
