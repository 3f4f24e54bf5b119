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


def test_prepare_rejects_unknown_view(tiny_mock, tiny_mock_model, index_root, capsys):
    assert cli.main(["prepare", "--dataset", str(tiny_mock), "--model", str(tiny_mock_model), "--views", "xray"]) == 2
    assert "xray" in capsys.readouterr().err


def test_prepare_needs_model_with_dataset(tiny_mock, capsys):
    assert cli.main(["prepare", "--dataset", str(tiny_mock)]) == 2
    assert "--model" in capsys.readouterr().err
