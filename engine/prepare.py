"""Everything the app needs for one (dataset, model), built only where missing or stale.

``aion-engine prepare --default`` (what ``make run`` calls) builds the default mock survey if
it is missing, then per view the embeddings and FAISS index, then the per-object
predictions. Each step checks its own freshness (dataset and model hashes in the manifests),
so a second run costs seconds and a crash mid-way resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine import paths
from engine.data.store import open_dataset
from engine.errors import EngineError, IndexError_, ModelError

log = logging.getLogger(__name__)

VIEWS: tuple[str, ...] = ("image", "spectrum", "photometry", "joint")


@dataclass
class PrepareReport:
    """What each step did (``built``, ``up to date``, or an error line) and how long it took."""

    dataset: str
    model: str
    steps: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def record(self, step: str, status: str, t0: float) -> None:
        self.steps[step] = status
        self.seconds[step] = round(time.perf_counter() - t0, 2)
        log.info("prepare %s: %s (%.1fs)", step, status, self.seconds[step])


def ensure_mock_dataset(out: Path, n: int, seed: int, *, progress: bool = True) -> str:
    """Generate the mock survey at ``out`` unless a complete one is there (``dataset.json`` is
    written last, atomically, so its presence means complete)."""
    if (out / "dataset.json").is_file():
        open_dataset(out).catalog  # noqa: B018 - validates the catalog once
        return "up to date"
    from engine.data.mock import generate

    generate(out, n=n, seed=seed, progress=progress)
    return "built"


def ensure_model(model_dir: Path) -> str:
    """The default model ships in ``assets/``; its absence means a broken checkout, not a step to run
    silently for an hour, so say how to rebuild it."""
    if (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file():
        return "up to date"
    raise ModelError(
        f"{model_dir}: model folder missing (config.json / model.safetensors). It ships with the repository; "
        f"to retrain it (about 45 min on 2 cores) run: aion-engine train all --dataset "
        f"{paths.default_dataset_dir()} --preset nano --out {model_dir}"
    )


def ensure_view(dataset_dir: Path, model: Path | str, view: str, *, progress: bool = True) -> str:
    """Embeddings + index for one view, rebuilt only when the index is missing or stale."""
    from engine.index.embeddings import EmbeddingStore
    from engine.index.encoders import current_model_hash
    from engine.index.pipeline import build_view_index, embed_view
    from engine.index.searcher import Searcher

    try:
        Searcher.open(dataset_dir, model, view)
        return "up to date"
    except IndexError_:
        pass
    ds = open_dataset(dataset_dir)
    vdir = paths.view_dir(ds.name, model, view)
    fresh = False
    try:
        meta = EmbeddingStore.open(vdir).meta
        fresh = meta.get("dataset_hash") == ds.hash and meta.get("model_hash") == current_model_hash(model, view, vdir)
    except (EngineError, OSError, ValueError):
        fresh = False
    if not fresh:
        embed_view(ds, model, view, progress=progress)
    build_view_index(ds, model, view, progress=progress)
    return "built" if not fresh else "index rebuilt"


def ensure_predictions(dataset_dir: Path, model: Path | str, *, progress: bool = True) -> str:
    from engine.tasks.predictions import cache_predictions

    path = cache_predictions(dataset_dir, model, progress=progress)
    return f"ready ({path})"


def prepare(
    dataset_dir: str | os.PathLike,
    model: str | os.PathLike,
    *,
    views: tuple[str, ...] = VIEWS,
    predictions: bool = True,
    progress: bool = True,
) -> PrepareReport:
    """Build what the app reads for ``dataset_dir`` under ``model``; idempotent."""
    dataset_dir, model_path = Path(dataset_dir), Path(model)
    report = PrepareReport(str(dataset_dir), str(model))
    for view in views:
        t0 = time.perf_counter()
        report.record(f"view:{view}", ensure_view(dataset_dir, model_path, view, progress=progress), t0)
    if predictions:
        t0 = time.perf_counter()
        report.record("predictions", ensure_predictions(dataset_dir, model_path, progress=progress), t0)
    return report


def prepare_default(*, progress: bool = True) -> PrepareReport:
    """The default mock survey + shipped nano model, everything the app shows."""
    dataset_dir = paths.default_dataset_dir()
    t0 = time.perf_counter()
    data_status = ensure_mock_dataset(dataset_dir, paths.DEFAULT_DATASET_N, paths.DEFAULT_DATASET_SEED, progress=progress)
    t1 = time.perf_counter()
    model_status = ensure_model(paths.DEFAULT_MODEL_DIR)
    report = prepare(dataset_dir, paths.DEFAULT_MODEL_DIR, progress=progress)
    report.steps = {"dataset": data_status, "model": model_status, **report.steps}
    report.seconds = {"dataset": round(t1 - t0, 2), "model": 0.0, **report.seconds}
    return report
