"""Which dataset, model, index root and labels database the app serves, from environment variables.

Read once per server process (the data store is cached per config), so tests point the app at a
tiny dataset by building an :class:`AppConfig` directly instead of touching the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine import paths

#: Uploads above this size are refused before they reach the server's memory.
DEFAULT_UPLOAD_MAX_MB = 20


@dataclass(frozen=True)
class AppConfig:
    dataset_dir: Path
    model: str
    index_root: Path
    labels_path: Path
    upload_max_mb: int = DEFAULT_UPLOAD_MAX_MB

    @property
    def model_id(self) -> str:
        return paths.model_id_of(self.model)

    def results_dir(self, dataset_name: str) -> Path:
        """``<index_root>/<dataset>/<model>/``: predictions and one folder per embedding view."""
        return self.index_root / dataset_name / self.model_id

    def view_dir(self, dataset_name: str, view: str) -> Path:
        return self.results_dir(dataset_name) / view


def load_config(env: dict[str, str] | None = None) -> AppConfig:
    """Config from ``AION_DATASET``, ``AION_MODEL``, ``AION_INDEX_ROOT``, ``AION_LABELS_DB``,
    ``AION_UPLOAD_MAX_MB`` (defaults: the `make run` dataset, the shipped nano model, ./indexes,
    data/labels.sqlite, 20 MB)."""
    env = dict(os.environ) if env is None else env
    dataset_dir = Path(env.get("AION_DATASET") or paths.default_dataset_dir())
    model = env.get("AION_MODEL") or str(paths.DEFAULT_MODEL_DIR)
    index_root = Path(env.get("AION_INDEX_ROOT") or paths.INDEX_ROOT)
    labels = Path(env.get("AION_LABELS_DB") or paths.DATA_ROOT / "labels.sqlite")
    raw_mb = env.get("AION_UPLOAD_MAX_MB") or str(DEFAULT_UPLOAD_MAX_MB)
    try:
        upload_mb = int(raw_mb)
    except ValueError:
        raise ValueError(f"AION_UPLOAD_MAX_MB={raw_mb!r} is not an integer number of megabytes") from None
    if not 1 <= upload_mb <= 200:
        raise ValueError(f"AION_UPLOAD_MAX_MB={upload_mb!r} is outside the accepted range 1..200")
    return AppConfig(dataset_dir, model, index_root, labels, upload_mb)
