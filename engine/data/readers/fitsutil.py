"""Shared FITS helpers: open read-only with memmap, find HDUs and columns, one-line errors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from engine.data.readers.base import fail
from engine.data.readers.columns import find


def open_fits(path: Path) -> fits.HDUList:
    """Open read-only, memory-mapped. Every header is parsed now and the file must be as long
    as its headers say, so a truncated file fails here in one line instead of half-way
    through the ingest (checked from the headers' data spans: parsing every table here would
    cost more than the rest of the read)."""
    hdul = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            warnings.simplefilter("error", AstropyUserWarning)  # "File may have been truncated"
            hdul = fits.open(path, mode="readonly", memmap=True, lazy_load_hdus=False)
            size = os.path.getsize(path)
            for i, h in enumerate(hdul):
                info = hdul.fileinfo(i)  # datSpan: the bytes the header says follow (padded)
                if info["datLoc"] + info["datSpan"] > size:
                    raise OSError(
                        f"HDU {i} ({h.name}) ends at byte {info['datLoc'] + info['datSpan']}, file has {size}"
                    )
    except Exception as exc:  # astropy raises OSError, ValueError, warnings, ... for damaged files
        if hdul is not None:
            hdul.close()
        raise fail(path, None, f"cannot open as FITS (truncated or corrupt?): {exc}") from exc
    return hdul


def hdu(hdul: fits.HDUList, path: Path, name: str, required: bool = True):
    for h in hdul:
        if h.name.upper() == name.upper():
            return h
    if required:
        names = [h.name for h in hdul]
        raise fail(path, name, f"missing HDU; file has {names}")
    return None


def table_data(h, path: Path):
    try:
        data = h.data
    except Exception as exc:
        raise fail(path, h.name, f"cannot read table (truncated or corrupt?): {exc}") from exc
    if data is None:
        raise fail(path, h.name, "HDU holds no data")
    return data


def column(data, path: Path, *names: str, required: bool = True, numeric: bool = True):
    name = find(data.columns.names if hasattr(data, "columns") else data.dtype.names, *names)
    if name is None:
        if required:
            raise fail(path, names[0], f"missing column; expected one of {list(names)}")
        return None
    try:
        values = np.array(data[name])
    except Exception as exc:
        raise fail(path, name, f"cannot read column (truncated or corrupt?): {exc}") from exc
    if numeric and values.dtype.kind not in "iuf":
        raise fail(path, name, f"dtype {values.dtype}, expected a number")
    return values


def image_data(h, path: Path) -> np.ndarray:
    try:
        data = h.data
    except Exception as exc:
        raise fail(path, h.name, f"cannot read image (truncated or corrupt?): {exc}") from exc
    if data is None:
        raise fail(path, h.name, "HDU holds no data")
    return np.asarray(data)
