"""The Wan2.1 diffusion transformer (text-to-video backbone), parameter names identical to the official ``WanModel``.

Shapes: x [B, C_in, T, h, w] latents, t [B] timesteps in [0, 1000], context [B, L_text, text_dim] text states
(zero-padded, attended to in full like the official code) -> velocity [B, C_out, T, h, w] in float32.

Precision (see :mod:`flashi2v.precision`): the residual stream, time embedding, modulation, norms, RoPE and the
head run in float32 whatever the weight dtype; the big matrix products (attention projections, FFN, patch/text
embeddings) run in the dtype of their weights (bf16 on GPU).

Two switches for training at scale, both off by default (and then the code below is plain maths):

* ``model.gradient_checkpointing = True`` recomputes each block in backward (non-reentrant checkpointing);
* ``model.enable_context_parallel(group)`` splits the token sequence over a process group (Ulysses; see
  :mod:`flashi2v.parallel.context_parallel`). :func:`flashi2v.parallel.parallelize` sets both from a config.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..config import TransformerConfig
from ..errors import ConfigError
from ..parallel import context_parallel as cp
from .attention import attention
from .rope import rope_apply


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[cos(t*f), sin(t*f)] with f_j = 10000^(-j/(dim/2)), computed in float64 (cos first), returned as float64."""
    half = dim // 2
    t = t.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device).div(half))
    angles = torch.outer(t, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def _modulation(rows: int, dim: int) -> torch.Tensor:
    """``randn(1, rows, dim) / sqrt(dim)``, but nothing random on the meta device, where the weights are always
    assigned from a checkpoint afterwards (there ``randn`` and ``/`` run torch's Python reference kernels, which
    import sympy and torch._dynamo: 1-2 s of every model load)."""
    empty = torch.empty(1, rows, dim)
    return empty if empty.is_meta else torch.randn(1, rows, dim, device=empty.device) / dim**0.5


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32; returns float32 (the residual stream's dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight, normalised in float32 (Wan's qk-norm over all heads jointly)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.rms_norm(x.float(), (x.shape[-1],), None, self.eps) * self.weight.float()).to(x.dtype)


class SelfAttention(nn.Module):
    cp_group = None  # context-parallel process group (set by WanTransformer.enable_context_parallel), None = off

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x)
        # k and v take x in q's compute dtype: FSDP2 before torch 2.13 casts the inputs of only the first module of a
        # unit ({q, k, v, o} is one, see parallel/apply.py) to param_dtype, so x itself may still be fp32 here
        x = x.to(q.dtype)
        q = self.norm_q(q).view(b, n, self.num_heads, -1)
        k = self.norm_k(self.k(x)).view(b, n, self.num_heads, -1)
        v = self.v(x).view(b, n, self.num_heads, -1)
        if self.cp_group is None:
            out = attention(rope_apply(q, grid), rope_apply(k, grid), v)
        else:  # Ulysses: local tokens x all heads -> all tokens x local heads; the padding never becomes a key
            tokens = math.prod(grid)
            q, k, v = cp.sequence_to_heads(torch.stack([q, k, v]), self.cp_group)[:, :, :tokens].unbind(0)
            out = attention(rope_apply(q, grid), rope_apply(k, grid), v)
            out = cp.heads_to_sequence(cp.pad_sequence(out, n * cp.group_size(self.cp_group)), self.cp_group)
        return self.o(out.flatten(2))


class CrossAttention(SelfAttention):
    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x)
        context = context.to(q.dtype)  # as in SelfAttention.forward
        q = self.norm_q(q).view(b, n, self.num_heads, -1)
        k = self.norm_k(self.k(context)).view(b, context.shape[1], self.num_heads, -1)
        v = self.v(context).view(b, context.shape[1], self.num_heads, -1)
        return self.o(attention(q, k, v).flatten(2))


