"""The dataset contract: catalog columns, array sources, field names, bands and grids.

Every part of the engine (mock survey, readers, model, index, app) reads these names from
here, so a dataset written by one part is read by all. Field names follow the Multimodal
Universe (MMU) HDF5 files AION-1 was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# --- objects -------------------------------------------------------------------------

KINDS: tuple[str, ...] = ("galaxy", "star", "qso")

#: Galaxy10-DECaLS classes, in that catalogue's label order.
MORPHOLOGY_CLASSES: tuple[str, ...] = (
    "disturbed",
    "merging",
    "round smooth",
    "in-between round smooth",
    "cigar-shaped smooth",
    "barred spiral",
    "unbarred tight spiral",
    "unbarred loose spiral",
    "edge-on without bulge",
    "edge-on with bulge",
)

#: Segmentation classes, one bit each in the uint8 ``segmap`` (classes overlap: arms lie on the disk).
SEGMENTATION_CLASSES: tuple[str, ...] = ("disk", "bulge", "bar", "arms", "knots", "neighbour")
SEGMENTATION_BIT: dict[str, int] = {name: 1 << i for i, name in enumerate(SEGMENTATION_CLASSES)}

# --- bands -----------------------------------------------------------------------------

#: Legacy Survey image bands as AION names them (DECam g, r, i, z).
LS_BANDS: tuple[str, ...] = ("DES-G", "DES-R", "DES-I", "DES-Z")
#: HSC image bands as AION names them.
HSC_BANDS: tuple[str, ...] = ("HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y")
LS_PIXEL_SCALE = 0.262  # arcsec / pixel
HSC_PIXEL_SCALE = 0.168  # arcsec / pixel
IMAGE_SIZE = 96  # AION's image codec takes a 96x96 centre crop
HSC_ZEROPOINT = 27.0  # HSC coadd pixels: mag = 27 - 2.5 log10(counts)

#: speclite filter curves for synthetic photometry of each catalog flux/magnitude column.
FILTER_CURVES: dict[str, str] = {
    "flux_g": "decam2014-g",
    "flux_r": "decam2014-r",
    "flux_i": "decam2014-i",
    "flux_z": "decam2014-z",
    "flux_w1": "wise2010-W1",
    "flux_w2": "wise2010-W2",
    "flux_w3": "wise2010-W3",
    "flux_w4": "wise2010-W4",
    "mag_g": "hsc2017-g",
    "mag_r": "hsc2017-r",
    "mag_i": "hsc2017-i",
    "mag_z": "hsc2017-z",
    "mag_y": "hsc2017-y",
    "phot_g": "gaiadr3-G",
    "phot_bp": "gaiadr3-BP",
    "phot_rp": "gaiadr3-RP",
}

# --- spectral grids -------------------------------------------------------------------

DESI_WAVE_MIN, DESI_WAVE_MAX, DESI_DWAVE = 3600.0, 9824.0, 0.8  # Angstrom, linear grid
SDSS_LOGLAM_MIN, SDSS_LOGLAM_MAX, SDSS_DLOGLAM = np.log10(3800.0), np.log10(9200.0), 1e-4
XP_N_COEFF = 55  # Gaia XP: 55 BP then 55 RP Hermite coefficients


def desi_wavelength() -> np.ndarray:
    """DESI's merged-arm wavelength grid (3600-9824 A, 0.8 A pixels), float64 Angstrom."""
    n = int(round((DESI_WAVE_MAX - DESI_WAVE_MIN) / DESI_DWAVE)) + 1
    return DESI_WAVE_MIN + DESI_DWAVE * np.arange(n)


def sdss_wavelength() -> np.ndarray:
    """SDSS log-lambda grid (3800-9200 A, dlog10(lambda) = 1e-4), float64 Angstrom."""
    n = int(np.floor((SDSS_LOGLAM_MAX - SDSS_LOGLAM_MIN) / SDSS_DLOGLAM)) + 1
    return 10 ** (SDSS_LOGLAM_MIN + SDSS_DLOGLAM * np.arange(n))


# --- catalog --------------------------------------------------------------------------

