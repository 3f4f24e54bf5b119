"""Everything heavy the app reads, loaded once per server process and shared by all sessions.

The catalog is kept as float32 / categorical columns (Datashader aggregates those fastest and a
10 M-row catalog stays ~0.5 GB); a KD-tree on unit vectors answers "which object did the user
click" exactly on the sphere; thumbnails, searchers and the embedding map are cached on first use.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn

from app import images
from app.config import AppConfig
from app.messages import AppMessage, missing_dataset, missing_index
from app.sky_geometry import RaWrap
from engine.data import schema
from engine.data.store import Dataset, open_dataset
from engine.errors import EngineError, MissingModalityError, UnknownObjectError
from engine.tasks.heldout import heldout_quality

IMAGE_SOURCES = ("image_ls", "image_hsc")
SPECTRUM_SOURCES = ("spectrum_desi", "spectrum_sdss")
PREDICTIONS_FILE = "predictions.parquet"
_CATEGORICAL = ("kind", "pred_morphology")

#: Sky-frame column with the true RA (0-360) where the plot's x axis is shifted plot RA.
SKY_RA = "ra_sky"


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """(N, 3) unit vectors; chord distance on them is monotonic in angular separation."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


def chord(sep_deg: float) -> float:
    return 2.0 * np.sin(np.radians(sep_deg) / 2.0)


def compact_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """float64 -> float32, strings -> categorical, ids kept int64: what Datashader and memory like."""
    out = {}
    for col in frame.columns:
        s = frame[col]
        if col == "object_id":
            out[col] = s.astype(np.int64)
        elif s.dtype == np.float64:
            out[col] = s.astype(np.float32)
        elif col in _CATEGORICAL or s.dtype == object or str(s.dtype) in ("string", "str"):
            out[col] = s.astype("category")
        else:
            out[col] = s
    return pd.DataFrame(out, index=frame.index)


