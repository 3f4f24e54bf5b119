"""How the sky is rasterized (points, aggregators, hover selector, kernel warm-up) and its dynamic
spreading in plain numpy.

Binning: up to ``NUMPY_MAX_ROWS`` points the sky's aggregates (count, mean, the hover selector's
"first row") are computed with ``np.bincount`` instead of Datashader's numba kernels. The pixels
are identical (tests/app/test_numpy_binning.py compares both), but numba compiles each kernel
(~0.8 s for the count, more for mean and the selector) the first time a process draws, which
the first visitor waits for; bincount over 10^5 points takes milliseconds. Past that size
Datashader is faster and the compile is noise, so it takes over (bench/bench_app.py, 10 M rows).

Datashader's ``dynspread`` imports ``datashader.composite``, which compiles ~30 numba ufuncs at
import (2.5 s of CPU, 12 s wall on the busy 2-core box) before the first sky can be shown. The
sky only needs "make isolated pixels bigger", so this does the same density heuristic and a
circular spread with numpy: each empty pixel takes the values (aggregate *and* the hover selector
columns) of its nearest non-empty pixel within ``px``. Same parameters as ``dynspread``.
"""

from __future__ import annotations

import threading
import time

import datashader as ds
import datashader.reductions as rd
import holoviews as hv
import numpy as np
import param
import xarray as xr
from holoviews.operation.datashader import aggregate, rasterize

from app.data_store import SKY_RA

#: Largest catalog for which hover names the object under the cursor (see hover_selector).
SELECTOR_MAX_ROWS = 1_000_000
#: Columns shown on hover (where the catalog has them), besides the colour column.
HOVER_COLUMNS = ("kind", "z")


def hover_selector(n_rows: int):
    """Per-pixel "first object" for hover (id, kind, z of the object under the cursor) on catalogs up
    to SELECTOR_MAX_ROWS; past it the selector costs ~4 s per re-render at 10 M rows on two cores
    (bench/bench_app.py), so hover shows the aggregate and a click gives the object."""
    return ds.first("object_id") if n_rows <= SELECTOR_MAX_ROWS else None


def aggregator_for(column: str):
    return ds.count() if column == "count" else ds.mean(column)


#: Largest point count binned with numpy (above it, Datashader's compiled kernels).
NUMPY_MAX_ROWS = 2_000_000


