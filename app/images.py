"""Colour composites and thumbnails of survey cutouts.

The composite is :func:`engine.data.rgb.lupton_rgb` (the mock preview sheets use the same one):
Lupton et al. (2004) asinh with the Legacy Survey viewer's band weights and a per-cutout stretch,
so one slider position looks right on faint and bright objects alike.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from engine.data.rgb import lupton_rgb as composite_rgb


def auto_scale(cube: np.ndarray) -> float:
    """A robust brightness scale of a (B, H, W) cutout: the 99.5th percentile of the band mean."""
    mean = np.nan_to_num(np.asarray(cube, dtype=np.float32)).mean(axis=0)
    scale = float(np.percentile(mean, 99.5))
    return scale if scale > 0 else 1.0


def lupton_rgb(cube: np.ndarray, source: str = "image_ls", stretch: float = 1.0, q: float = 8.0) -> np.ndarray:
    """(H, W, 3) uint8 composite of a (B, H, W) cutout; ``stretch`` multiplies the automatic scale."""
    return composite_rgb(cube, source, q=q, stretch=stretch)


def band_image(cube: np.ndarray, band: int, stretch: float = 1.0) -> np.ndarray:
    """(H, W) float in [0, 1]: one band under an asinh stretch, for the per-band views."""
    img = np.nan_to_num(np.asarray(cube[band], dtype=np.float64))
    scale = auto_scale(cube[band : band + 1]) * stretch
    return np.clip(np.arcsinh(np.maximum(img, 0) / (scale / 10)) / np.arcsinh(10), 0, 1)


def png_bytes(rgb: np.ndarray, size: int | None = None) -> bytes:
    """PNG of an (H, W, 3|4) uint8 image, optionally resized to ``size`` x ``size``."""
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """An ``<img src>`` for a small PNG; thumbnails are ~3-6 KB, so inlining beats a second request."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def sky_mosaic(
    tiles: list[tuple[float, float, np.ndarray, int]],
    ra_range: tuple[float, float],
    dec_range: tuple[float, float],
    width_px: int = 800,
    pixel_scale_arcsec: float = 0.262,
    aspect: float = 0.5,
) -> np.ndarray:
    """(H, W, 4) uint8 canvas of the view with each (ra, dec, rgb, n_pix) tile pasted at its position.

    Tiles are drawn at their true angular size or 1/14 of the view, whichever is larger, so they stay
    visible when several objects share the view. Columns run with RA decreasing (east left), the
    way the sky view's inverted RA axis shows them; row 0 is the top (highest Dec). ``aspect`` is the
    plot's height / width on screen, so square tiles on the canvas are square on screen.
    """
    ra_lo, ra_hi = ra_range
    dec_lo, dec_hi = dec_range
    span_ra, span_dec = max(ra_hi - ra_lo, 1e-9), max(dec_hi - dec_lo, 1e-9)
    height_px = int(np.clip(round(width_px * aspect), 16, 2000))
    if not tiles:  # a fresh 1-pixel array, not a view that would keep a whole canvas alive per session
        return np.zeros((1, 1, 4), np.uint8)
    canvas = np.zeros((height_px, width_px, 4), np.uint8)
    for ra, dec, rgb, n_pix in tiles:
        size_deg = max(n_pix * pixel_scale_arcsec / 3600, span_ra / 14)
        size = max(8, int(round(size_deg / span_ra * width_px)))  # square in screen pixels
        tile = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
        # canvas x grows with RA (hv.RGB bounds run low->high RA); the axis inversion flips the display,
        # so mirror the tile to keep east on the left as in the survey cutout
        cx = int(round((ra - ra_lo) / span_ra * width_px))
        cy = int(round((dec_hi - dec) / span_dec * height_px))
        x0, y0 = cx - size // 2, cy - size // 2
        xs, ys = slice(max(x0, 0), min(x0 + size, width_px)), slice(max(y0, 0), min(y0 + size, height_px))
        if xs.start >= xs.stop or ys.start >= ys.stop:
            continue
        part = tile[:, ::-1][ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        canvas[ys, xs, :3] = part
        canvas[ys, xs, 3] = 255
    return canvas
