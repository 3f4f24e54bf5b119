"""Real-format data take the same path as the mock: MMU HDF5 files -> `aion-engine ingest` ->
`embed` + `index` (pixel-PCA baseline) -> the app's store and views (sky tap, object, similar)."""

from __future__ import annotations

import sys
from pathlib import Path

import holoviews as hv
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import producers

from engine import cli


def test_ingested_mmu_files_reach_the_app(tmp_path, monkeypatch):
    from app.config import AppConfig
    from app.data_store import DataStore
    from app.state import AppState
    from app.views.object import ObjectView
    from app.views.similar import SimilarView
    from app.views.sky import SkyView

    rng = np.random.default_rng(5)
    n = 16
    ra, dec = np.linspace(150.0, 150.2, n), np.linspace(2.0, 2.1, n)
    producers.mmu_legacysurvey(producers.mmu_path(tmp_path / "mmu", "dr10_south_21", 1), ra, dec, rng, size=100)
    producers.mmu_desi(producers.mmu_path(tmp_path / "mmu", "edr_sv3", 1), ra[:8], dec[:8], rng)
    data, index_root = tmp_path / "real", tmp_path / "indexes"
    monkeypatch.setenv("AION_INDEX_ROOT", str(index_root))
    monkeypatch.setattr("engine.paths.INDEX_ROOT", index_root)
    assert cli.main(["ingest", "--format", "mmu", str(tmp_path / "mmu"), "--out", str(data)]) == 0
    for verb in ("embed", "index"):
        assert cli.main([verb, "--dataset", str(data), "--model", "pixel-pca", "--view", "image", "--quiet"]) == 0

    store = DataStore(AppConfig(dataset_dir=data, model="pixel-pca", index_root=index_root,
                                labels_path=tmp_path / "labels.sqlite"))
    assert len(store.catalog) == n and store.catalog["has_spectrum_desi"].sum() == 8  # cross-matched rows
    state = AppState(store)
    sky = SkyView(store, state)
    row = store.catalog.iloc[3]
    sky._on_tap(x=float(row["ra"]) + 1e-4, y=float(row["dec"]))
    assert state.object_id == int(row["object_id"])
    assert isinstance(ObjectView(store, state).image(), hv.RGB)
    similar = SimilarView(store, state)
    similar._search()
    hits = state.hits
    assert hits is not None and len(hits) == min(state.k, n - 1)
    assert int(row["object_id"]) not in hits["object_id"].tolist()
    assert [c["id"] for c in similar.gallery.items] == hits["object_id"].tolist()
