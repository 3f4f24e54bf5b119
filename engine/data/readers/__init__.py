"""Readers of real survey files. Each turns one input file into a validated :class:`FileScan`.

``find_inputs(paths, fmt)`` expands folders; ``scan_file(path, fmt)`` validates one file and
tells which kind it is from its content (raising ValidationError naming file and field).
"""

from __future__ import annotations

from pathlib import Path

from engine.data.readers.base import FileScan, fail

FORMATS = ("mmu", "fits", "embeddings")
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fits.fz")
TABLE_SUFFIXES = (".ecsv", ".csv")
HDF5_SUFFIXES = (".hdf5", ".h5")
PARQUET_SUFFIXES = (".parquet", ".pq")


def _suffix_ok(path: Path, suffixes: tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def accepted_suffixes(fmt: str) -> tuple[str, ...]:
    return {
        "mmu": HDF5_SUFFIXES,
        "fits": FITS_SUFFIXES + TABLE_SUFFIXES,
        "embeddings": PARQUET_SUFFIXES,
    }[fmt]


def find_inputs(paths, fmt: str) -> list[Path]:
    """Files named, plus files with the format's suffixes below named folders; sorted, unique.

    Raises ValidationError for a path that does not exist (nothing is read before that).
    """
    if fmt not in FORMATS:
        raise fail("--format", None, f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found.update(q for q in p.rglob("*") if q.is_file() and _suffix_ok(q, accepted_suffixes(fmt)))
        elif p.is_file():
            found.add(p)
        else:
            raise fail(p, None, "no such file or folder")
    return sorted(found, key=lambda q: str(q.resolve()))


def scan_file(path: Path, fmt: str) -> FileScan:
    """Validate ``path`` as format ``fmt`` and return its catalog and array reader."""
    if fmt == "mmu":
        from engine.data.readers import mmu

        return mmu.scan(path)
    if fmt == "fits":
        return _scan_fits(path)
    raise fail(path, None, f"format {fmt!r} has no per-file scan (embeddings are ingested as a table)")


def _scan_fits(path: Path) -> FileScan:
    from engine.data.readers import desi_fits, gaia_xp, legacy_cutout, sdss_fits
    from engine.data.readers.fitsutil import open_fits

    if _suffix_ok(path, TABLE_SUFFIXES):
        return gaia_xp.scan(path)  # the only text tables accepted: it names any missing column
    with open_fits(path) as hdul:
        if sdss_fits.looks_like(hdul):
            return sdss_fits.scan(path, hdul)
        if desi_fits.looks_like(hdul):
            return desi_fits.scan(path, hdul)
        for h in hdul:
            if hasattr(h, "columns") and gaia_xp.looks_like_table(h.columns.names):
                return gaia_xp.scan(path, None)
        if legacy_cutout.looks_like(hdul):
            return legacy_cutout.scan(path, hdul)
    raise fail(
        path,
        None,
        "unrecognised FITS content; accepted: SDSS spec (COADD+SPECOBJ HDUs), DESI coadd (FIBERMAP + "
        "B/R/Z_FLUX), Legacy Survey cutout (image cube with BANDS), Gaia XP table (bp/rp_coefficients)",
    )


__all__ = ["FORMATS", "FileScan", "find_inputs", "scan_file"]
