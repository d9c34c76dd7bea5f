"""Named splits of the procedural world and their held-out factors.

``train`` and ``test`` are in-domain: they draw from the same distribution, but the scene RNG is keyed by the split
(``(split code, seed)``), so seed ``k`` of ``train`` and seed ``k`` of ``test`` are different, independent scenes.
Three out-of-domain splits each change exactly one factor and leave the others in-domain:

* ``ood_background``: every background is one of :data:`HELD_OUT_PHOTOS` (never used in-domain, where backgrounds
  are the other photos or procedural textures);
* ``ood_combo``: every object is one of the :data:`HELD_OUT_COMBOS` colour x shape pairs (each colour and each shape
  on its own does appear in-domain, only the pair never does);
* ``ood_motion``: every object moves with one of :data:`HELD_OUT_MOTIONS` (orbit, grow, shrink), never used in-domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Tuple

from ..errors import InputError
from .vocab import COLORS, OBJECT_MOTIONS, PHOTOS, SHAPES

#: Photos that only the ``ood_background`` split uses.
HELD_OUT_PHOTOS = ("rocket", "coins", "gravel", "clock", "cell")
#: Photos of the in-domain splits.
IN_DOMAIN_PHOTOS = tuple(p for p in PHOTOS if p not in HELD_OUT_PHOTOS)

#: (colour, shape) pairs that only the ``ood_combo`` split uses: one shape per colour, every shape at most twice.
HELD_OUT_COMBOS = frozenset({
    ("red", "triangle"),
    ("green", "star"),
    ("blue", "circle"),
    ("yellow", "square"),
    ("cyan", "cross"),
    ("magenta", "hexagon"),
    ("orange", "diamond"),
    ("purple", "ring"),
    ("white", "square"),
    ("black", "circle"),
})
ALL_COMBOS = frozenset((c, s) for c in COLORS for s in SHAPES)
IN_DOMAIN_COMBOS = ALL_COMBOS - HELD_OUT_COMBOS

#: Object motions that only the ``ood_motion`` split uses.
HELD_OUT_MOTIONS = ("orbit", "grow", "shrink")
IN_DOMAIN_MOTIONS = tuple(m for m in OBJECT_MOTIONS if m not in HELD_OUT_MOTIONS)

#: Sampling weights of the object motions (normalised over the motions a split allows).
MOTION_WEIGHTS = {"static": 0.15, "linear": 0.4, "bounce": 0.25, "fall": 0.2, "orbit": 0.5, "grow": 0.25,
                  "shrink": 0.25}


@dataclass(frozen=True)
class Split:
    """What a split may contain."""

    name: str
    code: int  #: RNG namespace: the scene RNG is seeded with (code, seed)
    in_domain: bool
    photos: Tuple[str, ...]  #: photo backgrounds it may use
    procedural_p: float  #: probability of a procedural background instead of a photo
    combos: FrozenSet[Tuple[str, str]]  #: allowed (colour, shape) pairs
    motions: Tuple[str, ...]  #: allowed object motions
    held_out: str  #: the held-out factor it tests ("" for in-domain splits)
    description: str


def _in_domain(name: str, code: int, description: str) -> Split:
    return Split(name, code, True, IN_DOMAIN_PHOTOS, 0.4, IN_DOMAIN_COMBOS, IN_DOMAIN_MOTIONS, "", description)


SPLITS: Dict[str, Split] = {
    "train": _in_domain("train", 1, "in-domain training scenes"),
    "test": _in_domain("test", 2, "in-domain test scenes (independent of train)"),
    "ood_background": Split("ood_background", 3, False, HELD_OUT_PHOTOS, 0.0, IN_DOMAIN_COMBOS, IN_DOMAIN_MOTIONS,
                            "background", "held-out background photos: " + ", ".join(HELD_OUT_PHOTOS)),
    "ood_combo": Split("ood_combo", 4, False, IN_DOMAIN_PHOTOS, 0.4, HELD_OUT_COMBOS, IN_DOMAIN_MOTIONS, "combo",
                       "every object is a held-out colour x shape pair"),
    "ood_motion": Split("ood_motion", 5, False, IN_DOMAIN_PHOTOS, 0.4, IN_DOMAIN_COMBOS, HELD_OUT_MOTIONS, "motion",
                        "every object moves with a held-out motion: " + ", ".join(HELD_OUT_MOTIONS)),
}


def get_split(name) -> Split:
    """The :class:`Split` called ``name`` (``InputError`` listing the valid names otherwise)."""
    if isinstance(name, Split):
        return name
    if not isinstance(name, str) or name not in SPLITS:
        raise InputError(f"unknown world split {name!r}; choose one of {', '.join(SPLITS)}")
    return SPLITS[name]
