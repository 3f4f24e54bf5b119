"""Stable int64 object ids for surveys whose own ids are not int64.

Survey ids that are already int64 (DESI TARGETID, Gaia source_id, HSC object_id) are kept
as they are. The others get an id derived only from the survey's own identifiers, so the
same object always gets the same id and re-ingesting gives the same dataset:

* Legacy Survey: the survey's own ``LS_ID = RELEASE << 40 | BRICKID << 16 | OBJID`` when
  those columns exist, else a hash of the ``BRICKNAME-OBJID`` string (MMU's object_id).
* SDSS: ``PLATE * 10**10 + MJD * 10**4 + FIBERID`` (readable: 266-51602-1 -> 2660516020001).
* Anything else named by text (e.g. a cutout's file name): the hash range below.
* Cutouts with no id: the position rounded to 1e-6 deg, packed into the position range.

Hash and position ids set bit 62 / bit 61 so they never collide with the ranges above
(LS_ID < 2**56, SDSS < 10**15 < 2**50; Gaia and DESI ids fit below 2**61).
"""

from __future__ import annotations

import hashlib

import numpy as np

HASH_BIT = np.int64(1 << 62)
POSITION_BIT = np.int64(1 << 61)


def ls_id(release, brickid, objid) -> np.ndarray:
    """The Legacy Survey's LS_ID (DR9/DR10 convention)."""
    release = np.asarray(release, dtype=np.int64)
    brickid = np.asarray(brickid, dtype=np.int64)
    objid = np.asarray(objid, dtype=np.int64)
    return (release << 40) | (brickid << 16) | objid


def sdss_id(plate, mjd, fiber) -> np.ndarray:
    plate = np.asarray(plate, dtype=np.int64)
    mjd = np.asarray(mjd, dtype=np.int64)
    fiber = np.asarray(fiber, dtype=np.int64)
    return plate * 10**10 + mjd * 10**4 + fiber


def text_id(names) -> np.ndarray:
    """A stable id per string: blake2b-64 of the UTF-8 text, into the hash range."""
    out = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        digest = hashlib.blake2b(str(name).strip().encode(), digest_size=8).digest()
        out[i] = (int.from_bytes(digest, "little") & ((1 << 61) - 1)) | int(HASH_BIT)
    return out


def position_id(ra, dec) -> np.ndarray:
    """Position rounded to 1e-6 deg (~4 mas): ra in 29 bits, dec + 90 in 28 bits."""
    ra_u = np.round(np.asarray(ra, dtype=np.float64) % 360.0 * 1e6).astype(np.int64) % (360 * 10**6)
    dec_u = np.round((np.asarray(dec, dtype=np.float64) + 90.0) * 1e6).astype(np.int64)
    return (ra_u << 28) | dec_u | POSITION_BIT


def as_text(values) -> list[str]:
    """Decode an HDF5/FITS string column (bytes or str) to a list of stripped str."""
    out = []
    for v in np.asarray(values).ravel():
        out.append(v.decode("utf-8", "replace").strip() if isinstance(v, bytes) else str(v).strip())
    return out
