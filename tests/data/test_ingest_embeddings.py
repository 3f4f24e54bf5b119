"""Published embeddings in: a Parquet table streamed in row batches into a catalog-only dataset
plus the index store's float16 embeddings, row-aligned with the catalog."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.data.ingest import ingest_embeddings
from engine.data.readers.embeddings_table import EmbeddingColumns
from engine.data.store import open_dataset
from engine.errors import ValidationError
from engine.index.embeddings import EmbeddingStore


def _table(
    n: int, dim: int, rng, *, start_id: int = 1000, fixed: bool = False
) -> tuple[pa.Table, np.ndarray]:
    vec = rng.normal(0, 1, (n, dim)).astype(np.float32)
    vcol = pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), dim) if fixed else pa.array(list(vec))
    kinds = np.array(["galaxy", "star", "qso"])[np.arange(n) % 3]
    return pa.table(
        {
            "targetid": pa.array(np.arange(start_id, start_id + n, dtype=np.int64)),
            "RA_deg": rng.uniform(0, 360, n),
            "DEC_deg": rng.uniform(-90, 90, n),
            "emb": vcol,
            "kind": kinds,
            "z": rng.uniform(0, 1, n),
        }
    ), vec


@pytest.mark.parametrize("fixed", [False, True])
def test_streamed_in_row_groups_and_aligned(tmp_path, fixed):
    rng = np.random.default_rng(20)
    table, vec = _table(1000, 16, rng, fixed=fixed)
    path = tmp_path / "ls_dr10_aion.parquet"
    pq.write_table(table, path, row_group_size=128)  # several row groups, read as batches
    cols = EmbeddingColumns(id_col="targetid", ra_col="RA_deg", dec_col="DEC_deg", vector_col="emb")
    import engine.data.readers.embeddings_table as et

    seen = []
    original = et._convert

    def spy(info, c, rb):
        seen.append(rb.num_rows)
        return original(info, c, rb)

    et_batch = et.BATCH_ROWS
    try:
        et.BATCH_ROWS = 300
        et._convert = spy
        report = ingest_embeddings(
            [path],
            tmp_path / "ds",
            columns=cols,
            view="image",
            model="aion-base",
            progress=False,
            index_root=tmp_path / "idx",
        )
    finally:
        et._convert = original
        et.BATCH_ROWS = et_batch
    assert len(seen) > 1 and max(seen) <= 300  # never the whole table at once
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 1000 and not report.bad
    np.testing.assert_array_equal(ds.ids, table["targetid"].to_numpy())
    assert ds.catalog["kind"].tolist()[:3] == ["galaxy", "star", "qso"]
    np.testing.assert_allclose(ds.catalog["z"], table["z"].to_numpy())
    store = EmbeddingStore.open(tmp_path / "idx" / "ds" / "aion-base" / "image")
    assert store.vectors.dtype == np.float16 and store.vectors.shape == (1000, 16)
    np.testing.assert_allclose(store.vectors, vec.astype(np.float16))
    assert store.valid.all()
    meta = json.loads((store.view_dir / "embeddings.json").read_text())
    assert meta["dataset_hash"] == ds.hash and meta["view"] == "image"


def test_null_vectors_are_invalid_rows_and_cli_flags(tmp_path, monkeypatch):
    import engine.paths

    monkeypatch.setattr(engine.paths, "INDEX_ROOT", tmp_path / "idx")
    path = tmp_path / "emb.parquet"
    pq.write_table(
        pa.table(
            {
                "object_id": pa.array([1, 2, 3], pa.int64()),
                "ra": [10.0, 11.0, 12.0],
                "dec": [0.0, 1.0, 2.0],
                "v": pa.array([[1.0, 0.0], None, [float("nan"), 1.0]], pa.list_(pa.float32())),
            }
        ),
        path,
    )
    rc = main(
        [
            "ingest",
            "--format",
            "embeddings",
            str(path),
            "--out",
            str(tmp_path / "ds"),
            "--view",
            "joint",
            "--model",
            "aion-large",
            "--no-progress",
        ]
    )
    assert rc == 0
    store = EmbeddingStore.open(tmp_path / "idx" / "ds" / "aion-large" / "joint")
    assert store.valid.tolist() == [True, False, False]
    np.testing.assert_array_equal(store.vectors[0], [1.0, 0.0])
    assert open_dataset(tmp_path / "ds").catalog["kind"].tolist() == ["galaxy"] * 3


def test_unknown_view_and_missing_columns(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"id": [1], "ra": [1.0], "dec": [1.0], "v": [[1.0]]}), path)
    with pytest.raises(ValidationError, match="--view"):
        ingest_embeddings([path], tmp_path / "ds", view="pixels", progress=False, index_root=tmp_path)
    with pytest.raises(ValidationError, match=r"e\.parquet: field 'object_id'.*--id-col"):
        ingest_embeddings([path], tmp_path / "ds", progress=False, index_root=tmp_path)
    assert not (tmp_path / "ds").exists()
