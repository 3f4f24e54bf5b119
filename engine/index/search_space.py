"""A view's search space: the linear map applied to raw embeddings before cosine search.

Mean-pooled encoder outputs are strongly anisotropic (a large shared mean direction and a few
dominant axes), so raw cosines all sit near 1 and rank mostly along those axes. PCA whitening
(subtract the mean, project on every principal axis, divide each by its spread) makes every
direction count equally; on the default mock it lifted the nano image view's nDCG@10 for every
class (``docs/index.md``). It is fitted once per view when its index is built, stored beside
the index as ``search_space.safetensors`` and applied to everything searched in that view
(indexed rows, new FITS data, cross-modal queries), so all scores are cosines in one space.

Three methods, chosen by :meth:`SearchSpace.fit` from the number of rows:

- ``whiten``   — at least ``MIN_ROWS_PER_DIM * dim`` rows. Axes whose singular value is below
  ``RTOL`` of the largest carry no variance among the indexed rows; their projection is zero
  instead of 1/s, so a query with a component there (new data, another view) is not blown up.
- ``centre``   — fewer rows: only the mean is removed. With n - 1 <= dim rows every whitened
  row has the same cosine to every other (a regular simplex); below about 4 rows per dimension
  whitening ranked worse than centring on the nano embeddings (subsampling measurement,
  ``docs/index.md``).
- ``identity`` — fewer than two distinct rows (nothing to centre), or built by a caller that
  indexed vectors as given.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import IndexError_
from engine.index.atomic import atomic_path

SPACE_FILE = "search_space.safetensors"
#: Stored in the file and the manifest; an index whose space has another version is stale.
SPACE_VERSION = 1
METHODS: tuple[str, ...] = ("whiten", "centre", "identity")
#: Singular values below this fraction of the largest are treated as zero (axis dropped).
RTOL = 1e-6
#: Whitening needs this many rows per dimension to estimate the covariance usefully.
MIN_ROWS_PER_DIM = 4
#: Whitening of a radial (image) view keeps at most this many leading axes, so its index stays
#: compact (the radial profile has thousands of coordinates; on the default mock its first 256
#: axes ranked better than 512 or 1024, ``docs/index.md``). Mean-pooled views keep every axis, as
#: before (not measured with a cap, e.g. on the base shape's 768-d views).
MAX_AXES = 256
#: Fit on at most this many rows (seeded sample): enough for a 768-d covariance, bounded memory.
FIT_MAX_ROWS = 50_000
_APPLY_CHUNK = 16_384


def axes_cap(pooling: str) -> int | None:
    """How many whitened axes a view's space keeps, by how its vectors were pooled (``embeddings.json``)."""
    return MAX_AXES if pooling == "radial" else None


