"""The Wan2.1 causal 3-D VAE in plain torch: the network that :class:`flashi2v.vae.WanVAE` runs.

Parameter names are those of diffusers' ``AutoencoderKLWan`` (so our folders, diffusers folders and the official
key map in :mod:`flashi2v.vae` all describe the same tensors), and the computation is the official ``WanVAE_``'s.
It replaces diffusers as the engine for one reason: importing diffusers' VAE costs about 4 s per process here
(it pulls in every autoencoder diffusers has and transformers' model stack), longer than the whole VAE decode of a
default-model clip. diffusers stays a test dependency: ``tests/test_vae.py`` checks this module against it.

How the time axis works (the official design, restated):

* Every 3x3x3 convolution is **causal** in time: the frames before the first one are zeros.
* The encoder halves the frame rate with a stride-2 temporal convolution that **passes frame 0 through**:
  frames ``0, 1..T-1`` become ``0, conv(0,1,2), conv(2,3,4), ...``. The decoder's up-sampling mirrors it: latent
  frame 0 stays one frame, every later latent frame becomes two (one temporal conv with ``2C`` outputs, zeros before
  frame 1, since frame 0 does not enter it).
* So ``1 + 4k`` frames encode to ``1 + k`` latent frames (two halvings) and decode back.
* The official code processes the time axis in **chunks** (encode: frame 0, then 4 frames at a time; decode: one
  latent frame at a time) and carries each causal convolution's last two input frames from chunk to chunk. The
  result equals one pass over the whole clip up to float rounding; chunking only bounds the memory. Here a chunk
  carries its state in a ``dict`` (``cache``), keyed by module; ``cache=None`` means "the whole clip in one call".
  ``one_pass_max_pixels`` switches small clips to that one call (measured on 2 CPU threads for the default model's
  17 x 128 x 128 clips: decode 0.7 s instead of 2.2 s, encode 0.5 s instead of 1.0 s, largest difference 2e-6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WanVAEModel"]

class CausalConv3d(nn.Conv3d):
    """A 3-D convolution whose temporal padding is all in front (zeros, or the previous chunk's last input frames);
    spatial padding is symmetric. ``padding`` is given as for ``nn.Conv3d`` (``(1, 1, 1)`` pads 2 frames in front)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        pt, ph, pw = self.padding
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)
        self.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        if self.time_pad:
            b, c, _, h, w = x.shape
            before = None if cache is None else cache.get(self)
            if before is None:
                before = x.new_zeros(b, c, self.time_pad, h, w)
            x = torch.cat([before.to(x.device, x.dtype), x], dim=2)
            if cache is not None:
                cache[self] = x[:, :, -self.time_pad:].clone()
        if any(self.space_pad):
            x = F.pad(x, (*self.space_pad, 0, 0))
        return super().forward(x)


class RMSNorm(nn.Module):
    """``F.normalize`` over channels times ``sqrt(C) * gamma`` (float32 inside for half-precision inputs)."""

    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.dtype in (torch.float16, torch.bfloat16)
        return F.normalize(x.float() if half else x, dim=1).to(x.dtype) * self.scale * self.gamma


class _Upsample2x(nn.Module):
    """Nearest-exact 2x spatial up-sampling, computed in float32 and cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.float(), scale_factor=(2.0, 2.0), mode="nearest-exact").type_as(x)


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D ``module`` to every frame of ``x [B, C, T, H, W]``."""
    b, _, t = x.shape[:3]
    y = module(x.transpose(1, 2).flatten(0, 1))
    return y.unflatten(0, (b, t)).transpose(1, 2)


class Resample(nn.Module):
    """Spatial 2x re-sampling of every frame, with (``*3d`` modes) the temporal 2x step described in the module
    docstring. Modes: ``upsample2d``, ``upsample3d``, ``downsample2d``, ``downsample3d``."""

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(_Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: torch.Tensor, cache: dict | None) -> torch.Tensor:
        head = None
        if cache is None or self not in cache:  # the clip's first frame: passed through, not doubled
            head, x = x[:, :, :1], x[:, :, 1:]
            if cache is not None:
                cache[self] = True
        if x.shape[2]:
            b, c, t, h, w = x.shape
            y = self.time_conv(x, cache)  # [B, 2C, T, H, W]: the two output frames of each input frame
            x = y.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        return x if head is None else torch.cat([head, x], dim=2)

    def _halve_frames(self, x: torch.Tensor, cache: dict | None) -> torch.Tensor:
        before = None if cache is None else cache.get(self)
        if cache is not None:
            cache[self] = x[:, :, -1:].clone()
        if before is None:  # the clip's first frame passes through; windows (0,1,2), (2,3,4), ... follow
            return torch.cat([x[:, :, :1], self.time_conv(x)], dim=2) if x.shape[2] >= 3 else x[:, :, :1]
        return self.time_conv(torch.cat([before, x], dim=2))


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = RMSNorm(in_dim, images=False)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = RMSNorm(out_dim, images=False)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        h = self.conv_shortcut(x)
        x = self.conv1(F.silu(self.norm1(x)), cache)
        x = self.conv2(self.dropout(F.silu(self.norm2(x))), cache)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_frame(self._attend, x) + x  # (this operand order keeps the memory layout, so the floats, of diffusers)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(n, 1, 3 * c, h * w).transpose(-1, -2).contiguous()
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.squeeze(1).transpose(1, 2).reshape(n, c, h, w))


