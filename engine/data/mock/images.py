"""Render cutouts with GalSim: per-band component fluxes, Moffat PSF with per-band seeing, sky
noise with its inverse-variance map, and a bad-pixel mask (bad columns, cosmic rays).

Legacy Survey cutouts are in nanomaggies per pixel at 0.262"/px; HSC cutouts in counts at
zero point 27 at 0.168"/px. The band the segmentation is defined in (LS r) is drawn one
component at a time, so each component's own noiseless image is available for the segmap.
"""

from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np

from engine.data import schema
from engine.data.mock.photometry import flux_sigma_nmgy
from engine.data.mock.structure import Component

MOFFAT_BETA = 3.5


@dataclass(frozen=True)
class Survey:
    name: str
    bands: tuple[str, ...]  # schema band names (image_band)
    phot_bands: tuple[str, ...]  # photometry keys (depths, band order of flux vectors)
    scale: float
    seeing: tuple[float, ...]  # median PSF FWHM per band, arcsec
    unit_per_nmgy: float

    @property
    def n_bands(self) -> int:
        return len(self.bands)


LS = Survey("ls", schema.LS_BANDS, ("flux_g", "flux_r", "flux_i", "flux_z"), schema.LS_PIXEL_SCALE,
            (1.45, 1.3, 1.2, 1.15), 1.0)
HSC = Survey("hsc", schema.HSC_BANDS, ("mag_g", "mag_r", "mag_i", "mag_z", "mag_y"), schema.HSC_PIXEL_SCALE,
             (0.78, 0.72, 0.6, 0.66, 0.68), 10 ** (0.4 * (schema.HSC_ZEROPOINT - 22.5)))


@dataclass
class Stamp:
    image: np.ndarray  # (bands, H, W) float32, noisy, in survey units
    ivar: np.ndarray  # (bands, H, W) float32
    mask: np.ndarray  # (bands, H, W) bool, True = bad
    model: np.ndarray  # (bands, H, W) noiseless model
    psf_fwhm: np.ndarray  # (bands,) arcsec
    sigma: np.ndarray  # (bands,) per-pixel noise, survey units
    component_images: dict[str, np.ndarray]  # noiseless per component in the ``detail_band``


def draw_psf_fwhm(survey: Survey, rng: np.random.Generator) -> np.ndarray:
    """Per-band seeing of one observation: a shared atmosphere factor times small per-band scatter."""
    common = rng.lognormal(0, 0.1)
    return np.array([s * common * rng.lognormal(0, 0.04) for s in survey.seeing])


def render(survey: Survey, components: list[Component], pop_fluxes: dict[str, np.ndarray], rng: np.random.Generator,
           *, detail_band: int | None = None, size: int = schema.IMAGE_SIZE) -> Stamp:
    """Draw ``components`` in every band of ``survey``; ``pop_fluxes[pop]`` is a per-band flux vector
    (nanomaggies) of each light population the components share."""
    fwhm = draw_psf_fwhm(survey, rng)
    depth_offset = rng.normal(0, 0.15)
    model = np.zeros((survey.n_bands, size, size), np.float64)
    comp_images: dict[str, np.ndarray] = {}
    sigma = np.zeros(survey.n_bands)
    for b in range(survey.n_bands):
        psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=float(fwhm[b]), trunc=5.0 * float(fwhm[b]))
        weighted = []
        for comp in components:
            flux = sum(share * pop_fluxes[pop][b] for pop, share in comp.shares.items()) * survey.unit_per_nmgy
            weighted.append((comp, float(flux)))
        if b == detail_band:
            for comp, flux in weighted:
                img = _draw(comp.profile, flux, psf, survey.scale, size)
                comp_images[comp.name] = img
                model[b] += img
        else:
            profs = [comp.profile.withFlux(flux) for comp, flux in weighted if flux != 0]
            if profs:
                model[b] = _draw(galsim.Sum(profs) if len(profs) > 1 else profs[0], None, psf, survey.scale, size)
        sigma_psf_px = fwhm[b] / 2.3548 / survey.scale
        nea = 4 * np.pi * sigma_psf_px**2
        sigma[b] = flux_sigma_nmgy(survey.phot_bands[b], depth_offset) / np.sqrt(nea) * survey.unit_per_nmgy
    image = model + rng.normal(0, 1, model.shape) * sigma[:, None, None]
    ivar = np.broadcast_to((1.0 / sigma**2)[:, None, None], model.shape).copy()
    mask = np.zeros(model.shape, bool)
    _add_artifacts(image, mask, sigma, rng)
    ivar[mask] = 0.0
    return Stamp(image.astype(np.float32), ivar.astype(np.float32), mask, model.astype(np.float32), fwhm, sigma,
                 comp_images)


