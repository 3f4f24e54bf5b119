"""Robustness of ingest: a corpus of malformed files, each reported in one line naming file and
field, none stopping the run or touching the good files' data; inputs never modified; re-runs
identical; an interrupted ingest leaves nothing behind."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import producers

from engine.cli import main
from engine.data import writer as writer_mod
from engine.data.ingest import ingest
from engine.data.store import open_dataset
from engine.errors import ValidationError


def _edit(path: Path, **changes) -> None:
    """Rewrite datasets of an MMU file (delete with value None)."""
    with h5py.File(path, "a") as f:
        for key, value in changes.items():
            if key in f:
                del f[key]
            if value is not None:
                f.create_dataset(key, data=value)


def _mmu_corpus(root: Path, rng) -> tuple[list[Path], dict[Path, str]]:
    """Two good MMU files and 16 bad ones -> (good files, {bad file: field named in its error})."""
    good = [
        producers.mmu_path(root / "legacysurvey", "dr10_south_21", 1),
        producers.mmu_path(root / "gaia", "gaia", 2),
    ]
    producers.mmu_legacysurvey(good[0], [10.0, 10.1], [0.0, 0.1], rng, size=100)
    producers.mmu_gaia(good[1], [50.0, 50.1], [5.0, 5.1], rng)
    bad: dict[Path, str] = {}

    def ls(name, **changes):
        p = producers.mmu_path(root / "bad", name, len(bad))
        producers.mmu_legacysurvey(p, [20.0 + len(bad), 20.5 + len(bad)], [1.0, 1.1], rng, size=100)
        _edit(p, **changes)
        return p

    def spec(name, **changes):
        p = producers.mmu_path(root / "bad", name, len(bad))
        producers.mmu_desi(p, [30.0 + len(bad), 30.5 + len(bad)], [1.0, 1.1], rng, length=300)
        _edit(p, **changes)
        return p

    def gaia(name, **changes):
        p = producers.mmu_path(root / "bad", name, len(bad))
        producers.mmu_gaia(p, [40.0 + len(bad), 40.5 + len(bad)], [1.0, 1.1], rng)
        _edit(p, **changes)
        return p

    img = rng.normal(0, 1, (2, 4, 100, 100)).astype(np.float32)
    bad[ls("ls_3d_images", image_array=img[:, 0])] = "image_array"
    bad[ls("ls_int_images", image_array=img.astype(np.int16))] = "image_array"
    bad[ls("ls_unknown_bands", image_band=np.array([[b"des-u", b"des-g", b"foo", b"des-z"]] * 2))] = (
        "image_band"
    )
    bad[ls("ls_band_count", image_band=np.array([[b"des-g", b"des-r", b"des-z"]] * 2))] = "image_band"
    bad[ls("ls_nan_only", image_array=np.full_like(img, np.nan))] = "image_array"
    bad[ls("ls_no_ivar", image_ivar=None)] = "image_ivar"
    bad[ls("ls_dup_ids", OBJID=np.array([5, 5], np.int32), BRICKID=np.array([1, 1], np.int32))] = "object_id"
    bad[ls("ls_bad_ra", RA=np.array([400.0, 10.0]), ra=np.array([400.0, 10.0]))] = "ra"
    bad[spec("desi_ivar_shape", spectrum_ivar=np.ones((2, 299), np.float32))] = "spectrum_ivar"
    bad[spec("desi_no_lambda", spectrum_lambda=None)] = "spectrum_lambda"
    bad[spec("desi_no_ids", object_id=None, TARGETID=None)] = "object_id"
    bad[gaia("gaia_coeff_width", coeff=np.ones((2, 100), np.float32))] = "coeff"
    bad[gaia("gaia_string_ids", source_id=np.array([b"a", b"b"]))] = "source_id"
    bad[gaia("gaia_no_objects", coeff=np.zeros((0, 110), np.float32))] = "coeff"
    # a second Legacy Survey file repeating the first good file's objects
    dup = producers.mmu_path(root / "zz_repeat", "dr10_south_21", 1)
    shutil.copy(good[0], dup)
    bad[dup] = "object_id"
    # truncated (half the bytes), not HDF5 at all, and an HDF5 file with no MMU content
    trunc = producers.mmu_path(root / "bad", "truncated", 90)
    data = good[0].read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    bad[trunc] = ""
    text = producers.mmu_path(root / "bad", "not_hdf5", 91)
    text.write_text("this is not an HDF5 file\n")
    bad[text] = ""
    empty = producers.mmu_path(root / "bad", "empty", 92)
    with h5py.File(empty, "w") as f:
        f.create_dataset("something_else", data=np.arange(3))
    bad[empty] = ""
    return good, bad


def _fingerprint(paths) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


def test_mmu_bad_corpus_one_line_each_good_files_land(tmp_path, capsys):
    rng = np.random.default_rng(10)
    root = tmp_path / "in"
    good, bad = _mmu_corpus(root, rng)
    assert len(bad) >= 15
    before = _fingerprint([*good, *bad])
    out = tmp_path / "ds"
    rc = main(["ingest", "--format", "mmu", str(root), "--out", str(out), "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert f"ingested 2 file(s), skipped {len(bad)} bad; 4 objects" in captured.out
    err_lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(err_lines) == len(bad), err_lines
    for path, fld in bad.items():
        mine = [ln for ln in err_lines if f"{path}:" in ln]
        assert len(mine) == 1, (path, err_lines)
        assert f"field {fld!r}" in mine[0] if fld else "cannot" in mine[0] or "not a Multimodal" in mine[0], (
            mine[0]
        )
    ds = open_dataset(out)
    assert len(ds) == 4  # 2 Legacy Survey + 2 Gaia objects, nothing from a bad file
    assert set(ds.sources) == {"image_ls", "xp_gaia"}
    assert ds.read("image_ls", ds.catalog.loc[ds.catalog["has_image_ls"], "object_id"])[
        "image_array"
    ].shape == (2, 4, 96, 96)
    assert len(ds.info["provenance"]["bad_files"]) == len(bad)
    assert _fingerprint([*good, *bad]) == before  # inputs untouched, bytes and mtimes


def test_strict_writes_nothing(tmp_path, capsys):
    rng = np.random.default_rng(11)
    good, bad = _mmu_corpus(tmp_path / "in", rng)
    out = tmp_path / "ds"
    rc = main(
        ["ingest", "--format", "mmu", str(tmp_path / "in"), "--out", str(out), "--strict", "--no-progress"]
    )
    assert rc == 2 and not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _fits_corpus(folder: Path, rng) -> dict[Path, str]:
    bad: dict[Path, str] = {}
    p = folder / "spec-0001-51000-0001.fits"
    producers.sdss_spec(p, 1, 51000, 1, 10.0, 0.0, rng)
    with fits.open(p) as h:
        fits.HDUList([h[0].copy(), h[1].copy()]).writeto(folder / "spec-no-specobj.fits")
    bad[folder / "spec-no-specobj.fits"] = "SPECOBJ"
    data = p.read_bytes()
    (folder / "spec-truncated.fits").write_bytes(data[: len(data) // 3])
    bad[folder / "spec-truncated.fits"] = ""
    p.unlink()
    c = folder / "coadd-bad-shape.fits"
    producers.desi_coadd(c, [11.0, 11.1], [0.0, 0.1], rng)
    with fits.open(c) as h:
        hdus = [x.copy() for x in h]
    hdus[[x.name for x in hdus].index("R_FLUX")] = fits.ImageHDU(np.ones((2, 100), np.float32), name="R_FLUX")
    c.unlink()
    fits.HDUList(hdus).writeto(c)
    bad[c] = "R_FLUX"
    producers.ls_cutout(folder / "cutout-u-band.fits", 12.0, 0.0, rng, bands="ugr")
    bad[folder / "cutout-u-band.fits"] = "BANDS"
    producers.ls_cutout(folder / "cutout-resampled.fits", 13.0, 0.0, rng, pixscale=0.5)
    bad[folder / "cutout-resampled.fits"] = "CD1_1"
    producers.gaia_xp_table(folder / "xp-no-rp.ecsv", [14.0], [0.0], rng)
    t = (folder / "xp-no-rp.ecsv").read_text().replace("rp_coefficients", "rp_coefs")
    (folder / "xp-no-rp.ecsv").write_text(t)
    bad[folder / "xp-no-rp.ecsv"] = "rp_coefficients"
    from astropy.table import Table

    tab = Table(
        {
            "source_id": np.array([1, 2]),
            "ra": [15.0, 15.1],
            "dec": [0.0, 0.1],
            **{
                c: np.ones((2, 50))
                for c in (
                    "bp_coefficients",
                    "rp_coefficients",
                    "bp_coefficient_errors",
                    "rp_coefficient_errors",
                )
            },
        }
    )
    tab.write(folder / "xp-50-coeffs.fits")
    bad[folder / "xp-50-coeffs.fits"] = "bp_coefficients"
    return bad


def test_fits_bad_corpus(tmp_path, capsys):
    rng = np.random.default_rng(12)
    folder = tmp_path / "in"
    folder.mkdir()
    bad = _fits_corpus(folder, rng)
    producers.sdss_spec(folder / "spec-0002-51000-0002.fits", 2, 51000, 2, 20.0, 1.0, rng)
    rc = main(["ingest", "--format", "fits", str(folder), "--out", str(tmp_path / "ds"), "--no-progress"])
    assert rc == 0
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err_lines) == len(bad), err_lines
    for path, fld in bad.items():
        mine = [ln for ln in err_lines if f"{path}:" in ln]
        assert len(mine) == 1, (path, err_lines)
        assert (f"field {fld!r}" in mine[0]) if fld else ("cannot open" in mine[0]), mine[0]
    assert len(open_dataset(tmp_path / "ds")) == 1


def test_rerun_is_idempotent_and_crash_leaves_nothing(tmp_path, monkeypatch):
    rng = np.random.default_rng(13)
    root = tmp_path / "in"
    producers.mmu_legacysurvey(
        producers.mmu_path(root / "ls", "dr10", 1), [10.0, 10.1], [0.0, 0.1], rng, size=100
    )
    producers.mmu_desi(producers.mmu_path(root / "desi", "edr", 2), [10.0, 11.0], [0.0, 0.0], rng, length=300)
    first = ingest([root], tmp_path / "a", "mmu", progress=False)
    second = ingest([root], tmp_path / "b", "mmu", progress=False)
    again = ingest([root], tmp_path / "a", "mmu", progress=False, overwrite=True)
    assert first.dataset_hash == second.dataset_hash == again.dataset_hash

    calls = {"n": 0}
    original = writer_mod.DatasetWriter.append

    def crash_on_second(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash mid-ingest")
        return original(self, *a, **kw)

    monkeypatch.setattr(writer_mod.DatasetWriter, "append", crash_on_second)
    with pytest.raises(RuntimeError):
        ingest([root], tmp_path / "c", "mmu", progress=False)
    assert not (tmp_path / "c").exists()
    calls["n"] = 0
    with pytest.raises(RuntimeError):  # replacing an existing dataset: the old one survives intact
        ingest([root], tmp_path / "a", "mmu", progress=False, overwrite=True)
    assert open_dataset(tmp_path / "a").hash == first.dataset_hash
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_no_usable_file_is_one_clear_error(tmp_path):
    (tmp_path / "x.hdf5").write_text("nope")
    with pytest.raises(ValidationError, match=r"no usable input file .*x\.hdf5"):
        ingest([tmp_path], tmp_path / "ds", "mmu", progress=False)
    with pytest.raises(ValidationError, match="no such file"):
        ingest([tmp_path / "missing"], tmp_path / "ds", "mmu", progress=False)
    assert not (tmp_path / "ds").exists()


def test_embeddings_bad_tables(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(
        pa.table(
            {
                "object_id": [1, 2],
                "ra": [1.0, 2.0],
                "dec": [0.0, 0.0],
                "vec": pa.array([[0.1, 0.2], [0.3, 0.4]]),
            }
        ),
        good,
    )
    pq.write_table(
        pa.table({"object_id": [3], "dec": [0.0], "vec": pa.array([[0.1, 0.2]])}), tmp_path / "nora.parquet"
    )
    pq.write_table(
        pa.table(
            {"object_id": [4, 5], "ra": [1.0, 2.0], "dec": [0.0, 0.0], "vec": pa.array([[0.1, 0.2], [0.3]])}
        ),
        tmp_path / "ragged.parquet",
    )
    pq.write_table(
        pa.table({"object_id": [1], "ra": [1.0], "dec": [0.0], "vec": pa.array([[0.5, 0.5]])}),
        tmp_path / "repeat.parquet",
    )
    report = ingest_embeddings_quiet(tmp_path, tmp_path / "ds", tmp_path / "idx")
    errors = {Path(f.path).name: f.error for f in report.bad}
    assert set(errors) == {"nora.parquet", "ragged.parquet", "repeat.parquet"}
    assert "'ra'" in errors["nora.parquet"] and "'vec'" in errors["ragged.parquet"]
    assert "'object_id'" in errors["repeat.parquet"]
    assert len(open_dataset(tmp_path / "ds")) == 2


def ingest_embeddings_quiet(folder, out, index_root):
    from engine.data.ingest import ingest_embeddings

    return ingest_embeddings([folder], out, progress=False, index_root=index_root)


def test_json_report(tmp_path, capsys):
    import json

    rng = np.random.default_rng(14)
    producers.mmu_gaia(producers.mmu_path(tmp_path / "in", "gaia", 1), [1.0, 2.0], [0.0, 0.0], rng)
    (tmp_path / "in" / "junk.h5").write_bytes(b"\x00" * 100)
    rc = main(
        [
            "ingest",
            "--format",
            "mmu",
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "ds"),
            "--json",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert rc == 0 and report["objects"] == 2 and report["bad_files"] == 1 and report["good_files"] == 1
    assert (
        report["per_source"] == {"xp_gaia": 2}
        and report["dataset_hash"] == open_dataset(tmp_path / "ds").hash
    )
    assert "junk.h5" in captured.err and len(captured.err.strip().splitlines()) == 1


def test_interrupted_ingest_resumes_without_rereading_finished_files(tmp_path, monkeypatch):
    import engine.data.ingest as ingest_mod
    import engine.data.readers.parts as parts_mod

    monkeypatch.setattr(parts_mod, "PART_MIN_OBJECTS", 1)  # one part per file (they hold 2 objects)
    rng = np.random.default_rng(15)
    root = tmp_path / "in"
    for h in range(3):
        p = producers.mmu_path(root, "gaia", h)
        producers.mmu_gaia(p, [10.0 + h, 10.5 + h], [0.0, 0.0], rng)
        _edit(p, source_id=np.array([100 + 2 * h, 101 + 2 * h], np.int64))
    fresh = ingest([root], tmp_path / "fresh", "mmu", progress=False)

    reads: list[str] = []
    crash_on = {"name": "healpix=1"}
    real_scan = ingest_mod.scan_file

    def spying_scan(path, fmt):
        sc = real_scan(path, fmt)
        inner = sc.read_arrays

        def read_arrays(chunk):
            reads.append(path.parent.name)
            if crash_on["name"] == path.parent.name:
                raise KeyboardInterrupt  # killed while reading the second file
            yield from inner(chunk)

        sc.read_arrays = read_arrays
        return sc

    monkeypatch.setattr(ingest_mod, "scan_file", spying_scan)
    with pytest.raises(KeyboardInterrupt):
        ingest([root], tmp_path / "ds", "mmu", progress=False)
    assert reads == ["healpix=0", "healpix=1"] and not (tmp_path / "ds").exists()
    reads.clear()
    crash_on["name"] = None
    report = ingest([root], tmp_path / "ds", "mmu", progress=False)
    assert reads == ["healpix=1", "healpix=2"]  # the first file's staged part was reused
    assert any("resumed: 1 of 3" in n for n in report.notes)
    assert report.dataset_hash == fresh.dataset_hash
    assert not [p for p in tmp_path.iterdir() if "ingest-job" in p.name]  # cleaned up after commit
    # changed inputs invalidate a stale job instead of reusing it
    crash_on["name"] = "healpix=2"
    with pytest.raises(KeyboardInterrupt):
        ingest([root], tmp_path / "ds2", "mmu", progress=False)
    _edit(producers.mmu_path(root, "gaia", 0), parallax=np.array([9.0, 9.0]))
    crash_on["name"] = None
    reads.clear()
    ingest([root], tmp_path / "ds2", "mmu", progress=False)
    assert reads == ["healpix=0", "healpix=1", "healpix=2"]


def test_small_files_share_parts():
    from engine.data.readers.parts import batches_of

    assert batches_of([1] * 5, min_objects=2) == [[0, 1], [2, 3], [4]]
    assert batches_of([10, 1, 1, 10], min_objects=5) == [[0], [1, 2, 3]]
    assert batches_of([1] * 4, min_objects=100, max_files=3) == [[0, 1, 2], [3]]


def test_output_inside_input_folder_is_not_read_back(tmp_path):
    rng = np.random.default_rng(16)
    root = tmp_path / "data"
    producers.mmu_gaia(producers.mmu_path(root, "gaia", 1), [1.0, 2.0], [0.0, 0.0], rng)
    first = ingest([root], root / "ds", "mmu", progress=False)
    again = ingest([root], root / "ds", "mmu", progress=False, overwrite=True)
    assert len(again.files) == 1 and not again.bad and again.dataset_hash == first.dataset_hash


def test_file_failing_while_streamed_is_dropped_not_fatal(tmp_path, monkeypatch):
    """A corrupt chunk the scan cannot see (e.g. in image_ivar) surfaces while arrays are read:
    that file becomes a bad file and the others still land, with a catalog rebuilt without it."""
    import engine.data.ingest as ingest_mod

    rng = np.random.default_rng(17)
    root = tmp_path / "in"
    for h in range(2):
        p = producers.mmu_path(root, "gaia", h)
        producers.mmu_gaia(p, [10.0 + h, 10.5 + h], [0.0, 0.0], rng)
        _edit(p, source_id=np.array([100 + 2 * h, 101 + 2 * h], np.int64))
    real_scan = ingest_mod.scan_file

    def scan_with_bad_chunk(path, fmt):
        sc = real_scan(path, fmt)
        if path.parent.name == "healpix=1":

            def broken(chunk):
                raise OSError("Can't read data (inflate() failed)")
                yield  # pragma: no cover

            sc.read_arrays = broken
        return sc

    monkeypatch.setattr(ingest_mod, "scan_file", scan_with_bad_chunk)
    report = ingest([root], tmp_path / "ds", "mmu", progress=False)
    assert [Path(f.path).parent.name for f in report.bad] == ["healpix=1"]
    assert "cannot read arrays" in report.bad[0].error and "inflate" in report.bad[0].error
    ds = open_dataset(tmp_path / "ds")
    assert sorted(ds.ids.tolist()) == [100, 101] and ds.catalog["has_xp_gaia"].all()
