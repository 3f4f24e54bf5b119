"""Legacy Survey cutout FITS files (the legacysurvey.org viewer's ``fits-cutout`` output).

Two layouts: one image HDU holding a (bands, y, x) cube with the band names in the header
(``BANDS = 'griz'`` or ``BAND0 = 'g'``, ``BAND1`` ...), optionally followed by an inverse-
variance cube (an HDU whose EXTNAME or IMAGETYP says IVAR/INVVAR); or one 2-D HDU per band
named by ``BAND``/``FILTER`` (ivar HDUs marked as above). The object's position is the WCS
world coordinate of the cutout's centre; its id is derived from that position (see
:mod:`ids`). The pixel scale must be the survey's native 0.262"/pixel: AION's image codec
was trained at that scale, so a resampled cutout is refused rather than silently mis-scaled.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from engine.data import schema
from engine.data.readers import ids as idmod
from engine.data.readers import images
from engine.data.readers.base import FileScan, check_positions, fail
from engine.data.readers.fitsutil import image_data, open_fits

SCALE_TOLERANCE = 0.01  # relative


def _is_ivar(h) -> bool:
    tags = f"{h.name} {h.header.get('IMAGETYP', '')} {h.header.get('EXTTYPE', '')}".upper()
    return "IVAR" in tags or "INVVAR" in tags


def _bands_of_cube(header, nb: int) -> list[str] | None:
    if "BANDS" in header and len(str(header["BANDS"]).strip()) == nb:
        return list(str(header["BANDS"]).strip())
    keyed = [header.get(f"BAND{i}") for i in range(nb)]
    if all(k is not None for k in keyed):
        return [str(k).strip() for k in keyed]
    return None


def looks_like(hdul: fits.HDUList) -> bool:
    """Image HDUs only (a tile-compressed ``.fits.fz`` image is a binary table underneath)."""
    tables = [h for h in hdul if isinstance(h, fits.BinTableHDU) and not isinstance(h, fits.CompImageHDU)]
    return not tables and any(h.is_image and _naxis(h) in (2, 3) for h in hdul)


def _naxis(h) -> int:
    return len(h.shape) if getattr(h, "shape", None) is not None else 0


def _load(path: Path, hdul: fits.HDUList):
    """(bands, image cube, ivar cube or None, header of the first science HDU)."""
    science = [h for h in hdul if h.is_image and _naxis(h) in (2, 3) and not _is_ivar(h)]
    ivars = [h for h in hdul if h.is_image and _naxis(h) in (2, 3) and _is_ivar(h)]
    if not science:
        raise fail(path, "PRIMARY", "no 2-D or 3-D image HDU")
    first = science[0]
    if _naxis(first) == 3:
        cube = image_data(first, path)
        bands = _bands_of_cube(first.header, cube.shape[0])
        if bands is None:
            raise fail(
                path,
                "BANDS",
                f"header names no bands for the {cube.shape[0]} image planes (BANDS or BAND0..)",
            )
        ivar = image_data(ivars[0], path) if ivars else None
        if ivar is not None and ivar.shape != cube.shape:
            raise fail(path, ivars[0].name or "IVAR", f"shape {ivar.shape}, expected {cube.shape}")
    else:
        planes, bands = [], []
        for h in science:
            band = h.header.get("BAND", h.header.get("FILTER"))
            if band is None:
                raise fail(path, "BAND", f"HDU {h.name!r} has no BAND or FILTER keyword")
            planes.append(image_data(h, path))
            bands.append(str(band).strip())
        shapes = {p.shape for p in planes}
        if len(shapes) != 1:
            raise fail(path, "NAXIS", f"band images differ in shape: {sorted(shapes)}")
        cube = np.stack(planes)
        ivar = None
        if ivars:
            by_band = {str(h.header.get("BAND", h.header.get("FILTER", ""))).strip(): h for h in ivars}
            if set(by_band) >= set(bands):
                ivar = np.stack([image_data(by_band[b], path) for b in bands])
    if cube.dtype.kind != "f":
        raise fail(path, first.name or "PRIMARY", f"dtype {cube.dtype}, expected floating point")
    return bands, cube, ivar, first.header


def scan(path: Path, hdul: fits.HDUList) -> FileScan:
    bands_text, cube, ivar, header = _load(path, hdul)
    bands = images.map_bands("image_ls", bands_text)
    if bands is None:
        raise fail(
            path, "BANDS", f"unknown band names {bands_text}; accepted: g, r, i, z or {list(schema.LS_BANDS)}"
        )
    if len(set(bands)) != len(bands):
        raise fail(path, "BANDS", f"repeated band names {bands_text}")
    if not np.isfinite(cube).any():
        raise fail(path, "PRIMARY", "NaN-only image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=2)
        h, w = cube.shape[-2:]
        ra, dec = wcs.wcs_pix2world([[(w - 1) / 2.0, (h - 1) / 2.0]], 0)[0]
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    except Exception as exc:
        raise fail(path, "CRVAL1", f"no usable celestial WCS in the header: {exc}") from exc
    if not wcs.has_celestial:
        raise fail(path, "CTYPE1", "no celestial WCS (RA---TAN / DEC--TAN) in the header")
    if abs(scale / schema.LS_PIXEL_SCALE - 1) > SCALE_TOLERANCE:
        raise fail(
            path, "CD1_1", f'pixel scale {scale:.4f}"/pix; accepted: {schema.LS_PIXEL_SCALE}"/pix (native)'
        )
    ra_arr, dec_arr = check_positions(path, [ra % 360.0], [dec], "CRVAL1", "CRVAL2")
    oid = idmod.position_id(ra_arr, dec_arr)
    catalog = pd.DataFrame(
        {"object_id": oid, "name": [path.name], "ra": ra_arr, "dec": dec_arr, "kind": ["galaxy"]}
    )

    def read(chunk: int):
        with open_fits(path) as again:
            _, cube2, ivar2, _ = _load(path, again)
        fields = images.standardize(
            "image_ls",
            bands,
            cube2[None],
            images.robust_ivar(cube2[None]) if ivar2 is None else ivar2[None],
            None,
            scale=np.full((1, len(bands)), scale, np.float32),
        )
        yield oid, fields

    scan = FileScan(
        path=path,
        source="image_ls",
        catalog=catalog,
        rows=np.zeros(1, np.int64),
        read_arrays=read,
        kind_label="Legacy Survey cutout FITS",
    )
    if ivar is None:
        scan.notes.append("no inverse-variance HDU: ivar from a robust (MAD) noise estimate per band")
    missing = [b for b in schema.LS_BANDS if b not in bands]
    if missing:
        scan.notes.append(f"bands {missing} absent: written as zeros with ivar 0 and mask False")
    return scan
