"""Scene sampling: a seed and a split -> a JSON-serialisable scene spec with every per-frame parameter.

A scene is a plain ``dict`` (see ``docs/world.md``); :func:`flashi2v.world.render` draws it and adds the visible
ground truth. All floats are rounded when the scene is sampled and the renderer reads only the spec, so a scene
read back from the ground-truth JSON renders to the very same frames.

Motion amounts are given per clip, not per frame (a linear object travels 25-60 % of the frame over the clip), so
clips with more frames move more slowly per frame.
"""

from __future__ import annotations

import math
import numbers
from typing import List, Optional

import numpy as np

from ..errors import InputError
from .splits import MOTION_WEIGHTS, get_split
from .vocab import COLORS, DIRECTIONS, LIGHTING, PROCEDURAL_BACKGROUNDS, ROTATIONS, TEXTURES, unit_vector

SCENE_VERSION = 1
_ND = 4  # decimals kept for the stored floats


def _r(x, nd: int = _ND):
    """Round a float, array or nested list to ``nd`` decimals as plain Python floats."""
    if isinstance(x, np.ndarray):
        return np.round(x.astype(np.float64), nd).tolist()
    if isinstance(x, (list, tuple)):
        return [_r(v, nd) for v in x]
    return round(float(x), nd)


def _choice(rng: np.random.Generator, items, p=None):
    items = list(items)
    if p is not None:
        p = np.asarray(p, np.float64)
        p = p / p.sum()
        return items[int(rng.choice(len(items), p=p))]
    return items[int(rng.integers(len(items)))]


def canvas_size(height: int, width: int) -> int:
    """Side of the square background canvas: about 2.2x the larger frame side (even)."""
    return 2 * int(math.ceil(1.1 * max(height, width)))


