"""DESI ``coadd-*.fits`` files (desispec layout): FIBERMAP + per-arm B/R/Z images.

``FIBERMAP`` table: ``TARGETID`` (int64, kept as object_id), ``TARGET_RA``, ``TARGET_DEC``,
``OBJTYPE`` (only 'TGT' rows are kept; sky fibres are dropped). Per arm X in B, R, Z:
``X_WAVELENGTH`` (nwave,), ``X_FLUX``, ``X_IVAR``, ``X_MASK`` (nspec, nwave). Arms are merged
onto ``schema.desi_wavelength()`` with inverse-variance weights in the overlaps
(:func:`spectra.merge_arms`). Coadd files carry no redshift; a ``REDSHIFTS``/``ZBEST`` HDU
(redrock) in the same file gives ``z`` and ``SPECTYPE`` when present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from engine.data import schema
from engine.data.readers import columns as cols
from engine.data.readers import spectra
from engine.data.readers.base import CHUNK, FileScan, check_positions, check_unique_ids, fail
from engine.data.readers.fitsutil import column, hdu, image_data, open_fits, table_data

ARMS = ("B", "R", "Z")


def looks_like(hdul: fits.HDUList) -> bool:
    names = {h.name.upper() for h in hdul}
    return "FIBERMAP" in names and any(f"{a}_FLUX" in names for a in ARMS)


def _arms(path: Path, hdul: fits.HDUList, nspec: int) -> list[str]:
    present = [a for a in ARMS if hdu(hdul, path, f"{a}_FLUX", required=False) is not None]
    if not present:
        raise fail(path, "B_FLUX", "no arm found; expected B_/R_/Z_ FLUX, IVAR, WAVELENGTH HDUs")
    for arm in present:
        wave = image_data(hdu(hdul, path, f"{arm}_WAVELENGTH"), path)
        if wave.ndim != 1 or not np.isfinite(wave).all():
            raise fail(path, f"{arm}_WAVELENGTH", f"shape {wave.shape}, expected finite (nwave,)")
        for part in ("FLUX", "IVAR") + (("MASK",) if hdu(hdul, path, f"{arm}_MASK", required=False) else ()):
            data = hdu(hdul, path, f"{arm}_{part}")
            shape = data.shape if hasattr(data, "shape") else image_data(data, path).shape
            if tuple(shape) != (nspec, len(wave)):
                raise fail(path, f"{arm}_{part}", f"shape {tuple(shape)}, expected {(nspec, len(wave))}")
            if part != "MASK" and np.dtype(data.data.dtype).kind != "f":
                raise fail(path, f"{arm}_{part}", f"dtype {data.data.dtype}, expected floating point")
    return present


def scan(path: Path, hdul: fits.HDUList) -> FileScan:
    fmap = table_data(hdu(hdul, path, "FIBERMAP"), path)
    tid = column(fmap, path, "TARGETID")
    if tid.dtype.kind not in "iu":
        raise fail(path, "TARGETID", f"dtype {tid.dtype}, expected int64")
    nspec = len(tid)
    arms = _arms(path, hdul, nspec)
    if nspec == 0:
        raise fail(path, "FIBERMAP", "holds no spectra")
    objtype = column(fmap, path, "OBJTYPE", required=False, numeric=False)
    is_target = (
        np.ones(nspec, bool) if objtype is None else np.char.strip(np.asarray(objtype).astype(str)) == "TGT"
    )
    if not is_target.any():
        raise fail(path, "OBJTYPE", f"none of the {nspec} fibres is a target ('TGT')")
    keep = is_target.copy()
    ids = tid.astype(np.int64)
    check_unique_ids(path, "TARGETID", ids[keep])
    ra = np.asarray(column(fmap, path, "TARGET_RA"), np.float64)
    dec = np.asarray(column(fmap, path, "TARGET_DEC"), np.float64)
    check_positions(path, ra[keep], dec[keep], "TARGET_RA", "TARGET_DEC")
    finite = np.zeros(nspec, bool)
    for arm in arms:
        flux = image_data(hdu(hdul, path, f"{arm}_FLUX"), path)
        finite |= np.isfinite(flux).any(axis=1)
    if not (finite & keep).any():
        raise fail(path, f"{arms[0]}_FLUX", "NaN-only: no target has a finite flux")
    n_nan = int((keep & ~finite).sum())
    keep &= finite
    z = spectype = None
    zhdu = hdu(hdul, path, "REDSHIFTS", required=False) or hdu(hdul, path, "ZBEST", required=False)
    if zhdu is not None:
        zdata = table_data(zhdu, path)
        zt = column(zdata, path, "TARGETID")
        lookup = pd.Index(zt.astype(np.int64)).get_indexer(ids)
        zcol = column(zdata, path, "Z")
        z = np.where(lookup >= 0, zcol[np.maximum(lookup, 0)], np.nan)
        st = column(zdata, path, "SPECTYPE", required=False, numeric=False)
        if st is not None:
            spectype = np.where(lookup >= 0, np.asarray(st).astype(str)[np.maximum(lookup, 0)], "GALAXY")
    sel = np.flatnonzero(keep)
    catalog = pd.DataFrame(
        {
            "object_id": ids[sel],
            "name": [str(i) for i in ids[sel]],
            "ra": ra[sel],
            "dec": dec[sel],
            "kind": cols.kind_from_class(spectype[sel])
            if spectype is not None
            else np.array(["galaxy"] * len(sel), object),
            "z": z[sel] if z is not None else np.full(len(sel), np.nan),
        }
    )
    for c in ("EBV", "FLUX_G", "FLUX_R", "FLUX_Z", "FLUX_W1", "FLUX_W2"):
        values = column(fmap, path, c, required=False)
        if values is not None:
            catalog[c.lower()] = np.asarray(values, np.float64)[sel]

    def read(chunk: int):
        grid = schema.desi_wavelength()
        with open_fits(path) as h:
            waves = {a: image_data(hdu(h, path, f"{a}_WAVELENGTH"), path) for a in arms}
            for start in range(0, len(sel), chunk or CHUNK):
                rows = sel[start : start + (chunk or CHUNK)]
                parts = []
                for a in arms:
                    flux = image_data(hdu(h, path, f"{a}_FLUX"), path)[rows]
                    ivar = image_data(hdu(h, path, f"{a}_IVAR"), path)[rows]
                    mh = hdu(h, path, f"{a}_MASK", required=False)
                    bad = image_data(mh, path)[rows] != 0 if mh is not None else np.zeros(flux.shape, bool)
                    parts.append((waves[a], flux, ivar, bad))
                f, iv, b = spectra.merge_arms(parts, grid)
                yield (
                    ids[rows],
                    {
                        "spectrum_flux": f,
                        "spectrum_ivar": iv,
                        "spectrum_lambda": np.broadcast_to(grid.astype(np.float32), f.shape).copy(),
                        "spectrum_mask": b,
                    },
                )

    scan = FileScan(
        path=path,
        source="spectrum_desi",
        catalog=catalog,
        rows=sel,
        read_arrays=read,
        n_skipped=n_nan,
        kind_label=f"DESI coadd FITS (arms {''.join(arms)})",
    )
    if not is_target.all():
        scan.notes.append(f"{int((~is_target).sum())} non-target (sky) fibres dropped")
    return scan
