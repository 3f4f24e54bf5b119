"""Everything the app needs for one (dataset, model), built only where missing or stale.

``aion-engine prepare --default`` (what ``make run`` calls) builds the default mock survey if
it is missing, then the token ids of every object (the codecs run once), then per view the
embeddings and FAISS index, then the per-object predictions. Each step checks its own freshness (dataset and model hashes in the manifests),
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
        f"to retrain it (about 45 min on 2 cores) run `aion-engine train codecs` and `aion-engine train model` "
        f"on {paths.default_dataset_dir()} with the flags in docs/training.md, 'Reproduce the default model'"
    )


def _index_fresh(dataset_dir: Path, model: Path | str, view: str) -> bool:
    from engine.index.searcher import Searcher

    try:
        Searcher.open(dataset_dir, model, view)
        return True
    except IndexError_:
        return False


def _embeddings_fresh(ds, model: Path | str, view: str) -> bool:
    from engine.index.embeddings import EmbeddingStore
    from engine.index.encoders import current_model_hash

    vdir = paths.view_dir(ds.name, model, view)
    try:
        meta = EmbeddingStore.open(vdir).meta
    except (EngineError, OSError, ValueError):
        return False
    return meta.get("dataset_hash") == ds.hash and meta.get("model_hash") == current_model_hash(model, view, vdir)


def ensure_views(dataset_dir: Path, model: Path | str, views: tuple[str, ...], *, progress: bool = True) -> dict[str, str]:
    """Embeddings + index per view, rebuilt only where the index is missing or stale. Stale views
    are embedded in one pass over the dataset (each batch read and tokenized once for all of them)."""
    from engine.index.pipeline import build_view_index, embed_views

    status = {v: "up to date" for v in views if _index_fresh(dataset_dir, model, v)}
    todo = [v for v in views if v not in status]
    if not todo:
        return status
    ds = open_dataset(dataset_dir)
    to_embed = [v for v in todo if not _embeddings_fresh(ds, model, v)]
    if to_embed:
        embed_views(ds, model, to_embed, progress=progress)
    for view in todo:
        build_view_index(ds, model, view, progress=progress)
        status[view] = "built" if view in to_embed else "index rebuilt"
    return status


def ensure_token_table(dataset_dir: Path, model: Path | str, views: tuple[str, ...], *, progress: bool = True) -> str:
    """Tokenize the dataset once for everything `prepare` encodes (the views, the probes' token caches,
    the predictions): on a CPU the codecs are a large share of encoding, and each of those steps
    would otherwise run them over the same objects again. Built only when some view must be embedded
    or there are no predictions yet (a table found later is reused, one missing only costs speed)."""
    from engine.index.baseline import is_baseline
    from engine.model.encode import views_token_keys
    from engine.model.loading import load_model
    from engine.tasks.features import combo_keys
    from engine.tasks.predictions import predictions_path
    from engine.tasks.probes import BEST_COMBO, SEGMENTATION_COMBO
    from engine.train import tokens

    if is_baseline(model):
        return "not needed (the pixel baseline has no codecs)"
    ds = open_dataset(dataset_dir)
    needed = [v for v in views if not _embeddings_fresh(ds, model, v)]
    if not needed and predictions_path(ds, model).is_file():
        return "not needed (views and predictions exist)"
    loaded = load_model(model)
    if loaded.path is None:
        return "skipped (the model is not a local folder)"
    keys = list(dict.fromkeys([*views_token_keys(loaded, views), *combo_keys(BEST_COMBO, loaded.token_keys),
                               *combo_keys(SEGMENTATION_COMBO, loaded.token_keys)]))
    if tokens.find_table(ds, loaded.path, keys) is not None:
        return "up to date"
    folder = paths.results_dir(ds.name, model) / tokens.DATASET_TABLE_DIR
    tokens.load_or_build(ds, loaded.path, loaded.codecs, keys, folder, progress=progress)
    return "built"


#: Probes `prepare` trains when none exist: only the heads the app reads (the predictions' input
#: combination's, and the segmentation combination's segmentation head), on fewer objects than `aion-engine evaluate` uses,
#: so a first `make run` stays within its 15 minutes on 2 cores, and without the dihedral views (which would
#: encode the training galaxies seven more times), the property probes for 30 epochs instead of 90.
#: `evaluate` retrains the full set (its settings differ, so it never reuses these) and `make run`
#: then serves those.
PREPARE_PROBES = {"max_seg_galaxies": 500, "seg_epochs": 6, "property_epochs": 30, "augment": False}
PREPARE_PROBE_OBJECTS = 2000


def ensure_predictions(dataset_dir: Path, model: Path | str, *, progress: bool = True) -> str:
    from engine.tasks.predictions import cache_predictions
    from engine.tasks.probes import BEST_COMBO, SEGMENTATION_COMBO

    path = cache_predictions(dataset_dir, model, progress=progress, max_objects=PREPARE_PROBE_OBJECTS,
                             probe_options={"combos": (SEGMENTATION_COMBO, BEST_COMBO),
                                            "segmentation_only": (SEGMENTATION_COMBO,), **PREPARE_PROBES})
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
    t0 = time.perf_counter()
    report.record("tokens", ensure_token_table(dataset_dir, model_path, views, progress=progress), t0)
    t0 = time.perf_counter()
    for view, status in ensure_views(dataset_dir, model_path, views, progress=progress).items():
        report.record(f"view:{view}", status, t0)
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
