"""The shared data store and the session state, driven without a server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.config import AppConfig, load_config
from app.data_store import DataStore, get_store
from app.messages import AppMessage
from app.state import AppState, parse_coordinates


def test_config_from_env(tmp_path):
    cfg = load_config({"AION_DATASET": str(tmp_path / "d"), "AION_MODEL": "m", "AION_INDEX_ROOT": str(tmp_path / "i"),
                       "AION_UPLOAD_MAX_MB": "5"})
    assert cfg.dataset_dir == tmp_path / "d" and cfg.upload_max_mb == 5
    assert cfg.view_dir("ds", "image") == tmp_path / "i" / "ds" / "m" / "image"
    with pytest.raises(ValueError, match="AION_UPLOAD_MAX_MB='lots'"):
        load_config({"AION_UPLOAD_MAX_MB": "lots"})


def test_missing_dataset_is_a_message_naming_the_folder(tmp_path):
    cfg = AppConfig(tmp_path / "nowhere", "m", tmp_path, tmp_path / "l.sqlite")
    with pytest.raises(AppMessage, match="nowhere.*aion-engine prepare --default"):
        DataStore(cfg)


def test_catalog_is_compact_and_store_is_shared(app_config, store):
    cat = store.catalog
    assert cat["ra"].dtype == np.float32 and cat["kind"].dtype == "category" and cat["object_id"].dtype == np.int64
    assert "ra" not in store.colour_columns and "z" in store.colour_columns
    assert get_store(app_config) is get_store(app_config)


def test_nearest_object_on_the_sphere(store):
    row = store.catalog.iloc[5]
    assert store.nearest(float(row["ra"]) + 1e-5, float(row["dec"]), 0.01) == int(row["object_id"])
    assert store.nearest(float(row["ra"]) + 90, float(row["dec"]), 0.01) is None  # empty sky
    # across RA = 0: 359.9999 and 0.0001 are neighbours on the sky
    ids = store.tree.query(np.array([1.0, 0.0, 0.0]))[1]
    assert ids >= 0


def test_arrays_for_views(store):
    cat = store.catalog
    gal = int(cat.loc[cat["has_image_ls"] & cat["has_segmap"], "object_id"].iloc[0])
    source, cube, bands = store.cutout(gal)
    assert source == "image_ls" and cube.shape == (4, 96, 96) and bands[0] == "DES-G"
    assert store.thumbnail(gal).startswith("data:image/png;base64,")
    masks = store.truth_segmentation(gal)
    assert set(masks) >= {"disk", "arms"} and masks["disk"].shape == (96, 96) and any(m.any() for m in masks.values())
    with_spec = int(cat.loc[cat["has_spectrum_desi"], "object_id"].iloc[0])
    spec = store.spectrum(with_spec)
    assert spec["source"] == "spectrum_desi" and spec["flux"].shape == spec["wavelength"].shape
    without = cat.loc[~cat["has_spectrum_desi"] & ~cat["has_spectrum_sdss"], "object_id"]
    if len(without):
        assert store.spectrum(int(without.iloc[0])) is None


def test_embedding_map_pca_and_missing_message(store, app_config, write_embeddings):
    with pytest.raises(AppMessage, match="aion-engine embed --dataset .* --view image"):
        store.embedding_map("image")
    n = len(store.catalog)
    valid = write_embeddings(app_config.view_dir(store.name, "image"), n, invalid_every=7)
    frame = store.embedding_map("image")
    assert len(frame) == valid.sum()
    # two clusters (even/odd rows) separate along the first principal axis
    even = frame["object_id"].isin(store.ids[::2])
    assert np.sign(frame.loc[even, "u1"]).nunique() == 1 and np.sign(frame.loc[~even, "u1"]).nunique() == 1
    assert store.available_views() == ["image"]
    # embeddings of an older version of the dataset are refused with the rebuild command
    folder = app_config.view_dir(store.name, "spectrum")
    write_embeddings(folder, n)
    (folder / "embeddings.json").write_text('{"dataset_hash": "0000000000000000"}')
    with pytest.raises(AppMessage, match="built for another version of dataset .*aion-engine embed"):
        store.embedding_map("spectrum")


def test_predictions_are_merged_for_colouring(app_config, tiny_mock):
    from app.data_store import DataStore

    base = DataStore(app_config)
    preds = pd.DataFrame({"object_id": base.ids, "pred_z": np.linspace(0, 1, len(base.ids))})
    app_config.results_dir(base.name).mkdir(parents=True)
    preds.to_parquet(app_config.results_dir(base.name) / "predictions.parquet")
    store = DataStore(app_config)
    assert "pred_z" in store.colour_columns
    assert store.row(int(base.ids[-1]))["pred_z"] == pytest.approx(1.0)


def test_state_goto_by_id_position_and_errors(store):
    state = AppState(store)
    assert state.dataset == store.name and "z" in state.param.colour.objects
    oid = int(store.ids[3])
    assert state.goto(str(oid)) and state.object_id == oid and state.focus is not None
    row = store.row(oid)
    state.select(None)
    assert state.goto(f"{row['ra'] + 1e-4} {row['dec']}") and state.object_id == oid
    assert not state.goto("12345678901") and "Unknown object id 12345678901" in state.message
    assert not state.goto("north of here") and "accepted" in state.message
    assert not state.goto("10 95") and "outside the sky" in state.message


def test_unknown_id_from_url_becomes_message(store):
    state = AppState(store, object_id=42)
    assert state.row is None and state.message_level == "danger" and "Unknown object id 42" in state.message
    state.object_id = int(store.ids[0])
    assert state.message == "" and state.row is not None
    state.dataset = "another"
    assert "restart it with AION_DATASET" in state.message


def test_parse_sexagesimal():
    ra, dec = parse_coordinates("10h00m28.6s +02d12m21s")
    assert ra == pytest.approx(150.119, abs=1e-3) and dec == pytest.approx(2.2058, abs=1e-3)