class WanBlock(nn.Module):
    """Self-attention (RoPE, qk-norm) -> cross-attention to text -> FFN, with 6-way adaLN modulation."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, qk_norm: bool, cross_attn_norm: bool, eps: float):
        super().__init__()
        self.dim = dim
        self.norm1 = LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, num_heads, qk_norm, eps)
        self.norm3 = LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, num_heads, qk_norm, eps)
        self.norm2 = LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(_modulation(6, dim))

    def reset_parameters(self) -> None:  # own parameter only; children reset themselves
        with torch.no_grad():
            self.modulation.copy_(torch.randn(self.modulation.shape, device=self.modulation.device) / self.dim**0.5)

    def forward(self, x: torch.Tensor, e0: torch.Tensor, grid, context: torch.Tensor) -> torch.Tensor:
        # x: fp32 residual stream [B, L, D]; e0: fp32 [B, 6, D]; context: embedded text in compute dtype.
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.float() + e0).chunk(6, dim=1)
        cdt = self.self_attn.q.weight.dtype
        y = self.self_attn(torch.addcmul(shift1, self.norm1(x), 1 + scale1).to(cdt), grid)
        x = torch.addcmul(x, y.float(), gate1)
        x = x + self.cross_attn(self.norm3(x).to(cdt), context).float()
        y = self.ffn(torch.addcmul(shift2, self.norm2(x), 1 + scale2).to(cdt))
        return torch.addcmul(x, y.float(), gate2)


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float):
        super().__init__()
        self.dim = dim
        self.norm = LayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim * math.prod(patch_size))
        self.modulation = nn.Parameter(_modulation(2, dim))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.modulation.copy_(torch.randn(self.modulation.shape, device=self.modulation.device) / self.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.float() + e[:, None, :]).chunk(2, dim=1)
        h = self.norm(x) * (1 + scale) + shift
        return F.linear(h, self.head.weight.float(), self.head.bias.float())


class FrameEmbedding(nn.Module):
    """A learned vector per latent-frame index, added to every patch token of that frame (zero at init).

    Not part of Wan or FlashI2V (``TransformerConfig.frame_embedding``, off by default). Wan's RoPE is relative, and
    FlashI2V gives every frame the same φ(z) and Fourier features, so at σ = 1 the frames of the input are
    interchangeable: only the attention's edge effects tell a token which frame it is in. This tells it directly.
    """

    def __init__(self, num_frames: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_frames, dim))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: patch embeddings [B, D, f, gh, gw] -> h + weight[t] on latent frame t."""
        f = h.shape[2]
        if f > self.weight.shape[0]:
            raise ValueError(
                f"the input has {f} latent frames but the model's frame embedding covers {self.weight.shape[0]}; "
                f"use at most {self.weight.shape[0]} latent frames"
            )
        return h + self.weight[:f].to(h.dtype).t()[None, :, :, None, None]


