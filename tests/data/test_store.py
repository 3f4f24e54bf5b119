"""The dataset store: atomic writes, reads by id in any order, one clear error per bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from engine.data import DatasetWriter, open_dataset
from engine.errors import DatasetError, MissingFileError, MissingModalityError, UnknownObjectError

BANDS = ["DES-G", "DES-R", "DES-I", "DES-Z"]


def _catalog(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "object_id": np.arange(100, 100 + n, dtype=np.int64),
            "ra": np.linspace(150.0, 151.0, n),
            "dec": np.linspace(2.0, 2.5, n),
            "kind": ["galaxy"] * (n - 2) + ["star", "qso"],
        }
    )


def _images(ids: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(ids)
    return {
        "image_array": rng.normal(size=(n, 4, 8, 8)).astype("f4"),
        "image_ivar": np.full((n, 4, 8, 8), 2.0, "f4"),
        "image_mask": np.zeros((n, 4, 8, 8), bool),
        "image_band": np.array([BANDS] * n),
    }


@pytest.fixture
def small_dataset(tmp_path):
    rng = np.random.default_rng(0)
    cat = _catalog()
    first, second = cat.object_id.to_numpy()[:4], cat.object_id.to_numpy()[4:7]
    arrays = {}
    with DatasetWriter(tmp_path / "ds") as w:
        for ids in (first, second):
            fields = _images(ids, rng)
            w.append("image_ls", ids, **fields)
            arrays.update({int(i): fields["image_array"][k] for k, i in enumerate(ids)})
        w.commit(cat, {"name": "small", "provenance": {"kind": "test"}})
    return tmp_path / "ds", arrays


def test_reads_back_any_order_with_duplicates(small_dataset):
    root, arrays = small_dataset
    ds = open_dataset(root)
    ids = [105, 100, 105, 102]
    out = ds.read("image_ls", ids)
    for k, i in enumerate(ids):
        np.testing.assert_array_equal(out["image_array"][k], arrays[i])
    assert out["image_band"].tolist()[0] == BANDS
    assert ds.read("image_ls", [103], fields=["image_ivar"])["image_ivar"].shape == (1, 4, 8, 8)


def test_flags_counts_and_hash(small_dataset):
    root, _ = small_dataset
    ds = open_dataset(root)
    assert ds.catalog["has_image_ls"].sum() == 7
    assert not ds.catalog["has_spectrum_desi"].any()
    assert ds.info["counts"] == {"objects": 10, "kinds": {"galaxy": 8, "star": 1, "qso": 1}, "sources": {"image_ls": 7}}
    assert len(ds.hash) == 16
    assert ds.sources == ["image_ls"]


def test_hash_is_of_the_content_not_the_file_encoding(small_dataset, tmp_path):
    """The same catalog written by another parquet writer (here: another compression) and the same
    arrays re-compressed keep the hash; a changed catalog value or array row changes it."""
    import shutil

    from engine.data.writer import _content_hash

    root, _ = small_dataset
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    before = _content_hash(copy)
    assert before == open_dataset(root).hash
    catalog = pd.read_parquet(copy / "catalog.parquet")
    catalog.to_parquet(copy / "catalog.parquet", compression="gzip")
    with h5py.File(copy / "images_ls.h5", "r") as src, h5py.File(copy / "recompressed.tmp", "w") as dst:
        for name in src:
            dst.create_dataset(name, data=src[name][...], compression="gzip", compression_opts=9)
    (copy / "recompressed.tmp").replace(copy / "images_ls.h5")
    assert _content_hash(copy) == before
    changed = catalog.copy()
    changed.loc[3, "ra"] += 1e-9
    changed.to_parquet(copy / "catalog.parquet")
    assert _content_hash(copy) != before
    catalog.to_parquet(copy / "catalog.parquet")
    assert _content_hash(copy) == before
    with h5py.File(copy / "images_ls.h5", "r+") as f:
        f["image_array"][0] = f["image_array"][0] + 1.0
    assert _content_hash(copy) != before


def test_unknown_and_missing_ids_are_named(small_dataset):
    root, _ = small_dataset
    ds = open_dataset(root)
    with pytest.raises(UnknownObjectError, match="999"):
        ds.read("image_ls", [100, 999])
    with pytest.raises(MissingModalityError, match=r"\[108\]"):
        ds.read("image_ls", [108])
    with pytest.raises(MissingModalityError, match="spectrum_desi"):
        ds.read("spectrum_desi", [100])
    with pytest.raises(KeyError, match="accepted"):
        ds.read("image_xyz", [100])


def test_batches_cover_every_id_once(small_dataset):
    ds = open_dataset(small_dataset[0])
    batches = list(ds.batches(3, shuffle=True, seed=1))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(np.concatenate(batches).tolist()) == sorted(ds.ids.tolist())
    again = list(ds.batches(3, shuffle=True, seed=1))
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))


def test_truncated_hdf5_gives_one_clear_error(small_dataset):
    root, _ = small_dataset
    path = root / "images_ls.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match="images_ls.h5"):
        open_dataset(root).read("image_ls", [100])


def test_missing_field_and_row_mismatch_named(small_dataset):
    root, _ = small_dataset
    with h5py.File(root / "images_ls.h5", "a") as f:
        del f["image_ivar"]
    with pytest.raises(DatasetError, match="image_ivar"):
        open_dataset(root).read("image_ls", [100])


def test_missing_folder_and_catalog(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    with pytest.raises(MissingFileError, match="catalog.parquet"):
        open_dataset(tmp_path / "x")


def test_corrupt_catalog_and_duplicate_ids(small_dataset):
    root, _ = small_dataset
    cat = pd.read_parquet(root / "catalog.parquet")
    pd.concat([cat, cat.iloc[:1]]).to_parquet(root / "catalog.parquet")
    with pytest.raises(DatasetError, match="duplicates"):
        _ = open_dataset(root).catalog
    (root / "catalog.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match="catalog.parquet"):
        _ = open_dataset(root).catalog


def test_failed_write_leaves_existing_dataset_untouched(small_dataset):
    root, _ = small_dataset
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    with pytest.raises(RuntimeError), DatasetWriter(root, overwrite=True) as w:
        w.append("image_ls", np.array([100]), **_images(np.array([100]), np.random.default_rng(1)))
        raise RuntimeError("crash mid-write")
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".")] == []


def test_writer_refuses_existing_and_bad_catalog(small_dataset, tmp_path):
    root, _ = small_dataset
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(root)
    bad = _catalog()
    bad.loc[0, "kind"] = "comet"
    with DatasetWriter(tmp_path / "new") as w, pytest.raises(DatasetError, match="comet"):
        w.commit(bad, {})
    assert not (tmp_path / "new").exists()


def test_writer_rejects_unknown_ids_and_fields(tmp_path):
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "a") as w:
        w.append("image_ls", np.array([5000]), **_images(np.array([5000]), rng))
        with pytest.raises(DatasetError, match="not in the catalog"):
            w.commit(_catalog(), {})
    with DatasetWriter(tmp_path / "b") as w, pytest.raises(DatasetError, match="unknown field"):
        w.append("image_ls", np.array([100]), bogus=np.zeros(1), **_images(np.array([100]), rng))


def test_info_is_json_with_provenance(small_dataset):
    root, _ = small_dataset
    info = json.loads((root / "dataset.json").read_text())
    assert info["name"] == "small" and info["provenance"] == {"kind": "test"} and info["schema_version"] == 1
