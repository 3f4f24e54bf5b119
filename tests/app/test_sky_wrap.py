"""A field straddling RA = 0/360: one piece on the plot, boxes, taps and cutout mosaics across RA 0;
and the numpy spreading that replaced Datashader's dynspread on the sky."""

from __future__ import annotations

import shutil

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from app.sky_geometry import RaWrap


@pytest.fixture()
def wrapped_store(tiny_mock, tmp_path):
    """``tiny_mock`` moved on the sky so its objects span RA ~358.5 ... ~1.5 (arrays unchanged)."""
    from app.config import AppConfig
    from app.data_store import DataStore

    data = tmp_path / "wrapped"
    shutil.copytree(tiny_mock, data)
    cat = pd.read_parquet(data / "catalog.parquet")
    cat["ra"] = np.mod(cat["ra"].to_numpy() - cat["ra"].mean(), 360.0)
    assert (cat["ra"] > 180).any() and (cat["ra"] < 180).any()  # really on both sides of RA 0
    cat.to_parquet(data / "catalog.parquet")
    return DataStore(AppConfig(dataset_dir=data, model="test-model", index_root=tmp_path / "indexes",
                               labels_path=tmp_path / "labels.sqlite"))


def test_cut_goes_in_the_widest_gap_only_when_the_field_straddles_ra_zero():
    assert RaWrap.for_ra(np.array([359.5, 359.9, 0.1, 0.5])).cut == pytest.approx(180.0)
    assert not RaWrap.for_ra(np.array([148.5, 150.0, 151.5])).shifted  # ordinary field: 0-360 axis
    all_sky = np.random.default_rng(0).uniform(0, 360, 5000)
    assert not RaWrap.for_ra(all_sky).shifted  # no gap worth moving the axis for
    w = RaWrap.for_ra(np.array([359.5, 0.5]))
    assert np.allclose(w.to_plot(np.array([359.5, 0.5, 360.0])), [-0.5, 0.5, 0.0])
    assert np.allclose(w.to_sky(np.array([-0.5, 0.5])), [359.5, 0.5])


def test_box_across_ra_zero_lists_objects_from_both_sides(wrapped_store):
    from app.state import AppState
    from app.views.sky import SkyView

    store = wrapped_store
    assert store.ra_wrap.shifted and np.ptp(store.plot_ra) < 5  # drawn as one piece
    state = AppState(store)
    sky = SkyView(store, state)
    sky._on_box(bounds=(-0.4, -5.0, 0.3, 10.0))  # (x0, y0, x1, y1) in plot RA: RA 359.6 ... 0.3
    got = set(sky.selection.value["object_id"])
    ra = store.catalog["ra"].to_numpy(np.float64)
    expected = set(store.catalog.loc[(ra >= 359.6) | (ra <= 0.3), "object_id"])
    assert got == expected and any(r > 180 for r in sky.selection.value["ra"]) and any(r < 180 for r in sky.selection.value["ra"])

    west = store.catalog.loc[store.catalog["ra"] > 180].iloc[0]  # drawn at RA - 360 < 0
    sky._on_tap(x=float(west["ra"]) - 360 + 1e-4, y=float(west["dec"]))
    assert state.object_id == int(west["object_id"])
    (x, _), = sky._selected().array(["ra", "dec"])  # the red square sits at plot RA, left of 0
    assert x == pytest.approx(float(west["ra"]) - 360, abs=1e-4)


