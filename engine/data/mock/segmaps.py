"""Segmentation truth from the rendered components (LS r band, PSF-convolved, noiseless).

A pixel belongs to a class when that class's own light there is above the sky noise and is
a sizeable part of the galaxy's light at that pixel: the disk wherever disk-plane light
(disk + arms + knots) is above 1 sigma; bulge, bar, arms and knots where the component is
above 1 sigma and holds at least ``DOMINANCE`` of the local light (for bar, arms and knots,
of the light other than the bulge, so a bar crossing a bright bulge is still a bar, as in
Galaxy Zoo 3D masks); neighbours above 1 sigma.
Classes overlap (arms lie on the disk), hence one bit per class.
"""

from __future__ import annotations

import numpy as np

from engine.data import schema
from engine.data.mock.structure import Component

N_SIGMA = 1.0
DOMINANCE = {"bulge": 0.4, "bar": 0.3, "arms": 0.3, "knots": 0.3}


def segmap(components: list[Component], images: dict[str, np.ndarray], sigma: float) -> np.ndarray:
    """uint8 bitmask (H, W) with bits ``schema.SEGMENTATION_BIT``."""
    shape = next(iter(images.values())).shape
    per_class: dict[str, np.ndarray] = {}
    galaxy_total = np.zeros(shape)
    for comp in components:
        img = images.get(comp.name)
        if img is None or comp.seg is None:
            continue
        per_class[comp.seg] = per_class.get(comp.seg, 0) + img
        if comp.seg != "neighbour":
            galaxy_total += img
    out = np.zeros(shape, np.uint8)
    floor = N_SIGMA * sigma
    disk_plane = sum(per_class.get(c, 0) for c in ("disk", "arms", "knots"))
    if np.ndim(disk_plane) and "disk" in per_class:
        out[disk_plane > floor] |= schema.SEGMENTATION_BIT["disk"]
    without_bulge = galaxy_total - per_class.get("bulge", 0)
    for cls, frac in DOMINANCE.items():
        if cls in per_class:
            img = per_class[cls]
            reference = galaxy_total if cls == "bulge" else without_bulge
            out[(img > floor) & (img >= frac * reference)] |= schema.SEGMENTATION_BIT[cls]
    if "neighbour" in per_class:
        out[per_class["neighbour"] > floor] |= schema.SEGMENTATION_BIT["neighbour"]
    return out
