"""Each view driven through its Parameterized state, without a server or browser."""

from __future__ import annotations

import io

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest
from astropy.io import fits

from app.state import AppState


@pytest.fixture()
def state(store):
    return AppState(store)


def _galaxy(store) -> int:
    cat = store.catalog
    return int(cat.loc[cat["has_image_ls"] & cat["has_segmap"], "object_id"].iloc[0])


def test_sky_tap_selects_nearest_object_and_ignores_empty_sky(store, state):
    from app.views.sky import SkyView

    sky = SkyView(store, state)
    row = store.catalog.iloc[10]
    sky._on_tap(x=float(row["ra"]) + 0.001, y=float(row["dec"]))
    assert state.object_id == int(row["object_id"])
    sky._on_tap(x=float(row["ra"]) + 40, y=float(row["dec"]))
    assert state.object_id == int(row["object_id"])  # a miss keeps the selection
    state.colour = "z"
    assert sky.aggregator.column == "z"
    cat = store.catalog
    sky._on_box(bounds=(float(cat["ra"].min()) - 1, float(cat["dec"].min()) - 1, float(cat["ra"].max()) + 1,
                        float(cat["dec"].max()) + 1))
    assert len(sky.selection.value) == len(cat) and f"{len(cat):,} objects in the box" in sky.selection_note.object
    sky._on_row_click(type("Click", (), {"row": 2})())
    assert state.object_id == int(sky.selection.value["object_id"].iloc[2])


def test_sky_cutouts_only_when_few_objects_in_view(store, state):
    from app.views.sky import SkyView

    sky = SkyView(store, state)
    row = store.catalog.loc[store.catalog["has_image_ls"]].iloc[0]
    ra, dec = float(row["ra"]), float(row["dec"])
    near = sky._cutouts(x_range=(ra - 0.01, ra + 0.01), y_range=(dec - 0.01, dec + 0.01), width=800, height=400)
    assert isinstance(near, hv.RGB) and near.dimension_values("A", flat=False).shape == (400, 800)
    assert np.asarray(near.dimension_values("A")).max() > 0  # the object's cutout is drawn
    far = sky._cutouts(x_range=(0, 360), y_range=(-90, 90), width=800, height=400)
    assert np.asarray(far.dimension_values("A")).max() == 0  # whole sky: too many objects, no tiles


def test_go_to_zooms_the_sky_onto_the_object_with_its_cutout(store, state):
    """"Go to" re-centres the rendered figure on the object's field, and the cutout layer's first
    frame (before the browser reports any range) already draws the cutouts there."""
    from app.views.sky import SkyView
    from app.views.sky_layers import focus_ranges

    sky = SkyView(store, state)
    oid = int(store.catalog.loc[store.catalog["has_image_ls"], "object_id"].iloc[0])
    sky.search.value = str(oid)
    assert state.object_id == oid and state.focus is not None
    want = focus_ranges(store, state.focus)
    fig = hv.render(sky.plot.object, backend="bokeh")
    assert sorted((fig.x_range.start, fig.x_range.end)) == pytest.approx(sorted(want["ra"]))
    assert sorted((fig.y_range.start, fig.y_range.end)) == pytest.approx(sorted(want["dec"]))
    first = sky._cutouts()  # no ranges reported yet: the focused field, not the whole catalog
    assert np.asarray(first.dimension_values("A")).max() > 0
    # the replaced plot's first RangeXY event from the browser is (nan, nan): still the focused field
    sky._on_range(x_range=(np.nan, np.nan), y_range=(np.nan, np.nan))
    nan_frame = sky._cutouts(x_range=(np.nan, np.nan), y_range=(np.nan, np.nan), width=800, height=400)
    assert np.asarray(nan_frame.dimension_values("A")).max() > 0
    assert np.isfinite(sky.tap_radius_deg()) and sky.tap_radius_deg() > 0


def test_object_view_image_bands_and_fits_download(store, state):
    from app.views.object import ObjectView

    view = ObjectView(store, state)
    assert isinstance(view.image(), pn.pane.Alert)  # nothing selected yet
    oid = _galaxy(store)
    state.select(oid)
    assert isinstance(view.image(), hv.RGB)
    assert list(view.param.band.names) == ["RGB", "g", "r", "i", "z"]
    view.band = "DES-R"
    assert isinstance(view.image(), hv.Image)
    with fits.open(io.BytesIO(view._fits().getvalue())) as hdus:
        assert [h.name for h in hdus[1:]] == ["DES-G", "DES-R", "DES-I", "DES-Z"]
        assert hdus[1].header["CTYPE1"] == "RA---TAN" and hdus[1].data.shape == (96, 96)
    assert view.download.filename == f"aion_{oid}.fits"


