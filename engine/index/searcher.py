"""Similarity search over one view's index: by object id, by vector, by new data (FITS), across
views, with catalog filters and relevance feedback. Used by ``aion-engine similar`` and the app.

A :class:`Searcher` loads once (index, memory-mapped embeddings, the catalog columns results
carry) and is safe to share between threads: searches pass their parameters per call and
the FAISS call itself is serialised (batched FAISS search must not run from several threads).

Everything is compared in the view's search space (``search_space.py``, fitted when the index
was built): indexed vectors are stored mapped and normalised, new data and cross-modal queries
are mapped with the same space before normalising, so scores are cosines in that space.
Cross-modal queries use the model's shared space (the mean-pooled encoder output, which the
image view's radial vectors contain, ``engine/model/pooling.py``).

Filters keep ``k`` results: when the allowed subset is small, search it exactly (a matmul
over those rows); otherwise oversample the index by 1/selectivity and post-filter, widening
until ``k`` survive, and fall back to exact search over the subset if the index runs dry.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from engine import paths
from engine.data.store import Dataset, open_dataset
from engine.errors import IndexError_, MissingModalityError, ValidationError
from engine.index import faiss_build as fb
from engine.index.embeddings import EmbeddingStore
from engine.index.manifest import INDEX_FILE, MANIFEST_FILE, check_manifest, read_json, rebuild_command
from engine.index.search_space import SearchSpace
from engine.model.pooling import base_hash

log = logging.getLogger(__name__)

#: Allowed subsets up to this size are searched exactly (a few ms): no recall loss at all.
EXACT_SUBSET_MAX = fb.FLAT_MAX_N
OVERSAMPLE_MARGIN = 2.0
ROCCHIO = {"alpha": 1.0, "beta": 0.75, "gamma": 0.25}


@dataclass(frozen=True)
class Hit:
    object_id: int
    score: float  # cosine similarity in the view's search space
    ra: float
    dec: float
    kind: str
    z: float | None
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class Searcher:
    """Search one (dataset, model, view) index. Build with :meth:`open`."""

    def __init__(self, dataset: Dataset, store: EmbeddingStore, index: faiss.Index, manifest: dict[str, Any],
                 *, model: str, view: str, view_dir: Path, space: SearchSpace):
        self.dataset, self.store, self.index, self.manifest = dataset, store, index, manifest
        self.space = space
        self.model, self.view, self.view_dir = str(model), view, view_dir
        self.kind = manifest["kind"]
        self._params = fb.search_parameters(self.kind, manifest.get("search_params", {}))
        self._lock = threading.Lock()
        self._encoder = None
        self._encoder_lock = threading.Lock()
        self._shared_space: tuple[np.ndarray, SearchSpace] | None = None
        cat = dataset.catalog
        self._ids = cat["object_id"].to_numpy()
        self._ra = cat["ra"].to_numpy(dtype=np.float64)
        self._dec = cat["dec"].to_numpy(dtype=np.float64)
        self._kinds = cat["kind"].astype(str).to_numpy()
        self._z = cat["z"].to_numpy(dtype=np.float64) if "z" in cat.columns else np.full(len(cat), np.nan)
        self._rows = store.valid_rows  # FAISS id -> catalog row
        self._pos_of_row = np.full(len(cat), -1, dtype=np.int64)
        self._pos_of_row[self._rows] = np.arange(len(self._rows))

    # --- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, dataset_dir: str | os.PathLike, model: str | os.PathLike, view: str, *,
             view_dir: str | os.PathLike | None = None, model_hash: str | None = None,
             verify_checksum: bool = True) -> Searcher:
        """Open and check an index. ``model_hash`` skips re-hashing the model when the caller knows it.

        Raises IndexError_ naming the rebuild command when the index is missing or stale.
        """
        from engine.index.encoders import current_model_hash

        dataset = dataset_dir if isinstance(dataset_dir, Dataset) else open_dataset(dataset_dir)
        vdir = Path(view_dir) if view_dir is not None else paths.view_dir(dataset.name, model, view)
        rebuild = rebuild_command(dataset.root, model, view)
        if not (vdir / MANIFEST_FILE).is_file():
            raise IndexError_(f"{vdir}: no index for view {view!r} of model {str(model)!r}; build with: {rebuild}")
        manifest = read_json(vdir / MANIFEST_FILE, "index manifest")
        store = EmbeddingStore.open(vdir)
        if model_hash is None:
            model_hash = current_model_hash(model, view, vdir)
        check_manifest(vdir, manifest, dataset_hash=dataset.hash, model_hash=model_hash,
                       embeddings_run=store.meta.get("run_id", ""), rebuild=rebuild, verify_checksum=verify_checksum)
        if manifest.get("view") != view:
            raise IndexError_(f"{vdir / MANIFEST_FILE}: index is for view {manifest.get('view')!r}, not {view!r}")
        if len(store.valid) != len(dataset):
            raise IndexError_(f"{vdir}: {len(store.valid)} embedding rows for {len(dataset)} catalog rows; rebuild with: {rebuild}")
        try:
            index = faiss.read_index(str(vdir / INDEX_FILE))
        except RuntimeError as exc:
            raise IndexError_(f"{vdir / INDEX_FILE}: cannot read ({str(exc).splitlines()[0]}); rebuild with: {rebuild}") from exc
        try:
            space = SearchSpace.load(vdir)
        except IndexError_ as exc:
            raise IndexError_(f"{exc}; rebuild with: {rebuild}") from exc
        if space.dim != store.dim:
            raise IndexError_(f"{vdir}: search space has dim {space.dim}, embeddings {store.dim}; rebuild with: {rebuild}")
        if index.ntotal != int(store.valid.sum()) or index.d != space.out_dim:
            raise IndexError_(f"{vdir / INDEX_FILE}: holds {index.ntotal}x{index.d}, embeddings have "
                              f"{int(store.valid.sum())} valid rows mapped to dim {space.out_dim}; rebuild with: {rebuild}")
        return cls(dataset, store, index, manifest, model=str(model), view=view, view_dir=vdir, space=space)

    # --- properties ------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def has(self, object_id: int) -> bool:
        """Whether ``object_id`` is in this view's index (it had the view's modalities)."""
        row = self.dataset.rows([object_id])[0]
        return bool(self.store.valid[row])

    # --- query vectors ---------------------------------------------------------------

    def _row_of(self, object_id: int) -> int:
        row = int(self.dataset.rows([object_id])[0])  # UnknownObjectError names the id
        if not self.store.valid[row]:
            raise MissingModalityError(
                f"object_id {object_id} has no {self.view} data, so it has no {self.view} embedding; "
                f"try another view"
            )
        return row

    def raw_vector_of(self, object_id: int) -> np.ndarray:
        """The stored (pooled, unmapped) embedding of an object, float32."""
        return np.asarray(self.store.vectors[self._row_of(object_id)], dtype=np.float32)

    def vector_of(self, object_id: int) -> np.ndarray:
        """The unit vector of an indexed object in this view's search space, exactly as indexed
        (raises for unknown ids or objects lacking the view)."""
        pos = int(self._pos_of_row[self._row_of(object_id)])
        return self.index.reconstruct(pos)

    def to_space(self, raw: np.ndarray) -> np.ndarray:
        """Unit vector of a raw embedding (any object of this model, any view) in this view's space."""
        raw = np.asarray(raw, dtype=np.float32).reshape(1, -1)
        if raw.shape[1] != self.space.dim:
            raise ValidationError(f"embedding has dim {raw.shape[1]}, the search space of {self.view_dir} has dim "
                                  f"{self.space.dim}")
        return fb.normalize_rows(self.space.apply(raw))[0]

    def encode_file(self, path: str | os.PathLike) -> np.ndarray:
        """Encode a FITS cutout/spectrum not in the dataset into this view's search space (unit vector)."""
        from engine.index.query_data import encode_query_file

        vec, _ = encode_query_file(path, self._get_encoder(), spectrum_source=self._spectrum_source())
        return self.to_space(vec)

    def _spectrum_source(self) -> str:
        from engine.index.baseline import _spectrum_source

        return _spectrum_source(self.dataset) or "spectrum_desi"

    def _get_encoder(self):
        from engine.index.encoders import open_encoder

        with self._encoder_lock:
            if self._encoder is None:
                enc = open_encoder(self.model, self.view, view_dir=self.view_dir)
                if enc.model_hash != self.manifest["model_hash"]:
                    raise IndexError_(f"{self.view_dir}: encoder hash {enc.model_hash!r} differs from the index's "
                                      f"{self.manifest['model_hash']!r}; rebuild with: "
                                      f"{rebuild_command(self.dataset.root, self.model, self.view)}")
                self._encoder = enc
            return self._encoder

    def set_encoder(self, encoder) -> None:
        """Use an already-loaded encoder for new-data queries (the app shares one model)."""
        with self._encoder_lock:
            self._encoder = encoder

    # --- filters ---------------------------------------------------------------------

    def allowed_rows(self, *, kinds: Iterable[str] | None = None, z_range: tuple[float, float] | None = None,
                     ranges: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray | None:
        """Catalog-row mask of objects passing the filters (None = no filter)."""
        if kinds is None and z_range is None and not ranges:
            return None
        cat = self.dataset.catalog
        mask = np.ones(len(cat), dtype=bool)
        if kinds is not None:
            kinds = list(kinds)
            from engine.data.schema import KINDS

            bad = [k for k in kinds if k not in KINDS]
            if bad:
                raise ValidationError(f"filter kind {bad!r} unknown; accepted: {', '.join(KINDS)}")
            mask &= np.isin(self._kinds, kinds)
        all_ranges = dict(ranges or {})
        if z_range is not None:
            all_ranges["z"] = z_range
        for col, (lo, hi) in all_ranges.items():
            if col not in cat.columns or cat[col].dtype.kind not in "iuf":
                numeric = [c for c in cat.columns if cat[c].dtype.kind in "iuf"]
                raise ValidationError(f"filter column {col!r} is not a numeric catalog column; accepted: {', '.join(numeric)}")
            values = cat[col].to_numpy(dtype=np.float64)
            lo = -np.inf if lo is None else lo
            hi = np.inf if hi is None else hi
            mask &= (values >= lo) & (values <= hi)  # NaN fails every range
        return mask

    # --- searching -------------------------------------------------------------------

    def _faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = self._params
        if self.kind == "hnsw" and k > params.efSearch:
            params = faiss.SearchParametersHNSW(efSearch=int(k))
        with self._lock:
            return self.index.search(q, k, params=params)

    def _exact(self, q: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among index ``positions`` (chunked to bound memory), scored against the
        index's own stored vectors (already in the search space and unit length: every kind keeps
        them, IVF-PQ in its exact re-rank store), so it agrees with FAISS to rounding."""
        best_s = np.empty(0, np.float32)
        best_p = np.empty(0, np.int64)
        for s in range(0, len(positions), 200_000):
            pos = positions[s : s + 200_000]
            scores = self.index.reconstruct_batch(np.ascontiguousarray(pos, dtype=np.int64)) @ q[0]
            best_s = np.concatenate([best_s, scores])
            best_p = np.concatenate([best_p, pos])
            if len(best_s) > k:
                keep = np.argpartition(-best_s, k)[:k]
                best_s, best_p = best_s[keep], best_p[keep]
        order = np.argsort(-best_s, kind="stable")
        return best_s[order][None], best_p[order][None]

    def search_vector(self, vector: np.ndarray, k: int = 10, *, exclude: Iterable[int] = (),
                      kinds: Iterable[str] | None = None, z_range: tuple[float, float] | None = None,
                      ranges: Mapping[str, tuple[float, float]] | None = None) -> list[Hit]:
        """The ``k`` most cosine-similar indexed objects to ``vector`` passing the filters.

        ``vector`` must already be in this view's search space (:meth:`vector_of`,
        :meth:`to_space`, :meth:`encode_file`); it is normalised here.
        """
        if k < 1:
            raise ValidationError(f"k must be >= 1, got {k!r}")
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ValidationError(f"query vector has dim {vector.shape[0]}, index {self.view_dir} has dim {self.dim}")
        if not np.isfinite(vector).all() or not np.linalg.norm(vector) > 0:
            raise ValidationError("query vector is zero or not finite")
        q = fb.normalize_rows(vector[None])
        excluded_pos = {int(p) for p in self._pos_of_row[self.dataset.rows(list(exclude))] if p >= 0} if exclude else set()
        row_mask = self.allowed_rows(kinds=kinds, z_range=z_range, ranges=ranges)
        allowed = None if row_mask is None else row_mask[self._rows]
        n_allowed = self.count if allowed is None else int(allowed.sum())
        n_excluded = len(excluded_pos) if allowed is None else sum(1 for p in excluded_pos if allowed[p])
        want = min(k, n_allowed - n_excluded)
        if want <= 0:
            return []
        if allowed is not None and n_allowed <= EXACT_SUBSET_MAX:
            positions = np.flatnonzero(allowed)
            if excluded_pos:
                positions = positions[~np.isin(positions, list(excluded_pos))]
            scores, pos = self._exact(q, positions, want)
            return self._hits(scores[0], pos[0])
        frac = n_allowed / max(1, self.count)
        fetch = math.ceil((want + len(excluded_pos)) / frac * (OVERSAMPLE_MARGIN if allowed is not None else 1.0))
        while True:
            fetch = min(fetch, self.count)
            scores, pos = self._faiss(q, fetch)
            keep = pos[0] >= 0
            if allowed is not None:
                keep &= allowed[np.where(keep, pos[0], 0)]
            if excluded_pos:
                keep &= ~np.isin(pos[0], list(excluded_pos))
            if keep.sum() >= want or fetch >= self.count:
                break
            fetch *= 4
        s, p = scores[0][keep][:want], pos[0][keep][:want]
        if len(s) < want:  # approximate index ran dry under the filter: answer exactly
            positions = np.flatnonzero(allowed) if allowed is not None else np.arange(self.count)
            if excluded_pos:
                positions = positions[~np.isin(positions, list(excluded_pos))]
            sc, ps = self._exact(q, positions, want)
            s, p = sc[0], ps[0]
        return self._hits(s, p)

    def _hits(self, scores: np.ndarray, positions: np.ndarray) -> list[Hit]:
        rows = self._rows[positions]
        return [
            Hit(int(self._ids[r]), float(s), float(self._ra[r]), float(self._dec[r]), str(self._kinds[r]),
                _clean(self._z[r]), i + 1)
            for i, (r, s) in enumerate(zip(rows, scores, strict=True))
        ]

    def similar(self, object_id: int, k: int = 10, **filters) -> list[Hit]:
        """Objects most similar to an indexed object (the object itself excluded)."""
        return self.search_vector(self.vector_of(object_id), k, exclude=[object_id], **filters)

    def similar_to_file(self, path: str | os.PathLike, k: int = 10, **filters) -> list[Hit]:
        """Objects most similar to new data (a FITS cutout or spectrum), encoded on the fly."""
        return self.search_vector(self.encode_file(path), k, **filters)

    def shared_vector_of(self, object_id: int) -> np.ndarray:
        """The object's mean-pooled encoder embedding (the model's shared space across views):
        its stored vector for mean-pooled views, recovered from the annuli for the radial image view."""
        return self.store.shared(np.array([self._row_of(object_id)]))[0]

    def _shared_targets(self) -> tuple[np.ndarray, SearchSpace]:
        """Unit shared-space vectors of every indexed object (index order) and the space they were
        mapped with (fitted on them): the cross-modal target set of a view that is not mean-pooled."""
        with self._lock:
            if self._shared_space is None:
                shared = self.store.shared(self._rows)
                space = SearchSpace.fit(shared)
                self._shared_space = (fb.normalize_rows(space.apply(shared)), space)
            return self._shared_space

    def cross_modal(self, source: Searcher, object_id: int, k: int = 10, *,
                    kinds: Iterable[str] | None = None, z_range: tuple[float, float] | None = None,
                    ranges: Mapping[str, tuple[float, float]] | None = None) -> list[Hit]:
        """Query this index with ``object_id``'s embedding from another view (e.g. image -> spectrum).

        Both views must come from the same model (one shared embedding space); the source's
        :meth:`shared_vector_of` is the query. Into a mean-pooled view it is mapped with *this*
        (target) view's search space and searched in the index; into the radial image view it is
        compared exactly with the targets' shared vectors (mapped with a space fitted on them).
        The object itself is *not* excluded: finding it is the point.
        """
        if k < 1:
            raise ValidationError(f"k must be >= 1, got {k!r}")
        if source.manifest.get("baseline") or self.manifest.get("baseline") or \
                base_hash(source.manifest["model_hash"]) != base_hash(self.manifest["model_hash"]):
            raise ValidationError(
                f"cross-modal search needs one model's shared space: {source.view!r} is {source.manifest['model_id']!r}, "
                f"{self.view!r} is {self.manifest['model_id']!r}"
            )
        q = source.shared_vector_of(object_id)
        if self.store.pooling == "mean":
            if q.shape[0] != self.space.dim:
                raise ValidationError(f"{source.view!r} shared vector has dim {q.shape[0]}, {self.view!r} "
                                      f"vectors {self.space.dim}")
            return self.search_vector(self.to_space(q), k, kinds=kinds, z_range=z_range, ranges=ranges)
        targets, space = self._shared_targets()
        if q.shape[0] != space.dim:
            raise ValidationError(f"{source.view!r} shared vector has dim {q.shape[0]}, {self.view!r} shared "
                                  f"vectors {space.dim}")
        qv = fb.normalize_rows(space.apply(q[None]))[0]
        row_mask = self.allowed_rows(kinds=kinds, z_range=z_range, ranges=ranges)
        positions = np.arange(self.count) if row_mask is None else np.flatnonzero(row_mask[self._rows])
        scores = targets[positions] @ qv
        top = np.argsort(-scores, kind="stable")[:k]
        return self._hits(scores[top], positions[top])

    def feedback_vector(self, positive: Sequence[int], negative: Sequence[int] = (), *,
                        query: np.ndarray | None = None, alpha: float = ROCCHIO["alpha"],
                        beta: float = ROCCHIO["beta"], gamma: float = ROCCHIO["gamma"]) -> np.ndarray:
        """Rocchio on unit vectors of the search space: alpha*query + beta*mean(positive) - gamma*mean(negative)."""
        if not positive and query is None:
            raise ValidationError("relevance feedback needs at least one positive object (or a query)")
        q = np.zeros(self.dim, np.float32)
        if query is not None:
            q += alpha * fb.normalize_rows(np.asarray(query, np.float32)[None])[0]
        if positive:
            q += (beta if query is not None else 1.0) * np.mean([self.vector_of(i) for i in positive], axis=0)
        if negative:
            q -= gamma * np.mean([self.vector_of(i) for i in negative], axis=0)
        return q

    def feedback(self, positive: Sequence[int], negative: Sequence[int] = (), k: int = 10, *,
                 query_id: int | None = None, **filters) -> list[Hit]:
        """More like ``positive``, less like ``negative`` (all given ids excluded from results)."""
        query = self.vector_of(query_id) if query_id is not None else None
        vec = self.feedback_vector(list(positive), list(negative), query=query)
        exclude = {*positive, *negative, *([query_id] if query_id is not None else [])}
        return self.search_vector(vec, k, exclude=sorted(exclude), **filters)
