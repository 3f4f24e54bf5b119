"""Survey FITS / ECSV / CSV in: SDSS spec, DESI coadd, Legacy Survey cutouts, Gaia XP tables,
each recognised from its content and read back through the dataset store."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import producers

from engine.data import schema
from engine.data.ingest import ingest
from engine.data.readers import ids as idmod
from engine.data.store import open_dataset

ARCSEC = 1 / 3600.0


def test_sdss_spec_file(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "spec-0266-51602-0003.fits"
    # this plate's loglam grid starts on the schema grid's first pixel: read without interpolation error
    start = float(np.log10(3800.0))
    t = producers.sdss_spec(path, 266, 51602, 3, 185.0, 15.0, rng, start=start, npix=3000, z=0.123, cls="QSO")
    report = ingest([path], tmp_path / "ds", "fits", progress=False)
    assert not report.bad
    ds = open_dataset(tmp_path / "ds")
    oid = idmod.sdss_id(266, 51602, 3)
    row = ds.objects([oid]).iloc[0]
    assert row["kind"] == "qso" and row["z"] == pytest.approx(0.123, rel=1e-6)
    assert (row["ra"], row["dec"]) == (185.0, 15.0)
    got = ds.read("spectrum_sdss", [oid])
    grid = schema.sdss_wavelength()
    assert got["spectrum_flux"].shape == (1, len(grid))
    good = t["and_mask"] == 0
    n = 3000
    np.testing.assert_allclose(got["spectrum_flux"][0, :n][good], t["flux"][good], rtol=1e-4)
    np.testing.assert_allclose(got["spectrum_ivar"][0, :n][good], t["ivar"][good], rtol=1e-4)
    assert got["spectrum_mask"][0, 100:110].all()  # and_mask set there
    assert got["spectrum_mask"][0, n:].all() and (got["spectrum_ivar"][0, n:] == 0).all()  # beyond coverage


def test_desi_coadd_arms_merged_inverse_variance_weighted(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "coadd-sv3-dark-26065.fits"
    t = producers.desi_coadd(
        path, [10.0, 10.1, 10.2], [-5.0, -5.1, -5.2], rng, objtype=["TGT", "SKY", "TGT"], with_redshifts=True
    )
    report = ingest([path], tmp_path / "ds", "fits", progress=False)
    assert not report.bad
    assert any("sky" in n for n in report.good[0].notes)
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 2  # the sky fibre is dropped
    ids = t["TARGETID"][[0, 2]]
    got = ds.read("spectrum_desi", ids)
    grid = schema.desi_wavelength()
    assert got["spectrum_flux"].shape == (2, len(grid))
    np.testing.assert_allclose(got["spectrum_lambda"][0], grid.astype(np.float32))
    wb, fb, ib, _ = t["B"]
    wr, fr, ir, _ = t["R"]
    # B only at 4000 A
    k = int(round((4000.0 - 3600.0) / 0.8))
    kb = int(round((4000.0 - wb[0]) / 0.8))
    assert got["spectrum_flux"][1, k] == pytest.approx(fb[2, kb], rel=1e-6)
    # overlap B/R at 5780 A: inverse-variance weighted mean, ivars add
    k = int(round((5780.0 - 3600.0) / 0.8))
    kb, kr = int(round((5780.0 - wb[0]) / 0.8)), int(round((5780.0 - wr[0]) / 0.8))
    expect = (ib[0, kb] * fb[0, kb] + ir[0, kr] * fr[0, kr]) / (ib[0, kb] + ir[0, kr])
    assert got["spectrum_flux"][0, k] == pytest.approx(expect, rel=1e-5)
    assert got["spectrum_ivar"][0, k] == pytest.approx(ib[0, kb] + ir[0, kr], rel=1e-5)
    assert got["spectrum_mask"][:, 5].all()  # B_MASK bit set, no other arm covers it
    assert not got["spectrum_mask"][:, 6:2700].any()
    cat = ds.objects(ids)
    assert cat["kind"].tolist() == ["qso", "qso"]  # from the REDSHIFTS HDU
    np.testing.assert_allclose(cat["z"], [0.1, 0.5])


@pytest.mark.parametrize("per_band", [False, True])
def test_legacy_survey_cutout(tmp_path, per_band):
    rng = np.random.default_rng(3)
    path = tmp_path / "cutout_150.1000_2.2000.fits"
    t = producers.ls_cutout(path, 150.1, 2.2, rng, bands="grz", size=100, per_band_hdus=per_band)
    report = ingest([path], tmp_path / "ds", "fits", progress=False)
    assert not report.bad, report.bad[0].error
    ds = open_dataset(tmp_path / "ds")
    row = ds.catalog.iloc[0]
    assert row["ra"] == pytest.approx(150.1, abs=1e-9) and row["dec"] == pytest.approx(2.2, abs=1e-9)
    got = ds.read("image_ls", [row["object_id"]])
    assert got["image_band"][0].tolist() == list(schema.LS_BANDS)
    # g, r, z land in planes 0, 1, 3; the absent i band is zeros with ivar 0 and mask True (bad)
    np.testing.assert_array_equal(got["image_array"][0, [0, 1, 3]], t["cube"][:, 2:98, 2:98])
    np.testing.assert_array_equal(got["image_ivar"][0, [0, 1, 3]], t["ivar"][:, 2:98, 2:98])
    assert (got["image_array"][0, 2] == 0).all() and got["image_mask"][0, 2].all()
    assert not got["image_mask"][0, [0, 1, 3]].any()
    assert any("absent" in n for n in report.good[0].notes)


def test_small_cutout_is_padded_not_stretched(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "small.fits"
    t = producers.ls_cutout(path, 20.0, 0.0, rng, bands="griz", size=64)
    ingest([path], tmp_path / "ds", "fits", progress=False)
    ds = open_dataset(tmp_path / "ds")
    got = ds.read("image_ls", ds.ids)
    np.testing.assert_array_equal(got["image_array"][0, :, 16:80, 16:80], t["cube"])
    assert got["image_mask"][0, :, :16].all() and (got["image_ivar"][0, :, :16] == 0).all()
    assert not got["image_mask"][0, :, 16:80, 16:80].any()


@pytest.mark.parametrize(
    ("suffix", "fmt"), [(".ecsv", "ascii.ecsv"), (".csv", "ascii.csv"), (".fits", "fits")]
)
def test_gaia_xp_tables(tmp_path, suffix, fmt):
    rng = np.random.default_rng(5)
    path = tmp_path / f"xp_continuous{suffix}"
    t = producers.gaia_xp_table(path, [40.0, 40.1], [1.0, 1.1], rng, fmt=fmt)
    report = ingest([path], tmp_path / "ds", "fits", progress=False)
    assert not report.bad, report.bad[0].error
    ds = open_dataset(tmp_path / "ds")
    got = ds.read("xp_gaia", t["source_id"])
    np.testing.assert_allclose(got["coeff"][:, :55], t["bp_coefficients"], rtol=1e-6)
    np.testing.assert_allclose(got["coeff"][:, 55:], t["rp_coefficients"], rtol=1e-6)
    np.testing.assert_allclose(got["coeff_error"][:, 55:], t["rp_coefficient_errors"], rtol=1e-6)
    np.testing.assert_allclose(ds.objects(t["source_id"])["phot_g"], t["phot_g_mean_flux"])


def test_mixed_folder_cross_matches_spectra_and_images(tmp_path):
    """A DESI coadd target and a cutout of the same galaxy 0.5" apart become one row."""
    rng = np.random.default_rng(6)
    folder = tmp_path / "in"
    folder.mkdir()
    t = producers.desi_coadd(folder / "coadd-main-dark-1.fits", [150.0], [2.0], rng)
    producers.ls_cutout(folder / "cut.fits", 150.0 + 0.5 * ARCSEC, 2.0, rng)
    producers.sdss_spec(folder / "spec-0300-51600-0010.fits", 300, 51600, 10, 150.0, 2.0 + 3 * ARCSEC, rng)
    report = ingest([folder], tmp_path / "ds", "fits", progress=False, radius_arcsec=1.0)
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 2 and report.multi_source_rows == 1  # SDSS is 3" away: its own row
    joined = ds.catalog[ds.catalog["n_sources"] == 2].iloc[0]
    assert joined["id_desi"] == t["TARGETID"][0]
    assert joined["has_image_ls"] and joined["has_spectrum_desi"]
    # the row takes the imaging member's id and position (first in SOURCE_ORDER)
    assert joined["object_id"] == joined["id_ls"] and joined["ra"] == pytest.approx(150.0 + 0.5 * ARCSEC)
    ds.read("spectrum_desi", [joined["object_id"]])
    ds.read("image_ls", [joined["object_id"]])