def _pixel_index(df, x: str, y: str, canvas) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel index of each point inside the canvas (and which rows are inside), binned as
    Datashader bins points: closed ranges, a point on the upper edge goes to the last pixel."""
    (x0, x1), (y0, y1) = canvas.x_range, canvas.y_range
    w, h = canvas.plot_width, canvas.plot_height
    xv, yv = df[x].to_numpy(np.float64), df[y].to_numpy(np.float64)
    inside = (xv >= x0) & (xv <= x1) & (yv >= y0) & (yv <= y1)
    rows = np.flatnonzero(inside)
    ix = np.minimum(((xv[rows] - x0) * (w / (x1 - x0))).astype(np.int64), w - 1)
    iy = np.minimum(((yv[rows] - y0) * (h / (y1 - y0))).astype(np.int64), h - 1)
    return iy * w + ix, rows


def _reduce(df, reduction, flat: np.ndarray, rows: np.ndarray, n_pixels: int) -> np.ndarray | None:
    """One reduction over the binned rows, as Datashader computes it; None if not supported."""
    def column_ok(col):
        v = df[col].to_numpy()
        return np.isfinite(v[rows]) if v.dtype.kind == "f" else np.ones(len(rows), bool), v

    if type(reduction) is rd.count:
        keep = column_ok(reduction.column)[0] if reduction.column is not None else slice(None)
        return np.bincount(flat[keep], minlength=n_pixels).astype(np.uint32)
    if type(reduction) is rd.mean:
        ok, v = column_ok(reduction.column)
        n = np.bincount(flat[ok], minlength=n_pixels)
        total = np.bincount(flat[ok], weights=v[rows][ok].astype(np.float64), minlength=n_pixels)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / n, np.nan)
    if (type(reduction) is rd.where and type(reduction.selector) is rd.first
            and reduction.column is rd.SpecialColumn.RowIndex):
        ok = column_ok(reduction.selector.column)[0]
        first = np.full(n_pixels, np.iinfo(np.int64).max)
        np.minimum.at(first, flat[ok], rows[ok])  # pandas order: "first" is the lowest row
        return np.where(first == np.iinfo(np.int64).max, -1, first)
    return None


def numpy_points(df, x: str, y: str, agg, canvas) -> xr.DataArray | xr.Dataset | None:
    """``canvas.points(df, x, y, agg)`` for count / mean / where(first) reductions and summaries of
    them, computed with numpy; None when ``agg`` is something else (the caller uses Datashader)."""
    w, h = canvas.plot_width, canvas.plot_height
    flat, rows = _pixel_index(df, x, y, canvas)
    (x0, x1), (y0, y1) = canvas.x_range, canvas.y_range
    coords = {x: x0 + (np.arange(w) + 0.5) * (x1 - x0) / w, y: y0 + (np.arange(h) + 0.5) * (y1 - y0) / h}
    parts = dict(zip(agg.keys, agg.values, strict=True)) if isinstance(agg, rd.summary) else {None: agg}
    arrays = {}
    for key, reduction in parts.items():
        values = _reduce(df, reduction, flat, rows, w * h)
        if values is None:
            return None
        arrays[key] = xr.DataArray(values.reshape(h, w), dims=[y, x], coords=coords)
    attrs = {"x_range": canvas.x_range, "y_range": canvas.y_range}
    if None in arrays:
        return arrays[None].assign_attrs(attrs)
    return xr.Dataset(arrays, attrs=attrs)


class numpy_aggregate(aggregate):
    """HoloViews' ``aggregate`` with the numpy binning above for point sets up to NUMPY_MAX_ROWS."""

    def _apply_datashader(self, dfdata, cvs_fn, agg_fn, x, y, agg_state):
        canvas = getattr(cvs_fn, "__self__", None)
        if getattr(cvs_fn, "__name__", None) == "points" and canvas is not None and len(dfdata) <= NUMPY_MAX_ROWS:
            agg = numpy_points(dfdata, x.name, y.name, agg_fn, canvas)
            if agg is not None:
                return self._apply_where_summary(dfdata, x.name, y.name, agg_fn, agg, agg_state)
        return super()._apply_datashader(dfdata, cvs_fn, agg_fn, x, y, agg_state)


class sky_rasterize(rasterize):
    """``rasterize`` whose Points go through :class:`numpy_aggregate`."""

    _transforms = [(hv.Points, numpy_aggregate) if t[0] is hv.Points else t for t in rasterize._transforms]


def sky_points(store, colour: str, rows: int | None = None) -> hv.Points:
    """Points with only the columns the raster needs: hover values for every pixel are computed per
    vdim (``selector``), so a 40-column frame would cost ~1 s per render. ``rows``: the first rows only
    (the warm-up compiles on the very dtypes the sky uses)."""
    vdims = [c for c in dict.fromkeys(["object_id", *HOVER_COLUMNS, colour]) if c in store.catalog.columns]
    if store.ra_wrap.shifted:  # the x axis is plot RA (app.sky_geometry): hover names the true RA too
        vdims.insert(1, SKY_RA)
    frame = store.sky_frame(vdims)
    return hv.Points(frame if rows is None else frame.head(rows), kdims=["ra", "dec"], vdims=vdims)


def warm_up(store, colours: tuple[str, ...]) -> None:
    """Compile Datashader's kernels for these colourings exactly as the sky will call them (same
    frame dtypes, aggregator, selector) on a dozen rows, so no visitor waits for numba."""
    op = sky_rasterize.instance(dynamic=False, width=64, height=64)
    selector = hover_selector(len(store.catalog))
    for colour in colours:
        op(sky_points(store, colour, rows=12), aggregator=aggregator_for(colour), selector=selector)


_WARMED: set[tuple[str, str]] = set()
_WARM_LOCK = threading.Lock()


def warm_up_datashader(store, which: str = "count") -> None:
    """Compile Datashader's numba kernels once per process (app.raster.warm_up): "count" is what the
    first page draws and runs before it; "mean" (colour by a column) runs after it (main.py, onload).
    Spreading is numpy (below), so nothing else is compiled; a catalog binned with numpy
    (``NUMPY_MAX_ROWS``) needs no warm-up at all."""
    with _WARM_LOCK:
        key = (store.name, which)
        if key in _WARMED:
            return
        if len(store.catalog) <= NUMPY_MAX_ROWS:
            _WARMED.add(key)
            return
        if which == "count":
            warm_up(store, ("count",))
        else:
            warm_up(store, tuple(store.colour_columns[:1]))  # all colour columns are float32
        _WARMED.add(key)