def test_predictions_table_names_morphology_classes():
    from app.views.object import predictions_table
    from engine.data import schema

    row = pd.Series({"pred_z": 0.31, "truth_z": 0.3, "pred_morphology": 5, "truth_morphology": 0})
    table = predictions_table(row).set_index("quantity")
    assert table.loc["morphology", "predicted"] == schema.MORPHOLOGY_CLASSES[5]
    assert table.loc["morphology", "truth"] == schema.MORPHOLOGY_CLASSES[0]
    assert table.loc["z", "predicted"] == "0.31"
    star = predictions_table(pd.Series({"pred_morphology": -1}))
    assert star.set_index("quantity").loc["morphology", "predicted"] == "—"
    assert "held-out error (n)" not in table.columns


def test_predictions_table_says_how_far_off_each_head_was():
    from app.views.object import predictions_table

    row = pd.Series({"pred_z": 0.31, "truth_z": 0.3, "pred_ssfr": -10.1, "pred_morphology": 5})
    quality = {"pred_z": {"r2": 0.724, "rmse": 0.0994, "nmad": 0.0461, "n_test": 702},
               "pred_morphology": {"accuracy": 0.849, "n_test": 424}}
    table = predictions_table(row, quality).set_index("quantity")["held-out error (n)"]
    assert table["z"] == "±0.099, R² 0.72 (702)"
    assert table["morphology"] == "85 % right (424)"
    star = pd.Series({"pred_z": np.nan, "pred_teff": 5800.0, "truth_teff": 5750.0, "pred_logg": 4.4, "pred_feh": -0.2,
                      "pred_morphology": -1})
    lines = predictions_table(star, {"pred_teff": {"rmse": 616.3, "r2": 0.70, "n_test": 116}}).set_index("quantity")
    assert list(lines.index) == ["morphology", "teff", "logg", "feh"]  # no redshift line for a star
    assert lines.loc["teff", "held-out error (n)"] == "±616, R² 0.70 (116)" and lines.loc["teff", "truth"] == "5750"
    assert table["ssfr"] == "—"  # no metrics for that head: say nothing rather than guess


def test_spectrum_view_frames_lines_and_smoothing(store, state):
    from app.views.spectrum import SpectrumView, smooth

    view = SpectrumView(store, state)
    cat = store.catalog
    oid = int(cat.loc[cat["has_spectrum_desi"] & (cat["kind"] == "galaxy"), "object_id"].iloc[0])
    state.select(oid)
    assert view.redshift == pytest.approx(float(store.row(oid)["z"]), abs=1e-3)
    plot = view.observed()
    assert isinstance(plot, hv.Overlay)
    wave_obs = plot.get(1).dimension_values(0)
    view.rest_frame = True
    wave_rest = view.observed().get(1).dimension_values(0)
    assert wave_rest[0] == pytest.approx(wave_obs[0] / (1 + view.redshift))
    x = np.array([1.0, np.nan, 3.0, 5.0, 7.0])
    assert smooth(x, 3)[2] == pytest.approx(4.0) and np.isfinite(smooth(x, 3)[1])


def test_superres_plot_with_photometry_and_truth():
    from app.views.spectrum import superres_plot

    wave = np.linspace(3600, 9800, 200)
    out = {"wavelength": wave, "mean": np.ones(200), "std": np.full(200, 0.1), "samples": np.ones((4, 200)),
           "input_kind": "photometry", "input": {"bands": ["flux_g", "flux_w1"], "wavelength": np.array([4800.0, 34000.0]),
                                                 "flux": np.array([10.0, 5.0])}, "truth": np.full(200, 1.1)}
    col = superres_plot(out, 7)
    hv_panes = [p for p in col if isinstance(p, pn.pane.HoloViews)]
    assert len(hv_panes) == 2  # main + residual
    main = hv_panes[0].object
    assert any(isinstance(el, hv.Scatter) and len(el) == 1 for el in main)  # only the band inside the spectrum's range
    resid = hv_panes[1].object.get(0)
    assert np.allclose(resid.dimension_values(1), -0.1)


def test_segmentation_overlay_classes_and_truth(store, state):
    from app.views.segmentation import mask_rgba

    masks = {"disk": np.zeros((10, 10), bool), "arms": np.zeros((10, 10), bool)}
    masks["disk"][2:8, 2:8] = True
    masks["arms"][4, 4] = True
    rgba = mask_rgba(masks, ["disk", "arms"], outline=False)
    assert rgba[4, 4, 1] == 160 and rgba[3, 3, 0] == 31 and rgba[0, 0, 3] == 0
    assert mask_rgba(masks, ["arms"], outline=False)[3, 3, 3] == 0  # toggled off
    edge = mask_rgba(masks, ["disk"], outline=True)
    assert edge[2, 5, 3] == 255 and edge[5, 5, 3] == 0

    from app.views.segmentation import SegmentationView

    view = SegmentationView(store, state)
    state.select(_galaxy(store))
    panels = view.panels()
    assert isinstance(panels, pn.Row) and isinstance(panels[1].object, hv.Overlay)  # truth overlay on the image
    # no model / head here: the predicted side is a message naming the command that builds what is missing
    assert isinstance(panels[0], pn.pane.Alert) and "aion-engine" in panels[0].object