class WanTransformer(nn.Module):
    """Wan2.1 DiT. ``WanTransformer(config)`` builds and initialises it; ``device="meta"`` builds without memory.

    Initialisation (any construction path, see :meth:`init_weights`): PyTorch defaults for Linear/Conv/LayerNorm,
    modulation randn/sqrt(dim), RMSNorm weights ones.
    """

    gradient_checkpointing = False  # recompute every block in backward (activation checkpointing)
    cp_group = None  # context-parallel process group, see enable_context_parallel

    def __init__(self, config: TransformerConfig, device: torch.device | str | None = None):
        super().__init__()
        self.config = config
        c = config
        # Modules are created on the meta device and materialised + initialised once below, so a model built on a
        # real device and one built on "meta" then materialised receive identical values from the same seed.
        with torch.device("meta"):
            self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
            self.text_embedding = nn.Sequential(
                nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), nn.Linear(c.dim, c.dim)
            )
            self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
            self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, c.dim * 6))
            self.blocks = nn.ModuleList(
                WanBlock(c.dim, c.ffn_dim, c.num_heads, c.qk_norm, c.cross_attn_norm, c.eps) for _ in range(c.num_layers)
            )
            self.head = Head(c.dim, c.out_dim, c.patch_size, c.eps)
            self.frame_embedding = FrameEmbedding(c.frame_embedding, c.dim) if c.frame_embedding else None
            self._build_branches()
        if torch.device(device or "cpu").type != "meta":
            self.to_empty(device=device or "cpu")
            self.init_weights()

    MODEL_TYPE = "t2v"

    @classmethod
    def from_official_config(cls, model_config, device: torch.device | str | None = None) -> "WanTransformer":
        """Build from the official YAML ``model_config`` mapping (see :meth:`TransformerConfig.from_official`)."""
        return cls(TransformerConfig.from_official(model_config, model_type=cls.MODEL_TYPE), device)

    def _build_branches(self) -> None:
        """Hook for subclasses that add modules (called on the meta device, after the backbone)."""

    # ------------------------------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_weights(self, module: nn.Module | None = None) -> None:
        """(Re)initialise every parameter of ``module`` (default: the whole model) per the specification.

        Children are reset before their parents so that a parent with a special rule (the zero-initialised FlashI2V
        branches) has the last word.
        """
        for m in reversed(list((module or self).modules())):
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    # ----------------------------------------------------------------------------------------------- forward
    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the large matrix products (the dtype of the attention weights)."""
        return self.blocks[0].self_attn.q.weight.dtype if len(self.blocks) else self.patch_embedding.weight.dtype

    def enable_context_parallel(self, group) -> None:
        """Split the token sequence over the process group ``group`` (Ulysses); ``None`` or a group of one turns it off.

        Every rank of the group must then call the model with the same inputs; all of them get the full output.
        """
        size = cp.group_size(group)
        if self.config.num_heads % size:
            raise ConfigError(
                f"num_heads {self.config.num_heads} is not divisible by the context-parallel size {size}"
            )
        self.cp_group = group if size > 1 else None
        for block in self.blocks:
            block.self_attn.cp_group = self.cp_group

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Time embedding e [B, D] and its 6-way projection e0 [B, 6, D], both float32."""
        s = sinusoidal_embedding(t, self.config.freq_dim).float()
        te0, te2, tp1 = self.time_embedding[0], self.time_embedding[2], self.time_projection[1]
        e = F.linear(F.silu(F.linear(s, te0.weight.float(), te0.bias.float())), te2.weight.float(), te2.bias.float())
        e0 = F.linear(F.silu(e), tp1.weight.float(), tp1.bias.float()).unflatten(1, (6, self.config.dim))
        return e, e0

    def embed_patches(self, x: torch.Tensor, fourier_features: torch.Tensor | None) -> torch.Tensor:
        """Patch embedding [B, D, T, h/2, w/2] in the compute dtype (FlashI2V adds its Fourier branch here)."""
        return self.patch_embedding(x.to(self.patch_embedding.weight.dtype))

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        fourier_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_dim:
            raise ValueError(f"x must be [B, {c.in_dim}, T, h, w], got {tuple(x.shape)}")
        pt, ph, pw = c.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise ValueError(f"latent size {tuple(x.shape[2:])} is not divisible by the patch size {c.patch_size}")
        if context.ndim != 3 or context.shape[-1] != c.text_dim:
            raise ValueError(f"context must be [B, L, {c.text_dim}], got {tuple(context.shape)}")
        b = x.shape[0]
        t = t.reshape(-1).expand(b) if t.numel() in (1, b) else t
        if t.shape != (b,):
            raise ValueError(f"t must have one value per sample ({b}), got shape {tuple(t.shape)}")

        h = self.embed_patches(x, fourier_features)  # [B, D, f, gh, gw]
        if self.frame_embedding is not None:
            h = self.frame_embedding(h)
        grid = tuple(h.shape[2:])
        tokens = h.flatten(2).transpose(1, 2).float().contiguous()  # residual stream in fp32, (f, y, x) order
        if self.cp_group is not None:
            tokens = cp.split_sequence(tokens, self.cp_group)  # this rank's chunk, zero-padded to a multiple of cp
        e, e0 = self.embed_time(t)
        ctx = self.text_embedding(context.to(self.dtype))
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, e0, grid, ctx, use_reentrant=False)
            else:
                tokens = block(tokens, e0, grid, ctx)
        out = self.head(tokens, e)  # [B, L, pt*ph*pw*C_out], fp32
        if self.cp_group is not None:
            out = cp.gather_sequence(out, self.cp_group, math.prod(grid))  # full sequence on every rank
        return self.unpatchify(out, grid)

    def unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, L, (pt py px c)] -> [B, c, f*pt, h*py, w*px]."""
        f, gh, gw = grid
        pt, ph, pw = self.config.patch_size
        c = self.config.out_dim
        out = out.view(out.shape[0], f, gh, gw, pt, ph, pw, c)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(out.shape[0], c, f * pt, gh * ph, gw * pw).float()

    # ------------------------------------------------------------------------------------------------- misc
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
