"""Train / held-out split fixed by a seed, stable per object.

Each object's side is decided by a hash of (object_id, seed) alone, so adding or removing
other objects, reordering the catalog or evaluating a subset never moves an object from
train to held-out: every probe, baseline and cached prediction agrees on the split.
"""

from __future__ import annotations

import numpy as np

DEFAULT_HELD_OUT_FRACTION = 0.2


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a cheap, well-mixed 64-bit hash (vectorised, wraps mod 2**64)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def unit_hash(object_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per object, a pure function of (object_id, seed)."""
    ids = np.asarray(object_ids, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(ids ^ _splitmix64(np.array([seed], dtype=np.uint64))[0])
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def is_held_out(object_ids: np.ndarray, seed: int = 0, fraction: float = DEFAULT_HELD_OUT_FRACTION) -> np.ndarray:
    """Boolean per object: True for the held-out (test) side of the split."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction!r}")
    return unit_hash(object_ids, seed) < fraction


def split_ids(
    object_ids: np.ndarray, seed: int = 0, fraction: float = DEFAULT_HELD_OUT_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, held-out ids), each in the order given."""
    ids = np.asarray(object_ids, dtype=np.int64)
    held = is_held_out(ids, seed, fraction)
    return ids[~held], ids[held]


def validation_ids(train_ids: np.ndarray, seed: int = 0, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split train ids again into (fit, validation) for early stopping; disjoint from held-out."""
    return split_ids(train_ids, seed + 7919, fraction)


def split_rows(ids: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Row positions in ``ids`` of the fit / validation / held-out objects (the split every head and
    baseline shares), or None when too few objects are left to train (4) and test (2) one."""
    ids = np.asarray(ids)
    held = is_held_out(ids, seed)
    fit_ids, val_ids = validation_ids(ids[~held], seed)
    if len(fit_ids) < 4 or held.sum() < 2:
        return None
    pos = {int(i): r for r, i in enumerate(ids)}
    rows = lambda sel: np.array([pos[int(i)] for i in sel], dtype=np.int64)  # noqa: E731
    return rows(fit_ids), rows(val_ids), np.flatnonzero(held)