class DataStore:
    """The dataset, its catalog for plotting, and lazily the engine's searchers and predictions."""

    def __init__(self, config: AppConfig):
        self.config = config
        try:
            self.dataset: Dataset = open_dataset(config.dataset_dir)
            raw = self.dataset.catalog
        except EngineError as exc:
            raise missing_dataset(config.dataset_dir, str(exc)) from exc
        self.name = self.dataset.name
        self.catalog = compact_frame(raw)
        self.predictions = self._load_predictions()
        if self.predictions is not None:
            extra = self.predictions.drop(columns=[c for c in self.predictions.columns if c in self.catalog.columns and c != "object_id"])
            self.catalog = self.catalog.merge(extra, on="object_id", how="left")
        self.ids = self.catalog["object_id"].to_numpy()
        self._row_of = pd.Index(self.ids)
        self.ra_wrap = RaWrap.for_ra(raw["ra"].to_numpy())
        #: RA as the sky plot draws it (see app.sky_geometry): one shared float32 column.
        self.plot_ra = np.asarray(self.ra_wrap.to_plot(self.catalog["ra"].to_numpy()), dtype=np.float32)
        self._lock = threading.Lock()
        self._searchers: dict[str, object] = {}
        self._maps: dict[str, pd.DataFrame] = {}

    # --- catalog -----------------------------------------------------------------------

    @functools.cached_property
    def tree(self):
        """KD-tree on unit vectors for click / position look-ups, built on the first look-up (scipy's
        import and the build are not needed to draw the first page)."""
        from scipy.spatial import cKDTree

        cat = self.catalog
        return cKDTree(unit_vectors(cat["ra"].to_numpy(np.float64), cat["dec"].to_numpy(np.float64)))

    @property
    def results_dir(self) -> Path:
        return self.config.results_dir(self.name)

    @functools.cached_property
    def prediction_quality(self) -> dict[str, dict]:
        """Held-out error of the heads behind the predictions, per prediction column (the Object view shows
        it); read when first asked, since checking which heads made the predictions hashes their weights."""
        return heldout_quality(self.results_dir) if self.predictions is not None else {}

    def _load_predictions(self) -> pd.DataFrame | None:
        path = self.results_dir / PREDICTIONS_FILE
        if not path.is_file():
            return None
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # a corrupt file must not take the app down: report it instead
            raise AppMessage(f"{path}: cannot read predictions ({exc}); delete it and rerun `aion-engine predict`") from exc
        if "object_id" not in frame.columns:
            raise AppMessage(f"{path}: missing column 'object_id'; delete it and rerun `aion-engine predict`")
        return compact_frame(frame)

    @property
    def colour_columns(self) -> list[str]:
        """Numeric columns worth colouring the sky by (flags and ids left out)."""
        skip = {"object_id", "ra", "dec", *schema.FLAG_COLUMNS}
        return [c for c in self.catalog.columns if c not in skip and pd.api.types.is_numeric_dtype(self.catalog[c])]

    def has(self, object_id: int) -> bool:
        return self._row_of.get_indexer([int(object_id)])[0] >= 0

    def row(self, object_id: int) -> pd.Series:
        """The catalog row of ``object_id`` (with predictions); UnknownObjectError names the id and dataset."""
        pos = self._row_of.get_indexer([int(object_id)])[0]
        if pos < 0:
            raise UnknownObjectError([object_id], where=f"dataset {self.name!r}")
        return self.catalog.iloc[pos]

    def nearest(self, ra: float, dec: float, max_sep_deg: float) -> int | None:
        """The object closest to (ra, dec) within ``max_sep_deg``, or None (a click on empty sky)."""
        dist, pos = self.tree.query(unit_vectors(np.array([ra]), np.array([dec]))[0], k=1)
        if not np.isfinite(dist) or dist > chord(max_sep_deg):
            return None
        return int(self.ids[pos])

    def in_box(self, x0: float, x1: float, dec0: float, dec1: float) -> pd.DataFrame:
        """Catalog rows inside a box given in *plot* RA (app.sky_geometry) and Dec, in any corner
        order: on a field straddling RA = 0 a box from plot RA -0.3 to 0.2 holds RA 359.7 ... 0.2."""
        lo_x, hi_x = sorted((x0, x1))
        lo_dec, hi_dec = sorted((dec0, dec1))
        dec = self.catalog["dec"].to_numpy()
        sel = (self.plot_ra >= lo_x) & (self.plot_ra <= hi_x) & (dec >= lo_dec) & (dec <= hi_dec)
        return self.catalog.loc[sel]

    def sky_frame(self, columns: list[str] | tuple[str, ...]) -> pd.DataFrame:
        """``ra`` (as plot RA), ``dec`` and ``columns``: what the sky rasterizes. One frame per column
        set per server (every session colouring by z shares it): at 10 M rows each is ~200 MB.
        On a field across RA = 0 the column ``SKY_RA`` may be asked for: the true RA, for hover."""
        return self._sky_frame(tuple(c for c in columns if c not in ("ra", "dec")))

    @functools.lru_cache(maxsize=8)  # noqa: B019 - one store per process lives as long as the server
    def _sky_frame(self, columns: tuple[str, ...]) -> pd.DataFrame:
        frame = self.catalog[["ra", "dec", *(c for c in columns if c != SKY_RA)]]
        if self.ra_wrap.shifted:  # plot RA on the axis; the true RA kept for hover
            frame = frame.assign(**({SKY_RA: frame["ra"]} if SKY_RA in columns else {}), ra=self.plot_ra)
        return frame

    def plot_bounds(self) -> tuple[float, float, float, float]:
        """(x0, x1, dec0, dec1) of the whole catalog in plot RA."""
        dec = self.catalog["dec"].to_numpy()
        return (float(self.plot_ra.min()), float(self.plot_ra.max()) + 1e-6, float(dec.min()), float(dec.max()) + 1e-6)

    # --- arrays ----------------------------------------------------------------------

    def _first_source(self, object_id: int, sources: tuple[str, ...]) -> str | None:
        row = self.row(object_id)
        for name in sources:
            flag = schema.source(name).flag
            if bool(row.get(flag, False)) and self.dataset.has_source(name):
                return name
        return None

    def image_source(self, object_id: int) -> str | None:
        return self._first_source(object_id, IMAGE_SOURCES)

    def cutout(self, object_id: int) -> tuple[str, np.ndarray, list[str]] | None:
        """(source, (B, H, W) float32 cube, band names) of the object's first image, or None."""
        name = self.image_source(object_id)
        if name is None:
            return None
        arrays = self.dataset.read(name, [object_id], ["image_array", "image_band"])
        return name, arrays["image_array"][0].astype(np.float32), [str(b) for b in arrays["image_band"][0]]

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one store per process lives as long as the server
    def thumbnail(self, object_id: int, size: int = 72) -> str | None:
        """A PNG data URI of the object's colour composite, or None without an image."""
        cut = self.cutout(object_id)
        if cut is None:
            return None
        source, cube, _ = cut
        return images.data_uri(images.png_bytes(images.lupton_rgb(cube, source), size))

    def spectrum(self, object_id: int) -> dict | None:
        """The object's first spectrum: source, wavelength, flux, error (inf where ivar = 0), mask."""
        name = self._first_source(object_id, SPECTRUM_SOURCES)
        if name is None:
            return None
        a = self.dataset.read(name, [object_id], ["spectrum_flux", "spectrum_ivar", "spectrum_lambda", "spectrum_mask"])
        ivar = a["spectrum_ivar"][0].astype(np.float64)
        with np.errstate(divide="ignore"):
            err = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.nan)
        return {
            "source": name,
            "wavelength": a["spectrum_lambda"][0].astype(np.float64),
            "flux": a["spectrum_flux"][0].astype(np.float64),
            "error": err,
            "mask": a["spectrum_mask"][0].astype(bool),
        }

    def truth_segmentation(self, object_id: int) -> dict[str, np.ndarray] | None:
        """Per-class boolean masks from ``segmaps.h5`` (mock truth), or None where the object has none."""
        if not self.dataset.has_source("segmap"):
            return None
        try:
            seg = self.dataset.read("segmap", [object_id], ["segmap"])["segmap"][0]
        except MissingModalityError:
            return None
        return {name: (seg & bit) > 0 for name, bit in schema.SEGMENTATION_BIT.items()}

    # --- engine products ---------------------------------------------------------------

    def embedding_map(self, view: str) -> pd.DataFrame:
        """2-D PCA of a view's embeddings (object_id, u1, u2, kind), computed once per server."""
        with self._lock:
            if view in self._maps:
                return self._maps[view]
        folder = self.config.view_dir(self.name, view)
        path = folder / "embeddings.npy"
        if not path.is_file():
            raise missing_index(self.config.dataset_dir, self.config.model, view, what="embeddings")
        meta_path = folder / "embeddings.json"
        if meta_path.is_file():
            try:
                built_for = json.loads(meta_path.read_text()).get("dataset_hash")
            except ValueError:
                built_for = None
            if built_for and built_for != self.dataset.info.get("hash", built_for):
                raise AppMessage(
                    f"{path}: built for another version of dataset {self.name!r} (hash {built_for!r}, now "
                    f"{self.dataset.info.get('hash')!r}); rebuild with `aion-engine embed --dataset "
                    f"{self.config.dataset_dir} --model {self.config.model} --view {view}`"
                )
        emb = np.load(path, mmap_mode="r")
        if emb.ndim != 2 or emb.shape[0] != len(self.catalog):
            raise AppMessage(
                f"{path}: shape {emb.shape!r} does not match the catalog's {len(self.catalog)} rows; "
                f"rebuild with `aion-engine embed --dataset {self.config.dataset_dir} --view {view}`"
            )
        valid = _valid_rows(folder, emb)
        uv = pca_2d(emb, valid)
        frame = pd.DataFrame(
            {"object_id": self.ids[valid], "u1": uv[:, 0], "u2": uv[:, 1], "kind": self.catalog["kind"].to_numpy()[valid]}
        )
        with self._lock:
            self._maps[view] = frame
        return frame

    def available_views(self) -> list[str]:
        """Embedding views with a built folder for this dataset and model."""
        root = self.results_dir
        return [v for v in ("image", "spectrum", "photometry", "joint") if (root / v / "embeddings.npy").is_file()]