def _draw(profile: galsim.GSObject, flux: float | None, psf: galsim.GSObject, scale: float, size: int) -> np.ndarray:
    if flux is not None:
        if flux == 0:
            return np.zeros((size, size))
        profile = profile.withFlux(flux)
    img = galsim.Convolve(profile, psf).drawImage(nx=size, ny=size, scale=scale, dtype=np.float64)
    return img.array


def _add_artifacts(image: np.ndarray, mask: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> None:
    """Bad columns (~4 % of band images) and cosmic-ray streaks (~8 %), flagged in the mask."""
    n_bands, h, w = image.shape
    for b in range(n_bands):
        if rng.random() < 0.04:
            col = int(rng.integers(0, w))
            image[b, :, col] += rng.normal(8, 3) * sigma[b]
            mask[b, :, col] = True
        if rng.random() < 0.08:
            for _ in range(int(rng.integers(1, 3))):
                length = int(rng.integers(2, 9))
                ang = rng.uniform(0, np.pi)
                y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
                t = np.arange(length)
                ys = np.clip((y0 + t * np.sin(ang)).astype(int), 0, h - 1)
                xs = np.clip((x0 + t * np.cos(ang)).astype(int), 0, w - 1)
                image[b, ys, xs] += rng.uniform(30, 300) * sigma[b]
                mask[b, ys, xs] = True


def neighbours(rng: np.random.Generator, survey_bands: int = 4) -> list[tuple[Component, dict[str, float]]]:
    """Occasional unrelated galaxies and stars in the field: (component, per-photometry-band nanomaggies)."""
    out: list[tuple[Component, dict[str, float]]] = []
    n_gal = int(rng.random() < 0.35) + int(rng.random() < 0.1)
    n_star = int(rng.random() < 0.25)
    for k in range(n_gal + n_star):
        is_star = k >= n_gal
        radius = rng.uniform(3.5, 11.0)  # arcsec from the centre
        ang = rng.uniform(0, 2 * np.pi)
        dx, dy = radius * np.cos(ang), radius * np.sin(ang)
        if is_star:
            prof = galsim.DeltaFunction()
            rmag = rng.uniform(17.0, 22.5)
            colour = rng.uniform(0.2, 1.4)
        else:
            prof = galsim.Sersic(n=float(rng.choice([1.0, 4.0])), half_light_radius=float(rng.uniform(0.3, 1.4)))
            prof = prof.shear(q=float(rng.uniform(0.3, 1.0)), beta=float(rng.uniform(0, np.pi)) * galsim.radians)
            rmag = rng.uniform(19.0, 23.0)
            colour = rng.uniform(0.3, 1.1)
        f_r = 10 ** (-0.4 * (rmag - 22.5))
        offsets = {"g": colour, "r": 0.0, "i": -0.45 * colour, "z": -0.7 * colour, "y": -0.8 * colour}
        fluxes = {band: f_r * 10 ** (-0.4 * off) for band, off in offsets.items()}
        out.append((Component(f"neighbour{k}", "neighbour", prof.shift(dx, dy), {f"nb{k}": 1.0}), fluxes))
    return out


def stamp_fields(stamp: Stamp, survey: Survey) -> dict[str, np.ndarray]:
    """One object's row of an image source, field names as in the schema."""
    return {
        "image_array": stamp.image,
        "image_ivar": stamp.ivar,
        "image_mask": stamp.mask,
        "image_band": np.array(survey.bands, dtype="S8"),
        "image_psf_fwhm": stamp.psf_fwhm.astype(np.float32),
        "image_scale": np.full(survey.n_bands, survey.scale, np.float32),
    }
