"""Physical read-outs of a spectrum, used to score generated spectra against the truth.

* :func:`line_redshift`: redshift by cross-correlating the continuum-subtracted spectrum with
  a line template (nebular emission lines positive, stellar absorption features negative)
  over a redshift grid. The same estimator on the *true* spectrum gives the ceiling.
* :class:`TemplateLabeller`: Teff / log g / [Fe/H] of a star from its k nearest templates
  (true spectra of training stars, continuum shape and lines both count).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter

#: rest wavelength (A) -> weight; emission positive, absorption negative
LINE_TEMPLATE: dict[float, float] = {
    3727.4: 1.0,  # [OII] doublet (blended)
    4101.7: 0.3, 4340.5: 0.4, 4861.3: 0.7,  # Balmer emission
    4958.9: 0.4, 5006.8: 1.0,  # [OIII]
    6562.8: 1.0, 6583.5: 0.4, 6548.1: 0.15,  # Halpha + [NII]
    6716.4: 0.3, 6730.8: 0.25,  # [SII]
    3933.7: -0.6, 3968.5: -0.6,  # Ca H & K
    4304.4: -0.3, 5175.0: -0.3, 5892.9: -0.3,  # G band, Mg b, Na D
}
Z_GRID = np.arange(0.0, 1.6, 0.0005)
_BIN = 4


def _residual(lam: np.ndarray, flux: np.ndarray, ivar: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Continuum-subtracted, noise-normalised, slightly smoothed spectrum on a 4x-binned grid."""
    n = len(flux) // _BIN * _BIN
    f = flux[:n].reshape(-1, _BIN).mean(1)
    lam_b = lam[:n].reshape(-1, _BIN).mean(1)
    good = np.ones_like(f, bool) if ivar is None else (ivar[:n].reshape(-1, _BIN) > 0).any(1)
    f = np.where(good & np.isfinite(f), f, np.nan)
    fill = np.where(np.isnan(f), np.nanmedian(f) if np.isfinite(f).any() else 0.0, f)
    cont = median_filter(fill, size=51, mode="nearest")
    r = np.where(np.isnan(f), 0.0, fill - cont)
    scale = 1.4826 * np.median(np.abs(r - np.median(r))) or 1.0
    return lam_b, gaussian_filter1d(r / scale, 1.0)


def line_redshift(lam: np.ndarray, flux: np.ndarray, ivar: np.ndarray | None = None, z_grid: np.ndarray = Z_GRID) -> float:
    """Best redshift on ``z_grid`` for one spectrum (flux on wavelength grid ``lam``)."""
    lam_b, r = _residual(np.asarray(lam, float), np.asarray(flux, float), ivar)
    lo, hi = lam_b[0], lam_b[-1]
    score = np.zeros(len(z_grid))
    norm = np.zeros(len(z_grid))
    for rest, w in LINE_TEMPLATE.items():
        obs = rest * (1 + z_grid)
        inside = (obs > lo) & (obs < hi)
        score += np.where(inside, w * np.interp(obs, lam_b, r), 0.0)
        norm += np.where(inside, w * w, 0.0)
    score = np.where(norm > 0, score / np.sqrt(np.maximum(norm, 1e-12)), -np.inf)
    return float(z_grid[int(np.argmax(score))])


def shape_vector(flux: np.ndarray, bin_size: int = 16) -> np.ndarray:
    """Spectra -> median-normalised, 16x-binned shape vectors (N, L/16) for template matching."""
    flux = np.atleast_2d(np.asarray(flux, float))
    n = flux.shape[1] // bin_size * bin_size
    b = np.nan_to_num(flux[:, :n]).reshape(len(flux), -1, bin_size).mean(-1)
    med = np.median(np.abs(b), axis=1, keepdims=True)
    return b / np.where(med > 0, med, 1.0)


class TemplateLabeller:
    """k-nearest-template stellar labels: templates are true spectra of training stars."""

    def __init__(self, template_flux: np.ndarray, labels: np.ndarray, k: int = 5):
        self.vectors = shape_vector(template_flux)
        self.labels = np.asarray(labels, float)
        self.k = min(k, len(self.vectors))

    def __call__(self, flux: np.ndarray) -> np.ndarray:
        v = shape_vector(flux)
        d = ((v[:, None, :] - self.vectors[None]) ** 2).mean(-1)
        nn = np.argsort(d, axis=1)[:, : self.k]
        return np.nanmean(self.labels[nn], axis=1)
