"""Turn real survey files into a dataset with the same contract as the mock survey.

Nothing is written from a bad file, a large input never sits in memory, and a crash loses
at most the file being read:

1. **scan** every input file (validate structure, dtypes, shapes, bands, ids, NaN-only
   arrays). A bad file is reported in one line naming file and field, counted and skipped;
   a file repeating ids already read from another file of the same survey is bad too.
2. **cross-match** the good files' catalogs (one row per object, several modalities).
3. **stage** the files' standardised arrays as part files (:mod:`readers.parts`; a large
   file per part, runs of small files together); parts of an interrupted run with the same
   inputs are reused, so a re-run resumes.
4. **write**: stream the parts into a :class:`DatasetWriter`, which builds the dataset in a
   temporary folder and renames it into place only when complete.

Merged rows follow a fixed source order (``SOURCE_ORDER``): a row's ``object_id`` and
position are those of its first member in that order (Legacy Survey, HSC, DESI, SDSS,
Gaia); each member's own id is kept in ``id_<survey>`` (-1 where absent). ``kind`` comes
from spectroscopy first (DESI, SDSS, then Gaia, then imaging); a scalar column takes the
first finite value in ``SOURCE_ORDER``. Inputs are sorted, so re-running on the same files
gives the same dataset hash.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from engine.data import crossmatch, schema
from engine.data.readers import find_inputs, scan_file
from engine.data.readers.base import CHUNK, FileScan
from engine.data.readers.ids import text_id
from engine.data.readers.parts import IngestJob, batches_of
from engine.data.readers.report import FileResult, IngestReport
from engine.data.writer import DatasetWriter
from engine.errors import ValidationError

SOURCE_ORDER: tuple[str, ...] = ("image_ls", "image_hsc", "spectrum_desi", "spectrum_sdss", "xp_gaia")
KIND_ORDER: tuple[str, ...] = ("spectrum_desi", "spectrum_sdss", "xp_gaia", "image_ls", "image_hsc")
ID_COLUMN: dict[str, str] = {
    "image_ls": "id_ls",
    "image_hsc": "id_hsc",
    "spectrum_desi": "id_desi",
    "spectrum_sdss": "id_sdss",
    "xp_gaia": "id_gaia",
}
NAME_COLUMN: dict[str, str] = {k: v.replace("id_", "name_") for k, v in ID_COLUMN.items()}


def scan_inputs(
    files: Sequence[Path], fmt: str, report: IngestReport, progress: bool = True
) -> list[FileScan]:
    """Validate each file; bad ones go to the report (one line each) and are left out."""
    scans: list[FileScan] = []
    seen: dict[str, dict[int, str]] = {}
    for path in tqdm(files, desc="scan", unit="file", disable=not progress):
        try:
            sc = scan_file(path, fmt)
            _check_cross_file_ids(sc, seen)
        except ValidationError as exc:
            report.files.append(FileResult.of(path, error=str(exc)))
            continue
        except Exception as exc:  # a reader bug or an exotic corruption must not stop the run
            report.files.append(
                FileResult.of(path, error=f"{path}: cannot read ({type(exc).__name__}: {exc})")
            )
            continue
        known = seen.setdefault(sc.source, {})
        known.update(dict.fromkeys(sc.catalog["object_id"].tolist(), str(path)))
        scans.append(sc)
        report.files.append(
            FileResult.of(
                path,
                label=sc.kind_label,
                source=sc.source,
                objects=len(sc.catalog),
                skipped_objects=sc.n_skipped,
                notes=list(sc.notes),
            )
        )
    return scans


class _ReadFailed(Exception):
    """A file passed its scan but failed while its arrays were streamed (e.g. a corrupt chunk
    in a field the scan does not read)."""

    def __init__(self, scan: FileScan, exc: BaseException):
        self.scan = scan
        super().__init__(
            f"{scan.path}: cannot read arrays (truncated or corrupt?): {type(exc).__name__}: {exc}"
        )


def _chunks_of(scans: Sequence[FileScan], members: list[int]):
    """``(source, ids, fields)`` chunks of the member files; a read error names its file."""
    for k in members:
        sc = scans[k]
        try:
            for ids, fields in sc.read_arrays(CHUNK):
                yield sc.source, ids, fields
        except Exception as exc:  # KeyboardInterrupt passes: an interrupted run resumes later
            raise _ReadFailed(sc, exc) from exc


def _stage(scans, groups, job: IngestJob, report: IngestReport, progress: bool) -> None:
    """Stage every part not already staged by an interrupted run with the same inputs."""
    reused = [b for b in range(len(groups)) if job.done(b)]
    if reused:
        n_files = sum(len(groups[b]) for b in reused)
        report.notes.append(
            f"resumed: {n_files} of {len(scans)} file(s) already staged by an interrupted run"
        )
    total = sum(len(sc.catalog) for sc in scans)
    with tqdm(total=total, desc="stage", unit="obj", disable=not progress) as bar:
        for b, members in enumerate(groups):
            if job.done(b):
                bar.update(sum(len(scans[k].catalog) for k in members))
                continue
            for m in job.stage(b, _chunks_of(scans, members)):
                bar.update(m)


def _common_optional_fields(scans: Sequence[FileScan]) -> dict[str, set[str]]:
    """Per source, the optional fields every one of its files provides (always-written ones
    such as image_psf_fwhm come from the readers for every file)."""
    out: dict[str, set[str]] = {}
    for sc in scans:
        src = schema.source(sc.source)
        always = {"image_psf_fwhm", "image_scale"} & set(src.optional_fields)
        mine = set(sc.optional_fields) | always
        out[sc.source] = mine if sc.source not in out else out[sc.source] & mine
    return out


def _outside(files: list[Path], out: Path) -> list[Path]:
    """Inputs minus anything the ingest itself writes (``out``, its temporary and job folders),
    so ``ingest data/ --out data/ds`` run twice does not read its own output."""
    out = out.resolve()
    own = (out, *out.parent.glob(f".{out.name}.*"))
    return [f for f in files if not any(f.resolve().is_relative_to(o) for o in own)]


def _job_key(scans: Sequence[FileScan], fmt: str, radius_arcsec: float) -> dict:
    """What a staged job depends on: the good inputs (path, size, mtime), format and radius."""
    files = []
    for sc in scans:
        st = sc.path.stat()
        files.append([str(sc.path.resolve()), st.st_size, st.st_mtime_ns])
    return {"format": fmt, "radius_arcsec": float(radius_arcsec), "files": files}


def _check_cross_file_ids(sc: FileScan, seen: dict[str, dict[int, str]]) -> None:
    known = seen.get(sc.source, {})
    for oid in sc.catalog["object_id"].tolist():
        if oid in known:
            raise ValidationError(f"{sc.path}: field 'object_id': id {oid} already read from {known[oid]}")


def build_catalog(
    scans: Sequence[FileScan], radius_arcsec: float
) -> tuple[pd.DataFrame, dict[str, pd.Series], list[str]]:
    """Cross-match the scans' catalogs into one catalog.

    Returns the catalog, per source a Series mapping the survey's id -> the row's object_id,
    and notes (e.g. id collisions resolved).
    """
    per_source: dict[str, pd.DataFrame] = {}
    for src in SOURCE_ORDER:
        parts = [s.catalog for s in scans if s.source == src]
        if parts:
            per_source[src] = pd.concat(parts, ignore_index=True)
    sources = list(per_source)
    groups = crossmatch.merge([(per_source[s]["ra"], per_source[s]["dec"]) for s in sources], radius_arcsec)
    n = groups.n
    oid = np.full(n, -1, np.int64)
    kind = np.full(n, "", dtype=object)
    members = np.zeros(n, np.int64)
    max_sep = np.zeros(n)
    scalars = {col: np.full(n, np.nan) for col in schema.SCALAR_COLUMNS}
    extra: dict[str, np.ndarray] = {}
    for k, src in enumerate(sources):
        cat, rows = per_source[src], groups.row_of[k]
        members[rows] += 1
        np.maximum.at(max_sep, rows, groups.sep_arcsec[k])
        ids = cat["object_id"].to_numpy(np.int64)
        id_col = np.full(n, -1, np.int64)
        id_col[rows] = ids
        extra[ID_COLUMN[src]] = id_col
        unset = oid[rows] < 0
        oid[rows[unset]] = ids[unset]
        if (cat["name"].astype(str) != cat["object_id"].astype(str)).any():
            names = np.full(n, "", dtype=object)
            names[rows] = cat["name"].astype(str).to_numpy()
            extra[NAME_COLUMN[src]] = names
        for col, current in scalars.items():
            if col in cat.columns:
                values = cat[col].to_numpy(np.float64)
                fill = np.isnan(current[rows]) & np.isfinite(values)
                current[rows[fill]] = values[fill]
    for src in reversed(KIND_ORDER):  # later writes win: iterate from lowest priority
        if src in per_source:
            kind[groups.row_of[sources.index(src)]] = per_source[src]["kind"].to_numpy()
    out = pd.DataFrame(
        {
            "object_id": oid,
            "ra": groups.ra,
            "dec": groups.dec,
            "kind": kind.astype(str),
            **scalars,
            **extra,
            "n_sources": members,
            "xmatch_sep_arcsec": max_sep,
        }
    )
    notes = _resolve_id_collisions(out, sources)
    mapping = {}
    for k, src in enumerate(sources):
        ids = per_source[src]["object_id"].to_numpy(np.int64)
        mapping[src] = pd.Series(out["object_id"].to_numpy()[groups.row_of[k]], index=ids)
    return out, mapping, notes


def _resolve_id_collisions(out: pd.DataFrame, sources: list[str]) -> list[str]:
    """Two unmatched objects of different surveys may share an id number; the later row
    gets a hash of "<survey id column>:<id>" (deterministic) and the report says so."""
    dup = out["object_id"].duplicated(keep="first").to_numpy()
    if not dup.any():
        return []
    oid = out["object_id"].to_numpy(copy=True)
    for i in np.flatnonzero(dup):
        owner = next(ID_COLUMN[s] for s in sources if out.at[i, ID_COLUMN[s]] == oid[i])
        oid[i] = text_id([f"{owner}:{oid[i]}"])[0]
    out["object_id"] = oid
    return [
        f"{int(dup.sum())} object id(s) shared by different surveys' objects: later rows re-keyed by hash"
    ]


def ingest(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    fmt: str,
    *,
    radius_arcsec: float = crossmatch.DEFAULT_RADIUS_ARCSEC,
    overwrite: bool = False,
    progress: bool = True,
    name: str | None = None,
    strict: bool = False,
) -> IngestReport:
    """Ingest MMU HDF5 (``fmt='mmu'``) or survey FITS/ECSV/CSV (``fmt='fits'``) files into ``out``.

    Raises ValidationError when no input file is usable (every bad file is listed), or when
    any is bad and ``strict``, before anything is written; otherwise returns the report.
    """
    t0 = time.perf_counter()
    if not radius_arcsec > 0:
        raise ValidationError(
            f"--radius-arcsec: {radius_arcsec!r} is not positive; accepted: a radius > 0 arcsec"
        )
    out = Path(out)
    if out.exists() and not overwrite:
        raise ValidationError(f"{out}: already exists (pass --overwrite to replace it)")
    files = _outside(find_inputs(paths, fmt), out)
    report = IngestReport(out=str(out), format=fmt, radius_arcsec=float(radius_arcsec))
    if not files:
        raise ValidationError(f"no input files found in {[str(p) for p in paths]} for format {fmt!r}")
    scans = scan_inputs(files, fmt, report, progress)
    if not scans or (strict and report.bad):
        lines = "; ".join(f.error for f in report.bad)
        what = "no usable input file" if not scans else "--strict: nothing written"
        raise ValidationError(f"{what} ({len(report.bad)} bad): {lines}")
    while True:  # a file that fails only while its arrays are read is dropped, then we go again
        catalog, mapping, notes = build_catalog(scans, radius_arcsec)
        job = IngestJob(out, _job_key(scans, fmt, radius_arcsec))
        groups = batches_of([len(sc.catalog) for sc in scans])
        try:
            _stage(scans, groups, job, report, progress)
            break
        except _ReadFailed as exc:
            bad = exc.scan
            report.files = [f for f in report.files if f.path != str(bad.path)]
            report.files.append(FileResult.of(bad.path, error=str(exc)))
            scans = [sc for sc in scans if sc is not bad]
            if not scans or strict:
                raise ValidationError(f"no usable input file left: {exc}") from exc
    report.notes.extend(notes)
    total = sum(len(s.catalog) for s in scans)
    optional = _common_optional_fields(scans)
    with DatasetWriter(out, overwrite=overwrite) as writer:
        bar = tqdm(total=total, desc="write", unit="obj", disable=not progress)
        for b in range(len(groups)):
            for source, ids, fields in job.read(b, CHUNK):
                src = schema.source(source)
                final = mapping[source].loc[np.asarray(ids, np.int64)].to_numpy(np.int64)
                keep = {
                    name: v for name, v in fields.items() if name in src.fields or name in optional[source]
                }
                writer.append(source, final, **keep)
                bar.update(len(final))
        bar.close()
        info = {
            "name": name or out.name,
            "version": 1,
            "provenance": {
                "kind": "ingest",
                "format": fmt,
                "radius_arcsec": float(radius_arcsec),
                "source_order": list(SOURCE_ORDER),
                "files": [
                    {
                        "path": f.path,
                        "size": f.size,
                        "mtime_ns": f.mtime_ns,
                        "label": f.label,
                        "objects": f.objects,
                    }
                    for f in report.good
                ],
                "bad_files": [f.error for f in report.bad],
            },
        }
        writer.commit(catalog, info)
    job.finish()
    from engine.data.store import open_dataset

    ds = open_dataset(out)
    report.dataset_hash = ds.hash
    report.objects = len(catalog)
    report.per_source = {s: int(ds.info["counts"]["sources"].get(s, 0)) for s in mapping}
    report.multi_source_rows = int((catalog["n_sources"] > 1).sum())
    report.seconds = time.perf_counter() - t0
    return report


def ingest_embeddings(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    columns=None,
    view: str = "image",
    model: str = "aion-base",
    overwrite: bool = False,
    progress: bool = True,
    name: str | None = None,
    index_root: str | os.PathLike | None = None,
) -> IngestReport:
    """Ingest published embeddings (Parquet) as a catalog-only dataset plus a view's embeddings.

    The catalog goes to ``out`` (atomically, via DatasetWriter); vectors go to the index
    store's layout, ``<index_root>/<dataset>/<model>/<view>/embeddings.npy`` (float16,
    row-aligned with the catalog) + ``valid.npy`` (False where the table's vector was null or
    not finite) + ``embeddings.json``, so ``aion-engine index`` and the app use them as if
    ``embed`` had computed them. Files are streamed in record batches into a float16 memmap.
    """
    from engine import paths as engine_paths
    from engine.data.readers import embeddings_table as et
    from engine.data.store import open_dataset
    from engine.index.embeddings import write_embeddings
    from engine.index.manifest import VIEWS

    t0 = time.perf_counter()
    cols = columns or et.EmbeddingColumns()
    if view not in VIEWS:
        raise ValidationError(f"--view: {view!r} is not a view; accepted: {', '.join(VIEWS)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ValidationError(f"{out}: already exists (pass --overwrite to replace it)")
    files = _outside(find_inputs(paths, "embeddings"), out)
    if not files:
        raise ValidationError(f"no Parquet files found in {[str(p) for p in paths]}")
    report = IngestReport(out=str(out), format="embeddings")
    infos = []
    for path in files:
        try:
            infos.append(et.inspect(path, cols))
        except ValidationError as exc:
            report.files.append(FileResult.of(path, error=str(exc)))
    dims = {i.dim for i in infos}
    if len(dims) > 1:
        first = infos[0].dim
        for i in [i for i in infos if i.dim != first]:
            report.files.append(
                FileResult.of(
                    i.path,
                    error=f"{i.path}: field {i.vector_col!r}: dim {i.dim} != {first} of {infos[0].path}",
                )
            )
        infos = [i for i in infos if i.dim == first]
    if not infos:
        raise ValidationError(
            f"no usable input file ({len(report.bad)} bad): " + "; ".join(f.error for f in report.bad)
        )
    total, dim = sum(i.rows for i in infos), infos[0].dim
    dataset_name = name or out.name
    view_dir = (
        (Path(index_root) / dataset_name / engine_paths.model_id_of(model) / view)
        if index_root
        else (engine_paths.view_dir(dataset_name, model, view))
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / f".{out.name}.vectors-{os.getpid()}.npy"
    try:
        vectors = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float16, shape=(total, dim))
        ids = np.empty(total, np.int64)
        ra = np.empty(total)
        dec = np.empty(total)
        kind = np.empty(total, object)
        valid = np.zeros(total, bool)
        scalar_names = sorted({c for i in infos for c in i.scalar_cols})
        scalars = {c: np.full(total, np.nan) for c in scalar_names}
        filled = 0
        seen = np.zeros(0, np.int64)
        bar = tqdm(total=total, desc="read", unit="row", disable=not progress)
        for info in infos:
            start = filled
            try:
                for b in et.batches(info, cols):
                    m = len(b.ids)
                    sl = slice(filled, filled + m)
                    ids[sl], ra[sl], dec[sl], kind[sl] = b.ids, b.ra, b.dec, b.kind
                    finite = np.isfinite(b.vectors).all(axis=1) & (np.abs(b.vectors) < 65504).all(axis=1)
                    valid[sl] = finite
                    vectors[sl] = np.where(finite[:, None], b.vectors, 0).astype(np.float16)
                    for c in info.scalar_cols:
                        scalars[c][sl] = b.scalars[c]
                    filled += m
                    bar.update(m)
                seen = _check_embedding_ids(info, ids, start, filled, seen)
            except ValidationError as exc:
                report.files.append(FileResult.of(info.path, error=str(exc)))
                bar.update(info.rows - (filled - start))
                filled = start  # the next file overwrites this one's rows
                continue
            report.files.append(
                FileResult.of(
                    info.path,
                    label=f"embeddings table (dim {dim})",
                    objects=filled - start,
                    skipped_objects=int((~valid[start:filled]).sum()),
                )
            )
        bar.close()
        if filled == 0:
            raise ValidationError("no usable input file: " + "; ".join(f.error for f in report.bad))
        catalog = pd.DataFrame(
            {
                "object_id": ids[:filled],
                "ra": ra[:filled],
                "dec": dec[:filled],
                "kind": kind[:filled].astype(str),
            }
        )
        for c in schema.SCALAR_COLUMNS:
            catalog[c] = scalars[c][:filled] if c in scalars else np.nan
        info_json = {
            "name": dataset_name,
            "version": 1,
            "provenance": {
                "kind": "ingest",
                "format": "embeddings",
                "model": str(model),
                "view": view,
                "files": [
                    {"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "objects": f.objects}
                    for f in report.good
                ],
                "bad_files": [f.error for f in report.bad],
            },
        }
        with DatasetWriter(out, overwrite=overwrite) as writer:
            writer.commit(catalog, info_json)
        ds = open_dataset(out)
        vectors.flush()
        write_embeddings(
            view_dir,
            vectors[:filled],
            valid[:filled],
            model_id=engine_paths.model_id_of(model),
            model_hash="published",
            dataset_hash=ds.hash,
            view=view,
            dataset_name=dataset_name,
            extra={"source": "ingest --format embeddings", "files": [f.path for f in report.good]},
        )
        del vectors
    finally:
        scratch.unlink(missing_ok=True)
    report.objects = filled
    report.per_source = {f"embeddings:{view}": int(valid[:filled].sum())}
    report.dataset_hash = ds.hash
    report.notes.append(f"vectors -> {view_dir}")
    report.seconds = time.perf_counter() - t0
    return report


def _check_embedding_ids(info, ids: np.ndarray, start: int, stop: int, seen: np.ndarray) -> np.ndarray:
    """This file's ids are unique and new; ``seen`` holds earlier files' ids, sorted.

    Returns the new ``seen`` (a merge of two sorted runs, so many files stay near-linear).
    """
    name = info.path
    uniq, counts = np.unique(ids[start:stop], return_counts=True)
    if (counts > 1).any():
        raise ValidationError(f"{name}: field 'object_id': duplicated id {uniq[counts > 1][0]}")
    if len(seen):
        pos = np.searchsorted(seen, uniq).clip(0, len(seen) - 1)
        hit = seen[pos] == uniq
        if hit.any():
            raise ValidationError(
                f"{name}: field 'object_id': id {uniq[hit][0]} already read from an earlier file"
            )
    return np.sort(np.concatenate([seen, uniq]), kind="stable")