def _check_int(name: str, value, low: int, even: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if even and int(value) % 2:
        raise InputError(f"{name} must be even (H.264 yuv420p needs even sizes), got {value}")
    return int(value)


def validate_clip_size(num_frames, height, width, fps) -> tuple:
    """Check the clip settings (``InputError`` with one line otherwise); returns them as (int, int, int, float)."""
    num_frames = _check_int("num_frames", num_frames, 2)
    height = _check_int("height", height, 32, even=True)
    width = _check_int("width", width, 32, even=True)
    if height > 4096 or width > 4096:
        raise InputError(f"height and width must be at most 4096, got {height}x{width}")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps must be a positive number, got {fps!r}")
    return num_frames, height, width, float(fps)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# ----------------------------------------------------------------------------------------------------------------
# background and camera
# ----------------------------------------------------------------------------------------------------------------
def _sample_background(rng, split, H: int, W: int) -> dict:
    size = canvas_size(H, W)
    m = min(H, W)
    if rng.random() < split.procedural_p:
        kind = _choice(rng, PROCEDURAL_BACKGROUNDS)
        names = list(COLORS)
        i, j = rng.choice(len(names), 2, replace=False)
        colors = [names[int(i)], names[int(j)]]
        rgb = [[int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLORS[n]] for n in colors]
        params = {"noise_seed": int(rng.integers(2**31 - 1))}
        if kind == "gradient":
            params["angle"] = _r(rng.uniform(0, 360))
        elif kind == "radial":
            params["center"] = _r(rng.uniform(0.35, 0.65, 2))
            params["radius"] = _r(rng.uniform(0.2, 0.4))
        elif kind == "noise":
            params["cells"] = int(rng.integers(3, 8))
        elif kind == "stripes":
            params["angle"] = _r(rng.uniform(0, 180))
            params["period"] = _r(rng.uniform(0.1, 0.25) * m)
        elif kind == "checkers":
            params["angle"] = _r(_choice(rng, [0.0, 0.0, rng.uniform(0, 90)]))
            params["period"] = _r(rng.uniform(0.08, 0.2) * m)
        return {"kind": kind, "colors": colors, "rgb": rgb, "params": params, "canvas_size": size}
    name = _choice(rng, split.photos)
    return {"kind": "photo", "name": name, "scale": _r(rng.uniform(1.0, 1.4)), "offset": _r(rng.uniform(0, 1, 2)),
            "canvas_size": size}


CAMERA_WEIGHTS = {"static": 0.3, "pan": 0.4, "zoom_in": 0.1, "zoom_out": 0.1, "rotate": 0.1}


def _sample_camera(rng, H: int, W: int, size: int, T: int) -> dict:
    motion = _choice(rng, CAMERA_WEIGHTS, p=list(CAMERA_WEIGHTS.values()))
    t = np.linspace(0.0, 1.0, T)
    off = np.zeros((T, 2))
    zoom = np.ones(T)
    angle = np.zeros(T)
    direction: Optional[str] = None
    vector = None
    params: dict = {}
    if motion == "pan":
        direction = _choice(rng, DIRECTIONS)
        dx, dy = DIRECTIONS[direction]
        frac = rng.uniform(0.25, 0.5)
        d = np.array([frac * W * dx, frac * H * dy])
        off = t[:, None] * d[None]
        vector = _r(d / np.linalg.norm(d))
        params = {"travel_fraction": _r(frac)}
    elif motion in ("zoom_in", "zoom_out"):
        factor = rng.uniform(1.35, 1.7)
        zoom = (factor if motion == "zoom_in" else 1.0 / factor) ** t
        direction = "in" if motion == "zoom_in" else "out"
        params = {"factor": _r(factor)}
    elif motion == "rotate":
        direction = _choice(rng, ROTATIONS)
        sweep = rng.uniform(10.0, 20.0)
        a0 = rng.uniform(-8.0, 8.0)
        angle = a0 + (sweep if direction == "clockwise" else -sweep) * t
        params = {"sweep_deg": _r(sweep)}
    # keep the (rotated, zoomed) view inside the canvas for every frame
    a = np.radians(angle)
    hx = (W / 2 * np.abs(np.cos(a)) + H / 2 * np.abs(np.sin(a))) / zoom
    hy = (W / 2 * np.abs(np.sin(a)) + H / 2 * np.abs(np.cos(a))) / zoom
    start = []
    for k, h in enumerate((hx, hy)):
        lo = float(np.max(h - off[:, k]))
        hi = float(np.min(size - h - off[:, k]))
        start.append(rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2)
    center = np.asarray(start)[None] + off
    return {"motion": motion, "direction": direction, "vector": vector, "params": params,
            "center": _r(center), "zoom": _r(zoom, 5), "angle": _r(angle)}


# ----------------------------------------------------------------------------------------------------------------
# objects
# ----------------------------------------------------------------------------------------------------------------
def _fold(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect positions ``p`` into ``[lo, hi]`` (a point bouncing between two walls)."""
    span = hi - lo
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def _fall_y(t: np.ndarray, y0: float, floor: float, t_hit: float, g: float, e: float) -> np.ndarray:
    out = np.empty_like(t)
    for i, ti in enumerate(t):
        if ti <= t_hit:
            out[i] = y0 + 0.5 * g * ti * ti
            continue
        v, tt = e * g * t_hit, ti - t_hit
        y = floor
        while v > 1e-6:
            flight = 2 * v / g
            if tt <= flight:
                y = floor - (v * tt - 0.5 * g * tt * tt)
                break
            tt -= flight
            v *= e
        out[i] = y
    return out


def _sample_motion(rng, motion: str, H: int, W: int, T: int, r: float):
    """(centres [T, 2], radii [T], direction, vector, params) of one object."""
    m = min(H, W)
    t = np.linspace(0.0, 1.0, T)
    frames = t * (T - 1)
    radius = np.full(T, r)
    direction = vector = None
    params: dict = {}
    size = np.array([W, H], np.float64)
    if motion == "static":
        c = rng.uniform([r, r], size - r)
        center = np.repeat(c[None], T, 0)
    elif motion == "linear":
        direction = _choice(rng, DIRECTIONS)
        dvec = np.array(DIRECTIONS[direction], np.float64)
        frac = rng.uniform(0.25, 0.6)
        frac = min(frac, float(np.min((size - 2 * r) / size)) * 0.98)
        d = frac * size * dvec
        lo = r - np.minimum(0, d)
        hi = size - r - np.maximum(0, d)
        c0 = rng.uniform(lo, np.maximum(hi, lo))
        center = c0[None] + t[:, None] * d[None]
        vector = _r(d / np.linalg.norm(d))
        params = {"travel_fraction": _r(frac), "displacement": _r(d)}
    elif motion == "bounce":
        direction = _choice(rng, DIRECTIONS)
        u = np.asarray(unit_vector(direction))
        length = rng.uniform(0.8, 1.4) * m
        v = u * length / (T - 1)
        lo, hi = np.array([r, r]), size - r
        span = float(T - 1)

        def first_hit(c0):  # frame of the first wall contact
            with np.errstate(divide="ignore", invalid="ignore"):
                th = np.where(v > 0, (hi - c0) / v, np.where(v < 0, (c0 - lo) / -v, np.inf))
            return float(th.min())

        # the first bounce comes after 20 % and before 80 % of the clip, so the initial direction is seen
        for _ in range(100):
            c0 = rng.uniform(lo, hi)
            if 0.2 * span <= first_hit(c0) <= 0.8 * span:
                break
        else:  # start so that the fastest axis hits its wall halfway through the clip
            k = int(np.argmax(np.abs(v)))
            c0 = (lo + hi) / 2
            c0[k] = (hi[k] if v[k] > 0 else lo[k]) - v[k] * span / 2
        end = c0 + v * span
        hits = np.abs(np.floor((end - lo) / (hi - lo)) - np.floor((c0 - lo) / (hi - lo)))
        raw = c0[None] + frames[:, None] * v[None]
        center = np.stack([_fold(raw[:, 0], lo[0], hi[0]), _fold(raw[:, 1], lo[1], hi[1])], axis=1)
        vector = _r(u)
        params = {"speed": _r(float(np.linalg.norm(v))), "path_fraction": _r(length / m), "bounces": int(hits.sum()),
                  "first_bounce_frame": _r(first_hit(c0))}
    elif motion == "fall":
        direction, vector = "down", [0.0, 1.0]
        x0 = rng.uniform(r, W - r)
        y0 = rng.uniform(r, r + 0.2 * H)
        floor = H - r
        t_hit = rng.uniform(0.4, 0.65) * (T - 1)
        g = 2 * (floor - y0) / t_hit**2
        e = rng.uniform(0.5, 0.75)
        y = _fall_y(frames, y0, floor, t_hit, g, e)
        center = np.stack([np.full(T, x0), y], axis=1)
        params = {"gravity": _r(g), "restitution": _r(e), "impact_frame": _r(t_hit)}
    elif motion == "orbit":
        direction = _choice(rng, ROTATIONS)
        R = min(rng.uniform(0.15, 0.26) * m, m / 2 - r - 1)
        o = rng.uniform([R + r, R + r], size - R - r)
        sweep = rng.uniform(0.5, 0.9) * 2 * math.pi
        phi0 = rng.uniform(0, 2 * math.pi)
        phi = phi0 + (1 if direction == "clockwise" else -1) * sweep * t  # +angle is clockwise with +y down
        center = o[None] + R * np.stack([np.cos(phi), np.sin(phi)], axis=1)
        params = {"orbit_center": _r(o), "orbit_radius": _r(R), "sweep_deg": _r(math.degrees(sweep))}
    elif motion in ("grow", "shrink"):
        small = rng.uniform(0.05, 0.075) * m
        big = min(small * rng.uniform(1.8, 2.4), 0.2 * m)
        r0, r1 = (small, big) if motion == "grow" else (big, small)
        radius = r0 + (r1 - r0) * t
        c = rng.uniform([big, big], size - big)
        center = np.repeat(c[None], T, 0)
        params = {"scale_factor": _r(r1 / r0)}
    else:  # pragma: no cover - the vocabulary is closed
        raise InputError(f"unknown object motion {motion!r}")
    return center, radius, direction, vector, params


def _sample_texture(rng) -> tuple:
    texture = _choice(rng, TEXTURES, p=[0.5, 1 / 6, 1 / 6, 1 / 6])
    params: dict = {}
    if texture == "striped":
        params = {"angle": float(_choice(rng, [0, 45, 90, 135])), "period": _r(rng.uniform(0.4, 0.6))}
    elif texture == "dotted":
        params = {"period": _r(rng.uniform(0.45, 0.6))}
    elif texture == "checked":
        params = {"period": _r(rng.uniform(0.4, 0.6))}
    return texture, params


def _sample_objects(rng, split, H: int, W: int, T: int) -> List[dict]:
    n = int(rng.integers(1, 4))
    combos = sorted(split.combos)
    motions = list(split.motions)
    weights = [MOTION_WEIGHTS[mo] for mo in motions]
    objects = []
    for k in range(n):
        color, shape = combos[int(rng.integers(len(combos)))]
        texture, tex_params = _sample_texture(rng)
        motion = _choice(rng, motions, p=weights)
        r = rng.uniform(0.07, 0.14) * min(H, W)
        center, radius, direction, vector, params = _sample_motion(rng, motion, H, W, T, r)
        objects.append({
            "id": k, "z": k, "shape": shape, "color": color, "rgb": list(COLORS[color]), "texture": texture,
            "texture_params": tex_params, "motion": motion, "direction": direction, "vector": vector,
            "motion_params": params, "center": _r(center), "radius": _r(radius),
        })
    return objects


# ----------------------------------------------------------------------------------------------------------------
# lighting
# ----------------------------------------------------------------------------------------------------------------
LIGHTING_WEIGHTS = {"none": 0.55, "fade_in": 0.15, "fade_out": 0.15, "flash": 0.15}


def _sample_lighting(rng, T: int) -> dict:
    kind = _choice(rng, LIGHTING, p=[LIGHTING_WEIGHTS[k] for k in LIGHTING])
    t = np.linspace(0.0, 1.0, T)
    params: dict = {}
    if kind == "none":
        gain = np.ones(T)
    elif kind in ("fade_in", "fade_out"):
        g0 = rng.uniform(0.15, 0.35)
        gain = g0 + (1 - g0) * t if kind == "fade_in" else 1 - (1 - g0) * t
        params = {"min_gain": _r(g0)}
    else:
        k = int(rng.integers(T // 4, max(T // 4 + 1, (3 * T) // 4)))
        k = min(max(k, 0), T - 1)
        amp = rng.uniform(0.7, 1.1)
        sigma = rng.uniform(0.6, 1.0)
        gain = 1 + amp * np.exp(-0.5 * ((np.arange(T) - k) / sigma) ** 2)
        params = {"peak_frame": k, "amplitude": _r(amp), "sigma_frames": _r(sigma)}
    return {"type": kind, "params": params, "gain": _r(gain)}


# ----------------------------------------------------------------------------------------------------------------
# public
# ----------------------------------------------------------------------------------------------------------------
def sample_scene(seed: int, split: str = "train", *, num_frames: int = 17, height: int = 128, width: int = 128,
                 fps: float = 16, num_captions: int = 1, focused: bool = False) -> dict:
    """Sample the scene of ``seed`` in ``split`` (deterministic: the same arguments give the same dict).

    The scene RNG is seeded with ``(split code, seed)``; captions use a separate child stream, so ``num_captions``
    does not change the scene. ``scene["caption"]`` is the first of ``scene["captions"]``. ``focused`` adds
    ``scene["focused_captions"]`` (:func:`~flashi2v.world.captions.focused_captions`, drawn after the full ones, so
    those do not change).
    """
    from .captions import focused_captions, make_captions

    seed = check_seed(seed)
    sp = get_split(split)
    num_frames, height, width, fps = validate_clip_size(num_frames, height, width, fps)
    num_captions = _check_int("num_captions", num_captions, 1)
    scene_ss, caption_ss = np.random.SeedSequence([sp.code, seed]).spawn(2)
    rng = np.random.default_rng(scene_ss)
    background = _sample_background(rng, sp, height, width)
    camera = _sample_camera(rng, height, width, background["canvas_size"], num_frames)
    objects = _sample_objects(rng, sp, height, width, num_frames)
    lighting = _sample_lighting(rng, num_frames)
    scene = {
        "version": SCENE_VERSION, "seed": seed, "split": sp.name, "num_frames": num_frames, "height": height,
        "width": width, "fps": fps, "background": background, "camera": camera, "objects": objects,
        "lighting": lighting,
    }
    caption_rng = np.random.default_rng(caption_ss)
    captions = make_captions(scene, caption_rng, num_captions)
    scene["caption"] = captions[0]
    scene["captions"] = captions
    if focused:
        scene["focused_captions"] = focused_captions(scene, caption_rng)
    return scene
