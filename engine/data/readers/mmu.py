"""Multimodal Universe (MMU) HDF5 files, as the MMU builder scripts write them.

Files live under ``<survey>/healpix=<N>/001-of-001.hdf5``: one dataset per catalog column or
per-object array, all with the object axis first. Which survey a file holds is read from
its content, not its name:

* ``coeff`` (N, 110) -> Gaia XP (``scripts/gaia/merge_parts.py``: 55 BP then 55 RP
  coefficients, ``coeff_error`` alike, ids in ``source_id``, GaiaSource columns beside).
* ``spectrum_flux`` -> SDSS when the SDSS columns (PLATE/MJD/FIBERID, PLUG_RA, SPECOBJID)
  are there or the wavelength grid is log-linear, else DESI (``scripts/sdss``,
  ``scripts/desi``: spectrum_flux/ivar/lambda/mask, SDSS padded with lambda -1).
* ``image_array`` -> Legacy Survey or HSC by ``image_band`` ('des-g'... or 'hsc-g'...;
  ``scripts/legacysurvey``: (N, 4, 160, 160), string object_id BRICKNAME-OBJID, ``bit_mask``
  (older files ``image_mask``), sweep columns in upper case; ``scripts/hsc``: (N, 5, 144, 144),
  int64 object_id, no ivar or mask, catalog columns ``g_cmodel_mag``, ``a_g``, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from engine.data import schema
from engine.data.readers import columns as cols
from engine.data.readers import ids as idmod
from engine.data.readers import images, spectra
from engine.data.readers.base import (
    CHUNK,
    FileScan,
    check_positions,
    check_unique_ids,
    fail,
)

SDSS_HINT_COLUMNS = ("PLATE", "MJD", "FIBERID", "PLUG_RA", "SPECOBJID")


def find_files(path: Path) -> list[Path]:
    """A file, or every ``*.hdf5`` / ``*.h5`` below a folder (sorted, so runs are repeatable)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".hdf5", ".h5"))
    return [path]


class _File:
    """Read helpers over an open MMU file that turn every problem into a one-line error."""

    def __init__(self, path: Path, handle: h5py.File):
        self.path = path
        self.h = handle
        self.names = [k for k in handle if isinstance(handle[k], h5py.Dataset)]

    def has(self, *names: str) -> str | None:
        return cols.find(self.names, *names)

    def dataset(self, name: str) -> h5py.Dataset:
        return self.h[name]

    def read(self, name: str, sel=slice(None)) -> np.ndarray:
        try:
            return self.h[name][sel]
        except (OSError, ValueError, TypeError) as exc:
            raise fail(self.path, name, f"cannot read (truncated or corrupt?): {exc}") from exc

    def column(self, n: int, *names: str, required: bool = True, numeric: bool = False) -> np.ndarray | None:
        name = self.has(*names)
        if name is None:
            if required:
                raise fail(self.path, names[0], f"missing; expected one of {list(names)}")
            return None
        ds = self.h[name]
        if ds.shape[:1] != (n,) or ds.ndim != 1:
            raise fail(self.path, name, f"shape {ds.shape}, expected ({n},) (one value per object)")
        if numeric and ds.dtype.kind not in "iuf":
            raise fail(self.path, name, f"dtype {ds.dtype}, expected a number")
        return self.read(name)

    def getter(self, n: int):
        def get(name: str):
            return self.column(n, name, required=False, numeric=True) if self.has(name) else None

        return get


def scan(path: Path) -> FileScan:
    """Validate one MMU file and return its catalog; raises ValidationError naming file and field."""
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise fail(path, None, f"cannot open as HDF5 (truncated or not an HDF5 file?): {exc}") from exc
    with handle:
        f = _File(path, handle)
        if f.has("coeff"):
            return _scan_gaia(f)
        if f.has("spectrum_flux"):
            return _scan_spectrum(f)
        if f.has("image_array"):
            return _scan_image(f)
        raise fail(
            path,
            None,
            "not a Multimodal Universe file: none of 'image_array', 'spectrum_flux', 'coeff' found",
        )


