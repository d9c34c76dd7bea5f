"""The vocabulary of the procedural world: colours, shapes, textures, directions, motions, photos, lighting.

Everything a scene can contain is listed here by name; the splits (:mod:`flashi2v.world.splits`) hold some of the
names out of the in-domain data, and the captions (:mod:`flashi2v.world.captions`) turn the names into words.

Coordinates are image coordinates in pixels: +x right, +y down, pixel (column c, row r) covers
``[c, c+1) x [r, r+1)`` so the centre of the top-left pixel is ``(0.5, 0.5)``.
"""

from __future__ import annotations

import math

#: Named object palette (also used for the procedural backgrounds): name -> sRGB 0..255.
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (245, 215, 40),
    "cyan": (40, 205, 215),
    "magenta": (210, 50, 200),
    "orange": (245, 135, 30),
    "purple": (125, 60, 185),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}

#: Object shapes. Every shape fits inside the circle of radius ``radius`` around the object's centre.
SHAPES = ("square", "circle", "triangle", "diamond", "star", "cross", "hexagon", "ring")

#: Object textures; a non-solid texture alternates the object colour with a lighter/darker shade of it.
TEXTURES = ("solid", "striped", "dotted", "checked")

#: Direction name -> (dx, dy) in image coordinates (+x right, +y down), not normalised.
DIRECTIONS = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "up_left": (-1, -1),
    "up_right": (1, -1),
    "down_left": (-1, 1),
    "down_right": (1, 1),
}

#: Rotation senses (as seen on screen).
ROTATIONS = ("clockwise", "counterclockwise")

#: Object motion types.
OBJECT_MOTIONS = ("static", "linear", "bounce", "fall", "orbit", "grow", "shrink")

#: Camera motion types (``pan`` has a direction from :data:`DIRECTIONS`; ``rotate`` a sense from :data:`ROTATIONS`).
CAMERA_MOTIONS = ("static", "pan", "zoom_in", "zoom_out", "rotate")

#: Whole-frame lighting changes (a per-frame gain that multiplies the rendered frame).
LIGHTING = ("none", "fade_in", "fade_out", "flash")

#: Procedural background kinds (``solid`` exists for tests and ground-truth checks; it is never sampled).
PROCEDURAL_BACKGROUNDS = ("gradient", "radial", "noise", "stripes", "checkers")

#: Real photos from ``skimage.data`` (all available offline): name -> caption phrases (one is picked per caption).
PHOTOS = {
    "astronaut": ("a photo of an astronaut", "a portrait of an astronaut", "an astronaut in front of a flag"),
    "coffee": ("a photo of a cup of coffee", "a cup of coffee", "a coffee cup on a saucer"),
    "chelsea": ("a photo of a cat", "a ginger cat", "a picture of a tabby cat"),
    "hubble_deep_field": ("a photo of distant galaxies", "a deep-space image full of galaxies", "a starry galaxy field"),
    "immunohistochemistry": ("a microscope image of stained tissue", "a stained tissue sample", "a microscopy slide of tissue"),
    "retina": ("a retina scan", "a photo of the back of an eye", "a fundus image of a retina"),
    "colorwheel": ("a colour wheel", "a rainbow colour wheel", "a picture of a colour wheel"),
    "camera": ("a black-and-white photo of a cameraman", "a grey photo of a man with a camera", "a monochrome photo of a photographer"),
    "moon": ("the surface of the moon", "a grey photo of lunar craters", "a close-up of the moon's surface"),
    "brick": ("a brick wall", "a grey photo of a brick wall", "a wall of bricks"),
    "grass": ("a patch of grass", "a grey photo of grass", "blades of grass"),
    "rocket": ("a photo of a rocket on its launch pad", "a rocket on a launch pad", "a space rocket before launch"),
    "coins": ("a photo of old coins", "a grey photo of coins", "rows of old coins"),
    "gravel": ("a patch of gravel", "a grey photo of gravel", "small stones of gravel"),
    "clock": ("a photo of a clock", "a grey photo of a wall clock", "a clock face"),
    "cell": ("a microscope image of a cell", "a grey micrograph of a cell", "a cell under a microscope"),
}


def unit_vector(direction: str) -> tuple:
    """The unit vector of a direction name (image coordinates)."""
    dx, dy = DIRECTIONS[direction]
    n = math.hypot(dx, dy)
    return (dx / n, dy / n)


def secondary_rgb(rgb) -> tuple:
    """The second colour of a striped/dotted/checked object: a darker shade of a light colour, a tint of a dark one."""
    r, g, b = rgb
    luma = (0.299 * r + 0.587 * g + 0.114 * b) / 255.0
    if luma > 0.45:
        return tuple(int(round(c * 0.4)) for c in rgb)
    return tuple(int(round(c * 0.35 + 255 * 0.65)) for c in rgb)
