"""Small datasets and encoders for the index tests (no mock survey needed: built with DatasetWriter).

``index_dataset``: 48 objects in three image classes (spiral-like, merger-like, smooth; 16 each,
3 smooth ones are lenses with a ring), DESI spectra for 36 of them (class-dependent emission
lines), 4 stars without images. Everything is seeded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.data import schema
from engine.data.writer import DatasetWriter

N_GAL = 48
N_STAR = 4
SPIRAL, MERGER, SMOOTH = 6, 1, 2  # schema.MORPHOLOGY_CLASSES indices
SIZE = 96


@pytest.fixture(autouse=True)
def _isolated_index_root(tmp_path, monkeypatch):
    """Never write into the repo's indexes/ from tests."""
    from engine import paths

    monkeypatch.setattr(paths, "INDEX_ROOT", tmp_path / "indexes")
    import faiss

    faiss.omp_set_num_threads(1)


def _galaxy(cls: int, lens: bool, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE] - SIZE / 2 + rng.normal(0, 1, 2)[:, None, None]
    r = np.hypot(x, y)
    theta = np.arctan2(y, x) + rng.uniform(0, 2 * np.pi)
    if cls == SPIRAL:
        img = np.exp(-r / 10) * (1 + 0.8 * np.cos(2 * theta - r / 4))
    elif cls == MERGER:
        dx = rng.uniform(8, 14)
        img = np.exp(-np.hypot(x - dx, y) ** 2 / 30) + 0.8 * np.exp(-np.hypot(x + dx, y) ** 2 / 30)
    else:
        img = np.exp(-(r**2) / 60)
    if lens:
        img = img + 0.6 * np.exp(-((r - 20) ** 2) / 6)
    colors = np.array([0.6, 0.8, 1.0, 1.1]) * rng.uniform(0.8, 1.2)
    return (colors[:, None, None] * img[None] * 50 + rng.normal(0, 0.3, (4, SIZE, SIZE))).astype(np.float32)


def _spectrum(cls: int, z: float, rng: np.random.Generator, wave: np.ndarray) -> np.ndarray:
    cont = 1 + 0.3 * (wave / 6000.0) ** (2 if cls == SMOOTH else -1)
    lines = (6563, 5007, 4861, 3727) if cls != SMOOTH else (4000,)
    flux = cont.copy()
    for lam in lines:
        sign = -0.5 if cls == SMOOTH else 2.0
        flux += sign * np.exp(-0.5 * ((wave - lam * (1 + z)) / 4.0) ** 2)
    return (flux + rng.normal(0, 0.05, len(wave))).astype(np.float32)


def build_index_dataset(root, seed: int = 0, n_gal: int = N_GAL):
    rng = np.random.default_rng(seed)
    classes = np.array([SPIRAL, MERGER, SMOOTH] * (n_gal // 3))
    lens = np.zeros(n_gal, bool)
    lens[np.flatnonzero(classes == SMOOTH)[:3]] = True
    n = n_gal + N_STAR
    ids = np.arange(n, dtype=np.int64) * 7 + 1000
    z = np.concatenate([rng.uniform(0.02, 0.3, n_gal), np.zeros(N_STAR)])
    kind = ["galaxy"] * n_gal + ["star"] * N_STAR
    kind[5] = kind[11] = "qso"
    cat = pd.DataFrame({"object_id": ids, "ra": rng.uniform(150, 151, n), "dec": rng.uniform(2, 3, n),
                        "kind": kind, "z": z})
    boost = np.ones(n)
    boost[:n_gal][classes == SPIRAL] = 2.0  # spirals are bluer/brighter: photometry carries class signal
    for j, col in enumerate(schema.LS_FLUX_COLUMNS):
        cat[col] = rng.lognormal(1 + 0.1 * j, 0.3, n) * boost
    cat["mag_r"] = 22.5 - 2.5 * np.log10(cat["flux_r"])
    cat["truth_morphology"] = np.concatenate([classes, -np.ones(N_STAR, int)])
    cat["truth_is_lens"] = np.concatenate([lens, np.zeros(N_STAR, bool)])
    images = np.stack([_galaxy(c, is_lens, rng) for c, is_lens in zip(classes, lens, strict=True)])
    wave = schema.desi_wavelength()
    spec_rows = np.r_[0 : n_gal * 3 // 4, n_gal : n_gal + N_STAR]  # the last quarter of galaxies lack spectra; stars have them
    spectra = np.stack([_spectrum(classes[i] if i < n_gal else SMOOTH, z[i], rng, wave) for i in spec_rows])
    with DatasetWriter(root, overwrite=True) as w:
        w.append("image_ls", ids[:n_gal], image_array=images, image_ivar=np.full_like(images, 10.0),
                 image_mask=np.zeros(images.shape, bool), image_band=np.array([list(schema.LS_BANDS)] * n_gal))
        m = len(spec_rows)
        w.append("spectrum_desi", ids[spec_rows], spectrum_flux=spectra, spectrum_ivar=np.full_like(spectra, 400.0),
                 spectrum_lambda=np.tile(wave.astype(np.float32), (m, 1)), spectrum_mask=np.zeros(spectra.shape, bool))
        w.commit(cat, {"name": "index-test", "provenance": {"kind": "test", "seed": seed}})
    return root


@pytest.fixture(scope="session")
def index_dataset(tmp_path_factory):
    return build_index_dataset(tmp_path_factory.mktemp("index-data") / "index-test")


class CountingEncoder:
    """Deterministic per-object vectors (seeded by object id + class signal); counts calls;
    optionally raises after ``fail_after`` calls to simulate a crash."""

    model_id = "counting"
    model_hash = "counting-v1"

    def __init__(self, dim: int = 8, fail_after: int | None = None, source: str = "image_ls"):
        self.dim, self.fail_after, self.source, self.calls = dim, fail_after, source, 0

    def __call__(self, dataset, object_ids):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        rows = dataset.objects(object_ids)
        valid = rows[schema.source(self.source).flag].to_numpy(bool)
        out = np.zeros((len(object_ids), self.dim), np.float32)
        for i, (oid, cls) in enumerate(zip(object_ids, rows["truth_morphology"], strict=True)):
            v = np.random.default_rng(int(oid)).normal(0, 0.3, self.dim)
            v[int(cls) % self.dim] += 2.0
            out[i] = v
        out[~valid] = np.nan  # garbage for invalid rows: the store must not keep it
        return out, valid


@pytest.fixture
def counting_encoder():
    return CountingEncoder
