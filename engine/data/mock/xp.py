"""Gaia XP-like low-resolution spectra: 55 BP + 55 RP Hermite-function coefficients.

Gaia publishes BP/RP spectra as coefficients of Hermite functions over a pseudo-wavelength.
Here the star's photon-rate spectrum through each passband (speclite's Gaia DR3 curves) is
mapped linearly onto x in [-X_HALF, X_HALF] and projected onto the orthonormal Hermite
functions; the integral of the reconstruction equals the band's mean flux in e-/s, as for
Gaia's coefficients. Noise grows with order and with the photon count.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from engine.data import schema
from engine.data.mock.sed import SED

X_HALF = 7.5
BP_RANGE = (3300.0, 6800.0)
RP_RANGE = (6400.0, 10500.0)
N_X = 1500


def hermite_functions(x: np.ndarray, n: int = schema.XP_N_COEFF) -> np.ndarray:
    """(n, len(x)) orthonormal Hermite functions, by the stable three-term recurrence."""
    out = np.empty((n, x.size))
    out[0] = np.pi**-0.25 * np.exp(-0.5 * x**2)
    if n > 1:
        out[1] = np.sqrt(2.0) * x * out[0]
    for k in range(1, n - 1):
        out[k + 1] = np.sqrt(2.0 / (k + 1)) * x * out[k] - np.sqrt(k / (k + 1)) * out[k - 1]
    return out


@cache
def _basis() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-X_HALF, X_HALF, N_X)
    return x, hermite_functions(x)


@cache
def _passband(band: str) -> tuple[np.ndarray, np.ndarray]:
    """Wavelengths of the x grid and the photon response there for 'BP' or 'RP'."""
    import speclite.filters

    lo, hi = BP_RANGE if band == "BP" else RP_RANGE
    x, _ = _basis()
    lam = lo + (x + X_HALF) / (2 * X_HALF) * (hi - lo)
    filt = speclite.filters.load_filter(f"gaiadr3-{band}")
    resp = np.interp(lam, filt.wavelength, filt.response, left=0.0, right=0.0)
    return lam, resp


def project(sed: SED, band: str, total_flux: float) -> np.ndarray:
    """Hermite coefficients of the star's spectrum through ``band``, scaled to ``total_flux`` e-/s."""
    x, basis = _basis()
    lam, resp = _passband(band)
    photons = sed.total(lam, 20.0) * lam * resp  # photon rate density, arbitrary units; XP resolution ~20 A
    dx = x[1] - x[0]
    norm = photons.sum() * dx
    spectrum = photons / norm * total_flux if norm > 0 else photons
    return basis @ spectrum * dx


def reconstruct(coeff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x grid, spectrum) from one band's coefficients (for plots and tests)."""
    x, basis = _basis()
    return x, coeff @ basis


def xp_fields(sed: SED, phot_bp: float, phot_rp: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One ``xp_gaia`` row: noisy coefficients (BP then RP) and their errors."""
    coeff = np.concatenate([project(sed, "BP", phot_bp), project(sed, "RP", phot_rp)])
    order = np.tile(np.arange(schema.XP_N_COEFF), 2)
    flux = np.repeat([phot_bp, phot_rp], schema.XP_N_COEFF)
    err = (0.4 + 0.012 * np.sqrt(flux)) * (1 + order / 25.0)
    return {"coeff": (coeff + rng.normal(0, 1, coeff.size) * err).astype(np.float32),
            "coeff_error": err.astype(np.float32)}
