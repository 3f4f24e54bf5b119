"""The sky's numpy binning (app.raster.numpy_points / sky_rasterize) gives Datashader's pixels."""

from __future__ import annotations

import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from holoviews.operation.datashader import rasterize

from app import raster


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 5000
    ra = np.concatenate([rng.uniform(150, 151, n - 4), [150.0, 151.0, 150.5, 149.0]])  # edges + one outside
    dec = np.concatenate([rng.uniform(2, 3, n - 4), [2.0, 3.0, 3.0, 2.5]])
    z = rng.uniform(0, 1, n)
    z[rng.random(n) < 0.1] = np.nan
    kind = np.where(rng.random(n) < 0.8, "galaxy", "star")
    return pd.DataFrame({"ra": ra, "dec": dec, "object_id": np.arange(n, dtype=np.int64) * 7 + 1, "z": z,
                         "kind": pd.Categorical(kind)})


@pytest.mark.parametrize("agg", [ds.count(), ds.mean("z"), ds.count("z"),
                                 ds.summary(c=ds.count(), i=ds.where(ds.first("object_id"))),
                                 ds.summary(m=ds.mean("z"), i=ds.where(ds.first("z")))])
def test_numpy_points_equals_datashader(frame, agg):
    canvas = ds.Canvas(plot_width=37, plot_height=23, x_range=(150.0, 151.0), y_range=(2.0, 3.0))
    ours = raster.numpy_points(frame, "ra", "dec", agg, canvas)
    theirs = canvas.points(frame, "ra", "dec", agg=agg)
    assert ours is not None
    if isinstance(theirs, xr.Dataset):
        assert set(ours.data_vars) == set(theirs.data_vars)
        pairs = [(ours[k], theirs[k]) for k in theirs.data_vars]
    else:
        pairs = [(ours, theirs)]
    for a, b in pairs:
        assert a.dims == b.dims and a.dtype == b.dtype
        np.testing.assert_allclose(a.coords["ra"], b.coords["ra"])
        np.testing.assert_allclose(a.coords["dec"], b.coords["dec"])
        np.testing.assert_array_equal(a.values, b.values)  # NaN == NaN for array_equal on floats
    assert ours.attrs["x_range"] == (150.0, 151.0)


def test_unsupported_reduction_falls_back(frame):
    canvas = ds.Canvas(plot_width=8, plot_height=8, x_range=(150.0, 151.0), y_range=(2.0, 3.0))
    assert raster.numpy_points(frame, "ra", "dec", ds.max("z"), canvas) is None


@pytest.mark.parametrize("agg", ["count", "z"])
def test_sky_rasterize_matches_rasterize_with_hover_selector(frame, agg, monkeypatch):
    """End to end through HoloViews, hover columns included (the sky's exact call)."""
    used, real = [], raster.numpy_points
    monkeypatch.setattr(raster, "numpy_points", lambda *a: used.append(real(*a)) or used[-1])
    points = hv.Points(frame, kdims=["ra", "dec"], vdims=["object_id", "kind", "z"])
    kwargs = dict(aggregator=raster.aggregator_for(agg), selector=ds.first("object_id"), dynamic=False,
                  width=40, height=30, x_range=(150.0, 151.0), y_range=(2.0, 3.0))
    ours = raster.sky_rasterize(points, **kwargs)
    theirs = rasterize(points, **kwargs)
    assert len(used) == 1 and used[0] is not None  # the numpy path, not a silent fallback
    assert [d.name for d in ours.vdims] == [d.name for d in theirs.vdims]
    assert set(ours.data.data_vars) == set(theirs.data.data_vars) >= {"object_id", "kind", "z"}
    for name in theirs.data.data_vars:
        np.testing.assert_array_equal(np.asarray(ours.data[name].values), np.asarray(theirs.data[name].values))


def test_large_catalog_keeps_datashader(frame, monkeypatch):
    """Above NUMPY_MAX_ROWS the numpy path is not taken."""
    calls = []
    monkeypatch.setattr(raster, "numpy_points", lambda *a: calls.append(1))
    monkeypatch.setattr(raster, "NUMPY_MAX_ROWS", 10)
    points = hv.Points(frame, kdims=["ra", "dec"])
    out = raster.sky_rasterize(points, aggregator=ds.count(), dynamic=False, width=10, height=10)
    assert not calls and int(out.data[out.vdims[0].name].values.sum()) == len(frame)
