"""`aion-engine prepare`: builds embeddings + indexes + predictions once, then finds them up to date."""

from __future__ import annotations

import json

import pytest

import engine.paths
from engine import cli
from engine.index.searcher import Searcher
from engine.prepare import PREPARE_PROBE_OBJECTS, PREPARE_PROBES
from engine.tasks.probes import BEST_COMBO, SEGMENTATION_COMBO


@pytest.fixture()
def index_root(tmp_path, monkeypatch):
    root = tmp_path / "indexes"
    monkeypatch.setattr(engine.paths, "INDEX_ROOT", root)
    return root


def test_prepare_builds_then_is_idempotent(tiny_mock, tiny_mock_model, index_root, capsys):
    argv = ["prepare", "--dataset", str(tiny_mock), "--model", str(tiny_mock_model), "--views", "image",
            "photometry", "--json", "--quiet"]
    assert cli.main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["steps"]["view:image"] == "built"
    assert first["steps"]["tokens"] == "built"
    assert first["steps"]["predictions"].startswith("ready")
    searcher = Searcher.open(tiny_mock, tiny_mock_model, "image")
    hits = searcher.similar(int(searcher.dataset.ids[0]), k=5)
    assert len(hits) == 5 and int(searcher.dataset.ids[0]) not in [h.object_id for h in hits]
    # only the heads the app reads are trained (a first `make run` stays short); evaluate trains the rest
    probes = json.loads(next(index_root.rglob("probes/probes.json")).read_text())
    assert set(probes["combos"]) == {SEGMENTATION_COMBO, BEST_COMBO}
    assert probes["max_objects"] == PREPARE_PROBE_OBJECTS and probes["seg_epochs"] == PREPARE_PROBES["seg_epochs"]
    assert "segmentation" in probes
    assert probes["segmentation_only"] == [SEGMENTATION_COMBO]  # its property and morphology heads: not read
    assert "truth_z" not in probes["combos"][SEGMENTATION_COMBO] and "truth_z" in probes["combos"][BEST_COMBO]
    assert cli.main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["steps"]["view:image"] == "up to date"
    assert second["steps"]["view:photometry"] == "up to date"
    assert second["steps"]["tokens"].startswith("not needed")


def test_prepare_runs_the_codecs_once(tiny_mock, tiny_mock_model, index_root, tmp_path, capsys, monkeypatch):
    """With the token table `prepare` writes, the views, the probes and the predictions never run the
    codecs again, and give what the codecs would have given."""
    import shutil

    import numpy as np
    import pandas as pd

    import engine.prepare
    from engine.model.codecs import CodecSet
    from engine.train.tokens import DATASET_TABLE_DIR

    # probes on a subset, so the predictions encode the other objects themselves
    monkeypatch.setattr(engine.prepare, "PREPARE_PROBE_OBJECTS", 44)
    argv = ["prepare", "--dataset", str(tiny_mock), "--model", str(tiny_mock_model), "--views", "image", "joint",
            "--json", "--quiet"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    first = next(index_root.rglob(DATASET_TABLE_DIR)).parent
    # a second results folder that has only the token table: everything else is built from it
    other = tmp_path / "other"
    monkeypatch.setattr(engine.paths, "INDEX_ROOT", other)
    shutil.copytree(first / DATASET_TABLE_DIR, other / first.relative_to(index_root) / DATASET_TABLE_DIR)

    def no_codecs(*args, **kwargs):
        raise AssertionError("the codecs ran although the token table holds these tokens")

    monkeypatch.setattr(CodecSet, "encode", no_codecs)
    assert cli.main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["steps"]["tokens"] == "up to date"
    assert second["steps"]["view:joint"] == "built" and second["steps"]["predictions"].startswith("ready")
    again = other / first.relative_to(index_root)
    for view in ("image", "joint"):
        np.testing.assert_allclose(np.load(again / view / "embeddings.npy"), np.load(first / view / "embeddings.npy"),
                                   rtol=1e-5, atol=1e-6)
    a, b = pd.read_parquet(first / "predictions.parquet"), pd.read_parquet(again / "predictions.parquet")
    assert a["object_id"].tolist() == b["object_id"].tolist()
    np.testing.assert_allclose(b["pred_z"].to_numpy(float), a["pred_z"].to_numpy(float), rtol=1e-4, atol=1e-5)


def test_prepare_rejects_unknown_view(tiny_mock, tiny_mock_model, index_root, capsys):
    assert cli.main(["prepare", "--dataset", str(tiny_mock), "--model", str(tiny_mock_model), "--views", "xray"]) == 2
    assert "xray" in capsys.readouterr().err


def test_prepare_needs_model_with_dataset(tiny_mock, capsys):
    assert cli.main(["prepare", "--dataset", str(tiny_mock)]) == 2
    assert "--model" in capsys.readouterr().err