# --- ids -----------------------------------------------------------------------------------


def _int_or_text_ids(f: _File, names: tuple[str, ...], n: int) -> tuple[np.ndarray, list[str]]:
    raw = f.column(n, *names)
    name = f.has(*names)
    if raw.dtype.kind in "iu":
        ids = raw.astype(np.int64)
        return ids, [str(i) for i in ids]
    if raw.dtype.kind in "SOU":
        text = idmod.as_text(raw)
        parsed = []
        for t in text:
            if t.lstrip("-").isdigit() and -(2**63) <= int(t) < 2**63:
                parsed.append(int(t))
            else:
                return idmod.text_id(text), text
        return np.array(parsed, dtype=np.int64), text
    raise fail(f.path, name, f"dtype {raw.dtype}, expected an integer or string id")


def _positions(f: _File, n: int, ra_names=("ra", "RA"), dec_names=("dec", "DEC")):
    ra = f.column(n, *ra_names, numeric=True)
    dec = f.column(n, *dec_names, numeric=True)
    return check_positions(f.path, ra, dec, f.has(*ra_names), f.has(*dec_names))


def _finite_rows(f: _File, name: str, n: int) -> np.ndarray:
    """Objects whose ``name`` array has a finite value, read in chunks; error if none."""
    good = np.zeros(n, bool)
    for start in range(0, n, CHUNK):
        block = np.asarray(f.read(name, slice(start, start + CHUNK)), dtype=np.float64)
        good[start : start + len(block)] = np.isfinite(block.reshape(len(block), -1)).any(axis=1)
    if n and not good.any():
        raise fail(f.path, name, f"all {n} objects are NaN-only")
    return good


def _catalog(ids, names, ra, dec, kind, scalars, keep) -> pd.DataFrame:
    frame = pd.DataFrame({"object_id": ids, "name": names, "ra": ra, "dec": dec, "kind": kind, **scalars})
    return frame.loc[keep].reset_index(drop=True)


def _float_array(f: _File, name: str, ndim: int, n: int, tail: tuple | None = None) -> h5py.Dataset:
    ds = f.dataset(name)
    if ds.ndim != ndim or ds.shape[0] != n:
        raise fail(f.path, name, f"shape {ds.shape}, expected {ndim} axes with {n} objects first")
    if n == 0:
        raise fail(f.path, name, "holds no objects")
    if tail is not None and ds.shape[1:] != tail:
        raise fail(f.path, name, f"shape {ds.shape}, expected (n, {', '.join(map(str, tail))})")
    if ds.dtype.kind not in "f":
        raise fail(f.path, name, f"dtype {ds.dtype}, expected floating point")
    return ds


# --- images (MMU bit_mask / image_mask are clean-pixel maps: True = usable) ---------------


