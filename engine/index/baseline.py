"""The pixel-PCA baseline embedding: what retrieval gets *without* a foundation model.

For each view the raw data are turned into a fixed-length feature vector (images:
arcsinh-stretched, 2x2-binned pixels of the 96x96 centre; spectra: median-normalised flux
binned 8:1 on the DESI grid; photometry: arcsinh of the Legacy Survey fluxes), centred and
projected on their leading principal components, fitted on a seeded sample of the dataset.
``joint`` concatenates the unit-normalised parts (zeros for a missing part).

Its state (means, components, scalings) is saved as safetensors + JSON metadata in the view
folder, so new data (a FITS cutout) is encoded exactly like the indexed objects. The "model
hash" is the hash of that state: refitting changes it, and stale indexes are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.data import schema
from engine.errors import IndexError_, MissingModalityError
from engine.index.atomic import atomic_path

MODEL_ID = "pixel-pca"
STATE_FILE = "pixel-pca.safetensors"
IMAGE_BIN = 2
SPECTRUM_BIN = 8
PARTS: dict[str, tuple[str, ...]] = {
    "image": ("image",),
    "spectrum": ("spectrum",),
    "photometry": ("photometry",),
    "joint": ("image", "spectrum", "photometry"),
}
IMAGE_SOURCES = ("image_ls", "image_hsc")
SPECTRUM_SOURCES = ("spectrum_desi", "spectrum_sdss")


def is_baseline(model: str | os.PathLike) -> bool:
    return str(model) == MODEL_ID


def _image_source(dataset) -> str | None:
    have = [s for s in IMAGE_SOURCES if dataset.has_source(s)]
    return max(have, key=lambda s: int(dataset.catalog[schema.source(s).flag].sum())) if have else None


def _spectrum_source(dataset) -> str | None:
    have = [s for s in SPECTRUM_SOURCES if dataset.has_source(s)]
    return max(have, key=lambda s: int(dataset.catalog[schema.source(s).flag].sum())) if have else None


def _bin(x: np.ndarray, f: int, axes: tuple[int, ...]) -> np.ndarray:
    for ax in axes:
        ax %= x.ndim
        n = x.shape[ax] // f * f
        x = np.take(x, np.arange(n), axis=ax)
        shape = list(x.shape)
        shape[ax : ax + 1] = [n // f, f]
        x = x.reshape(shape).mean(axis=ax + 1)
    return x


def image_features(fields: dict[str, np.ndarray]) -> np.ndarray:
    """(n, bands*48*48) arcsinh-stretched binned pixels; pixels with ivar <= 0 count as 0.

    Usable pixels are judged by ``image_ivar`` alone: it is unambiguous, whereas writers of
    ``image_mask`` have disagreed on whether True means bad or usable.
    """
    img = np.asarray(fields["image_array"], np.float32)
    if "image_ivar" in fields:
        img = np.where(np.asarray(fields["image_ivar"]) > 0, img, 0.0)
    img = np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)
    size = schema.IMAGE_SIZE
    h, w = img.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    img = img[..., top : top + size, left : left + size]
    scale = np.median(np.abs(img), axis=(-2, -1), keepdims=True) + 1e-3  # per-object, per-band noise-ish scale
    return _bin(np.arcsinh(img / scale), IMAGE_BIN, (-2, -1)).reshape(len(img), -1).astype(np.float32)


def spectrum_features(fields: dict[str, np.ndarray]) -> np.ndarray:
    """(n, L/8) flux divided by its median |flux| (shape, not brightness), masked pixels 0."""
    flux = np.asarray(fields["spectrum_flux"], np.float32)
    if "spectrum_mask" in fields:
        flux = np.where(np.asarray(fields["spectrum_mask"], bool), 0.0, flux)  # spectrum_mask True = bad
    flux = np.nan_to_num(flux, nan=0.0, posinf=0.0, neginf=0.0)
    norm = np.median(np.abs(flux), axis=1, keepdims=True) + 1e-6
    return _bin(flux / norm, SPECTRUM_BIN, (1,)).astype(np.float32)


def photometry_features(catalog_rows) -> tuple[np.ndarray, np.ndarray]:
    """(n, n_bands) arcsinh fluxes (nanomaggies) and a valid mask (all fluxes finite)."""
    cols = [c for c in schema.LS_FLUX_COLUMNS if c in catalog_rows.columns]
    if not cols:
        return np.zeros((len(catalog_rows), 1), np.float32), np.zeros(len(catalog_rows), bool)
    x = catalog_rows[cols].to_numpy(dtype=np.float64)
    ok = np.isfinite(x).all(axis=1)
    return np.arcsinh(np.nan_to_num(x)).astype(np.float32), ok


class PixelPCAEncoder:
    """The baseline as an :class:`~engine.index.embeddings.Encoder`; build with :meth:`fit` or :meth:`load`."""

    model_id = MODEL_ID

    def __init__(self, view: str, state: dict[str, np.ndarray], meta: dict[str, Any]):
        if view not in PARTS:
            raise IndexError_(f"unknown view {view!r}; accepted: {', '.join(PARTS)}")
        self.view, self.state, self.meta = view, state, meta
        self.dim = int(sum(state[f"{p}.components"].shape[0] for p in PARTS[view]))
        h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
        for k in sorted(state):
            h.update(k.encode())
            h.update(np.ascontiguousarray(state[k]).tobytes())
        self.model_hash = h.hexdigest()[:16]

    # --- features ------------------------------------------------------------------

    def _part(self, part: str, dataset, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw features of one part for ``ids`` (zeros where absent) and the presence mask."""
        rows = dataset.objects(ids)
        if part == "photometry":
            return photometry_features(rows)
        src = self.meta.get(f"{part}_source")
        width = int(self.state[f"{part}.mean"].shape[0])
        feats = np.zeros((len(ids), width), np.float32)
        if src is None or not dataset.has_source(src):
            return feats, np.zeros(len(ids), bool)
        present = rows[schema.source(src).flag].to_numpy(bool)
        if present.any():
            wanted = ("image_array", "image_ivar") if part == "image" else ("spectrum_flux", "spectrum_mask")
            fields = dataset.read(src, ids[present], fields=wanted)
            f = image_features(fields) if part == "image" else spectrum_features(fields)
            if f.shape[1] != width:
                raise MissingModalityError(
                    f"{src}: {part} features have width {f.shape[1]}, the fitted baseline expects {width} "
                    f"(different image size or spectral grid)"
                )
            feats[present] = f
        return feats, present

    def __call__(self, dataset, object_ids) -> tuple[np.ndarray, np.ndarray]:
        ids = np.atleast_1d(np.asarray(object_ids, dtype=np.int64))
        parts, any_ok = [], np.zeros(len(ids), bool)
        for part in PARTS[self.view]:
            feats, ok = self._part(part, dataset, ids)
            z = (feats - self.state[f"{part}.mean"]) / self.state[f"{part}.scale"]
            proj = z @ self.state[f"{part}.components"].T
            if self.view == "joint":
                norms = np.linalg.norm(proj, axis=1, keepdims=True)
                proj = np.divide(proj, norms, out=np.zeros_like(proj), where=norms > 0)
            proj[~ok] = 0.0
            parts.append(proj)
            any_ok |= ok
        return np.concatenate(parts, axis=1).astype(np.float32), any_ok

    # --- fitting and persistence -----------------------------------------------------

    @classmethod
    def fit(cls, dataset, view: str, *, n_components: int = 64, sample: int = 2000, seed: int = 0) -> PixelPCAEncoder:
        """Fit each part's PCA on up to ``sample`` objects that have it (seeded, so refits agree)."""
        if view not in PARTS:
            raise IndexError_(f"unknown view {view!r}; accepted: {', '.join(PARTS)}")
        meta: dict[str, Any] = {"view": view, "n_components": n_components, "sample": sample, "seed": seed,
                                "image_source": _image_source(dataset), "spectrum_source": _spectrum_source(dataset),
                                "dataset_hash": dataset.hash}
        state: dict[str, np.ndarray] = {}
        rng = np.random.default_rng(seed)
        probe = cls(view, {f"{p}.{k}": np.zeros((1, 1) if k == "components" else (1,), np.float32)
                           for p in PARTS[view] for k in ("mean", "scale", "components")}, meta)
        for part in PARTS[view]:
            src = meta.get(f"{part}_source")
            if part == "photometry":
                feats, ok = photometry_features(dataset.catalog)
                candidates = dataset.ids[ok]
            elif src is None:
                raise MissingModalityError(f"dataset {dataset.name!r} has no {part} data to fit the {MODEL_ID} baseline")
            else:
                candidates = dataset.ids[dataset.catalog[schema.source(src).flag].to_numpy(bool)]
            if len(candidates) < 2:
                raise MissingModalityError(f"dataset {dataset.name!r}: fewer than 2 objects with {part} data")
            pick = np.sort(rng.choice(len(candidates), size=min(sample, len(candidates)), replace=False))
            ids = candidates[pick]
            if part == "photometry":
                x = feats[dataset.rows(ids)]
            else:
                probe.state[f"{part}.mean"] = np.zeros(1, np.float32)  # width unknown yet: read raw
                fields = dataset.read(src, ids, fields=("image_array", "image_ivar") if part == "image"
                                      else ("spectrum_flux", "spectrum_mask"))
                x = image_features(fields) if part == "image" else spectrum_features(fields)
            mean = x.mean(axis=0)
            # one global scale per part: PCA keeps the relative variance of features
            scale = np.array([float(np.std(x - mean)) + 1e-6], np.float32)
            z = (x - mean) / scale
            k = min(n_components, z.shape[0] - 1, z.shape[1])
            _, _, vt = np.linalg.svd(z.astype(np.float64), full_matrices=False)
            comps = vt[:k]
            comps *= np.where(comps[np.arange(k), np.abs(comps).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]  # sign fix
            state[f"{part}.mean"] = mean.astype(np.float32)
            state[f"{part}.scale"] = scale
            state[f"{part}.components"] = comps.astype(np.float32)
        return cls(view, state, meta)

    def save(self, folder: str | os.PathLike) -> Path:
        from safetensors.numpy import save_file

        path = Path(folder) / STATE_FILE
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.state.items()}, str(tmp),
                      metadata={"meta": json.dumps(self.meta), "model_hash": self.model_hash})
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike, view: str) -> PixelPCAEncoder:
        """Load a fitted baseline (safetensors only: nothing is unpickled)."""
        from safetensors import safe_open

        path = Path(folder) / STATE_FILE
        if not path.is_file():
            raise IndexError_(f"{path}: missing; run `aion-engine embed --model {MODEL_ID} --view {view}` first")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = json.loads(f.metadata()["meta"])
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except Exception as exc:
            raise IndexError_(f"{path}: cannot read baseline state ({exc})") from exc
        if meta.get("view") != view:
            raise IndexError_(f"{path}: baseline was fitted for view {meta.get('view')!r}, not {view!r}")
        return cls(view, state, meta)
