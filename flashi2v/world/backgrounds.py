"""Background canvases: real photos from ``skimage.data`` and procedural textures, as float32 ``[S, S, 3]`` in [0, 1].

The canvas is larger than the frame (``canvas_size``, about 2.2x the frame) so that the camera can pan, zoom out and
rotate over it without leaving it. Everything is a pure function of the background spec of a scene.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import InputError
from .vocab import PHOTOS


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """The ``skimage.data`` photo ``name`` as uint8 RGB ``[h, w, 3]`` (grey photos are replicated to 3 channels)."""
    if name not in PHOTOS:
        raise InputError(f"unknown world photo {name!r}; choose one of {', '.join(PHOTOS)}")
    try:
        import skimage.data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("the procedural world needs scikit-image for its photos; pip install scikit-image") from e
    try:
        img = np.asarray(getattr(skimage.data, name)())
    except Exception as e:  # missing optional data file (pooch), ...
        raise InputError(f"skimage.data.{name}() is not available offline ({' '.join(str(e).split())})") from e
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float64) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


@lru_cache(maxsize=64)
def _photo_base(name: str, short_side: int):
    """The photo resized (area-averaged) so that its shorter side is ``short_side``; a PIL image (cached)."""
    from PIL import Image

    img = load_photo(name)
    h, w = img.shape[:2]
    s = short_side / min(h, w)
    size = (max(short_side, round(w * s)), max(short_side, round(h * s)))
    return Image.fromarray(img).resize(size, Image.BILINEAR if s < 1 else Image.BICUBIC)


def photo_canvas(name: str, size: int, scale: float, offset) -> np.ndarray:
    """Photo ``name`` resized so its shorter side is ``scale * size`` (``scale >= 1``), cropped to ``size x size``
    at relative ``offset = (fx, fy)`` in [0, 1] of the spare room."""
    from PIL import Image

    base = _photo_base(name, int(math.ceil(1.5 * size)))
    w0, h0 = base.size
    s = scale * size / min(w0, h0)
    w, h = max(size, int(round(w0 * s))), max(size, int(round(h0 * s)))
    img = np.asarray(base.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    x0 = int(round(offset[0] * (w - size)))
    y0 = int(round(offset[1] * (h - size)))
    return np.ascontiguousarray(img[y0:y0 + size, x0:x0 + size])


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a ``cells x cells`` random grid upsampled bicubically to ``size x size``."""
    import torch
    import torch.nn.functional as F

    grid = torch.from_numpy(rng.random((1, 1, cells + 3, cells + 3)).astype(np.float32))
    up_size = int(round(size * (cells + 3) / cells))
    up = F.interpolate(grid, size=(up_size, up_size), mode="bicubic", align_corners=False)
    off = (up_size - size) // 2
    n = up[0, 0, off:off + size, off:off + size].numpy()
    n = n - n.min()
    return n / max(float(n.max()), 1e-6)


def _mix(t: np.ndarray, c1, c2) -> np.ndarray:
    c1 = np.asarray(c1, np.float32) / 255.0
    c2 = np.asarray(c2, np.float32) / 255.0
    return c1 + t[..., None].astype(np.float32) * (c2 - c1)


def procedural_canvas(spec: dict, size: int) -> np.ndarray:
    """Render the procedural background ``spec`` (kind, rgb, params) at ``size x size``."""
    kind = spec["kind"]
    if kind == "solid":
        return np.broadcast_to(np.asarray(spec["rgb"], np.float32) / 255.0, (size, size, 3)).copy()
    p = spec["params"]
    rgb = spec["rgb"]
    rng = np.random.default_rng(p["noise_seed"])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if kind == "gradient":
        a = math.radians(p["angle"])
        s = (xx - size / 2) * math.cos(a) + (yy - size / 2) * math.sin(a)
        t = np.clip(s / (size * 0.6) + 0.5, 0, 1)
    elif kind == "radial":
        cx, cy = p["center"]
        t = np.clip(np.hypot(xx - cx * size, yy - cy * size) / (p["radius"] * size), 0, 1) ** 0.8
    elif kind == "noise":
        t = 0.7 * _smooth_noise(rng, size, p["cells"]) + 0.3 * _smooth_noise(rng, size, 2 * p["cells"])
        t = np.clip((t - 0.5) * 1.6 + 0.5, 0, 1)
    elif kind == "stripes":
        a = math.radians(p["angle"])
        s = xx * math.cos(a) + yy * math.sin(a)
        t = np.clip(0.5 + 1.5 * np.sin(2 * math.pi * s / p["period"]), 0, 1)
    elif kind == "checkers":
        a = math.radians(p["angle"])
        u = (xx * math.cos(a) + yy * math.sin(a)) / p["period"]
        v = (-xx * math.sin(a) + yy * math.cos(a)) / p["period"]
        t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    else:
        raise InputError(f"unknown background kind {kind!r}")
    img = _mix(t, rgb[0], rgb[1])
    if kind in ("gradient", "radial"):  # faint texture so that camera motion over a smooth gradient stays visible
        img = img + (_smooth_noise(rng, size, 24)[..., None] - 0.5) * 0.12
    return np.clip(img, 0, 1).astype(np.float32)


def background_canvas(spec: dict) -> np.ndarray:
    """The float32 ``[S, S, 3]`` canvas of a scene's background spec."""
    size = int(spec["canvas_size"])
    if spec["kind"] == "photo":
        return photo_canvas(spec["name"], size, spec["scale"], spec["offset"])
    return procedural_canvas(spec, size)