def _scan_image(f: _File) -> FileScan:
    arr = f.dataset("image_array")
    if arr.ndim != 4:
        raise fail(f.path, "image_array", f"shape {arr.shape}, expected (n, bands, height, width)")
    n, nb = arr.shape[:2]
    _float_array(f, "image_array", 4, n)
    if not f.has("image_band"):
        raise fail(f.path, "image_band", "missing; needed to know which survey's bands these are")
    band_ds = f.dataset("image_band")
    raw_bands = f.read("image_band", 0 if band_ds.ndim == 2 else slice(None))
    bands_text = idmod.as_text(raw_bands)
    if len(bands_text) != nb:
        raise fail(f.path, "image_band", f"{len(bands_text)} band names for {nb} image planes")
    source = images.detect_image_source(bands_text)
    if source is None:
        accepted = [*schema.LS_BANDS, *schema.HSC_BANDS]
        raise fail(f.path, "image_band", f"unknown band names {bands_text}; accepted: {accepted} (any case)")
    bands = images.map_bands(source, bands_text)
    if len(set(bands)) != len(bands):
        raise fail(f.path, "image_band", f"repeated band names {bands_text}")
    if band_ds.ndim == 2 and n > 1:  # every object must list the same bands in the same order
        all_bands = f.read("image_band")
        if not (all_bands == all_bands[0]).all():
            raise fail(f.path, "image_band", "band order differs between objects")
    ivar_name = f.has("image_ivar")
    if ivar_name:
        _float_array(f, ivar_name, 4, n, tuple(arr.shape[1:]))
    elif source == "image_ls":
        raise fail(f.path, "image_ivar", "missing; Legacy Survey MMU files carry inverse variances")
    mask_name = f.has("image_mask", "bit_mask")
    if mask_name:
        mds = f.dataset(mask_name)
        if mds.shape not in ((n, *arr.shape[2:]), tuple(arr.shape)):
            raise fail(f.path, mask_name, f"shape {mds.shape}, expected {(n, *arr.shape[2:])} or {arr.shape}")
    for opt in ("image_psf_fwhm", "image_scale"):
        if f.has(opt) and f.dataset(opt).shape != (n, nb):
            raise fail(f.path, opt, f"shape {f.dataset(opt).shape}, expected {(n, nb)}")

    if source == "image_ls":
        release, brickid, objid = (f.column(n, c, required=False) for c in ("RELEASE", "BRICKID", "OBJID"))
        text = idmod.as_text(f.column(n, "object_id")) if f.has("object_id") else None
        if release is not None and brickid is not None and objid is not None:
            ids = idmod.ls_id(release, brickid, objid)
            names = text if text is not None else [str(i) for i in ids]
        else:
            ids, names = _int_or_text_ids(f, ("object_id",), n)
        kind = (
            cols.kind_from_ls_type(f.column(n, "TYPE")) if f.has("TYPE") else np.array(["galaxy"] * n, object)
        )
    else:
        ids, names = _int_or_text_ids(f, ("object_id",), n)
        ext = f.column(n, "i_extendedness_value", required=False, numeric=True)
        kind = (
            np.where(ext == 0, "star", "galaxy").astype(object)
            if ext is not None
            else np.array(["galaxy"] * n, object)
        )
    check_unique_ids(f.path, "object_id", ids)
    ra, dec = _positions(f, n)
    scalars = cols.scalar_columns(source, f.getter(n))
    keep = _finite_rows(f, "image_array", n)
    variance = None
    if source == "image_hsc" and not ivar_name:
        found = [f.column(n, f"{b}_variance_value", required=False, numeric=True) for b in "grizy"]
        if all(v is not None for v in found):
            variance = np.stack(found, axis=1)  # (n, 5) in schema band order
    rows = np.flatnonzero(keep)
    scan = FileScan(
        path=f.path,
        source=source,
        catalog=_catalog(ids, names, ra, dec, kind, scalars, keep),
        rows=rows,
        read_arrays=lambda chunk: _read_images(
            f.path, source, bands, ids, rows, ivar_name, mask_name, variance, chunk
        ),
        n_skipped=int(n - keep.sum()),
        kind_label=f"MMU {'Legacy Survey' if source == 'image_ls' else 'HSC'} images",
    )
    if source == "image_hsc" and not ivar_name:
        scan.notes.append(
            "no image_ivar: ivar from the catalog's local variance (x_variance_value)"
            if variance is not None
            else "no image_ivar: ivar from a robust (MAD) noise estimate per cutout and band"
        )
    return scan


def take(ds: h5py.Dataset, sel: np.ndarray) -> np.ndarray:
    """Rows ``sel`` (sorted) of ``ds``: one contiguous slice read, then a cheap in-memory pick
    (h5py's point selection is slow for long index lists)."""
    block = ds[int(sel[0]) : int(sel[-1]) + 1]
    return block[sel - sel[0]]


