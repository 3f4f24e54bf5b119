"""Shared fixtures: tiny mock surveys built once per test session.

``tiny_mock`` is a 64-object dataset (seed 0) with every source: LS images for all objects,
HSC images for ~20 %, DESI spectra (half the galaxies, all stars and quasars), SDSS spectra
(~15 %), Gaia XP for bright stars, segmentation maps for galaxies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_mock_factory(tmp_path_factory) -> Callable[[int, int], Path]:
    """``make(n, seed)`` -> path of a mock dataset, generated once per (n, seed) per session."""
    from engine.data.mock import generate

    made: dict[tuple[int, int], Path] = {}

    def make(n: int, seed: int = 0) -> Path:
        key = (int(n), int(seed))
        if key not in made:
            out = tmp_path_factory.mktemp(f"mock-n{n}-s{seed}") / "dataset"
            made[key] = generate(out, n, seed, workers=1, progress=False)
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_mock(tiny_mock_factory) -> Path:
    """Path of a 64-object mock dataset (seed 0) containing every array source."""
    return tiny_mock_factory(64, 0)
