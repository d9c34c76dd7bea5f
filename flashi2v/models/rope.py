"""3-axis rotary position embedding of Wan2.1 (frame, row, column).

Each head vector of size d is read as d/2 complex numbers made of *adjacent* pairs (x[2j], x[2j+1]). The d/2 complex
slots are split into three consecutive groups of sizes c - 2*(c//3), c//3, c//3 (c = d/2; 22/21/21 for d = 128),
rotated by the token's frame, row and column index respectively, with angle p * 10000^(-2j/n).
"""

from __future__ import annotations

from functools import lru_cache

import torch

THETA = 10000.0
MAX_POSITIONS = 1024


def axis_sizes(head_dim: int) -> tuple[int, int, int]:
    """Real-valued sizes (n_t, n_h, n_w) of the three RoPE tables: d - 4*(d//6), 2*(d//6), 2*(d//6)."""
    return head_dim - 4 * (head_dim // 6), 2 * (head_dim // 6), 2 * (head_dim // 6)


def rope_angles(max_pos: int, n: int, theta: float = THETA) -> torch.Tensor:
    """angle[p, j] = p * theta^(-2j/n), j < n/2, in float64. Shape [max_pos, n/2]."""
    inv = 1.0 / torch.pow(theta, torch.arange(0, n, 2, dtype=torch.float64) / n)
    return torch.outer(torch.arange(max_pos, dtype=torch.float64), inv)


@lru_cache(maxsize=8)
def rope_table(head_dim: int, max_pos: int = MAX_POSITIONS) -> torch.Tensor:
    """The official complex128 table [max_pos, d/2]: frame, row and column tables concatenated."""
    angles = [rope_angles(max_pos, n) for n in axis_sizes(head_dim)]
    return torch.cat([torch.polar(torch.ones_like(a), a) for a in angles], dim=1)


@lru_cache(maxsize=32)
def grid_freqs(head_dim: int, grid: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Unit complex rotations [f*h*w, 1, d/2] for the tokens of ``grid`` in (f, y, x) order (cached per grid)."""
    f, h, w = grid
    if max(grid) > MAX_POSITIONS:
        raise ValueError(f"RoPE supports at most {MAX_POSITIONS} positions per axis, got grid {grid}")
    a_t, a_h, a_w = (rope_angles(MAX_POSITIONS, n) for n in axis_sizes(head_dim))
    angles = torch.cat(
        [
            a_t[:f, None, None, :].expand(f, h, w, -1),
            a_h[None, :h, None, :].expand(f, h, w, -1),
            a_w[None, None, :w, :].expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, 1, head_dim // 2)  # broadcast over heads
    return torch.polar(torch.ones_like(angles), angles).to(device=device, dtype=dtype)


def rope_apply(x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Rotate q or k of shape [B, L, H, d] whose first f*h*w tokens lie on ``grid`` = (f, y, x) order.

    Computed in complex128 for float32 inputs (bit-for-bit the official code) and in complex64 for half-precision
    inputs (the documented GPU policy). Tokens beyond f*h*w pass through unrotated. Returns float32 for float32
    input, otherwise the input dtype.
    """
    b, seq, heads, d = x.shape
    n = grid[0] * grid[1] * grid[2]
    full = x.dtype in (torch.float32, torch.float64)
    real, cplx = (torch.float64, torch.complex128) if full else (torch.float32, torch.complex64)
    freqs = grid_freqs(d, tuple(int(g) for g in grid), x.device, cplx)
    xc = torch.view_as_complex(x[:, :n].to(real).reshape(b, n, heads, d // 2, 2))
    out = torch.view_as_real(xc * freqs).flatten(3).to(torch.float32 if full else x.dtype)
    if n < seq:
        out = torch.cat([out, x[:, n:].to(out.dtype)], dim=1)
    return out