def test_segmentation_can_average_the_turned_cutouts(store, state):
    """The "average the 8 turned cutouts" switch asks the engine for the view-averaged masks, once per
    object and number of views, and says so in the panel title."""
    from app.views import segmentation
    from engine.tasks.augment import N_VIEWS

    assert segmentation.N_VIEWS == N_VIEWS  # the app's copy of the engine's constant
    calls = []

    class FakePredictor:
        def segmentation(self, object_id, views=1):
            calls.append((object_id, views))
            return {"disk": np.full((96, 96), views > 1), "arms": np.zeros((96, 96), bool)}

    store.__dict__["_predictor_cache"] = {"p": FakePredictor()}
    view = segmentation.SegmentationView(store, state)
    gal = _galaxy(store)
    state.select(gal)
    assert view.panels()[0].object.opts.get().kwargs["title"] == "predicted"
    view.average_views = True
    pred = view.panels()[0].object
    assert pred.opts.get().kwargs["title"] == "predicted, 8 views averaged"
    assert pred.get(1).data[..., 3].all()  # the averaged masks are the ones drawn
    view.average_views = False
    view.panels()
    assert calls == [(gal, 1), (gal, N_VIEWS)]  # each computed once


def test_similar_view_shows_message_without_index_and_gallery_from_hits(store, state):
    from app.views.similar import SimilarView

    view = SimilarView(store, state)
    state.select(_galaxy(store))
    assert view.status.visible and "aion-engine" in view.status.object and state.hits is None
    ids = store.ids[:3]
    state.hits = pd.DataFrame({"rank": [1, 2, 3], "object_id": ids, "score": [0.9, 0.8, 0.7],
                               "ra": store.catalog["ra"].iloc[:3], "dec": store.catalog["dec"].iloc[:3], "kind": "galaxy"})
    assert [c["id"] for c in view.gallery.items] == ids.tolist() and not view.csv.disabled
    view.gallery._handle_msg({"type": "like", "id": int(ids[1])})
    assert view.liked == [int(ids[1])] and view.gallery.items[1]["mark"] == "like"
    view.gallery._handle_msg({"type": "select", "id": int(ids[2])})
    assert state.object_id == int(ids[2])


def test_map_view_tap_and_marks(store, state, app_config, write_embeddings):
    from app.views.embedding_map import MapView

    assert isinstance(MapView(store, state).body[0], pn.pane.Alert)
    write_embeddings(app_config.view_dir(store.name, "image"), len(store.catalog))
    view = MapView(store, state)
    x, y = view.frame[["u1", "u2"]].iloc[4]
    view._on_tap(x=float(x), y=float(y))
    assert state.object_id == int(view.frame["object_id"].iloc[4])
    assert len(view._marks(object_id=state.object_id)) == 1


def test_labels_view_saves_and_reloads(store, state):
    from app.views.labels import LabelsView

    view = LabelsView(store, state)
    view.param.trigger("save")
    assert "Select an object" in view.status.object
    oid = _galaxy(store)
    state.select(oid)
    view.param.update(quality="good", label_class="spiral", comment="two arms")
    view.param.trigger("save")
    assert "Saved" in view.status.object and view.table.value["object_id"].tolist() == [oid]
    state.select(int(store.ids[-1]))
    assert view.quality == "unset"
    state.select(oid)
    assert view.comment == "two arms"


def test_outreach_tour_picks_objects(store, state):
    from app.views.outreach import STEPS, OutreachView, pick_tour

    tour = pick_tour(store)
    assert set(tour) == set(STEPS) and tour["spiral"] is not None
    assert store.row(tour["spiral"])["kind"] == "galaxy"
    view = OutreachView(store, state)
    page = view.page()
    assert isinstance(page, pn.Column)
    view._explore(None)
    assert state.object_id == tour["spiral"] and state.tab == "object"


def test_build_app_is_lazy_and_syncs_tabs(app_config, tmp_path):
    from dataclasses import replace

    from app.main import build_app

    tpl = build_app(app_config, sync_url=False)
    state, views = tpl.aion_state, tpl.aion_views
    assert views.built == {}  # nothing built until a tab is displayed
    tabs = tpl.main[0][2]
    state.tab = "spectrum"
    assert tabs.active == 4
    tabs.active = 1
    assert state.tab == "object"
    assert type(views.get("object")).__name__ == "ObjectView" and list(views.built) == ["object"]
    broken = build_app(replace(app_config, dataset_dir=tmp_path / "missing"), sync_url=False)
    alert = broken.main[0]
    assert isinstance(alert, pn.pane.Alert) and "missing" in alert.object and "aion-engine prepare" in alert.object
