"""Validate an uploaded FITS cutout or spectrum before it reaches the engine.

Uploads are written only inside a fresh temporary folder (never next to the dataset), checked
for size, extension and FITS structure, and the error names the file and what is accepted.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from app.messages import AppMessage

ACCEPTED = (".fits", ".fit", ".fts", ".fits.gz")


def _safe_name(name: str) -> str:
    base = Path(name).name
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in base) or "upload.fits"


def validate_upload(name: str, data: bytes, max_bytes: int) -> tuple[Path, str]:
    """Write ``data`` to a temporary folder and return (path, kind) with kind 'image' | 'spectrum'.

    Raises AppMessage naming the file when it is too big, has another extension, is not FITS, or
    holds neither an image (2-D or bands x 2-D) nor a spectrum (a table with wavelength and flux).
    """
    if len(data) > max_bytes:
        raise AppMessage(f"{name!r} is {len(data) / 1e6:.1f} MB; uploads are limited to {max_bytes / 1e6:.0f} MB", "danger")
    if not name.lower().endswith(ACCEPTED):
        raise AppMessage(f"{name!r} is not a FITS file; accepted extensions: {', '.join(ACCEPTED)}", "danger")
    kind = fits_kind(name, data)
    folder = Path(tempfile.mkdtemp(prefix="aion-upload-"))
    path = folder / _safe_name(name)
    path.write_bytes(data)
    return path, kind


def _is_image(hdu) -> bool:
    from astropy.io import fits

    if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU) or hdu.data is None:
        return False
    data = hdu.data
    return data.ndim in (2, 3) and min(data.shape[-2:]) >= 16 and bool(np.isfinite(data).any())


def fits_kind(name: str, data: bytes) -> str:
    """'image' or 'spectrum' for a valid upload; AppMessage otherwise (never unpickles anything)."""
    from astropy.io import fits

    try:
        with fits.open(io.BytesIO(data), memmap=False) as hdus:
            hdus.verify("exception")
            for hdu in hdus:
                if _is_image(hdu):
                    return "image"
                if isinstance(hdu, fits.BinTableHDU) and hdu.data is not None:
                    cols = {c.lower() for c in hdu.columns.names}
                    if cols & {"flux", "spectrum_flux"} and cols & {"wavelength", "lambda", "loglam", "spectrum_lambda"}:
                        return "spectrum"
    except AppMessage:
        raise
    except Exception as exc:  # astropy raises OSError/ValueError/VerifyError for broken files
        raise AppMessage(f"{name!r} is not a valid FITS file ({type(exc).__name__}: {exc})", "danger") from exc
    raise AppMessage(
        f"{name!r} holds no usable data: expected an image HDU (H x W or bands x H x W, at least 16 px) "
        f"or a table with wavelength and flux columns",
        "danger",
    )
