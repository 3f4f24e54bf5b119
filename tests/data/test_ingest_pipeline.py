"""Ingested real-format data flows on unchanged: store -> embed (pixel-PCA baseline) -> FAISS index."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import producers

from engine.data.ingest import ingest
from engine.data.store import open_dataset
from engine.index.baseline import PixelPCAEncoder
from engine.index.embeddings import EmbeddingStore, embed_dataset
from engine.index.faiss_build import build_index


def test_ingested_spectra_embed_and_index(tmp_path):
    rng = np.random.default_rng(30)
    root = tmp_path / "mmu"
    n = 12
    producers.mmu_desi(producers.mmu_path(root, "edr_sv3", 2), np.linspace(10, 11, n), np.zeros(n), rng)
    producers.mmu_legacysurvey(producers.mmu_path(root, "dr10_south_21", 1), [30.0], [0.0], rng, size=100)
    ingest([root], tmp_path / "ds", "mmu", progress=False)
    ds = open_dataset(tmp_path / "ds")
    encoder = PixelPCAEncoder.fit(ds, "spectrum", n_components=4)
    view_dir = tmp_path / "idx" / "spectrum"
    embed_dataset(ds, encoder, "spectrum", view_dir, batch_size=4, progress=False)
    store = EmbeddingStore.open(view_dir)
    assert store.vectors.shape == (len(ds), 4)
    assert (
        store.valid.tolist() == ds.catalog["has_spectrum_desi"].tolist()
    )  # the image-only row has no spectrum
    vectors = store.normalized()
    built = build_index(vectors, "flat", use_gpu=False)
    _, hits = built.index.search(vectors[:3], 1)
    assert hits[:, 0].tolist() == [0, 1, 2]  # every spectrum finds itself first


def test_ingested_images_embed_and_index(tmp_path):
    rng = np.random.default_rng(31)
    root = tmp_path / "mmu"
    n = 10
    producers.mmu_legacysurvey(
        producers.mmu_path(root, "dr10_south_21", 1), np.linspace(10, 11, n), np.zeros(n), rng, size=100
    )
    ingest([root], tmp_path / "ds", "mmu", progress=False)
    ds = open_dataset(tmp_path / "ds")
    encoder = PixelPCAEncoder.fit(ds, "image", n_components=4)
    embed_dataset(ds, encoder, "image", tmp_path / "idx" / "image", batch_size=4, progress=False)
    store = EmbeddingStore.open(tmp_path / "idx" / "image")
    assert store.valid.all() and store.vectors.shape == (n, 4)
    vectors = store.normalized()
    _, hits = build_index(vectors, "flat", use_gpu=False).index.search(vectors[:3], 1)
    assert hits[:, 0].tolist() == [0, 1, 2]