class MidBlock(nn.Module):
    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        first = ResidualBlock(dim, dim, dropout)  # created in this order: the same random init as diffusers'
        attention = AttentionBlock(dim)
        self.attentions = nn.ModuleList([attention])
        self.resnets = nn.ModuleList([first, ResidualBlock(dim, dim, dropout)])

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        return self.resnets[1](self.attentions[0](x), cache)


class Encoder3d(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult: Sequence[int], num_res_blocks: int,
                 temperal_downsample: Sequence[bool], dropout: float = 0.0) -> None:
        super().__init__()
        dims = [dim * m for m in [1, *dim_mult]]
        self.conv_in = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, dropout))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "downsample3d" if temperal_downsample[i] else "downsample2d"))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(dims[-1], dropout)
        self.norm_out = RMSNorm(dims[-1], images=False)
        self.conv_out = CausalConv3d(dims[-1], z_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class UpBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, mode: str | None) -> None:
        super().__init__()
        resnets = []
        for _ in range(num_res_blocks + 1):
            resnets.append(ResidualBlock(in_dim, out_dim, dropout))
            in_dim = out_dim
        self.resnets = nn.ModuleList(resnets)
        self.upsamplers = nn.ModuleList([Resample(out_dim, mode)]) if mode else None

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        for block in self.resnets:
            x = block(x, cache)
        return self.upsamplers[0](x, cache) if self.upsamplers is not None else x


