"""Observe an SED with a DESI-like or SDSS-like spectrograph.

The Gaussian line-spread function is applied analytically (every line and absorption
feature of the SED is a Gaussian, and Gaussians broaden in quadrature), so a spectrum costs
one evaluation on the instrument grid. Noise follows a sky model (continuum + [O I] 5577 /
6300 / 6364, Na D and the near-IR OH forest) plus the object's own shot noise; pixels on
bright sky lines carry subtraction residuals and are masked (mask True = bad, ivar 0), as
are a few random detector defects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from engine.data import schema
from engine.data.mock.sed import SED

SKY_LINES = (5577.3, 5889.95, 5895.92, 6300.3, 6363.8)
OH_BANDS = ((6800.0, 7000.0), (7240.0, 7420.0), (7750.0, 8050.0), (8280.0, 8560.0), (8760.0, 9050.0),
            (9300.0, 9824.0))


@dataclass(frozen=True)
class Spectrograph:
    name: str
    resolution: tuple[float, float]  # R at the blue and red ends
    noise: float  # per-pixel sky-limited sigma at the sky minimum, 1e-17 erg/s/cm^2/A
    shot: float  # variance per unit flux (object shot noise)

    @cache  # noqa: B019  (few instances, live for the process)
    def wavelength(self) -> np.ndarray:
        return schema.desi_wavelength() if self.name == "desi" else schema.sdss_wavelength()

    @cache  # noqa: B019
    def lsf_sigma(self) -> np.ndarray:
        lam = self.wavelength()
        r = np.interp(lam, (lam[0], lam[-1]), self.resolution)
        return lam / (2.3548 * r)

    @cache  # noqa: B019
    def sky(self) -> tuple[np.ndarray, np.ndarray]:
        """Relative sky brightness (1 = dark continuum) and the sky-line mask of this grid."""
        lam = self.wavelength()
        sig = self.lsf_sigma()
        sky = 1.0 + 0.4 * (lam / 6000.0) ** 2
        line_rng = np.random.default_rng(20250101)  # a fixed OH forest: it is the atmosphere, not the object
        centres = list(SKY_LINES)
        strengths = [60.0, 8.0, 8.0, 25.0, 9.0]
        for lo, hi in OH_BANDS:
            k = int((hi - lo) / 25)
            centres += list(line_rng.uniform(lo, hi, k))
            strengths += list(line_rng.uniform(5.0, 40.0, k))
        lines = np.zeros_like(lam)
        for c, s in zip(centres, strengths, strict=True):
            lines += s * np.exp(-0.5 * ((lam - c) / sig) ** 2)
        sky = sky + lines
        bright = lines > 12.0
        return sky, bright

    @cache  # noqa: B019
    def throughput(self) -> np.ndarray:
        lam = self.wavelength()
        return np.clip(1.0 - 0.7 * np.exp(-(lam - lam[0]) / 300.0) - 0.5 * np.exp(-(lam[-1] - lam) / 250.0), 0.2, 1)


DESI = Spectrograph("desi", (2000.0, 5000.0), noise=0.55, shot=0.02)
SDSS = Spectrograph("sdss", (1800.0, 2200.0), noise=1.0, shot=0.03)


def observe(sed: SED, spec: Spectrograph, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fields of one spectrum row (schema names) and its noiseless model flux."""
    lam = spec.wavelength()
    sig = spec.lsf_sigma()
    model = sed.total(lam, sig)
    sky, bright = spec.sky()
    depth = rng.lognormal(0, 0.25)  # exposure-time / conditions scatter
    var = (spec.noise * depth) ** 2 * sky / spec.throughput() ** 2 + spec.shot * np.clip(model, 0, None)
    sigma = np.sqrt(var)
    flux = model + rng.normal(0, 1, lam.size) * sigma
    mask = bright.copy()
    flux[bright] += rng.normal(0, 1, int(bright.sum())) * 3 * sigma[bright]  # sky-subtraction residuals
    defects = rng.random(lam.size) < 1e-3
    flux[defects] += rng.normal(0, 20, int(defects.sum())) * sigma[defects]
    mask |= defects
    ivar = np.where(mask, 0.0, 1.0 / var)
    fields = {
        "spectrum_flux": flux.astype(np.float32),
        "spectrum_ivar": ivar.astype(np.float32),
        "spectrum_lambda": lam.astype(np.float32),
        "spectrum_mask": mask,
        "spectrum_lsf_sigma": sig.astype(np.float32),
    }
    return fields, model
