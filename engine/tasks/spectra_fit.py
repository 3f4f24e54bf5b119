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

from engine.errors import ValidationError

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


# --- synthetic photometry: the absolute flux scale of a spectrum -------------------------

C_ANGSTROM_S = 2.99792458e18
#: AB zero-point flux density in spectrum units per Hz: 3631 Jy / 1e-17 (erg/s/cm^2/Hz)
AB_FNU_SPECTRUM_UNITS = 3631e-23 / 1e-17
#: Gaia DR3 AB zero points (Riello et al. 2021): flux (e-/s) = 10^(-0.4 (m_AB - ZP))
GAIA_ZP_AB = {"phot_g": 25.8010, "phot_bp": 25.3540, "phot_rp": 25.1040}
#: catalog column -> factor from its unit to AB maggies (LS: nanomaggies; Gaia: e-/s)
MAGGIES_PER_UNIT: dict[str, float] = {
    "flux_g": 1e-9, "flux_r": 1e-9, "flux_i": 1e-9, "flux_z": 1e-9,
    **{band: 10 ** (-0.4 * zp) for band, zp in GAIA_ZP_AB.items()},
}
#: a band takes part in synthetic photometry only if this fraction of its response lies on the grid
MIN_COVERAGE = 0.95


_ANGSTROM_PER = {"Angstrom": 1.0, "nm": 10.0, "um": 1e4, "micron": 1e4}


def filter_curve(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength in A, response) of a speclite filter, read from its ECSV file.

    Read directly rather than through ``speclite.filters.load_filter``, whose astropy.table import
    costs ~1 s of CPU on a cold ``aion-engine predict``; a test checks both give the same curve."""
    import re
    from importlib.resources import files

    path = files("speclite") / "data" / "filters" / f"{name}.ecsv"
    if not path.is_file():
        raise ValidationError(f"unknown filter curve {name!r}: no {name}.ecsv in speclite's data/filters")
    text = path.read_text()
    unit = re.search(r"name: wavelength, unit: ([A-Za-z]+)", text)
    if unit is None or unit.group(1) not in _ANGSTROM_PER:
        raise ValidationError(f"{path}: wavelength unit {unit and unit.group(1)!r} not understood; "
                              f"accepted: {', '.join(_ANGSTROM_PER)}")
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    data = np.loadtxt(body[1:], dtype=float)  # body[0] is the column-name row
    return data[:, 0] * _ANGSTROM_PER[unit.group(1)], data[:, 1]


class SyntheticPhotometry:
    """AB maggies of spectra on one wavelength grid through the real filter curves (speclite).

    ``maggies = W @ f_lambda`` with ``f_lambda`` in 1e-17 erg/s/cm^2/A, the AB integral
    int f_lambda lambda R dlambda / int (c / lambda) R dlambda * 3631 Jy. Used to put a generated
    spectrum on the object's measured flux scale and to estimate that scale before generating.
    """

    def __init__(self, wavelength: np.ndarray, bands: tuple[str, ...] = tuple(MAGGIES_PER_UNIT)):
        from engine.data import schema

        lam = np.asarray(wavelength, float)
        dlam = np.gradient(lam)
        self.wavelength = lam
        self.bands = tuple(bands)
        rows, coverage, pivot = [], [], []
        for band in self.bands:
            w, r = filter_curve(schema.FILTER_CURVES[band])
            resp = np.interp(lam, w, r, left=0.0, right=0.0)
            den = AB_FNU_SPECTRUM_UNITS * C_ANGSTROM_S * np.trapezoid(r / w, w)
            rows.append(lam * resp * dlam / den)
            coverage.append(float(np.sum(lam * resp * dlam) / np.trapezoid(w * r, w)))
            pivot.append(float(np.sqrt(np.trapezoid(w * r, w) / np.trapezoid(r / w, w))))
        self.matrix = np.asarray(rows)  # (n_bands, L)
        self.coverage = np.asarray(coverage)
        self.pivot = np.asarray(pivot)

    def maggies(self, flux: np.ndarray) -> np.ndarray:
        """(..., L) spectra -> (..., n_bands) synthetic AB maggies (NaN for bands the grid does not cover)."""
        out = np.nan_to_num(np.asarray(flux, float)) @ self.matrix.T
        return np.where(self.coverage >= MIN_COVERAGE, out, np.nan)

    def observed(self, rows) -> np.ndarray:
        """Catalog rows -> (N, n_bands) measured AB maggies; NaN where a column is missing, not finite or <= 0."""
        out = np.full((len(rows), len(self.bands)), np.nan)
        for j, band in enumerate(self.bands):
            if band in rows.columns:
                v = rows[band].to_numpy(float) * MAGGIES_PER_UNIT[band]
                out[:, j] = np.where(np.isfinite(v) & (v > 0), v, np.nan)
        return out

    def mean_flux(self, observed: np.ndarray) -> np.ndarray:
        """Mean f_lambda over the grid implied by measured maggies (N, n_bands): the band fluxes as f_lambda at
        their pivot wavelengths, joined linearly (flat beyond the outermost bands). NaN without any band."""
        out = np.full(len(observed), np.nan)
        f_lam = observed * AB_FNU_SPECTRUM_UNITS * C_ANGSTROM_S / self.pivot**2
        for i, row in enumerate(f_lam):
            ok = np.isfinite(row)
            if not ok.any():
                continue
            order = np.argsort(self.pivot[ok])
            x, y = self.pivot[ok][order], row[ok][order]
            if len(np.unique(x)) < len(x):  # several surveys' bands at one pivot: average them
                ux = np.unique(x)
                y, x = np.array([y[x == u].mean() for u in ux]), ux
            out[i] = float(np.interp(self.wavelength, x, y).mean())
        return out

    def scale(self, flux: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """Factor per spectrum ((N, L) or (N, S, L) with ``observed`` (N, n_bands)) that brings its synthetic
        photometry onto the measured one: exp(median over usable bands of log(measured / synthetic)).
        1 where no band is usable (no photometry, or non-positive synthetic flux)."""
        syn = self.maggies(flux)
        obs = observed if syn.ndim == 2 else observed[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.log(obs / syn)
        ratio = np.where(np.isfinite(ratio) & (syn > 0), ratio, np.nan)
        usable = np.isfinite(ratio).any(-1)
        med = np.nanmedian(np.where(usable[..., None], ratio, 0.0), axis=-1)
        return np.where(usable, np.exp(med), 1.0)
