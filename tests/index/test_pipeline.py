"""End to end through the CLI with the pixel-PCA baseline: embed -> index -> similar; stale refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.cli import main
from engine.data.store import open_dataset
from engine.errors import IndexError_
from engine.index.searcher import Searcher

from .conftest import build_index_dataset


def _build(ds, view="image", kind="auto", capsys=None):
    assert main(["embed", "--dataset", str(ds), "--model", "pixel-pca", "--view", view, "--quiet"]) == 0
    assert main(["index", "--dataset", str(ds), "--model", "pixel-pca", "--view", view, "--kind", kind,
                 "--quiet", "--json"]) == 0


@pytest.fixture(scope="module")
def built_image(index_dataset, tmp_path_factory):
    """The image view of the shared dataset, built once into its own index root."""
    from engine import paths

    root = tmp_path_factory.mktemp("idx")
    old = paths.INDEX_ROOT
    paths.INDEX_ROOT = root
    try:
        _build(index_dataset)
    finally:
        paths.INDEX_ROOT = old
    return root


@pytest.fixture
def use_built(built_image, monkeypatch):
    from engine import paths

    monkeypatch.setattr(paths, "INDEX_ROOT", built_image)
    return built_image


def test_manifest_records_what_was_built(index_dataset, use_built):
    from engine import paths

    vdir = paths.view_dir("index-test", "pixel-pca", "image")
    m = json.loads((vdir / "manifest.json").read_text())
    ds = open_dataset(index_dataset)
    assert m["kind"] == "flat" and m["factory"] == "Flat" and m["count"] == 48 and m["n_objects"] == len(ds)
    assert m["dataset_hash"] == ds.hash and m["model_id"] == "pixel-pca" and m["view"] == "image"
    assert m["recall_at_10"] == pytest.approx(1.0) and m["tuning"][0]["recall"] == m["recall_at_10"]
    assert m["dim"] == np.load(vdir / "embeddings.npy").shape[1] and m["metric"].startswith("cosine")
    assert len(m["index_sha256"]) == 64 and m["versions"]["faiss"] and m["latency"]["p50_ms"] > 0
    assert (vdir / "pixel-pca.safetensors").is_file()
    assert not [p.name for p in vdir.iterdir() if ".tmp-" in p.name]


def test_similar_cli_json(index_dataset, use_built, capsys):
    ds = open_dataset(index_dataset)
    oid = int(ds.ids[0])
    capsys.readouterr()
    assert main(["similar", "--dataset", str(index_dataset), "--model", "pixel-pca", "--view", "image",
                 "--object-id", str(oid), "-k", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    res = out["results"]
    assert len(res) == 5 and oid not in [r["object_id"] for r in res]
    assert [r["rank"] for r in res] == [1, 2, 3, 4, 5]
    assert all(a["score"] >= b["score"] for a, b in zip(res, res[1:], strict=False))
    cat = ds.catalog.set_index("object_id")
    for r in res:
        assert r["ra"] == pytest.approx(cat.loc[r["object_id"], "ra"]) and r["kind"] == cat.loc[r["object_id"], "kind"]
        assert r["z"] == pytest.approx(cat.loc[r["object_id"], "z"])
    # the baseline groups this synthetic dataset's classes: most neighbours share the query's class
    same = [cat.loc[r["object_id"], "truth_morphology"] == cat.loc[oid, "truth_morphology"] for r in res]
    assert sum(same) >= 3


def test_similar_cli_table_and_errors(index_dataset, use_built, capsys):
    args = ["similar", "--dataset", str(index_dataset), "--model", "pixel-pca", "--view", "image"]
    assert main([*args, "--object-id", "1000", "-k", "3"]) == 0
    assert "object_id" in capsys.readouterr().out
    assert main([*args, "--object-id", "424242", "-k", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown object_id 424242" in err
    star = int(open_dataset(index_dataset).ids[-1])
    assert main([*args, "--object-id", str(star)]) == 2
    assert "has no image data" in capsys.readouterr().err
    assert main(["similar", "--dataset", str(index_dataset), "--model", "pixel-pca", "--view", "spectrum",
                 "--object-id", "1000"]) == 2
    assert "build with: aion-engine embed" in capsys.readouterr().err


def test_stale_index_is_refused_with_rebuild_command(tmp_path, capsys):
    ds = build_index_dataset(tmp_path / "ds", seed=1, n_gal=24)
    _build(ds)
    Searcher.open(ds, "pixel-pca", "image")  # fresh: fine
    build_index_dataset(tmp_path / "ds", seed=2, n_gal=24)  # the dataset changes underneath
    with pytest.raises(IndexError_, match=r"stale index \(dataset hash .*rebuild with: aion-engine embed --dataset"):
        Searcher.open(ds, "pixel-pca", "image")
    capsys.readouterr()
    assert main(["index", "--dataset", str(ds), "--model", "pixel-pca", "--view", "image", "--quiet"]) == 2
    assert "embeddings were computed for dataset hash" in capsys.readouterr().err
    _build(ds)  # the printed commands fix it
    assert Searcher.open(ds, "pixel-pca", "image").count == 24


def test_damaged_index_file_is_refused(tmp_path):
    from engine import paths

    ds = build_index_dataset(tmp_path / "ds", seed=3, n_gal=24)
    _build(ds)
    path = paths.view_dir("index-test", "pixel-pca", "image") / "index.faiss"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexError_, match="checksum does not match"):
        Searcher.open(ds, "pixel-pca", "image")


@pytest.mark.parametrize("kind", ["hnsw"])  # ivfpq needs >= 64 vectors (tested in test_faiss_build)
def test_approximate_kinds_end_to_end_match_flat(index_dataset, use_built, tmp_path, kind, monkeypatch):
    from engine import paths

    flat = Searcher.open(index_dataset, "pixel-pca", "image")
    expected = {oid: [h.object_id for h in flat.similar(oid, 5)] for oid in flat.dataset.ids[:10]}
    monkeypatch.setattr(paths, "INDEX_ROOT", tmp_path / "other")
    _build(index_dataset, kind=kind)
    approx = Searcher.open(index_dataset, "pixel-pca", "image")
    assert approx.kind == kind
    got = {oid: [h.object_id for h in approx.similar(oid, 5)] for oid in expected}
    overlap = np.mean([len(set(expected[o]) & set(got[o])) / 5 for o in expected])
    assert overlap >= 0.9


def test_similar_cli_feedback_file_and_filters(index_dataset, use_built, capsys, tmp_path):
    from astropy.io import fits

    ds = open_dataset(index_dataset)
    args = ["similar", "--dataset", str(index_dataset), "--model", "pixel-pca", "--view", "image", "--json"]
    like, unlike = [int(ds.ids[0]), int(ds.ids[3])], [int(ds.ids[1])]
    capsys.readouterr()
    assert main([*args, "--like", *map(str, like), "--unlike", *map(str, unlike), "-k", "4"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert len(res) == 4 and not {r["object_id"] for r in res} & {*like, *unlike}
    row = ds.read("image_ls", [int(ds.ids[6])])
    path = tmp_path / "cut.fits"
    fits.PrimaryHDU(row["image_array"][0]).writeto(path)
    assert main([*args, "--file", str(path), "-k", "2", "--z-max", "0.5", "--range", "mag_r::40"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert res[0]["object_id"] == int(ds.ids[6])
    assert main([*args, "--object-id", str(ds.ids[0]), "--kind", "qso", "-k", "2"]) == 0
    assert {r["kind"] for r in json.loads(capsys.readouterr().out)["results"]} == {"qso"}