def test_cutout_mosaic_across_ra_zero_draws_tiles_on_both_sides(wrapped_store):
    from app.views.sky_layers import cutout_layer, focus_ranges, hits_layer

    store = wrapped_store
    cat = store.catalog.loc[store.catalog["has_image_ls"]]
    east = cat.loc[cat["ra"] < 180].sort_values("ra").iloc[0]  # just east of RA 0
    west = cat.loc[cat["ra"] > 180].sort_values("ra").iloc[-1]  # just west of RA 0
    x_e, x_w = float(east["ra"]), float(west["ra"]) - 360
    pad = 0.02
    decs = (min(east["dec"], west["dec"]) - pad, max(east["dec"], west["dec"]) + pad)
    bounds = (x_w - pad, x_e + pad, *decs)
    if len(store.in_box(*bounds)) > 30:
        pytest.skip("mock draw put too many objects between the two")
    rgb = cutout_layer(store, bounds, aspect=0.5)
    alpha = rgb.dimension_values("A", flat=False)
    lo, hi = bounds[0], bounds[1]
    col = lambda x: int(round((x - lo) / (hi - lo) * alpha.shape[1]))  # noqa: E731 - canvas x grows with plot RA
    # each object's tile is opaque at its own column (the displayed axis is inverted, the canvas is not)
    assert alpha[::-1][:, min(col(x_e), alpha.shape[1] - 1)].max() == 255
    assert alpha[::-1][:, max(col(x_w), 0)].max() == 255

    hits = pd.DataFrame({"object_id": [int(west["object_id"])], "score": [0.9], "ra": [float(west["ra"])],
                         "dec": [float(west["dec"])]})
    assert hits_layer(store, hits).array(["ra"])[0, 0] == pytest.approx(x_w, abs=1e-4)
    ranges = focus_ranges(store, (float(west["ra"]), float(west["dec"]), 0.01))
    assert ranges["ra"][0] < x_w < ranges["ra"][1] < 1  # centred in plot RA, not at 359.x


def test_wrapped_sky_renders_with_ra_labels_modulo_360(wrapped_store):
    from bokeh.models import CustomJSTickFormatter

    from app.state import AppState
    from app.views.sky import SkyView

    sky = SkyView(wrapped_store, AppState(wrapped_store))
    fig = hv.render(sky.plot.object, backend="bokeh")
    assert isinstance(fig.xaxis[0].formatter, CustomJSTickFormatter)
    assert any(type(r.glyph).__name__ == "Image" for r in fig.renderers)  # the rasterized, spread sky
    assert min(fig.x_range.start, fig.x_range.end) < 0 < max(fig.x_range.start, fig.x_range.end)  # one piece


def test_numpy_spreading_matches_datashader_density_and_carries_selector_columns():
    from datashader.transfer_functions import _array_density, _circle_mask

    from app.raster import density, nearest_source, sparse_spread

    rng = np.random.default_rng(3)
    for fill in (0.01, 0.05, 0.3):
        arr = (rng.random((40, 60)) < fill).astype(np.uint32)
        for px in (2, 4, 6):
            assert density(arr > 0, px) == pytest.approx(_array_density(arr, False, px))
    filled = np.zeros((9, 9), bool)
    filled[4, 4] = True
    src = nearest_source(filled, 2)
    assert ((src >= 0) == np.pad(_circle_mask(2), 2)).all() and set(src[src >= 0]) == {4 * 9 + 4}  # Datashader's disc

    points = hv.Points(pd.DataFrame({"ra": [0.1, 0.9], "dec": [0.1, 0.9], "object_id": [7, 8]}),
                       kdims=["ra", "dec"], vdims=["object_id"])
    import datashader as ds
    from holoviews.operation.datashader import rasterize

    raster = rasterize(points, aggregator=ds.count(), selector=ds.first("object_id"), dynamic=False,
                       width=20, height=20, x_range=(0, 1), y_range=(0, 1))
    spread = sparse_spread(raster, threshold=0.6, max_px=3, dynamic=False)
    counts = spread.data[spread.vdims[0].name].data
    ids = spread.data["object_id"].data
    assert (counts > 0).sum() > 2 and set(np.unique(ids[counts > 0])) == {7.0, 8.0}
    assert np.isnan(ids[counts == 0]).all()  # empty sky stays empty for hover


def test_hover_names_the_true_ra_on_a_shifted_axis(wrapped_store):
    """The x axis is plot RA (negative west of RA 0); hover's selector columns carry the true RA."""
    from app.data_store import SKY_RA
    from app.raster import sky_points

    store = wrapped_store
    points = sky_points(store, "count")
    frame = points.dframe()
    assert SKY_RA in [d.name for d in points.vdims] and (frame["ra"] < 0).any()
    np.testing.assert_allclose(np.mod(frame["ra"], 360.0), frame[SKY_RA])
    truth = store.catalog.set_index("object_id").loc[frame["object_id"], "ra"].to_numpy()
    np.testing.assert_allclose(frame[SKY_RA], truth)