def _read_images(path, source, bands, ids, rows, ivar_name, mask_name, variance, chunk) -> Iterator:
    with h5py.File(path, "r") as h:
        psf = h.get("image_psf_fwhm")
        scale = h.get("image_scale")
        for start in range(0, len(rows), chunk):
            sel = rows[start : start + chunk]
            array = take(h["image_array"], sel)
            if ivar_name:
                ivar = take(h[ivar_name], sel)
            elif variance is not None:
                order = [schema.HSC_BANDS.index(b) for b in bands]
                with np.errstate(divide="ignore"):
                    per_band = np.where(variance[sel][:, order] > 0, 1.0 / variance[sel][:, order], 0.0)
                ivar = np.broadcast_to(per_band[..., None, None], array.shape).astype(np.float32)
            else:
                ivar = images.robust_ivar(array)
            mask = take(h[mask_name], sel) if mask_name else None
            fields = images.standardize(
                source,
                bands,
                array,
                ivar,
                mask,
                take(psf, sel) if psf is not None else None,
                take(scale, sel) if scale is not None else None,
            )
            yield ids[sel], fields


# --- spectra -------------------------------------------------------------------------------


def _is_log_grid(wave: np.ndarray) -> bool:
    w = wave[np.isfinite(wave) & (wave > 0)]
    if len(w) < 3:
        return False
    d = np.diff(w)
    dl = np.diff(np.log10(w))
    return bool(np.std(dl) / abs(np.mean(dl)) < np.std(d) / abs(np.mean(d)))


def _scan_spectrum(f: _File) -> FileScan:
    flux = f.dataset("spectrum_flux")
    if flux.ndim != 2:
        raise fail(f.path, "spectrum_flux", f"shape {flux.shape}, expected (n, pixels)")
    n, length = flux.shape
    _float_array(f, "spectrum_flux", 2, n)
    for name in ("spectrum_ivar", "spectrum_lambda"):
        if not f.has(name):
            raise fail(f.path, name, "missing")
    _float_array(f, "spectrum_ivar", 2, n, (length,))
    lam = f.dataset("spectrum_lambda")
    if lam.shape not in ((n, length), (length,)):
        raise fail(f.path, "spectrum_lambda", f"shape {lam.shape}, expected {(n, length)} or {(length,)}")
    if f.has("spectrum_mask") and f.dataset("spectrum_mask").shape != (n, length):
        raise fail(
            f.path, "spectrum_mask", f"shape {f.dataset('spectrum_mask').shape}, expected {(n, length)}"
        )
    first_wave = np.asarray(f.read("spectrum_lambda", 0 if lam.ndim == 2 else slice(None)), np.float64)
    if not np.isfinite(first_wave).any() or np.nanmax(first_wave) <= 0:
        raise fail(f.path, "spectrum_lambda", "no positive wavelengths")
    is_sdss = any(f.has(c) for c in SDSS_HINT_COLUMNS) or (not f.has("TARGETID") and _is_log_grid(first_wave))
    source = "spectrum_sdss" if is_sdss else "spectrum_desi"
    if is_sdss and all(f.has(c) for c in ("PLATE", "MJD", "FIBERID")):
        ids = idmod.sdss_id(*(f.column(n, c, numeric=True) for c in ("PLATE", "MJD", "FIBERID")))
        names = [
            f"{p}-{m}-{fb}"
            for p, m, fb in zip(*(f.column(n, c) for c in ("PLATE", "MJD", "FIBERID")), strict=True)
        ]
    else:
        ids, names = _int_or_text_ids(f, ("object_id", "TARGETID", "SPECOBJID"), n)
    check_unique_ids(f.path, "object_id", ids)
    if is_sdss:
        ra, dec = _positions(f, n, ("ra", "PLUG_RA"), ("dec", "PLUG_DEC"))
    else:
        ra, dec = _positions(f, n, ("ra", "TARGET_RA"), ("dec", "TARGET_DEC"))
    cls = f.column(n, "CLASS" if is_sdss else "SPECTYPE", required=False)
    kind = cols.kind_from_class(cls) if cls is not None else np.array(["galaxy"] * n, object)
    scalars = cols.scalar_columns(source, f.getter(n))
    keep = _finite_rows(f, "spectrum_flux", n)
    rows = np.flatnonzero(keep)
    grid = schema.sdss_wavelength() if is_sdss else schema.desi_wavelength()
    scan = FileScan(
        path=f.path,
        source=source,
        catalog=_catalog(ids, names, ra, dec, kind, scalars, keep),
        rows=rows,
        read_arrays=lambda chunk: _read_spectra(f.path, ids, rows, grid, is_sdss, chunk),
        n_skipped=int(n - keep.sum()),
        kind_label=f"MMU {'SDSS' if is_sdss else 'DESI'} spectra",
    )
    if length != len(grid):
        scan.notes.append(f"{length}-pixel spectra resampled onto the {len(grid)}-pixel schema grid")
    elif f.has("spectrum_lsf_sigma") and f.dataset("spectrum_lsf_sigma").shape == (n, length):
        scan.optional_fields = frozenset({"spectrum_lsf_sigma"})
    return scan


