"""SDSS ``spec-PLATE-MJD-FIBER.fits`` files (one spectrum each, the SAS/DR17 layout).

HDU1 ``COADD`` table: ``flux``, ``loglam`` (log10 Angstrom), ``ivar``, ``and_mask``;
HDU2 ``SPECOBJ`` (one row): ``PLATE``, ``MJD``, ``FIBERID``, ``Z``, ``CLASS``, ``PLUG_RA``,
``PLUG_DEC``. A pixel is bad where ``and_mask`` != 0 or ``ivar`` <= 0 (as MMU's SDSS builder).
The id is ``PLATE * 10**10 + MJD * 10**4 + FIBERID`` (see :mod:`ids`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from engine.data import schema
from engine.data.readers import columns as cols
from engine.data.readers import ids as idmod
from engine.data.readers import spectra
from engine.data.readers.base import FileScan, check_positions, fail
from engine.data.readers.fitsutil import column, hdu, open_fits, table_data


def looks_like(hdul: fits.HDUList) -> bool:
    names = {h.name.upper() for h in hdul}
    return "COADD" in names  # a missing SPECOBJ is then reported by scan, naming that HDU


def _spectrum(path: Path, hdul: fits.HDUList):
    coadd = table_data(hdu(hdul, path, "COADD"), path)
    flux = column(coadd, path, "flux").astype(np.float64)
    loglam = column(coadd, path, "loglam").astype(np.float64)
    ivar = column(coadd, path, "ivar").astype(np.float64)
    and_mask = column(coadd, path, "and_mask", required=False)
    return flux, loglam, ivar, and_mask


def scan(path: Path, hdul: fits.HDUList) -> FileScan:
    specobj = table_data(hdu(hdul, path, "SPECOBJ"), path)
    flux, loglam, ivar, and_mask = _spectrum(path, hdul)
    if not (flux.ndim == loglam.ndim == ivar.ndim == 1) or not (len(flux) == len(loglam) == len(ivar)):
        raise fail(
            path, "COADD", f"columns flux/loglam/ivar have lengths {len(flux)}/{len(loglam)}/{len(ivar)}"
        )
    if not np.isfinite(flux).any():
        raise fail(path, "flux", "NaN-only spectrum")
    if not np.isfinite(loglam).all() or not (3.0 < np.nanmedian(loglam) < 5.0):
        raise fail(path, "loglam", "expected log10(wavelength / Angstrom) values between 3 and 5")
    if len(specobj) != 1:
        raise fail(path, "SPECOBJ", f"{len(specobj)} rows, expected 1")
    plate, mjd, fiber = (int(column(specobj, path, c)[0]) for c in ("PLATE", "MJD", "FIBERID"))
    ra, dec = check_positions(
        path, column(specobj, path, "PLUG_RA"), column(specobj, path, "PLUG_DEC"), "PLUG_RA", "PLUG_DEC"
    )
    z = column(specobj, path, "Z", required=False)
    cls = column(specobj, path, "CLASS", required=False, numeric=False)
    oid = idmod.sdss_id([plate], [mjd], [fiber])
    catalog = pd.DataFrame(
        {
            "object_id": oid,
            "name": [f"{plate:04d}-{mjd}-{fiber:04d}"],
            "ra": ra,
            "dec": dec,
            "kind": cols.kind_from_class(cls) if cls is not None else np.array(["galaxy"], object),
            "z": np.asarray(z, np.float64) if z is not None else [np.nan],
        }
    )

    def read(chunk: int):
        with open_fits(path) as again:  # re-read: scans of many files must not hold every spectrum
            flux, loglam, ivar, and_mask = _spectrum(path, again)
        wave = 10**loglam
        bad = (and_mask != 0) if and_mask is not None else np.zeros(len(flux), bool)
        fields = spectra.on_grid(wave, flux[None], ivar[None], bad[None], schema.sdss_wavelength(), log=True)
        yield oid, fields

    scan = FileScan(
        path=path,
        source="spectrum_sdss",
        catalog=catalog,
        rows=np.zeros(1, np.int64),
        read_arrays=read,
        kind_label="SDSS spec FITS",
    )
    if len(flux) != len(schema.sdss_wavelength()):
        scan.notes.append(f"{len(flux)}-pixel spectrum resampled onto the schema SDSS grid")
    return scan
