"""A procedural video world with exact ground truth (``docs/world.md``).

Scenes are deterministic functions of ``(split, seed)``: a background (a real ``skimage.data`` photo or a procedural
texture) seen by a moving camera (pan in 8 directions, zoom in/out, slow roll, static), 1-3 coloured, textured shapes
with simple motions (linear, bounce, fall, orbit, grow, shrink, static) drawn in z-order, and a lighting change
(fade in/out, flash). :func:`render` returns the frames and the per-frame visible bounding box and centroid of every
object; :func:`write_dataset` writes H.264 MP4s, an official meta JSON, an annotation file and a ground-truth JSON.
"""

from .captions import make_caption, make_captions
from .render import render
from .scene import sample_scene
from .splits import (HELD_OUT_COMBOS, HELD_OUT_MOTIONS, HELD_OUT_PHOTOS, IN_DOMAIN_COMBOS, IN_DOMAIN_MOTIONS,
                     IN_DOMAIN_PHOTOS, SPLITS, Split, get_split)
from .vocab import COLORS, DIRECTIONS, OBJECT_MOTIONS, PHOTOS, SHAPES, TEXTURES
from .writer import WorldDataset, load_ground_truth, write_dataset

__all__ = [
    "COLORS", "DIRECTIONS", "HELD_OUT_COMBOS", "HELD_OUT_MOTIONS", "HELD_OUT_PHOTOS", "IN_DOMAIN_COMBOS",
    "IN_DOMAIN_MOTIONS", "IN_DOMAIN_PHOTOS", "OBJECT_MOTIONS", "PHOTOS", "SHAPES", "SPLITS", "Split",
    "TEXTURES", "WorldDataset", "get_split", "load_ground_truth", "make_caption", "make_captions", "render",
    "sample_scene", "write_dataset",
]