class Decoder3d(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult: Sequence[int], num_res_blocks: int,
                 temperal_upsample: Sequence[bool], dropout: float = 0.0) -> None:
        super().__init__()
        dims = [dim * m for m in [dim_mult[-1], *dim_mult[::-1]]]
        self.conv_in = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0], dropout)
        blocks = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # the previous up-sampling halved the channels
            mode = None
            if i != len(dim_mult) - 1:
                mode = "upsample3d" if temperal_upsample[i] else "upsample2d"
            blocks.append(UpBlock(in_dim, out_dim, num_res_blocks, dropout, mode))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1], images=False)
        self.conv_out = CausalConv3d(dims[-1], 3, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = self.mid_block(self.conv_in(x, cache), cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class WanVAEModel(nn.Module):
    """Encoder, ``quant_conv``, ``post_quant_conv`` and decoder of the Wan2.1 VAE (diffusers' parameter names).

    :meth:`encode_moments` and :meth:`decode_latents` are differentiable (the trainer uses them); the chunking,
    spatial tiling (``use_tiling`` with the ``tile_sample_*`` sizes in pixels) and batch slicing (``use_slicing``)
    follow the official code and diffusers, so tiled results equal theirs too. ``one_pass_max_pixels`` (0: never)
    runs a batch of clips (or tiles) whose videos x frames x height x width is at most that in one pass over time instead of
    the official chunks: faster, the same up to float rounding, memory growing with the frame count.
    """

    def __init__(self, base_dim: int = 96, z_dim: int = 16, dim_mult: Sequence[int] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, temperal_downsample: Sequence[bool] = (False, True, True),
                 dropout: float = 0.0) -> None:
        super().__init__()
        dim_mult, temperal_downsample = list(dim_mult), list(temperal_downsample)
        self.z_dim = z_dim
        self.encoder = Encoder3d(base_dim, z_dim * 2, dim_mult, num_res_blocks, temperal_downsample, dropout)
        self.quant_conv = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.post_quant_conv = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder3d(base_dim, z_dim, dim_mult, num_res_blocks, temperal_downsample[::-1], dropout)
        self.spatial_compression_ratio = 2 ** (len(dim_mult) - 1)
        self.temporal_compression_ratio = 2 ** sum(temperal_downsample)
        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_height = 256
        self.tile_sample_min_width = 256
        self.tile_sample_stride_height = 192
        self.tile_sample_stride_width = 192
        self.one_pass_max_pixels = 0

    # ---------------------------------------------------------------------------------------------- untiled passes
    def _one_pass(self, batch: int, frames: int, height: int, width: int) -> bool:
        return batch * frames * height * width <= self.one_pass_max_pixels

    def _encode_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """Official chunking: frame 0, then 4 frames at a time, one cache across the chunks."""
        if self._one_pass(x.shape[0], *x.shape[2:]):
            return self.quant_conv(self.encoder(x))
        cache: dict = {}
        chunks = [x[:, :, :1]] + [x[:, :, i : i + 4] for i in range(1, x.shape[2], 4)]
        return self.quant_conv(torch.cat([self.encoder(c, cache) for c in chunks], dim=2))

    def _decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        """Official chunking: one latent frame at a time, one cache across them. Not clamped."""
        x = self.post_quant_conv(z)
        s, frames = self.spatial_compression_ratio, 1 + self.temporal_compression_ratio * (z.shape[2] - 1)
        if self._one_pass(z.shape[0], frames, z.shape[3] * s, z.shape[4] * s):
            return self.decoder(x)
        cache: dict = {}
        return torch.cat([self.decoder(x[:, :, i : i + 1], cache) for i in range(x.shape[2])], dim=2)

    # ---------------------------------------------------------------------------------------------- public passes
    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 1 + 4k, H, W]`` in [-1, 1] -> ``[B, 2z, 1 + k, H/8, W/8]``: the posterior's mean, then its
        log-variance, along channels (tiled when ``use_tiling`` and the video exceeds a tile; sliced per video when
        ``use_slicing``)."""
        if self.use_slicing and x.shape[0] > 1:
            return torch.cat([self.encode_moments(v) for v in x.split(1)])
        h, w = x.shape[-2:]
        if self.use_tiling and (w > self.tile_sample_min_width or h > self.tile_sample_min_height):
            return self._tiled(x, encode=True)
        return self._encode_chunks(x)

    def decode_latents(self, z: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """``[B, z, 1 + k, h, w]`` (raw, un-normalised latents) -> ``[B, 3, 1 + 4k, 8h, 8w]``, clamped to [-1, 1]
        unless ``clamp=False`` (training: a clamp would stop the gradient of overshooting pixels)."""
        if self.use_slicing and z.shape[0] > 1:
            return torch.cat([self.decode_latents(v, clamp=clamp) for v in z.split(1)])
        s = self.spatial_compression_ratio
        h, w = z.shape[-2:]
        if self.use_tiling and (w > self.tile_sample_min_width // s or h > self.tile_sample_min_height // s):
            out = self._tiled(z, encode=False)
        else:
            out = self._decode_frames(z)
        return out.clamp(-1.0, 1.0) if clamp else out

    # ---------------------------------------------------------------------------------------------- tiling
    def _tiled(self, x: torch.Tensor, *, encode: bool) -> torch.Tensor:
        """Overlapping spatial tiles, each through the whole clip with its own cache, cross-faded linearly over their
        overlap (each tile blended, in place, with the already blended tiles above and to its left)."""
        s = self.spatial_compression_ratio
        size_h, size_w = self.tile_sample_min_height, self.tile_sample_min_width
        step_h, step_w = self.tile_sample_stride_height, self.tile_sample_stride_width
        if encode:  # input in pixels, output in latents
            in_size, in_step, out_step = (size_h, size_w), (step_h, step_w), (step_h // s, step_w // s)
            blend = (size_h // s - step_h // s, size_w // s - step_w // s)
            run = self._encode_chunks
            out_hw = (x.shape[-2] // s, x.shape[-1] // s)
        else:  # input in latents, output in pixels
            in_size, in_step, out_step = (size_h // s, size_w // s), (step_h // s, step_w // s), (step_h, step_w)
            blend = (size_h - step_h, size_w - step_w)
            run = self._decode_frames
            out_hw = (x.shape[-2] * s, x.shape[-1] * s)
        rows = [[run(x[..., i : i + in_size[0], j : j + in_size[1]]) for j in range(0, x.shape[-1], in_step[1])]
                for i in range(0, x.shape[-2], in_step[0])]
        out_rows = []
        for i, row in enumerate(rows):
            kept = []
            for j, tile in enumerate(row):
                if i > 0:
                    _blend(rows[i - 1][j], tile, blend[0], dim=-2)
                if j > 0:
                    _blend(row[j - 1], tile, blend[1], dim=-1)
                kept.append(tile[..., : out_step[0], : out_step[1]])
            out_rows.append(torch.cat(kept, dim=-1))
        return torch.cat(out_rows, dim=-2)[..., : out_hw[0], : out_hw[1]]


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, *, dim: int) -> None:
    """Cross-fade the first ``extent`` rows (``dim=-2``) or columns (``dim=-1``) of ``b`` from ``a``'s last ones,
    in place: position ``y`` gets ``a * (1 - y / extent) + b * (y / extent)``."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    for y in range(extent):
        w = y / extent
        b.select(dim, y).copy_(a.select(dim, a.shape[dim] - extent + y) * (1 - w) + b.select(dim, y) * w)
