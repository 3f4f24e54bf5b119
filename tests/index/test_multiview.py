"""Several views in one embed pass: same files as one view at a time, one encoder pass, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cli import main
from engine.data.store import open_dataset
from engine.index.embeddings import MultiViewEncoder, embed_dataset_views

from .conftest import CountingEncoder


class TwoViews:
    """A counting multi-view encoder: image and spectrum vectors from one call."""

    model_id = "counting"
    views = ("image", "spectrum")
    dims = {"image": 8, "spectrum": 8}
    hashes = {"image": "counting-v1", "spectrum": "counting-v1"}

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after
        self.parts = {"image": CountingEncoder(source="image_ls"), "spectrum": CountingEncoder(source="spectrum_desi")}

    def __call__(self, ds, ids):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        return {v: e(ds, ids) for v, e in self.parts.items()}


def test_one_pass_resumes_and_matches_single_views(index_dataset, tmp_path):
    ds = open_dataset(index_dataset)
    assert isinstance(TwoViews(), MultiViewEncoder)
    dirs = {"image": tmp_path / "image", "spectrum": tmp_path / "spectrum"}
    with pytest.raises(RuntimeError):
        embed_dataset_views(ds, TwoViews(fail_after=5), dirs, batch_size=4, chunk_batches=2, progress=False)
    enc = TwoViews()
    res = embed_dataset_views(ds, enc, dirs, batch_size=4, chunk_batches=2, progress=False)
    assert enc.calls == 13 - 4 and res["image"].encoded_chunks == 5  # one call per batch for both views
    for view, source in (("image", "image_ls"), ("spectrum", "spectrum_desi")):
        valid = np.load(dirs[view] / "valid.npy")
        np.testing.assert_array_equal(valid, ds.catalog[f"has_{source}"].to_numpy())
        ref, _ = CountingEncoder(source=source)(ds, ds.ids)
        ref[~valid] = 0
        np.testing.assert_allclose(np.load(dirs[view] / "embeddings.npy").astype(np.float32), ref, atol=2e-2)


def test_cli_all_views_baseline(index_dataset, capsys):
    from engine import paths

    assert main(["embed", "--dataset", str(index_dataset), "--model", "pixel-pca", "--view", "all", "--quiet"]) == 0
    out = capsys.readouterr().out
    for view in ("image", "spectrum", "photometry", "joint"):
        assert f"({view}, dim" in out
        vdir = paths.view_dir("index-test", "pixel-pca", view)
        assert (vdir / "embeddings.npy").is_file() and (vdir / "pixel-pca.safetensors").is_file()
    assert main(["index", "--dataset", str(index_dataset), "--model", "pixel-pca", "--view", "joint", "--quiet"]) == 0
