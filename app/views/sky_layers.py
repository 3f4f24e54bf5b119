"""The sky plot's overlays as plain element builders (search hits, the selection, the cutout mosaic),
split from :mod:`app.views.sky` so the view keeps only widgets, streams and callbacks. Every
coordinate here is *plot* RA (:mod:`app.sky_geometry`), so a field across RA = 0 draws in one piece."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd

from app import images
from app.data_store import DataStore

#: Below this many objects in the field, cutouts are drawn (one mosaic of all of them).
CUTOUT_MAX = 30


def hits_layer(store: DataStore, hits: pd.DataFrame | None) -> hv.Points:
    """Orange rings at the current search hits."""
    if hits is None or len(hits) == 0:
        return hv.Points([], kdims=["ra", "dec"], vdims=["object_id", "score"])
    frame = hits.assign(ra=store.ra_wrap.to_plot(hits["ra"].to_numpy()))
    return hv.Points(frame, kdims=["ra", "dec"], vdims=["object_id", "score"]).opts(
        color="#ff7f0e", marker="circle", size=10, fill_alpha=0, line_width=2, tools=["hover"]
    )


def selected_layer(store: DataStore, row: pd.Series | None) -> hv.Points:
    """A red square on the selected object."""
    if row is None:
        return hv.Points([], kdims=["ra", "dec"])
    x = float(store.ra_wrap.to_plot(float(row["ra"])))
    return hv.Points([(x, float(row["dec"]))], kdims=["ra", "dec"]).opts(
        color="red", marker="square", size=18, fill_alpha=0, line_width=2
    )


def cutout_layer(store: DataStore, bounds: tuple[float, float, float, float], aspect: float = 0.5) -> hv.RGB:
    """One RGBA mosaic of the cutouts of the objects in ``bounds`` (x0, x1, dec0, dec1 in plot RA)
    when at most CUTOUT_MAX are there, else an empty one; a single hv.RGB keeps the overlay's
    structure fixed while the number of objects changes."""
    x0, x1, dec0, dec1 = bounds
    lo_x, hi_x, lo_dec, hi_dec = min(x0, x1), max(x0, x1), min(dec0, dec1), max(dec0, dec1)
    visible = store.in_box(lo_x, hi_x, lo_dec, hi_dec)
    tiles = []
    if 0 < len(visible) <= CUTOUT_MAX:
        xs = np.asarray(store.ra_wrap.to_plot(visible["ra"].to_numpy(np.float64)))
        for x, oid, dec in zip(xs, visible["object_id"], visible["dec"], strict=True):
            cut = store.cutout(int(oid))
            if cut is not None:
                tiles.append((float(x), float(dec), images.lupton_rgb(cut[1], cut[0]), cut[1].shape[-1]))
    mosaic = images.sky_mosaic(tiles, (lo_x, hi_x), (lo_dec, hi_dec), aspect=aspect)
    return hv.RGB(mosaic, kdims=["ra", "dec"], vdims=list("RGBA"), bounds=(lo_x, lo_dec, hi_x, hi_dec), rtol=0.05)


def focus_ranges(store: DataStore, focus: tuple[float, float, float]) -> dict:
    """``redim.range`` arguments centring the plot on (ra, dec) with half-height ``fov`` deg."""
    ra, dec, fov = focus
    x = float(store.ra_wrap.to_plot(float(ra)))
    cosd = max(np.cos(np.radians(dec)), 0.05)
    return {"ra": (x - fov / cosd, x + fov / cosd), "dec": (dec - fov, dec + fov)}