LS_FLUX_COLUMNS = ("flux_g", "flux_r", "flux_i", "flux_z", "flux_w1", "flux_w2", "flux_w3", "flux_w4")
LS_SHAPE_COLUMNS = ("shape_r", "shape_e1", "shape_e2")
HSC_MAG_COLUMNS = ("mag_g", "mag_r", "mag_i", "mag_z", "mag_y")
HSC_EXTINCTION_COLUMNS = ("a_g", "a_r", "a_i", "a_z", "a_y")
HSC_SHAPE_COLUMNS = ("hsc_shape11", "hsc_shape22", "hsc_shape12")
GAIA_COLUMNS = ("phot_g", "phot_bp", "phot_rp", "parallax")

#: Scalar columns, each named as the AION modality it feeds. Units: LS fluxes in nanomaggies,
#: ebv in mag, shape_r in arcsec, HSC cmodel magnitudes (AB), a_* extinctions (mag), HSC
#: sdss-shape moments (arcsec^2), Gaia mean fluxes (e-/s), parallax (mas), z (redshift).
SCALAR_COLUMNS: tuple[str, ...] = (
    *LS_FLUX_COLUMNS,
    "ebv",
    *LS_SHAPE_COLUMNS,
    *HSC_MAG_COLUMNS,
    *HSC_EXTINCTION_COLUMNS,
    *HSC_SHAPE_COLUMNS,
    *GAIA_COLUMNS,
    "z",
)

#: Mock-survey truth columns (absent in real data). Units: log10 Msun, log10 yr^-1, Gyr,
#: log10 Z/Zsun, mag (V-band attenuation), class index into MORPHOLOGY_CLASSES (-1 = none), K, dex.
TRUTH_COLUMNS: tuple[str, ...] = (
    "truth_z",
    "truth_log_mstar",
    "truth_ssfr",
    "truth_age",
    "truth_metallicity",
    "truth_dust_av",
    "truth_morphology",
    "truth_is_lens",
    "truth_teff",
    "truth_logg",
    "truth_feh",
)

REQUIRED_COLUMNS: tuple[str, ...] = ("object_id", "ra", "dec", "kind")


# --- array sources --------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySource:
    """One HDF5 file of per-object arrays, row-aligned through its ``object_id`` dataset."""

    name: str  # also the suffix of the catalog flag ``has_<name>``
    filename: str
    fields: tuple[str, ...]  # required datasets besides object_id
    optional_fields: tuple[str, ...] = field(default_factory=tuple)

    @property
    def flag(self) -> str:
        return f"has_{self.name}"


#: Masks: ``image_mask`` / ``spectrum_mask`` True marks a *bad* pixel, and bad pixels carry ivar 0
#: (MMU's Legacy Survey files store the opposite sense; the reader inverts it on the way in).
IMAGE_FIELDS = ("image_array", "image_ivar", "image_mask", "image_band")
IMAGE_OPTIONAL = ("image_psf_fwhm", "image_scale")
SPECTRUM_FIELDS = ("spectrum_flux", "spectrum_ivar", "spectrum_lambda", "spectrum_mask")
SPECTRUM_OPTIONAL = ("spectrum_lsf_sigma",)

SOURCES: dict[str, ArraySource] = {
    s.name: s
    for s in (
        ArraySource("image_ls", "images_ls.h5", IMAGE_FIELDS, IMAGE_OPTIONAL),
        ArraySource("image_hsc", "images_hsc.h5", IMAGE_FIELDS, IMAGE_OPTIONAL),
        ArraySource("spectrum_desi", "spectra_desi.h5", SPECTRUM_FIELDS, SPECTRUM_OPTIONAL),
        ArraySource("spectrum_sdss", "spectra_sdss.h5", SPECTRUM_FIELDS, SPECTRUM_OPTIONAL),
        ArraySource("xp_gaia", "xp_gaia.h5", ("coeff", "coeff_error")),
        ArraySource("segmap", "segmaps.h5", ("segmap",)),
    )
}

FLAG_COLUMNS: tuple[str, ...] = tuple(s.flag for s in SOURCES.values())


def source(name: str) -> ArraySource:
    """The array source called ``name``; the error lists the accepted names."""
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown array source {name!r}; accepted: {', '.join(SOURCES)}") from None
