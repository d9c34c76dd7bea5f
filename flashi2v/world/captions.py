"""Template captions that describe a scene exactly: camera motion, background, every object (colour, texture when not
solid, shape, motion with its direction or sense) in z-order, and the lighting change (none is not mentioned).

Every element has several phrasings; the caption RNG picks one per element and one sentence layout.
"""

from __future__ import annotations

from typing import List

import numpy as np

from .vocab import PHOTOS

#: Words for a direction of motion (every phrase names the direction unambiguously).
DIRECTION_PHRASES = {
    "left": ("left", "to the left", "leftward"),
    "right": ("right", "to the right", "rightward"),
    "up": ("up", "upward", "toward the top"),
    "down": ("down", "downward", "toward the bottom"),
    "up_left": ("up and to the left", "diagonally up-left", "toward the upper left"),
    "up_right": ("up and to the right", "diagonally up-right", "toward the upper right"),
    "down_left": ("down and to the left", "diagonally down-left", "toward the lower left"),
    "down_right": ("down and to the right", "diagonally down-right", "toward the lower right"),
}

TEXTURE_WORDS = {"solid": ("",), "striped": ("striped",), "dotted": ("dotted", "polka-dot"),
                 "checked": ("checked", "checkered")}

CAMERA_PHRASES = {
    "static": ("a static shot of {bg}", "{bg}, seen by a still camera", "the camera holds still on {bg}"),
    "pan": ("the camera pans {d} over {bg}", "{bg}, with the camera panning {d}", "a camera pan {d} across {bg}"),
    "zoom_in": ("the camera zooms in on {bg}", "a slow zoom into {bg}", "{bg}, as the camera zooms in"),
    "zoom_out": ("the camera zooms out from {bg}", "a slow zoom out from {bg}", "{bg}, as the camera zooms out"),
    "rotate": ("the camera slowly rotates {d} over {bg}", "{bg}, with the camera slowly rolling {d}",
               "a slow {d} camera roll over {bg}"),
}

MOTION_PHRASES = {
    "static": ("sits still", "stays in place", "does not move"),
    "linear": ("moves {d}", "slides {d}", "drifts {d}"),
    "bounce": ("moves {d} and bounces off the edges of the frame", "travels {d}, bouncing off the frame edges",
               "bounces around the frame, first heading {d}"),
    "fall": ("falls and bounces on the ground", "drops down and bounces", "falls under gravity and bounces off the bottom"),
    "orbit": ("circles {d}", "orbits {d} around a point", "moves {d} in a circle"),
    "grow": ("grows larger", "grows", "gets bigger"),
    "shrink": ("shrinks", "gets smaller", "shrinks in size"),
}

LIGHTING_PHRASES = {
    "none": ("",),
    "fade_in": ("the scene fades in from dark", "the picture fades in", "everything fades in from darkness"),
    "fade_out": ("the scene fades to dark", "the picture fades out", "everything fades into darkness"),
    "flash": ("a bright flash lights up the scene", "there is a sudden flash of light",
              "a flash of light briefly brightens everything"),
}

BACKGROUND_PHRASES = {
    "gradient": ("a gradient from {c1} to {c2}", "a {c1}-to-{c2} gradient", "a smooth {c1} and {c2} gradient"),
    "radial": ("a radial gradient from {c1} to {c2}", "a {c1} glow fading into {c2}", "a round {c1}-to-{c2} gradient"),
    "noise": ("a cloudy {c1} and {c2} pattern", "smooth {c1} and {c2} noise", "a blotchy {c1} and {c2} texture"),
    "stripes": ("{c1} and {c2} stripes", "a {c1} and {c2} striped background", "a pattern of {c1} and {c2} stripes"),
    "checkers": ("a {c1} and {c2} checkerboard", "{c1} and {c2} checkers", "a checkered {c1} and {c2} background"),
    "solid": ("a plain background",),
}


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def background_phrase(bg: dict, rng: np.random.Generator) -> str:
    if bg["kind"] == "photo":
        return _pick(rng, PHOTOS[bg["name"]])
    c = bg.get("colors") or ["", ""]
    return _pick(rng, BACKGROUND_PHRASES[bg["kind"]]).format(c1=c[0], c2=c[1])


def camera_phrase(camera: dict, bg: str, rng: np.random.Generator) -> str:
    d = camera.get("direction")
    if camera["motion"] == "pan":
        d = _pick(rng, DIRECTION_PHRASES[d])
    return _pick(rng, CAMERA_PHRASES[camera["motion"]]).format(bg=bg, d=d)


def object_noun(obj: dict, rng: np.random.Generator) -> str:
    """``a red striped square``: article, colour, texture word (not for solid), shape."""
    tex = _pick(rng, TEXTURE_WORDS[obj["texture"]])
    words = " ".join(w for w in (obj["color"], tex, obj["shape"]) if w)
    return f"{_article(words)} {words}"


def object_phrase(obj: dict, rng: np.random.Generator) -> str:
    d = obj.get("direction")
    if obj["motion"] in ("linear", "bounce"):
        d = _pick(rng, DIRECTION_PHRASES[d])
    return f"{object_noun(obj, rng)} {_pick(rng, MOTION_PHRASES[obj['motion']]).format(d=d)}"


def _join(items: List[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"


def make_caption(scene: dict, rng: np.random.Generator) -> str:
    """One caption of ``scene``."""
    bg = background_phrase(scene["background"], rng)
    cam = camera_phrase(scene["camera"], bg, rng)
    objs = [object_phrase(o, rng) for o in scene["objects"]]
    light = _pick(rng, LIGHTING_PHRASES[scene["lighting"]["type"]])
    layout = int(rng.integers(3))
    if layout == 0:
        parts = [cam, _join(objs)] + ([light] if light else [])
        return _cap("; ".join(parts)) + "."
    if layout == 1:
        parts = [cam] + objs + ([light] if light else [])
        return " ".join(_cap(p) + "." for p in parts)
    text = f"{_cap(cam)}: {_join(objs)}"
    return text + (f", while {light}." if light else ".")


def focused_captions(scene: dict, rng: np.random.Generator) -> List[str]:
    """Captions that each state *one* thing: the camera over the background, then every object's motion, then the
    lighting change (when there is one), e.g. ``["The camera pans left over a cat.", "A red square falls and
    bounces."]``.

    A training aid, not a description of the clip: each leaves the rest of it unsaid. In a full caption a direction
    word sits among up to three others, and a small model has to learn which noun it belongs to; a focused caption
    pairs one noun with one motion (see docs/default_model.md).
    """
    out = [_cap(camera_phrase(scene["camera"], background_phrase(scene["background"], rng), rng)) + "."]
    out += [_cap(object_phrase(o, rng)) + "." for o in scene["objects"]]
    light = _pick(rng, LIGHTING_PHRASES[scene["lighting"]["type"]])
    return out + ([_cap(light) + "."] if light else [])


def make_captions(scene: dict, rng: np.random.Generator, n: int = 1) -> List[str]:
    """``n`` captions of ``scene`` (distinct when the templates allow it within a few tries)."""
    out: List[str] = []
    for _ in range(n):
        cap = make_caption(scene, rng)
        for _ in range(5):
            if cap not in out:
                break
            cap = make_caption(scene, rng)
        out.append(cap)
    return out
