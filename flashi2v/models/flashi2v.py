"""FlashI2V's two conditioning branches on top of the Wan2.1 backbone.

* :class:`LearnableProjection` φ: two convs (16 -> 64 -> 16, SiLU between) applied to the clean first-frame latent.
  Its output is subtracted from the flow-matching state ("latent shifting", see :mod:`flashi2v.method`).
* :class:`FourierEmbedding`: a second patch embedding (kernel = stride = patch size, then a 1x1x1 conv) of the
  high-frequency magnitude of the first-frame latent (:mod:`flashi2v.fourier`); added to the patch embeddings.

Both end in zero-initialised convs, so a FlashI2V model initialised from Wan2.1-T2V weights *is* the T2V model.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import TransformerConfig
from .wan import WanTransformer


def xavier_uniform_flat_(weight: torch.Tensor) -> None:
    """Xavier-uniform on ``weight.flatten(1)`` (fan_in = prod(shape[1:]), fan_out = shape[0]), like the official init."""
    fan_out, fan_in = weight.shape[0], math.prod(weight.shape[1:])
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class LearnableProjection(nn.Module):
    """φ: Conv3d(C, 64) -> SiLU -> Conv3d(64, C), "same" padding; kernel 1x3x3 (default) or 3x3x3. Runs in fp32."""

    def __init__(self, channels: int = 16, hidden: int = 64, conv3x3x3: bool = False):
        super().__init__()
        k, p = ((3, 3, 3), (1, 1, 1)) if conv3x3x3 else ((1, 3, 3), (0, 1, 1))
        self.proj = nn.Sequential(
            nn.Conv3d(channels, hidden, k, padding=p), nn.SiLU(), nn.Conv3d(hidden, channels, k, padding=p)
        )

    def reset_parameters(self) -> None:
        xavier_uniform_flat_(self.proj[0].weight)
        nn.init.zeros_(self.proj[0].bias)
        nn.init.zeros_(self.proj[2].weight)
        nn.init.zeros_(self.proj[2].bias)

    @torch.no_grad()
    def reset_identity(self) -> None:
        """Initialise φ to the identity, φ(z) = z exactly, using SiLU(a) − SiLU(−a) = a: hidden channels 0..C−1 read +z
        and C..2C−1 read −z at the kernel centre, and the output conv takes their difference. The remaining hidden
        channels keep the Xavier input init and a zero output, as in :meth:`reset_parameters`."""
        w0, w2 = self.proj[0], self.proj[2]
        c = w2.out_channels
        if w0.out_channels < 2 * c:
            raise ValueError(f"an identity φ needs at least {2 * c} hidden channels, got {w0.out_channels}")
        self.reset_parameters()
        centre = (slice(None), slice(None)) + tuple(k // 2 for k in w0.kernel_size)
        eye = torch.eye(c, dtype=w0.weight.dtype, device=w0.weight.device)
        w0.weight[: 2 * c].zero_()
        w0.weight[:c][centre] = eye
        w0.weight[c : 2 * c][centre] = -eye
        w2.weight[:, :c][centre] = eye
        w2.weight[:, c : 2 * c][centre] = -eye

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: clean first-frame latent [B, C, 1, h, w] -> φ(z) [B, C, 1, h, w] in float32."""
        w0, w2 = self.proj[0], self.proj[2]
        z = z.float()
        y = nn.functional.conv3d(z, w0.weight.float(), w0.bias.float(), padding=w0.padding)
        return nn.functional.conv3d(nn.functional.silu(y), w2.weight.float(), w2.bias.float(), padding=w2.padding)


class FourierEmbedding(nn.Sequential):
    """Conv3d(C, D, kernel = stride = patch) -> Conv3d(D, D, 1x1x1); no activation between."""

    def __init__(self, channels: int, dim: int, patch_size: tuple[int, int, int]):
        super().__init__(nn.Conv3d(channels, dim, patch_size, stride=patch_size), nn.Conv3d(dim, dim, 1))

    def reset_parameters(self) -> None:
        xavier_uniform_flat_(self[0].weight)
        nn.init.zeros_(self[0].bias)
        nn.init.zeros_(self[1].weight)
        nn.init.zeros_(self[1].bias)


class FlashI2VTransformer(WanTransformer):
    """Wan2.1 DiT + FlashI2V branches. ``forward(x, t, context, fourier_features)`` returns the velocity (fp32).

    ``x`` is the *shifted* state ``y - φ(z)`` (see :class:`flashi2v.method.FlashI2VDenoiser`);
    ``fourier_features`` [B, C, T, h, w] is the high-frequency magnitude of the first-frame latent repeated over T.
    """

    FLASHI2V_PREFIXES = ("fourier_embedding.", "learnable_proj.")
    MODEL_TYPE = "flashi2v"

    def __init__(self, config: TransformerConfig, device: torch.device | str | None = None):
        if not config.is_flashi2v:
            raise ValueError("FlashI2VTransformer needs config.model_type == 'flashi2v' (use WanTransformer for T2V)")
        super().__init__(config, device)

    def _build_branches(self) -> None:
        c = self.config
        self.fourier_embedding = FourierEmbedding(c.in_dim, c.dim, c.patch_size)
        self.learnable_proj = LearnableProjection(c.in_dim, 64, c.conv3x3x3_proj)

    def embed_patches(self, x: torch.Tensor, fourier_features: torch.Tensor | None) -> torch.Tensor:
        if fourier_features is None:
            raise ValueError("FlashI2VTransformer.forward needs fourier_features (see flashi2v.fourier)")
        if fourier_features.shape != x.shape:
            raise ValueError(
                f"fourier_features must have the latent shape {tuple(x.shape)}, got {tuple(fourier_features.shape)}"
            )
        dt = self.patch_embedding.weight.dtype
        return self.patch_embedding(x.to(dt)) + self.fourier_embedding(fourier_features.to(dt))

    @torch.no_grad()
    def init_condition_branches_xavier(self) -> None:
        """Xavier-uniform (flat, like every other layer) on the zero-initialised output convs of φ and the Fourier
        embedding, so a model trained from scratch sees the image through both branches from the first step (the
        paper's zero init exists to start a fine-tune from T2V as exactly T2V). Biases stay zero."""
        xavier_uniform_flat_(self.learnable_proj.proj[2].weight)
        xavier_uniform_flat_(self.fourier_embedding[1].weight)

    def init_condition_branches_identity(self) -> None:
        """φ(z) = z at step 0 (see :meth:`LearnableProjection.reset_identity`); the Fourier embedding keeps the paper's
        init. With φ = z the shifted state of latent frame 0 is σ·(ε − z), i.e. σ times its own velocity target, so
        a model trained from scratch gets the image's low frequencies in a form it can read from the first step."""
        self.learnable_proj.reset_identity()

    def project_first_frame(self, z: torch.Tensor) -> torch.Tensor:
        """φ(z) for the clean first-frame latent z [B, C, 1, h, w] (float32)."""
        return self.learnable_proj(z)


def build_transformer(config: TransformerConfig, device: torch.device | str | None = None) -> WanTransformer:
    """The right class for ``config.model_type``: :class:`FlashI2VTransformer`, or :class:`WanTransformer` for T2V
    and the channel-concatenation I2V baselines (a plain Wan backbone with in_dim > out_dim, :mod:`flashi2v.paradigms`)."""
    return (FlashI2VTransformer if config.is_flashi2v else WanTransformer)(config, device)
