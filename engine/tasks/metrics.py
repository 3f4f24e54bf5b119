"""Scores used in the results table, each a plain function of arrays."""

from __future__ import annotations

import math

import numpy as np


def r2_score(true: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination over finite pairs (NaN if fewer than 2 or no variance)."""
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    ok = np.isfinite(true) & np.isfinite(pred)
    if ok.sum() < 2:
        return float("nan")
    t, p = true[ok], pred[ok]
    ss_tot = float(((t - t.mean()) ** 2).sum())
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(((t - p) ** 2).sum()) / ss_tot


def rmse(true: np.ndarray, pred: np.ndarray) -> float:
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    ok = np.isfinite(true) & np.isfinite(pred)
    return float(np.sqrt(np.mean((true[ok] - pred[ok]) ** 2))) if ok.any() else float("nan")


def nmad_dz(z_true: np.ndarray, z_pred: np.ndarray) -> float:
    """Photometric-redshift scatter: 1.4826 * median |dz - median dz| with dz = (zp - zt) / (1 + zt)."""
    zt, zp = np.asarray(z_true, float), np.asarray(z_pred, float)
    ok = np.isfinite(zt) & np.isfinite(zp)
    if not ok.any():
        return float("nan")
    dz = (zp[ok] - zt[ok]) / (1 + zt[ok])
    return float(1.4826 * np.median(np.abs(dz - np.median(dz))))


def accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    true, pred = np.asarray(true), np.asarray(pred)
    return float((true == pred).mean()) if len(true) else float("nan")


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true, int), np.asarray(pred, int)), 1)
    return cm


def iou(true_masks: np.ndarray, pred_masks: np.ndarray) -> float:
    """Dataset-level IoU: intersection and union summed over all pixels of all objects."""
    t, p = np.asarray(true_masks, bool), np.asarray(pred_masks, bool)
    union = np.logical_or(t, p).sum()
    return float(np.logical_and(t, p).sum() / union) if union else float("nan")


def reduced_chi2(model_flux: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Per-object chi^2 / (valid pixels) of a model spectrum against an observed one (ivar = 0: ignored)."""
    model_flux, flux, ivar = (np.asarray(a, float) for a in (model_flux, flux, ivar))
    ok = (ivar > 0) & np.isfinite(model_flux) & np.isfinite(flux)
    chi2 = np.where(ok, (model_flux - flux) ** 2 * ivar, 0.0).sum(-1)
    return chi2 / np.maximum(ok.sum(-1), 1)


def sign_test_p(wins: int, n: int) -> float:
    """Two-sided exact sign test: the chance of a split at least as uneven as ``wins`` of ``n`` paired
    comparisons if either method were as likely to win each (ties dropped before calling)."""
    if not 0 <= wins <= n:
        raise ValueError(f"wins must be in 0..n={n}, got {wins!r}")
    if n == 0:
        return float("nan")
    k = max(wins, n - wins)
    tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
    return float(min(1.0, 2 * tail))


def paired_bootstrap(score, true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, *, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """How sure is "a beats b"? ``score(true, pred)`` on ``n_boot`` resamples of the objects, the *same*
    resample for both methods, so the objects both find hard cancel out of the difference.

    Returns the difference ``score(a) - score(b)`` on all objects with its percentile interval, and each
    method's own interval. A difference whose interval holds 0 is within the noise of this test set.
    """
    true, pred_a, pred_b = (np.asarray(x) for x in (true, pred_a, pred_b))
    if not len(true) == len(pred_a) == len(pred_b):
        raise ValueError(f"paired bootstrap needs one prediction per object from each method, got lengths "
                         f"{len(true)}, {len(pred_a)}, {len(pred_b)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    nan = float("nan")
    if len(true) < 2:
        return {"diff": nan, "diff_ci": [nan, nan], "a_ci": [nan, nan], "b_ci": [nan, nan], "n": len(true), "level": level}
    rng = np.random.default_rng(seed)
    a_s, b_s = np.empty(n_boot), np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, len(true), len(true))
        a_s[i], b_s[i] = score(true[idx], pred_a[idx]), score(true[idx], pred_b[idx])
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    def ci(s: np.ndarray) -> list[float]:  # resamples without a score (e.g. no variance) are skipped
        return [float(v) for v in np.nanpercentile(s, q)] if np.isfinite(s).any() else [nan, nan]

    return {"diff": float(score(true, pred_a) - score(true, pred_b)), "diff_ci": ci(a_s - b_s),
            "a_ci": ci(a_s), "b_ci": ci(b_s), "n": len(true), "level": level}