def test_compressed_cutout_and_empty_xp_rows(tmp_path):
    """A tile-compressed (.fits.fz) cutout is still a cutout; an XP row with empty arrays is dropped."""
    from astropy.io import fits

    rng = np.random.default_rng(7)
    plain = tmp_path / "plain.fits"
    t = producers.ls_cutout(plain, 60.0, -30.0, rng, bands="griz", size=96, ivar=False)
    with fits.open(plain) as h:
        comp = fits.CompImageHDU(h[0].data, header=h[0].header, compression_type="GZIP_2", quantize_level=0)
        fits.HDUList([fits.PrimaryHDU(), comp]).writeto(tmp_path / "cut.fits.fz")
    plain.unlink()
    producers.gaia_xp_table(tmp_path / "xp.csv", [61.0, 61.1], [-30.0, -30.1], rng, fmt="ascii.csv")
    text = (tmp_path / "xp.csv").read_text().splitlines()
    row = text[2].split('"')  # second source: blank its coefficient arrays as the archive does
    text[2] = '"'.join(part if i % 2 == 0 else "" for i, part in enumerate(row))
    (tmp_path / "xp.csv").write_text("\n".join(text) + "\n")
    report = ingest([tmp_path], tmp_path / "ds", "fits", progress=False)
    assert not report.bad, [f.error for f in report.bad]
    ds = open_dataset(tmp_path / "ds")
    assert ds.catalog["has_image_ls"].sum() == 1 and ds.catalog["has_xp_gaia"].sum() == 1
    assert sum(f.skipped_objects for f in report.good) == 1
    img = ds.read("image_ls", ds.catalog.loc[ds.catalog["has_image_ls"], "object_id"])
    np.testing.assert_array_equal(img["image_array"][0], t["cube"])  # lossless GZIP_2, no quantisation
    assert any("MAD" in n for f in report.good for n in f.notes)
