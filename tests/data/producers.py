"""Write small input files laid out exactly as the real producers write them.

MMU HDF5 files follow the Multimodal Universe builder scripts (``scripts/<survey>/
build_parent_sample.py`` and ``scripts/gaia/merge_parts.py``): one dataset per column, object
axis first, the same names, dtypes and string types. FITS files follow the SDSS ``spec``
data model, desispec's ``coadd`` layout, the legacysurvey.org cutout service and the Gaia
archive's XP continuous-spectrum table. Each writer returns the values it wrote so tests
can check that ingest reads back the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from astropy.io import fits
from astropy.table import Table

LS_FILTERS = ["DES-G", "DES-R", "DES-I", "DES-Z"]
HSC_FILTERS = ["HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y"]
_utf8_5 = h5py.string_dtype("utf-8", 5)
_utf8_16 = h5py.string_dtype("utf-8", 16)

DESI_WAVE = 3600.0 + 0.8 * np.arange(7781)
DESI_ARMS = {  # desispec coadd arms: 0.8 A pixels on the common grid, overlapping at the edges
    "B": 3600.0 + 0.8 * np.arange(2751),  # 3600.0 - 5800.0
    "R": 5760.0 + 0.8 * np.arange(2326),  # 5760.0 - 7620.0
    "Z": 7520.0 + 0.8 * np.arange(2881),  # 7520.0 - 9824.0
}


def mmu_path(root: Path, survey: str, healpix: int) -> Path:
    path = Path(root) / survey / f"healpix={healpix}" / "001-of-001.hdf5"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_columns(path: Path, columns: dict, *, compressed: bool) -> None:
    with h5py.File(path, "w") as f:
        for key, value in columns.items():
            value = np.asarray(value) if not isinstance(value, np.ndarray) else value
            if compressed:  # the Legacy Survey builder's create_dataset call
                f.create_dataset(
                    key, data=value, compression="gzip", chunks=True, maxshape=(None, *value.shape[1:])
                )
            else:  # HSC / DESI / SDSS / Gaia builders
                f.create_dataset(key, data=value)


def mmu_legacysurvey(path: Path, ra, dec, rng, *, size: int = 160, types=None) -> dict:
    """``scripts/legacysurvey/build_parent_sample.py``: sweep columns + cutouts joined on gid."""
    n = len(ra)
    brick = [f"{int(r * 10):04d}p{int(d * 10):03d}"[-8:] for r, d in zip(ra, dec, strict=True)]
    objid = np.arange(n, dtype=np.int32) + 7
    image = rng.normal(0, 1, (n, 4, size, size)).astype(np.float32)
    ivar = rng.uniform(0.5, 2.0, (n, 4, size, size)).astype(np.float32)
    mask = np.ones((n, size, size), bool)
    mask[:, :5] = False
    mask[:, size // 2, size // 3 :] = False  # a bad row through the centre
    cols = {
        "RELEASE": np.full(n, 10000, np.int16),
        "BRICKID": (np.arange(n) + 331000).astype(np.int32),
        "BRICKNAME": np.array(brick, dtype="S8"),
        "OBJID": objid,
        "TYPE": np.array(types or ["REX"] * n, dtype="S3"),
        "RA": np.asarray(ra, np.float64),
        "DEC": np.asarray(dec, np.float64),
        "EBV": rng.uniform(0.01, 0.1, n).astype(np.float32),
        **{
            f"FLUX_{b}": rng.uniform(1, 50, n).astype(np.float32)
            for b in ("G", "R", "I", "Z", "W1", "W2", "W3", "W4")
        },
        "SHAPE_R": rng.uniform(0.5, 3, n).astype(np.float32),
        "SHAPE_E1": rng.uniform(-0.3, 0.3, n).astype(np.float32),
        "SHAPE_E2": rng.uniform(-0.3, 0.3, n).astype(np.float32),
        **{f"PSFSIZE_{b}": rng.uniform(1, 1.6, n).astype(np.float32) for b in "GRIZ"},
        "healpix": np.full(n, 1234, np.int64),
        "ra": np.asarray(ra, np.float64),
        "dec": np.asarray(dec, np.float64),
        "gid": np.arange(n),
        "object_id": np.array([f"{b}-{o}" for b, o in zip(brick, objid, strict=True)], dtype=_utf8_16),
        "image_band": np.array([[f.lower().encode() for f in LS_FILTERS]] * n, dtype=_utf8_5),
        "image_ivar": ivar,
        "image_array": image,
        "bit_mask": mask,
        "image_psf_fwhm": rng.uniform(1, 1.6, (n, 4)).astype(np.float64),
        "image_scale": np.full((n, 4), 0.262, np.float32),
    }
    _write_columns(path, cols, compressed=True)
    return cols


def mmu_hsc(path: Path, ra, dec, rng, *, size: int = 144) -> dict:
    """``scripts/hsc/build_parent_sample.py``: SQL catalog columns + 5-band cutouts, no ivar/mask."""
    n = len(ra)
    cols: dict = {
        "object_id": (np.arange(n) + 36411448540270000).astype(np.int64),
        "ra": np.asarray(ra, np.float64),
        "dec": np.asarray(dec, np.float64),
        "tract": np.full(n, 9813, np.int32),
        "patch": np.full(n, 405, np.int32),
    }
    for b in "grizy":
        cols[f"a_{b}"] = rng.uniform(0.01, 0.1, n).astype(np.float32)
        cols[f"{b}_extendedness_value"] = np.ones(n, np.float32)
        cols[f"{b}_variance_value"] = rng.uniform(0.001, 0.01, n).astype(np.float32)
        cols[f"{b}_cmodel_mag"] = rng.uniform(18, 22, n).astype(np.float32)
        cols[f"{b}_cmodel_magerr"] = rng.uniform(0.01, 0.1, n).astype(np.float32)
        for m in ("11", "22", "12"):
            cols[f"{b}_sdssshape_psf_shape{m}"] = rng.uniform(0.1, 0.2, n).astype(np.float32)
            cols[f"{b}_sdssshape_shape{m}"] = rng.uniform(0.1, 1.0, n).astype(np.float32)
    cols["healpix"] = np.full(n, 5000, np.int64)
    cols["image_band"] = np.array([[f.lower().encode() for f in HSC_FILTERS]] * n, dtype=_utf8_5)
    cols["image_array"] = rng.normal(0, 0.1, (n, 5, size, size)).astype(np.float32)
    cols["image_psf_fwhm"] = rng.uniform(0.5, 0.8, (n, 5)).astype(np.float32)
    cols["image_scale"] = np.full((n, 5), 0.168, np.float32)
    _write_columns(path, cols, compressed=False)
    return cols


def mmu_desi(path: Path, ra, dec, rng, *, length: int = 7781) -> dict:
    """DESI EDR SV3 as read by ``scripts/desi/desi.py``: spectrum_* (n, 7781), lower-case columns."""
    n = len(ra)
    tid = (np.arange(n) + 39627640000000000).astype(np.int64)
    cols = {
        "TARGETID": tid,
        "object_id": tid,
        "ra": np.asarray(ra, np.float64),
        "dec": np.asarray(dec, np.float64),
        "healpix": np.full(n, 26065, np.int64),
        "z": rng.uniform(0.05, 1.0, n).astype(np.float32),
        "zerr": rng.uniform(1e-5, 1e-4, n).astype(np.float32),
        "ZWARN": np.zeros(n, np.int64),
        "SPECTYPE": np.array(["GALAXY"] * (n - 1) + ["QSO"], dtype="S6"),
        "ebv": rng.uniform(0.01, 0.1, n).astype(np.float32),
        **{f"flux_{b}": rng.uniform(1, 50, n).astype(np.float32) for b in "grz"},
        **{f"flux_ivar_{b}": rng.uniform(1, 50, n).astype(np.float32) for b in "grz"},
        "spectrum_flux": rng.normal(1, 0.3, (n, length)).astype(np.float32),
        "spectrum_ivar": rng.uniform(0.5, 2, (n, length)).astype(np.float32),
        "spectrum_lsf_sigma": np.full((n, length), 0.9, np.float32),
        "spectrum_lambda": np.broadcast_to(
            (3600.0 + 0.8 * np.arange(length)).astype(np.float32), (n, length)
        ).copy(),
        "spectrum_mask": np.zeros((n, length), bool),
    }
    cols["spectrum_mask"][:, :10] = True
    _write_columns(path, cols, compressed=False)
    return cols


def sdss_loglam(start: float = 3.5800, npix: int = 3850) -> np.ndarray:
    return start + 1e-4 * np.arange(npix)


def mmu_sdss(path: Path, ra, dec, rng, *, lengths=None) -> dict:
    """``scripts/sdss/build_parent_sample.py``: specObj columns + plates padded to the longest
    spectrum (lambda -1, mask True, ivar 0 in the padding)."""
    n = len(ra)
    lengths = lengths or [3850] * n
    longest = max(lengths)
    lam = np.full((n, longest), -1, np.float32)
    flux = np.zeros((n, longest), np.float32)
    ivar = np.zeros((n, longest), np.float32)
    mask = np.ones((n, longest), bool)
    for i, length in enumerate(lengths):
        lam[i, :length] = 10 ** sdss_loglam(3.5800, length)
        flux[i, :length] = rng.normal(5, 1, length)
        ivar[i, :length] = rng.uniform(0.5, 2, length)
        mask[i, :length] = False
    plate = np.array([266 + i for i in range(n)], np.int32)
    mjd = np.full(n, 51602, np.int32)
    fiber = np.arange(n, dtype=np.int32) + 3
    specobjid = np.array(
        [str((int(p) << 50) + (int(fb) << 38)) for p, fb in zip(plate, fiber, strict=True)], "S19"
    )
    cols = {
        "PLATE": plate,
        "MJD": mjd,
        "FIBERID": fiber,
        "SURVEY": np.array(["sdss  "] * n, "S6"),
        "PLUG_RA": np.asarray(ra, np.float64),
        "PLUG_DEC": np.asarray(dec, np.float64),
        "CLASS": np.array(["GALAXY"] * (n - 1) + ["STAR  "], "S6"),
        "Z": rng.uniform(0.01, 0.3, n).astype(np.float32),
        "SPECOBJID": specobjid,
        "healpix": np.full(n, 100, np.int64),
        "ra": np.asarray(ra, np.float64),
        "dec": np.asarray(dec, np.float64),
        "object_id": specobjid,
        "spectrum_lambda": lam,
        "spectrum_flux": flux,
        "spectrum_ivar": ivar,
        "spectrum_mask": mask,
        "spectrum_lsf_sigma": np.ones((n, longest), np.float32),
    }
    _write_columns(path, cols, compressed=False)
    return cols


def mmu_gaia(path: Path, ra, dec, rng) -> dict:
    """``scripts/gaia``: GaiaSource columns + coeff/coeff_error (n, 110) float32 + healpix."""
    n = len(ra)
    cols = {
        "source_id": (np.arange(n) + 3890000000000000000).astype(np.int64),
        "ra": np.asarray(ra, np.float64),
        "dec": np.asarray(dec, np.float64),
        "parallax": rng.uniform(0.1, 5, n),
        "phot_g_mean_flux": rng.uniform(1e3, 1e5, n),
        "phot_bp_mean_flux": rng.uniform(1e3, 1e5, n),
        "phot_rp_mean_flux": rng.uniform(1e3, 1e5, n),
        "classprob_dsc_combmod_star": np.full(n, 0.9, np.float32),
        "classprob_dsc_combmod_quasar": np.full(n, 0.05, np.float32),
        "classprob_dsc_combmod_galaxy": np.full(n, 0.05, np.float32),
        "coeff": rng.normal(0, 1, (n, 110)).astype(np.float32),
        "coeff_error": rng.uniform(0.01, 0.1, (n, 110)).astype(np.float32),
        "healpix": np.full(n, 7, np.int64),
    }
    _write_columns(path, cols, compressed=False)
    return cols


# --- FITS ------------------------------------------------------------------------------------


def sdss_spec(
    path: Path,
    plate: int,
    mjd: int,
    fiber: int,
    ra: float,
    dec: float,
    rng,
    *,
    start=3.5800,
    npix=3850,
    z: float = 0.1,
    cls: str = "GALAXY",
) -> dict:
    """``spec-PLATE-MJD-FIBER.fits``: HDU1 COADD table, HDU2 SPECOBJ (one row), HDU3 SPZLINE."""
    loglam = sdss_loglam(start, npix).astype(np.float32)
    flux = rng.normal(5, 1, npix).astype(np.float32)
    ivar = rng.uniform(0.5, 2, npix).astype(np.float32)
    and_mask = np.zeros(npix, np.int32)
    and_mask[100:110] = 1 << 24
    primary = fits.PrimaryHDU()
    primary.header.update(PLATEID=plate, MJD=mjd, FIBERID=fiber, PLUG_RA=ra, PLUG_DEC=dec)
    coadd = fits.BinTableHDU.from_columns(
        [
            fits.Column("flux", "E", array=flux),
            fits.Column("loglam", "E", array=loglam),
            fits.Column("ivar", "E", array=ivar),
            fits.Column("and_mask", "J", array=and_mask),
            fits.Column("or_mask", "J", array=and_mask),
            fits.Column("wdisp", "E", array=np.ones(npix, np.float32)),
            fits.Column("sky", "E", array=np.zeros(npix, np.float32)),
            fits.Column("model", "E", array=flux),
        ],
        name="COADD",
    )
    specobj = fits.BinTableHDU.from_columns(
        [
            fits.Column("PLATE", "J", array=[plate]),
            fits.Column("MJD", "J", array=[mjd]),
            fits.Column("FIBERID", "J", array=[fiber]),
            fits.Column("PLUG_RA", "D", array=[ra]),
            fits.Column("PLUG_DEC", "D", array=[dec]),
            fits.Column("Z", "E", array=[z]),
            fits.Column("CLASS", "6A", array=[cls]),
            fits.Column("SPECOBJID", "19A", array=[str((plate << 50) + (fiber << 38))]),
        ],
        name="SPECOBJ",
    )
    spzline = fits.BinTableHDU.from_columns(
        [fits.Column("LINENAME", "13A", array=["H_alpha"])], name="SPZLINE"
    )
    fits.HDUList([primary, coadd, specobj, spzline]).writeto(path)
    return {"flux": flux, "loglam": loglam, "ivar": ivar, "and_mask": and_mask}


def desi_coadd(path: Path, ra, dec, rng, *, objtype=None, with_redshifts: bool = False) -> dict:
    """desispec ``coadd-*.fits``: FIBERMAP + B/R/Z _WAVELENGTH/_FLUX/_IVAR/_MASK/_RESOLUTION."""
    n = len(ra)
    tid = (np.arange(n) + 39627650000000000).astype(np.int64)
    hdus = [fits.PrimaryHDU()]
    fmap = fits.BinTableHDU.from_columns(
        [
            fits.Column("TARGETID", "K", array=tid),
            fits.Column("TARGET_RA", "D", array=np.asarray(ra)),
            fits.Column("TARGET_DEC", "D", array=np.asarray(dec)),
            fits.Column("OBJTYPE", "3A", array=objtype or ["TGT"] * n),
            fits.Column("COADD_FIBERSTATUS", "J", array=np.zeros(n, np.int32)),
            fits.Column("FLUX_G", "E", array=rng.uniform(1, 10, n)),
            fits.Column("EBV", "E", array=rng.uniform(0.01, 0.1, n)),
        ],
        name="FIBERMAP",
    )
    hdus.append(fmap)
    out = {"TARGETID": tid}
    for arm, wave in DESI_ARMS.items():
        flux = rng.normal(2, 0.5, (n, len(wave))).astype(np.float32)
        ivar = rng.uniform(0.5, 2, (n, len(wave))).astype(np.float32)
        mask = np.zeros((n, len(wave)), np.int32)
        mask[:, 5] = 1
        out[arm] = (wave, flux, ivar, mask)
        hdus.append(fits.ImageHDU(wave, name=f"{arm}_WAVELENGTH"))
        hdus.append(fits.ImageHDU(flux, name=f"{arm}_FLUX"))
        hdus.append(fits.ImageHDU(ivar, name=f"{arm}_IVAR"))
        hdus.append(fits.ImageHDU(mask, name=f"{arm}_MASK"))
        hdus.append(fits.ImageHDU(np.zeros((n, 11, len(wave)), np.float32), name=f"{arm}_RESOLUTION"))
    if with_redshifts:
        hdus.append(
            fits.BinTableHDU.from_columns(
                [
                    fits.Column("TARGETID", "K", array=tid),
                    fits.Column("Z", "D", array=np.linspace(0.1, 0.5, n)),
                    fits.Column("SPECTYPE", "6A", array=["QSO"] * n),
                ],
                name="REDSHIFTS",
            )
        )
    fits.HDUList(hdus).writeto(path)
    return out


def ls_cutout(
    path: Path,
    ra: float,
    dec: float,
    rng,
    *,
    bands: str = "griz",
    size: int = 100,
    pixscale: float = 0.262,
    per_band_hdus: bool = False,
    ivar: bool = True,
) -> dict:
    """legacysurvey.org ``fits-cutout``: (bands, y, x) cube, TAN WCS centred on (ra, dec), BANDS/BANDn."""
    cube = rng.normal(0, 1, (len(bands), size, size)).astype(np.float32)
    ivar_cube = rng.uniform(0.5, 2, cube.shape).astype(np.float32)
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN",
        CTYPE2="DEC--TAN",
        CRVAL1=ra,
        CRVAL2=dec,
        CRPIX1=(size + 1) / 2.0,
        CRPIX2=(size + 1) / 2.0,
        CD1_1=-pixscale / 3600.0,
        CD1_2=0.0,
        CD2_1=0.0,
        CD2_2=pixscale / 3600.0,
        SURVEY="LegacySurvey",
        VERSION="DR10",
    )
    if per_band_hdus:
        hdus = [fits.PrimaryHDU()]
        for j, b in enumerate(bands):
            h = fits.ImageHDU(cube[j], header=header.copy(), name=f"IMAGE_{b.upper()}")
            h.header["BAND"] = b
            hdus.append(h)
            if ivar:
                hi = fits.ImageHDU(ivar_cube[j], header=header.copy(), name=f"INVVAR_{b.upper()}")
                hi.header["BAND"] = b
                hdus.append(hi)
    else:
        header["BANDS"] = bands
        for j, b in enumerate(bands):
            header[f"BAND{j}"] = b
        hdus = [fits.PrimaryHDU(cube, header=header)]
        if ivar:
            h = fits.ImageHDU(ivar_cube, header=header.copy(), name="INVVAR")
            h.header["IMAGETYP"] = "invvar"
            hdus.append(h)
    fits.HDUList(hdus).writeto(path)
    return {"cube": cube, "ivar": ivar_cube}


def gaia_xp_table(path: Path, ra, dec, rng, *, fmt: str = "ascii.ecsv") -> dict:
    """Gaia archive ``xp_continuous_mean_spectrum`` joined with ra/dec. CSV holds arrays as text."""
    n = len(ra)
    data = {
        "source_id": (np.arange(n) + 4295806720).astype(np.int64),
        "ra": np.asarray(ra, np.float64),
        "dec": np.asarray(dec, np.float64),
        "bp_coefficients": rng.normal(0, 1, (n, 55)),
        "bp_coefficient_errors": rng.uniform(0.01, 0.1, (n, 55)).astype(np.float32),
        "rp_coefficients": rng.normal(0, 1, (n, 55)),
        "rp_coefficient_errors": rng.uniform(0.01, 0.1, (n, 55)).astype(np.float32),
        "bp_n_parameters": np.full(n, 55, np.int16),
        "phot_g_mean_flux": rng.uniform(1e3, 1e5, n),
    }
    table = Table(data)
    if fmt == "ascii.csv":
        for c in ("bp_coefficients", "bp_coefficient_errors", "rp_coefficients", "rp_coefficient_errors"):
            table[c] = ["[" + ", ".join(f"{v:.17g}" for v in row) + "]" for row in data[c]]
    table.write(path, format=fmt)
    return data
