"""Fixtures for the app's view-model tests: an AppConfig over the shared ``tiny_mock`` dataset,
with its own index root (synthetic embeddings are written there when a test needs the map)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture()
def app_config(tiny_mock, tmp_path):
    from app.config import AppConfig

    return AppConfig(dataset_dir=tiny_mock, model="test-model", index_root=tmp_path / "indexes",
                     labels_path=tmp_path / "labels.sqlite")


@pytest.fixture()
def store(app_config):
    from app.data_store import DataStore

    return DataStore(app_config)


@pytest.fixture()
def write_embeddings():
    return _write_embeddings


def _write_embeddings(folder: Path, n: int, dim: int = 16, invalid_every: int = 0) -> np.ndarray:
    """Synthetic float16 embeddings in two clusters (even/odd rows) + valid.npy, as `aion-engine embed` writes."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    centers = rng.normal(0, 1, (2, dim))
    emb = (centers[np.arange(n) % 2] + 0.05 * rng.normal(0, 1, (n, dim))).astype(np.float16)
    valid = np.ones(n, bool)
    if invalid_every:
        valid[::invalid_every] = False
        emb[~valid] = 0
    np.save(folder / "embeddings.npy", emb)
    np.save(folder / "valid.npy", valid)
    return valid