#: Seconds the colour warm-up thread waits, so the first page's lazy sky (also an onload callback,
#: registered after ours) renders without sharing the GIL with a numba compile.
WARM_LATER_DELAY_S = 5.0


def warm_up_later(store) -> None:
    """Compile the colour-by-column kernels in a daemon thread (called once the first page is shown)."""
    if (store.name, "mean") in _WARMED:
        return

    def run() -> None:
        time.sleep(WARM_LATER_DELAY_S)
        warm_up_datashader(store, "mean")

    threading.Thread(target=run, daemon=True, name="aion-warm-mean").start()


def empty_mask(values: np.ndarray) -> np.ndarray:
    """Empty pixels of an aggregate: NaN for float aggregates (mean), 0 for counts."""
    return np.isnan(values) if values.dtype.kind == "f" else values == 0


def _window_count(filled: np.ndarray, px: int) -> np.ndarray:
    """Number of filled pixels in the (2 px + 1)^2 square around each pixel (summed-area table)."""
    h, w = filled.shape
    sat = np.zeros((h + 1, w + 1), np.int64)
    sat[1:, 1:] = filled.astype(np.int64).cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(h) - px, 0, h)[:, None]
    y1 = np.clip(np.arange(h) + px + 1, 0, h)[:, None]
    x0 = np.clip(np.arange(w) - px, 0, w)[None, :]
    x1 = np.clip(np.arange(w) + px + 1, 0, w)[None, :]
    return sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]


def density(filled: np.ndarray, px: int) -> float:
    """Datashader's heuristic: the fraction of filled pixels with another filled pixel within ``px``."""
    n = int(filled.sum())
    if n == 0:
        return float("inf")
    return float(((_window_count(filled, px) > 1) & filled).sum()) / n


def choose_px(filled: np.ndarray, threshold: float, max_px: int) -> int:
    """Spread radius as ``datashader.transfer_functions.dynspread`` chooses it."""
    px_ = 0
    for px in range(1, max_px + 1):
        px_ = px
        if density(filled, px * 2) > threshold:
            return px - 1
    return px_


def nearest_source(filled: np.ndarray, px: int) -> np.ndarray:
    """Flat index of the nearest filled pixel within a circle of radius ``px`` (-1: none)."""
    h, w = filled.shape
    flat = np.where(filled, np.arange(h * w).reshape(h, w), -1)
    out = np.full((h, w), -1, np.int64)
    r = np.arange(-px, px + 1)
    offsets = [(dy, dx) for dy in r for dx in r if np.hypot(dy, dx) <= px + 0.5]
    for dy, dx in sorted(offsets, key=lambda o: -np.hypot(*o)):  # farthest first: the nearest wins
        src = flat[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
        dst = out[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
        np.copyto(dst, src, where=src >= 0)
    return out


class sparse_spread(hv.Operation):
    """``dynspread`` for aggregate ``hv.Image`` elements (with or without selector columns)."""

    threshold = param.Number(default=0.5, bounds=(0, 1))
    max_px = param.Integer(default=3, bounds=(0, None))
    # like datashader's spreading operations: streams on the input (the sky's Tap, BoundsXY,
    # RangeXY on the raster) must receive the events of the plotted output
    link_inputs = param.Boolean(default=True)

    def _process(self, element, key=None):
        data = element.data
        main = element.vdims[0].name
        values = np.asarray(data[main].data)
        filled = ~empty_mask(values)
        px = choose_px(filled, self.p.threshold, self.p.max_px)
        if px < 1:
            return element
        src = nearest_source(filled, px)
        take = src >= 0
        new = data.copy()
        for name, var in data.data_vars.items():
            arr = np.asarray(var.data)
            if arr.shape != values.shape:
                continue
            out = arr.copy()
            out[take] = arr.ravel()[src[take]]
            new[name] = (var.dims, out, var.attrs)
        return element.clone(new)
