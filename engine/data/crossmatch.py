"""Cross-match positions from several surveys so one object becomes one catalog row.

AION-1's training pairs were built by positional cross-matching of the surveys; we do the
same. Two objects match when each is the other's nearest neighbour (reciprocal nearest
neighbour) and they are closer than the radius (default 1 arcsec). Positions become unit
vectors and a scipy cKDTree answers nearest-neighbour queries in chord distance, which is
monotonic in angular separation, so the radius cut is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_RADIUS_ARCSEC = 1.0


def unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra = np.radians(np.asarray(ra_deg, np.float64))
    dec = np.radians(np.asarray(dec_deg, np.float64))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=1)


def chord_of(arcsec: float) -> float:
    return 2.0 * np.sin(np.radians(arcsec / 3600.0) / 2.0)


def arcsec_of(chord: np.ndarray) -> np.ndarray:
    return np.degrees(2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))) * 3600.0


def match(ra1, dec1, ra2, dec2, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC, *, workers: int = -1):
    """Reciprocal nearest-neighbour pairs within ``radius_arcsec``.

    Returns ``(i1, i2, sep_arcsec)``: indices into the first and second list (each index at
    most once) and their separations, sorted by ``i1``.
    """
    if radius_arcsec <= 0 or not np.isfinite(radius_arcsec):
        raise ValueError(f"radius_arcsec must be a positive number of arcsec, got {radius_arcsec!r}")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(ra1) == 0 or len(ra2) == 0:
        return empty
    v1, v2 = unit_vectors(ra1, dec1), unit_vectors(ra2, dec2)
    bound = chord_of(radius_arcsec) * (1 + 1e-9)
    # Sliding-midpoint trees build several times faster than balanced ones. Queries go in
    # each tree's own leaf order (``tree.indices``): neighbouring queries then walk the same
    # nodes, which is ~3x faster than random order on a 1 M catalogue (cache locality).
    t1 = cKDTree(v1, balanced_tree=False, compact_nodes=False)
    t2 = cKDTree(v2, balanced_tree=False, compact_nodes=False)
    d12 = np.empty(len(v1))
    j12 = np.empty(len(v1), np.int64)
    d12[t1.indices], j12[t1.indices] = t2.query(
        v1[t1.indices], k=1, distance_upper_bound=bound, workers=workers
    )
    i1 = np.flatnonzero(np.isfinite(d12))
    cand = np.unique(j12[i1])  # only these can be reciprocal: query back from them alone
    rank2 = np.empty(len(v2), np.int64)
    rank2[t2.indices] = np.arange(len(v2))
    cand = cand[np.argsort(rank2[cand], kind="stable")]
    _, j21 = t1.query(v2[cand], k=1, distance_upper_bound=bound, workers=workers)
    back = np.full(len(v2), -1, np.int64)
    back[cand] = j21  # len(v1) where nothing lies within the radius: never equal to an index
    i2 = j12[i1]
    mutual = back[i2] == i1
    i1, i2 = i1[mutual], i2[mutual]
    return i1.astype(np.int64), i2.astype(np.int64), arcsec_of(d12[i1])


@dataclass
class Groups:
    """Merged rows: ``row_of[k][i]`` is the merged row of object ``i`` of input list ``k``;
    ``ra``/``dec`` per merged row come from its first member in input order."""

    row_of: list[np.ndarray]
    ra: np.ndarray
    dec: np.ndarray
    sep_arcsec: list[np.ndarray]  # per input list: separation to its row's position (0 for the first member)

    @property
    def n(self) -> int:
        return len(self.ra)


def merge(
    positions: list[tuple[np.ndarray, np.ndarray]], radius_arcsec: float = DEFAULT_RADIUS_ARCSEC
) -> Groups:
    """Merge several position lists (one per survey, in priority order) into rows.

    Lists are folded in order: each list is matched (reciprocal nearest neighbour) against the
    rows built so far that do not yet hold a member of that list; matches join the row, the
    rest start new rows. A row's position is that of its first (highest-priority) member, so
    the result depends only on the order of the lists, not on the order within them.
    """
    ra_rows = np.zeros(0)
    dec_rows = np.zeros(0)
    row_of: list[np.ndarray] = []
    seps: list[np.ndarray] = []
    for ra, dec in positions:
        ra = np.asarray(ra, np.float64)
        dec = np.asarray(dec, np.float64)
        rows = np.full(len(ra), -1, np.int64)
        sep = np.zeros(len(ra))
        if len(ra_rows):
            i_rows, i_new, s = match(ra_rows, dec_rows, ra, dec, radius_arcsec)
            rows[i_new] = i_rows
            sep[i_new] = s
        fresh = np.flatnonzero(rows < 0)
        rows[fresh] = len(ra_rows) + np.arange(len(fresh))
        ra_rows = np.concatenate([ra_rows, ra[fresh]])
        dec_rows = np.concatenate([dec_rows, dec[fresh]])
        row_of.append(rows)
        seps.append(sep)
    return Groups(row_of=row_of, ra=ra_rows, dec=dec_rows, sep_arcsec=seps)
