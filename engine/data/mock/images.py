"""Render cutouts with GalSim: per-band component fluxes, Moffat PSF with per-band seeing, sky
noise with its inverse-variance map, and a bad-pixel mask (bad columns, cosmic rays).

Legacy Survey cutouts are in nanomaggies per pixel at 0.262"/px; HSC cutouts in counts at
zero point 27 at 0.168"/px. The band the segmentation is defined in (LS r) is drawn one
component at a time, so each component's own noiseless image is available for the segmap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import galsim
import numpy as np
import scipy.fft as sfft

from engine.data import schema
from engine.data.mock.photometry import flux_sigma_nmgy
from engine.data.mock.structure import Component, Knots

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


def render(survey: Survey, components: list[Component], pop_fluxes: dict[str, np.ndarray], rng: np.random.Generator,
           *, detail_band: int | None = None, size: int = schema.IMAGE_SIZE) -> Stamp:
    """Draw ``components`` in every band of ``survey``; ``pop_fluxes[pop]`` is a per-band flux vector
    (nanomaggies) of each light population the components share.

    Rendering is done in Fourier space the way GalSim's ``drawImage`` does it (profile x PSF x
    pixel, inverse FFT), but each component's Fourier image is drawn once and reused for every
    band; the result equals ``galsim.Convolve(profile, psf).drawImage`` to ~1e-5 (tested).
    The object's centre is pixel (size/2, size/2).
    """
    fwhm = draw_psf_fwhm(survey, rng)
    depth_offset = rng.normal(0, 0.15)
    grid, kx = k_grid(survey.scale, size)
    # FFT order (k = 0 first) and only the kx >= 0 half that a real image needs
    kimages = [_half_plane(component_kimage(c.profile, grid, kx)) for c in components]
    model = np.zeros((survey.n_bands, size, size), np.float64)
    comp_images: dict[str, np.ndarray] = {}
    sigma = np.zeros(survey.n_bands)
    for b in range(survey.n_bands):
        transfer = psf_transfer(survey.scale, size, float(fwhm[b]))
        fluxes = [sum(share * pop_fluxes[pop][b] for pop, share in comp.shares.items()) * survey.unit_per_nmgy
                  for comp in components]
        if b == detail_band:
            for comp, kimg, flux in zip(components, kimages, fluxes, strict=True):
                img = _to_image(kimg * (flux * transfer), size)
                comp_images[comp.name] = img
                model[b] += img
        else:
            total = sum(f * k for f, k in zip(fluxes, kimages, strict=True))
            model[b] = _to_image(total * transfer, size)
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


def draw_psf_fwhm(survey: Survey, rng: np.random.Generator) -> np.ndarray:
    """Per-band seeing of one observation: a shared atmosphere factor times small per-band scatter,
    rounded to 0.01" so the PSF's Fourier image can be cached."""
    common = rng.lognormal(0, 0.1)
    return np.round([s * common * rng.lognormal(0, 0.04) for s in survey.seeing], 2)


@lru_cache(maxsize=256)
def psf_transfer(scale: float, size: int, fwhm: float) -> np.ndarray:
    """Fourier image of Moffat PSF x pixel box on the stamp's k grid (float32; real: both are symmetric)."""
    grid, kx = k_grid(scale, size)
    psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=fwhm)  # untruncated: analytic and fast
    pixel = np.sinc(kx * scale / (2 * np.pi))
    out = psf.drawKImage(nx=grid, ny=grid, scale=float(kx[1] - kx[0])).array.real * (pixel[None, :] * pixel[:, None])
    out = _half_plane(out.astype(np.float32))
    out.setflags(write=False)
    return out


def k_grid(scale: float, size: int) -> tuple[int, np.ndarray]:
    """Fourier grid of twice the stamp (so light beyond the edge does not wrap in): size, k values (1/arcsec)."""
    grid = 2 * size
    dk = 2 * np.pi / (grid * scale)
    return grid, (np.arange(grid) - grid // 2) * dk


def component_kimage(profile, grid: int, kx: np.ndarray) -> np.ndarray:
    """Unit-flux Fourier image of a component, centred (k = 0 at index grid // 2)."""
    if isinstance(profile, Knots):
        return profile.kimage(kx).astype(np.complex64)
    if isinstance(profile, galsim.DeltaFunction):  # GalSim cannot draw an unshifted delta's k-image
        return np.full((grid, grid), profile.flux, np.complex64)
    return profile.drawKImage(nx=grid, ny=grid, scale=float(kx[1] - kx[0])).array.astype(np.complex64)


def _half_plane(kimage: np.ndarray) -> np.ndarray:
    """A centred Fourier image in FFT order, cut to the kx >= 0 columns used by ``irfft2``."""
    grid = kimage.shape[0]
    return np.ascontiguousarray(sfft.ifftshift(kimage)[:, : grid // 2 + 1])


@lru_cache(maxsize=8)
def _crop_index(grid: int, size: int) -> np.ndarray:
    return (np.arange(size) - size // 2) % grid


def _to_image(half: np.ndarray, size: int) -> np.ndarray:
    """Real-space stamp (size x size, object at pixel size/2) from a half-plane Fourier image in FFT order."""
    grid = half.shape[0]
    img = sfft.irfft2(half, s=(grid, grid))
    idx = _crop_index(grid, size)
    return img[np.ix_(idx, idx)]


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