def _read_spectra(path, ids, rows, grid, is_sdss, chunk) -> Iterator:
    with h5py.File(path, "r") as h:
        lam = h["spectrum_lambda"]
        for start in range(0, len(rows), chunk):
            sel = rows[start : start + chunk]
            flux = take(h["spectrum_flux"], sel)
            ivar = take(h["spectrum_ivar"], sel)
            wave = take(lam, sel) if lam.ndim == 2 else lam[...]
            bad = (
                take(h["spectrum_mask"], sel).astype(bool)
                if "spectrum_mask" in h
                else np.zeros(flux.shape, bool)
            )
            wave = np.asarray(wave, np.float64)
            bad = bad | (np.broadcast_to(wave, flux.shape) <= 0)  # MMU SDSS pads with lambda = -1
            fields = spectra.on_grid(wave, flux, ivar, bad, grid, log=is_sdss)
            lsf = h.get("spectrum_lsf_sigma")
            if lsf is not None and lsf.shape == h["spectrum_flux"].shape and flux.shape[1] == len(grid):
                fields["spectrum_lsf_sigma"] = take(lsf, sel).astype(np.float32)  # kept on its own grid only
            yield ids[sel], fields


# --- Gaia ----------------------------------------------------------------------------------


def _scan_gaia(f: _File) -> FileScan:
    coeff = f.dataset("coeff")
    n = coeff.shape[0]
    _float_array(f, "coeff", 2, n, (2 * schema.XP_N_COEFF,))
    if not f.has("coeff_error"):
        raise fail(f.path, "coeff_error", "missing")
    _float_array(f, "coeff_error", 2, n, (2 * schema.XP_N_COEFF,))
    id_name = f.has("source_id", "object_id")
    if id_name is None:
        raise fail(f.path, "source_id", "missing")
    raw = f.column(n, id_name)
    if raw.dtype.kind not in "iu":
        raise fail(f.path, id_name, f"dtype {raw.dtype}, expected int64 Gaia source_id")
    ids = raw.astype(np.int64)
    check_unique_ids(f.path, id_name, ids)
    ra, dec = _positions(f, n)
    probs = {
        f"classprob_dsc_combmod_{k}": f.column(n, f"classprob_dsc_combmod_{k}", required=False, numeric=True)
        for k in ("star", "quasar", "galaxy")
    }
    kind = cols.kind_from_gaia({k: v for k, v in probs.items() if v is not None}, n)
    scalars = cols.scalar_columns("xp_gaia", f.getter(n))
    keep = _finite_rows(f, "coeff", n)
    rows = np.flatnonzero(keep)
    return FileScan(
        path=f.path,
        source="xp_gaia",
        catalog=_catalog(ids, [str(i) for i in ids], ra, dec, kind, scalars, keep),
        rows=rows,
        read_arrays=lambda chunk: _read_gaia(f.path, ids, rows, chunk),
        n_skipped=int(n - keep.sum()),
        kind_label="MMU Gaia XP",
    )


def _read_gaia(path, ids, rows, chunk) -> Iterator:
    with h5py.File(path, "r") as h:
        for start in range(0, len(rows), chunk):
            sel = rows[start : start + chunk]
            yield (
                ids[sel],
                {
                    "coeff": take(h["coeff"], sel).astype(np.float32),
                    "coeff_error": take(h["coeff_error"], sel).astype(np.float32),
                },
            )