@dataclass(frozen=True)
class SearchSpace:
    """``apply(x) = (x - mean) @ projection``; rows are *not* normalised (callers normalise).

    ``projection`` is (dim, out_dim): square except when whitening truncated a wide view to its
    ``MAX_AXES`` leading axes; the index holds ``out_dim``-long vectors."""

    mean: np.ndarray  # (dim,) float64
    projection: np.ndarray  # (dim, out_dim) float64; zero columns for dropped axes
    method: str
    n_fit: int = 0
    axes: int = 0  # principal axes kept (whiten), else dim

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise IndexError_(f"search space method {self.method!r} unknown; accepted: {', '.join(METHODS)}")
        d = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if self.mean.ndim != 1 or self.projection.ndim != 2 or self.projection.shape[0] != d \
                or not 1 <= self.projection.shape[1] <= d:
            raise IndexError_(f"search space needs mean (dim,) and projection (dim, k <= dim), got "
                              f"{self.mean.shape!r} and {self.projection.shape!r}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.projection).all()):
            raise IndexError_("search space mean or projection is not finite")

    @property
    def dim(self) -> int:
        """Length of the raw embeddings it applies to."""
        return int(self.mean.shape[0])

    @property
    def out_dim(self) -> int:
        """Length of the vectors it produces (the index's dimension)."""
        return int(self.projection.shape[1])

    # --- construction ------------------------------------------------------------------

    @classmethod
    def identity(cls, dim: int, n_fit: int = 0) -> SearchSpace:
        """Search the vectors as given (no centring, no scaling)."""
        return cls(np.zeros(dim), np.eye(dim), "identity", n_fit, dim)

    @classmethod
    def fit(cls, x: np.ndarray, *, min_rows_per_dim: int = MIN_ROWS_PER_DIM, rtol: float = RTOL,
            max_rows: int = FIT_MAX_ROWS, seed: int = 0, max_axes: int | None = None) -> SearchSpace:
        """Fit on the valid rows ``x`` (n, dim) with a float64 SVD of the centred rows.

        Whitened coordinates are scaled to unit variance (divided by s / sqrt(n - 1)), so the
        covariance of the transformed fit rows is the identity on the kept axes; at most
        ``max_axes`` leading axes are kept (None: all; :func:`axes_cap` gives a view's), and
        whitening needs ``min_rows_per_dim`` rows per kept axis.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] == 0:
            raise IndexError_(f"search space fit needs a 2-D (n, dim) array, got shape {x.shape!r}")
        if not np.isfinite(x).all():
            raise IndexError_("search space fit: the rows contain NaN or infinite values")
        n, d = x.shape
        if n > max_rows:
            x = x[np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))]
        x = x.astype(np.float64)
        n_fit = len(x)
        mean = x.mean(axis=0) if n_fit else np.zeros(d)
        centred = x - mean
        if n_fit < 2 or not np.abs(centred).max(initial=0.0) > 0:
            return cls.identity(d, n_fit)
        k = d if max_axes is None else min(d, max_axes)
        if n_fit < min_rows_per_dim * k:
            return cls(mean, np.eye(d), "centre", n_fit, d)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        s, vt = s[:k], vt[:k]
        keep = s > rtol * s[0]
        scale = np.zeros_like(s)
        scale[keep] = np.sqrt(n_fit - 1) / s[keep]
        projection = np.zeros((d, k))
        projection[:, : len(s)] = vt.T * scale
        return cls(mean, projection, "whiten", n_fit, int(keep.sum()))

    # --- use ---------------------------------------------------------------------------

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` (n, dim) in this space, float32 (computed in float64, in chunks)."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise IndexError_(f"search space of dim {self.dim} cannot apply to vectors of shape {x.shape!r}")
        out = np.empty((len(x), self.out_dim), np.float32)
        for a in range(0, len(x), _APPLY_CHUNK):
            out[a : a + _APPLY_CHUNK] = (x[a : a + _APPLY_CHUNK].astype(np.float64) - self.mean) @ self.projection
        return out

    def describe(self) -> dict[str, object]:
        """What the manifest records about the space (besides its file and checksum)."""
        return {"version": SPACE_VERSION, "method": self.method, "n_fit": int(self.n_fit), "axes": int(self.axes),
                "dim": self.dim, "out_dim": self.out_dim}

    # --- persistence (safetensors: nothing is unpickled) -------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``search_space.safetensors`` into ``folder`` atomically; returns its path."""
        from safetensors.numpy import save_file

        path = Path(folder) / SPACE_FILE
        with atomic_path(path) as tmp:
            save_file({"mean": np.ascontiguousarray(self.mean, np.float64),
                       "projection": np.ascontiguousarray(self.projection, np.float64)}, str(tmp),
                      metadata={"meta": json.dumps(self.describe())})
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> SearchSpace:
        """Read a view folder's space; IndexError_ names the file when it is missing, unreadable or
        of another version."""
        from safetensors import safe_open

        path = Path(folder) / SPACE_FILE
        if not path.is_file():
            raise IndexError_(f"{path}: missing search space")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = json.loads((f.metadata() or {}).get("meta", "{}"))
                mean, projection = f.get_tensor("mean"), f.get_tensor("projection")
        except Exception as exc:
            raise IndexError_(f"{path}: cannot read search space ({exc})") from exc
        if meta.get("version") != SPACE_VERSION:
            raise IndexError_(f"{path}: search space version {meta.get('version')!r}, this engine reads {SPACE_VERSION}")
        try:
            return cls(mean, projection, str(meta.get("method")), int(meta.get("n_fit", 0)), int(meta.get("axes", 0)))
        except IndexError_ as exc:
            raise IndexError_(f"{path}: {exc}") from exc
