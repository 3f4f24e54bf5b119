"""New data as a query: read a FITS image cutout or spectrum, validate it, and wrap it as a
one-object dataset so the encoder sees it exactly as it sees indexed objects.

Accepted files (``astropy.io.fits``):

- **image cutout**: the first image HDU with data, shaped (bands, H, W) (or (H, W) for one
  band), H and W >= 32 (centre-cropped or padded to 96). Band names from header ``BANDS``
  (comma-separated, e.g. ``g,r,i,z`` or ``HSC-G,...``), else ``BAND0``, ``BAND1``...,
  else ``FILTER`` for one band; with none of them, 4 planes mean Legacy Survey g,r,i,z and
  5 mean HSC g,r,i,z,y. An optional ``IVAR`` HDU of the same shape gives inverse variances.
- **spectrum**: a binary table HDU with a wavelength column (``wave``/``wavelength``/
  ``lambda`` in Angstrom, or ``loglam`` = log10 Angstrom), ``flux`` and optionally ``ivar``
  (or ``error``/``sigma``). It is resampled onto the survey grid of ``spectrum_source``.

Header ``RA``/``DEC`` (deg) are used for the query's position when present.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data import schema
from engine.errors import ValidationError

QUERY_OBJECT_ID = -1
MIN_IMAGE_SIZE = 32


@dataclass
class QueryObject:
    source: str  # array source the data go to (image_ls, spectrum_desi, ...)
    fields: dict[str, np.ndarray]  # schema fields, leading axis of length 1
    ra: float
    dec: float
    path: Path

    @property
    def modality(self) -> str:
        return "image" if self.source.startswith("image") else "spectrum"

    def to_dataset(self, folder: str | os.PathLike):
        """Write a one-object dataset (object id -1) under ``folder`` and open it."""
        from engine.data.store import open_dataset
        from engine.data.writer import DatasetWriter

        out = Path(folder) / "query"
        with DatasetWriter(out, overwrite=True) as w:
            w.append(self.source, np.array([QUERY_OBJECT_ID], np.int64), **self.fields)
            cat = pd.DataFrame({"object_id": [QUERY_OBJECT_ID], "ra": [self.ra], "dec": [self.dec], "kind": ["galaxy"]})
            w.commit(cat, {"name": "query", "provenance": {"query_file": str(self.path)}})
        return open_dataset(out)


def _fail(path: Path, field: str | None, msg: str) -> ValidationError:
    where = f"{path}" + (f" [{field}]" if field else "")
    return ValidationError(f"{where}: {msg}")


def _header_bands(header, n: int) -> list[str] | None:
    if "BANDS" in header:
        return [b.strip() for b in str(header["BANDS"]).split(",") if b.strip()]
    keyed = [str(header[f"BAND{i}"]).strip() for i in range(n) if f"BAND{i}" in header]
    if len(keyed) == n:
        return keyed
    if n == 1 and "FILTER" in header:
        return [str(header["FILTER"]).strip()]
    return None


def _position(header) -> tuple[float, float]:
    for ra_key, dec_key in (("RA", "DEC"), ("RA_OBJ", "DEC_OBJ"), ("CRVAL1", "CRVAL2")):
        if ra_key in header and dec_key in header:
            try:
                return float(header[ra_key]), float(header[dec_key])
            except (TypeError, ValueError):
                continue
    return float("nan"), float("nan")


def read_image_cutout(path: Path, hdul) -> QueryObject:
    from engine.data.readers.images import detect_image_source, map_bands, standardize

    img_hdu = next((h for h in hdul if getattr(h, "is_image", False) and h.data is not None and h.name != "IVAR"), None)
    if img_hdu is None:
        raise _fail(path, None, "no image HDU with data; expected a (bands, H, W) cutout")
    data = np.asarray(img_hdu.data, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise _fail(path, img_hdu.name, f"image has shape {data.shape}; expected (bands, H, W) or (H, W)")
    n_bands, h, w = data.shape
    if h < MIN_IMAGE_SIZE or w < MIN_IMAGE_SIZE:
        raise _fail(path, img_hdu.name, f"cutout is {h}x{w} pixels; at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} needed")
    if not np.isfinite(data).any():
        raise _fail(path, img_hdu.name, "image has no finite pixel")
    header = hdul[0].header.copy()
    header.update(img_hdu.header)
    bands = _header_bands(header, n_bands)
    if bands is None:
        defaults = {len(schema.LS_BANDS): list(schema.LS_BANDS), len(schema.HSC_BANDS): list(schema.HSC_BANDS)}
        if n_bands not in defaults:
            raise _fail(path, "BANDS", f"{n_bands} image planes and no BANDS/BANDn header; name the bands "
                        f"(accepted: {', '.join(schema.LS_BANDS)} or {', '.join(schema.HSC_BANDS)})")
        bands = defaults[n_bands]
    if len(bands) != n_bands:
        raise _fail(path, "BANDS", f"{len(bands)} band names {bands!r} for {n_bands} image planes")
    source = detect_image_source(bands)
    if source is None:
        raise _fail(path, "BANDS", f"bands {bands!r} unknown; accepted: {', '.join(schema.LS_BANDS)} "
                    f"(or g,r,i,z) or {', '.join(schema.HSC_BANDS)}")
    ivar = None
    ivar_hdu = next((h for h in hdul if h.name == "IVAR"), None)
    if ivar_hdu is not None:
        ivar = np.asarray(ivar_hdu.data, dtype=np.float32).reshape(-1, h, w)
        if ivar.shape != data.shape:
            raise _fail(path, "IVAR", f"shape {ivar.shape} differs from the image {data.shape}")
        ivar = ivar[None]
    fields = standardize(source, map_bands(source, bands), data[None], ivar, None)
    # image_mask as the mock survey and engine.model read it: True = bad pixel (no ivar)
    fields["image_mask"] = ~(fields["image_ivar"] > 0)
    ra, dec = _position(header)
    return QueryObject(source, fields, ra, dec, path)


def read_spectrum(path: Path, hdul, spectrum_source: str) -> QueryObject:
    from engine.data.readers.spectra import on_grid

    table = next((h for h in hdul if h.is_image is False and h.data is not None), None)
    if table is None:
        raise _fail(path, None, "no table HDU; expected columns wave/loglam, flux[, ivar]")
    cols = {c.lower(): c for c in table.columns.names}

    def col(*names: str):
        for n in names:
            if n in cols:
                return np.asarray(table.data[cols[n]], dtype=np.float64).ravel()
        return None

    flux = col("flux")
    if flux is None:
        raise _fail(path, "flux", f"missing column; table {table.name!r} has {table.columns.names}")
    wave = col("wave", "wavelength", "lambda")
    if wave is None:
        loglam = col("loglam")
        if loglam is None:
            raise _fail(path, "wave", "missing wavelength column; expected wave, wavelength, lambda or loglam")
        wave = 10.0**loglam
    if len(wave) != len(flux) or len(flux) < 10:
        raise _fail(path, "flux", f"{len(flux)} flux values for {len(wave)} wavelengths (need >= 10, equal lengths)")
    ivar = col("ivar")
    if ivar is None:
        err = col("error", "sigma", "flux_err")
        ivar = np.where(err > 0, 1.0 / np.where(err > 0, err, 1.0) ** 2, 0.0) if err is not None else np.ones_like(flux)
    if spectrum_source == "spectrum_desi":
        grid, log = schema.desi_wavelength(), False
    elif spectrum_source == "spectrum_sdss":
        grid, log = schema.sdss_wavelength(), True
    else:
        raise _fail(path, None, f"spectrum source {spectrum_source!r}; accepted: spectrum_desi, spectrum_sdss")
    overlap = (wave >= grid[0]) & (wave <= grid[-1]) & np.isfinite(flux)
    if overlap.sum() < 10:
        raise _fail(path, "wave", f"wavelengths {np.nanmin(wave):.0f}-{np.nanmax(wave):.0f} A barely overlap the "
                    f"{spectrum_source} grid {grid[0]:.0f}-{grid[-1]:.0f} A")
    fields = on_grid(wave, flux[None], ivar[None], ~np.isfinite(flux)[None], grid, log=log)
    header = hdul[0].header.copy()
    header.update(table.header)
    ra, dec = _position(header)
    return QueryObject(spectrum_source, fields, ra, dec, path)


def read_query_file(path: str | os.PathLike, *, spectrum_source: str = "spectrum_desi") -> QueryObject:
    """Read a FITS cutout or spectrum (whichever the file holds); one-line errors name file and field."""
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"{path}: query file does not exist")
    try:
        with fits.open(path, mode="readonly", memmap=False) as hdul:
            hdul.verify("silentfix")
            has_table = any(h.is_image is False and h.data is not None for h in hdul)
            if has_table:
                return read_spectrum(path, hdul, spectrum_source)
            return read_image_cutout(path, hdul)
    except ValidationError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise ValidationError(f"{path}: cannot read as FITS (truncated or corrupt?): {exc}") from exc


def encode_query_file(path: str | os.PathLike, encoder, *, spectrum_source: str = "spectrum_desi") -> tuple[np.ndarray, QueryObject]:
    """Encode a query file with ``encoder``; returns the (dim,) vector and what was read."""
    query = read_query_file(path, spectrum_source=spectrum_source)
    with tempfile.TemporaryDirectory(prefix="aion-query-") as tmp:
        ds = query.to_dataset(tmp)
        try:
            vec, ok = encoder(ds, np.array([QUERY_OBJECT_ID], np.int64))
        finally:
            ds.close()
    if not bool(np.asarray(ok)[0]):
        raise ValidationError(f"{path}: the encoder could not use this {query.modality} for its view")
    return np.asarray(vec, np.float32)[0], query
