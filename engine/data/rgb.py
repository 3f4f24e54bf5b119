"""One colour composite for survey cutouts, shared by the mock survey's preview sheets and the app.

Lupton et al. (2004) asinh composites keep the colours of bright cores and faint outskirts at
once. Two choices make them look like the Legacy Survey viewer rather than like noise: the bands
are weighted as that viewer weights them (z, r, g for LS), and the stretch is set per cutout so its
brightest pixels just saturate but never so hard that the sky noise rises above a faint grey.
"""

from __future__ import annotations

import numpy as np

#: Which bands go to (R, G, B), by survey band order in engine.data.schema (LS: g r i z; HSC: g r i z y).
RGB_BANDS: dict[str, tuple[int, int, int]] = {"image_ls": (3, 1, 0), "image_hsc": (2, 1, 0)}
#: Relative weights of the (R, G, B) bands, as the Legacy Survey viewer uses for z, r, g.
RGB_SCALES: tuple[float, float, float] = (2.2, 3.4, 6.0)


def rgb_indices(n_bands: int, source: str) -> tuple[int, int, int]:
    """Band indices for (R, G, B); unknown sources take the reddest three of what there is."""
    idx = RGB_BANDS.get(source, (min(2, n_bands - 1), min(1, n_bands - 1), 0))
    return tuple(min(i, n_bands - 1) for i in idx)  # type: ignore[return-value]


def lupton_rgb(cube: np.ndarray, source: str = "image_ls", *, q: float = 8.0, stretch: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 composite of a (B, H, W) cutout; ``stretch`` multiplies the automatic scale
    (larger = dimmer, so > 1 shows the cores, < 1 the outskirts)."""
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"cutout must have shape (bands, H, W), got {cube.shape!r}")
    if not stretch > 0:
        raise ValueError(f"stretch must be > 0, got {stretch!r}")
    # imported here: astropy.visualization pulls in matplotlib (~0.6 s), not needed for the app's first page
    from astropy.visualization import make_lupton_rgb

    red, green, blue = (np.nan_to_num(np.asarray(cube[i], dtype=np.float64)) * w
                        for i, w in zip(rgb_indices(cube.shape[0], source), RGB_SCALES, strict=True))
    intensity = (red + green + blue) / 3
    peak = np.percentile(intensity, 99.8)
    noise = 1.4826 * np.median(np.abs(intensity - np.median(intensity)))
    scale = max(q * peak / np.sinh(q), 2.5 * noise, 1e-6) * stretch
    return make_lupton_rgb(red, green, blue, minimum=0.0, stretch=scale, Q=q)
