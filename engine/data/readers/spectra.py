"""Put spectra on the dataset's grids: DESI arms merged, other grids resampled.

Fields written (per object, length L of the target grid): ``spectrum_flux``,
``spectrum_ivar`` (float32), ``spectrum_lambda`` (float32, Angstrom), ``spectrum_mask``
(bool, True = bad pixel: the MMU and AION convention).

Choices (see docs/ingest.md):
* DESI: a spectrum whose length equals the DESI merged grid (7781 pixels) is kept with its
  own ``spectrum_lambda``; anything else is resampled onto ``schema.desi_wavelength()``.
* SDSS: same rule against ``schema.sdss_wavelength()``; SDSS's native log-lambda grids start
  and end per plate, so most files are resampled (linear interpolation in log-lambda).
* Resampling interpolates flux and ivar linearly between good input pixels; target pixels
  outside the observed range, or next to a bad input pixel, get ivar 0 and mask True.
* Arm merging (DESI b/r/z): each arm is placed on the common grid (by index when its pixels
  sit on grid points, which DESI's do, else by resampling); overlaps are combined with
  inverse-variance weights: f = sum(w f) / sum(w), ivar = sum(w).
"""

from __future__ import annotations

import numpy as np

PLACE_TOL = 0.01  # fraction of a pixel within which an input pixel counts as on a grid point


def resample(
    wave_in: np.ndarray, flux: np.ndarray, ivar: np.ndarray, bad: np.ndarray, grid: np.ndarray, *, log: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One spectrum onto ``grid``: (flux, ivar, bad). Interpolates in log10(lambda) if ``log``.

    Input pixels that sit on grid points (within 1 % of a pixel: SDSS stores log-lambda in
    float32, which is off by ~0.3 % of a pixel) are placed there without interpolation.
    """
    wave_in = np.asarray(wave_in, np.float64)
    good_in = np.isfinite(wave_in) & (wave_in > 0)
    x_in = np.log10(np.where(good_in, wave_in, 1.0)) if log else wave_in
    x_out = np.log10(grid) if log else grid
    idx = grid_index(x_in[good_in], x_out, tol=PLACE_TOL) if good_in.sum() >= 2 else None
    if idx is not None and len(np.unique(idx)) == len(idx):
        n = len(grid)
        out_f, out_iv, out_bad = np.zeros(n, np.float32), np.zeros(n, np.float32), np.ones(n, bool)
        f = np.asarray(flux, np.float64)[good_in]
        iv = np.asarray(ivar, np.float64)[good_in]
        b = np.asarray(bad, bool)[good_in] | ~np.isfinite(f) | ~np.isfinite(iv) | (iv <= 0)
        inside = (idx >= 0) & (idx < n)
        idx, f, iv, b = idx[inside], f[inside], iv[inside], b[inside]
        out_f[idx] = np.where(b, 0.0, f)
        out_iv[idx] = np.where(b, 0.0, iv)
        out_bad[idx] = b
        return out_f, out_iv, out_bad
    order = np.argsort(x_in[good_in], kind="stable")
    x = x_in[good_in][order]
    f = np.asarray(flux, np.float64)[good_in][order]
    iv = np.asarray(ivar, np.float64)[good_in][order]
    b = np.asarray(bad, bool)[good_in][order] | ~np.isfinite(f) | ~np.isfinite(iv) | (iv <= 0)
    if len(x) < 2:
        n = len(grid)
        return np.zeros(n, np.float32), np.zeros(n, np.float32), np.ones(n, bool)
    f = np.where(b, 0.0, f)
    iv = np.where(b, 0.0, iv)
    out_f = np.interp(x_out, x, f)
    out_iv = np.interp(x_out, x, iv)
    # a target pixel is bad if either neighbouring input pixel is bad, or it lies outside
    out_bad = np.interp(x_out, x, b.astype(np.float64)) > 0
    out_bad |= (x_out < x[0]) | (x_out > x[-1])
    out_iv = np.where(out_bad, 0.0, out_iv)
    out_f = np.where(out_bad, 0.0, out_f)
    return out_f.astype(np.float32), out_iv.astype(np.float32), out_bad


def grid_index(wave: np.ndarray, grid: np.ndarray, tol: float = PLACE_TOL) -> np.ndarray | None:
    """Indices of ``wave`` on a regular ``grid`` when every pixel sits on a grid point, else None.

    Pass log10 values for a log-linear grid. Only the part of ``wave`` inside the grid must be on it.
    """
    step = grid[1] - grid[0]
    pos = (np.asarray(wave, np.float64) - grid[0]) / step
    idx = np.round(pos).astype(np.int64)
    if np.all(np.abs(pos - idx) < tol):
        return idx  # may fall outside [0, len(grid)): callers keep the pixels inside
    return None


def merge_arms(
    arms: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arms ``(wave (L_a,), flux (n, L_a), ivar, bad)`` -> (flux, ivar, bad) on ``grid`` (n, L)."""
    n = arms[0][1].shape[0]
    wsum = np.zeros((n, len(grid)), np.float64)
    fsum = np.zeros((n, len(grid)), np.float64)
    for wave, flux, ivar, bad in arms:
        flux = np.asarray(flux, np.float64)
        ivar = np.asarray(ivar, np.float64)
        bad = np.asarray(bad, bool) | ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0)
        idx = grid_index(wave, grid)
        if idx is not None and len(np.unique(idx)) == len(idx):
            inside = (idx >= 0) & (idx < len(grid))
            w = np.where(bad, 0.0, ivar)[:, inside]
            wsum[:, idx[inside]] += w
            fsum[:, idx[inside]] += w * np.where(bad, 0.0, flux)[:, inside]
        else:
            for i in range(n):
                f, iv, _ = resample(wave, flux[i], ivar[i], bad[i], grid, log=False)
                wsum[i] += iv
                fsum[i] += iv * f
    out_bad = wsum <= 0
    out_flux = np.where(out_bad, 0.0, fsum / np.where(out_bad, 1.0, wsum))
    return out_flux.astype(np.float32), wsum.astype(np.float32), out_bad


def on_grid(
    wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, bad: np.ndarray, grid: np.ndarray, *, log: bool
) -> dict[str, np.ndarray]:
    """Spectra (n, L_in) with per-object or shared ``wave`` -> schema fields on ``grid``.

    Kept as they are when L_in == len(grid) (their own wavelengths are written), else resampled.
    """
    flux = np.asarray(flux)
    n, length = flux.shape
    wave = np.asarray(wave, np.float64)
    if wave.ndim == 1:
        wave = np.broadcast_to(wave, (n, length))
    bad = np.asarray(bad, bool) | ~np.isfinite(flux) | ~np.isfinite(ivar) | (np.asarray(ivar) <= 0)
    if length == len(grid):
        return {
            "spectrum_flux": np.where(bad, 0, flux).astype(np.float32),
            "spectrum_ivar": np.where(bad, 0, ivar).astype(np.float32),
            "spectrum_lambda": wave.astype(np.float32),
            "spectrum_mask": bad,
        }
    out_f = np.empty((n, len(grid)), np.float32)
    out_iv = np.empty((n, len(grid)), np.float32)
    out_b = np.empty((n, len(grid)), bool)
    for i in range(n):
        out_f[i], out_iv[i], out_b[i] = resample(wave[i], flux[i], ivar[i], bad[i], grid, log=log)
    return {
        "spectrum_flux": out_f,
        "spectrum_ivar": out_iv,
        "spectrum_lambda": np.broadcast_to(grid.astype(np.float32), (n, len(grid))).copy(),
        "spectrum_mask": out_b,
    }
