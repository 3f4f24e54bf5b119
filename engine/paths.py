"""Where the engine keeps things by default, relative to the project root.

Overridable with environment variables so tests and deployments can point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DATA_ROOT = Path(os.environ.get("AION_DATA_ROOT", PROJECT_ROOT / "data"))
INDEX_ROOT = Path(os.environ.get("AION_INDEX_ROOT", PROJECT_ROOT / "indexes"))
ASSETS = PROJECT_ROOT / "assets"

DEFAULT_DATASET_NAME = "mock-default"
DEFAULT_DATASET_N = 10_000
DEFAULT_DATASET_SEED = 42
DEFAULT_MODEL_DIR = ASSETS / "models" / "aion-nano"


def default_dataset_dir() -> Path:
    return DATA_ROOT / DEFAULT_DATASET_NAME


def model_id_of(model: str | os.PathLike) -> str:
    """A model's id in index paths: a local folder's name, or a hub id with '/' -> '--'."""
    path = Path(model)
    if path.exists():
        return path.resolve().name
    return str(model).replace("/", "--")


def results_dir(dataset_name: str, model: str | os.PathLike) -> Path:
    """Where everything computed for (dataset, model) lives: views, predictions, probes."""
    return INDEX_ROOT / dataset_name / model_id_of(model)


def view_dir(dataset_name: str, model: str | os.PathLike, view: str) -> Path:
    """``indexes/<dataset>/<model>/<view>/`` with embeddings.npy, index.faiss, manifest.json."""
    return results_dir(dataset_name, model) / view