def _valid_rows(folder: Path, emb: np.ndarray) -> np.ndarray:
    """Rows that have an embedding: ``valid.npy`` when the engine wrote it, else finite non-zero rows."""
    mask_path = folder / "valid.npy"
    if mask_path.is_file():
        valid = np.load(mask_path).astype(bool)
        if valid.shape == (emb.shape[0],):
            return np.flatnonzero(valid)
    rows = []
    for start in range(0, emb.shape[0], 65536):
        block = np.asarray(emb[start : start + 65536], dtype=np.float32)
        ok = np.isfinite(block).all(axis=1) & (np.abs(block).sum(axis=1) > 0)
        rows.append(np.flatnonzero(ok) + start)
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def pca_2d(emb: np.ndarray, rows: np.ndarray, fit_max: int = 50_000, seed: int = 0) -> np.ndarray:
    """Project unit-normalised embeddings on their top two principal axes (fit on a sample)."""
    if len(rows) < 3:
        raise AppMessage(f"only {len(rows)} objects have embeddings; the map needs at least 3")
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(rows, size=min(fit_max, len(rows)), replace=False))
    sample = _normalised(np.asarray(emb[fit_rows], dtype=np.float32))
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    axes = vt[:2].T
    out = np.empty((len(rows), 2), np.float32)
    for start in range(0, len(rows), 65536):
        part = rows[start : start + 65536]
        out[start : start + len(part)] = (_normalised(np.asarray(emb[part], dtype=np.float32)) - mean) @ axes
    return out


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


_STORE_LOCK = threading.Lock()
def get_store(config: AppConfig) -> DataStore:
    """The process-wide store for ``config`` in ``pn.state.cache``. The lock makes concurrent first
    sessions wait for one build instead of each loading the catalog (as_cached alone would not)."""
    with _STORE_LOCK:
        store = pn.state.as_cached(f"aion-store:{config!r}", DataStore, config=config)
        from app.raster import warm_up_datashader

        warm_up_datashader(store)
        return store
