"""Rendering a scene spec to uint8 frames plus the visible ground truth.

Per frame: the camera view of the background canvas is resampled bilinearly (``torch.grid_sample``, 2x2 samples per
pixel averaged), the objects are drawn back to front (``z`` order, later on top) with anti-aliased edges (``ss x ss``
coverage samples per pixel, default 4x4 = 16), and the frame is multiplied by the lighting gain, clipped and rounded
to uint8.

Visible ground truth: with ``a_i`` the coverage of object ``i`` in a pixel (0..1), its *visible weight* is
``v_i = a_i * prod_{j above i} (1 - a_j)`` (its share of the pixel's final colour before lighting), clipped to the
frame by construction. Per frame and object:

* ``centroid``: the ``v_i``-weighted mean of the pixel centres ``(c + 0.5, r + 0.5)``;
* ``bbox``: ``[x0, y0, x1, y1]`` pixel-edge box of the pixels with ``v_i >= 0.5`` (``x1``/``y1`` exclusive);
* ``visible_area``: ``sum(v_i)`` in pixels; ``visible_fraction``: that over the area of the whole object;
* ``bbox``/``centroid`` are ``null`` when no pixel has ``v_i >= 0.5`` (the object is hidden or out of frame).
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache

import numpy as np

from ..errors import InputError
from .backgrounds import background_canvas
from .vocab import secondary_rgb

_TRIANGLE = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (-90, 30, 150)]
_HEXAGON = [(0.95 * math.cos(math.radians(a)), 0.95 * math.sin(math.radians(a))) for a in range(0, 360, 60)]
_STAR = [((1.0 if k % 2 == 0 else 0.45) * math.cos(math.radians(-90 + 36 * k)),
          (1.0 if k % 2 == 0 else 0.45) * math.sin(math.radians(-90 + 36 * k))) for k in range(10)]


def _in_polygon(u: np.ndarray, v: np.ndarray, verts) -> np.ndarray:
    """Even-odd point-in-polygon test, broadcast over ``u`` and ``v``."""
    inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
    n = len(verts)
    for i in range(n):
        x1, y1 = verts[i]
        x2, y2 = verts[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > v) != (y2 > v)
        x_int = x1 + (v - y1) * ((x2 - x1) / (y2 - y1))
        inside ^= crosses & (u < x_int)
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test of ``shape`` at object-local coordinates (units of the radius; the shape fits the unit circle)."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.78
    if shape == "circle":
        return u * u + v * v <= 0.9 ** 2
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "ring":
        d2 = u * u + v * v
        return (d2 <= 0.95 ** 2) & (d2 >= 0.55 ** 2)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((au <= 0.95) & (av <= 0.3))
    if shape == "triangle":
        return _in_polygon(u, v, _TRIANGLE)
    if shape == "hexagon":
        return _in_polygon(u, v, _HEXAGON)
    if shape == "star":
        return _in_polygon(u, v, _STAR)
    raise InputError(f"unknown object shape {shape!r}")


def texture_mask(texture: str, params: dict, u: np.ndarray, v: np.ndarray):
    """Where a textured object shows its second colour (``None`` for solid)."""
    if texture == "solid":
        return None
    p = params["period"]
    if texture == "striped":
        a = math.radians(params["angle"])
        return np.floor((u * math.cos(a) + v * math.sin(a)) / p) % 2 == 1
    if texture == "checked":
        return (np.floor(u / p) + np.floor(v / p)) % 2 == 1
    if texture == "dotted":
        qu = np.mod(u, p) - p / 2
        qv = np.mod(v, p) - p / 2
        return qu * qu + qv * qv <= (0.3 * p) ** 2
    raise InputError(f"unknown object texture {texture!r}")


@lru_cache(maxsize=None)
def unit_area(shape: str) -> float:
    """Area of ``shape`` at radius 1 (numerically, 1000x1000 samples)."""
    s = (np.arange(1000) + 0.5) / 500 - 1
    return float(shape_mask(shape, s[None, :], s[:, None]).mean() * 4)


def _object_layer(obj: dict, cx: float, cy: float, r: float, H: int, W: int, ss: int):
    """(y0, y1, x0, x1, coverage [h, w], premultiplied colour [h, w, 3] in 0..1) of one object, or None."""
    x0, x1 = max(0, int(math.floor(cx - r))), min(W, int(math.ceil(cx + r)))
    y0, y1 = max(0, int(math.floor(cy - r))), min(H, int(math.ceil(cy + r)))
    if x1 <= x0 or y1 <= y0 or r <= 0:
        return None
    offs = (np.arange(ss) + 0.5) / ss
    u = (((np.arange(x0, x1)[:, None] + offs[None]).ravel() - cx) / r)[None, :]
    v = (((np.arange(y0, y1)[:, None] + offs[None]).ravel() - cy) / r)[:, None]
    inside = shape_mask(obj["shape"], u, v)
    h, w = y1 - y0, x1 - x0
    cov = inside.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)
    rgb = np.asarray(obj["rgb"], np.float32) / 255.0
    pat = texture_mask(obj["texture"], obj.get("texture_params") or {}, u, v)
    if pat is None:
        premul = cov[..., None] * rgb
    else:
        sec = (inside & pat).reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)
        rgb2 = np.asarray(secondary_rgb(obj["rgb"]), np.float32) / 255.0
        premul = (cov - sec)[..., None] * rgb + sec[..., None] * rgb2
    return y0, y1, x0, x1, cov, premul


def _camera_frames(canvas: np.ndarray, camera: dict, H: int, W: int, ss: int) -> np.ndarray:
    """The camera's view of ``canvas`` for every frame: float32 [T, H, W, 3]."""
    import torch
    import torch.nn.functional as F

    S = canvas.shape[0]
    center = torch.tensor(camera["center"], dtype=torch.float64)
    zoom = torch.tensor(camera["zoom"], dtype=torch.float64)
    ang = torch.deg2rad(torch.tensor(camera["angle"], dtype=torch.float64))
    T = len(zoom)
    offs = (torch.arange(ss, dtype=torch.float64) + 0.5) / ss
    dx = ((torch.arange(W, dtype=torch.float64)[:, None] + offs[None]).reshape(-1) - W / 2)[None, None, :]
    dy = ((torch.arange(H, dtype=torch.float64)[:, None] + offs[None]).reshape(-1) - H / 2)[None, :, None]
    # canvas point = center + R(angle) @ d / zoom, then normalised to [-1, 1] (align_corners=False); the scale 2/S is
    # folded into the coefficients so that the grid is built once, in float32
    k = 2.0 / S
    c = (torch.cos(ang) / zoom * k)[:, None, None].float()
    s = (torch.sin(ang) / zoom * k)[:, None, None].float()
    gx0 = (center[:, 0] * k - 1)[:, None, None].float()
    gy0 = (center[:, 1] * k - 1)[:, None, None].float()
    dx, dy = dx.float(), dy.float()
    grid = torch.empty((T, H * ss, W * ss, 2), dtype=torch.float32)
    grid[..., 0] = gx0 + c * dx - s * dy
    grid[..., 1] = gy0 + s * dx + c * dy
    inp = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))[None].expand(T, -1, -1, -1)
    out = F.grid_sample(inp, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if ss > 1:
        acc = out[:, :, 0::ss, 0::ss].clone()
        for i in range(ss):
            for j in range(ss):
                if i or j:
                    acc += out[:, :, i::ss, j::ss]
        out = acc.mul_(1.0 / (ss * ss))
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def _visible_stats(vis: np.ndarray, objects: list):
    """Per object: lists over frames of bbox, centroid, visible area and visible fraction."""
    T, _, H, W = vis.shape
    xc = np.arange(W, dtype=np.float64) + 0.5
    yc = np.arange(H, dtype=np.float64) + 0.5
    v64 = vis.astype(np.float64)
    area = v64.sum(axis=(2, 3))
    sx = (v64.sum(axis=2) * xc).sum(-1)
    sy = (v64.sum(axis=3) * yc).sum(-1)
    mask = vis >= 0.5
    cols, rows = mask.any(axis=2), mask.any(axis=3)  # [T, N, W], [T, N, H]
    out = []
    for i, obj in enumerate(objects):
        bbox, cent, varea, frac = [], [], [], []
        ua = unit_area(obj["shape"])
        for t in range(T):
            a = float(area[t, i])
            r = float(obj["radius"][t])
            varea.append(round(a, 3))
            frac.append(round(min(1.0, a / (ua * r * r)), 4) if r > 0 else 0.0)
            if not cols[t, i].any():
                bbox.append(None)
                cent.append(None)
                continue
            xs, ys = np.flatnonzero(cols[t, i]), np.flatnonzero(rows[t, i])
            bbox.append([int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1])
            cent.append([round(float(sx[t, i] / a), 4), round(float(sy[t, i] / a), 4)])
        out.append({"bbox": bbox, "centroid": cent, "visible_area": varea, "visible_fraction": frac})
    return out


def render(scene: dict, *, supersample: int = 4, background_supersample: int = 2, return_visibility: bool = False):
    """Draw ``scene`` (from :func:`~flashi2v.world.sample_scene`); returns ``(frames, gt)``.

    ``frames``: uint8 ``[T, H, W, 3]``; ``gt``: a deep copy of the scene with ``bbox``, ``centroid``,
    ``visible_area`` and ``visible_fraction`` lists (one value per frame) added to every object. With
    ``return_visibility`` also the per-pixel visible weights ``v_i``: float32 ``[T, N, H, W]`` (objects in list
    order), i.e. ``(frames, gt, visibility)``. ``render`` runs fastest with ``torch.set_num_threads(1)``.
    """
    for name, val in (("supersample", supersample), ("background_supersample", background_supersample)):
        if isinstance(val, bool) or not isinstance(val, int) or not 1 <= val <= 16:
            raise InputError(f"{name} must be an integer from 1 to 16, got {val!r}")
    T, H, W = int(scene["num_frames"]), int(scene["height"]), int(scene["width"])
    objects = scene["objects"]
    canvas = background_canvas(scene["background"])
    img = _camera_frames(canvas, scene["camera"], H, W, background_supersample)
    N = len(objects)
    alpha = np.zeros((T, N, H, W), np.float32)
    order = sorted(range(N), key=lambda i: (objects[i]["z"], i))
    for t in range(T):
        frame = img[t]
        for i in order:
            obj = objects[i]
            cx, cy = obj["center"][t]
            layer = _object_layer(obj, cx, cy, float(obj["radius"][t]), H, W, supersample)
            if layer is None:
                continue
            y0, y1, x0, x1, cov, premul = layer
            region = frame[y0:y1, x0:x1]
            frame[y0:y1, x0:x1] = region * (1 - cov[..., None]) + premul
            alpha[t, i, y0:y1, x0:x1] = cov
    vis = np.zeros_like(alpha)
    above = np.ones((T, H, W), np.float32)
    for i in reversed(order):
        vis[:, i] = alpha[:, i] * above
        above *= 1 - alpha[:, i]
    gain = np.asarray(scene["lighting"]["gain"], np.float32)[:, None, None, None]
    frames = (np.clip(img * gain, 0, 1) * 255 + 0.5).astype(np.uint8)
    gt = copy.deepcopy(scene)
    for obj, stats in zip(gt["objects"], _visible_stats(vis, objects)):
        obj.update(stats)
    return (frames, gt, vis) if return_visibility else (frames, gt)
