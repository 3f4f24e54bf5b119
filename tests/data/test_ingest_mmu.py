"""Multimodal Universe HDF5 in: files laid out as the MMU builders write them, ingested and
read back through the dataset store with the same numbers."""

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


@pytest.fixture(scope="module")
def mmu_root(tmp_path_factory):
    """LS, HSC, DESI, SDSS and Gaia files; LS[0], DESI[0] and Gaia[0] are one object (<0.5")."""
    root = tmp_path_factory.mktemp("mmu")
    rng = np.random.default_rng(0)
    truth = {
        "ls": producers.mmu_legacysurvey(
            producers.mmu_path(root / "legacysurvey", "dr10_south_21", 1234),
            [150.0, 150.1, 150.2],
            [2.0, 2.1, 2.2],
            rng,
            types=["REX", "PSF", "EXP"],
        ),
        "hsc": producers.mmu_hsc(
            producers.mmu_path(root / "hsc", "pdr3_wide_22.5", 5000), [30.0, 30.1], [-1.0, -1.1], rng
        ),
        "desi": producers.mmu_desi(
            producers.mmu_path(root / "desi", "edr_sv3", 26065),
            [150.0 + 0.3 * ARCSEC, 160.0, 160.1],
            [2.0, 3.0, 3.1],
            rng,
        ),
        "sdss": producers.mmu_sdss(
            producers.mmu_path(root / "sdss", "sdss", 100),
            [200.0, 200.1],
            [10.0, 10.1],
            rng,
            lengths=[3850, 3700],
        ),
        "gaia": producers.mmu_gaia(
            producers.mmu_path(root / "gaia", "gaia", 7),
            [150.0, 250.0, 250.1],
            [2.0 - 0.4 * ARCSEC, -20.0, -20.1],
            rng,
        ),
    }
    out = root.parent / (root.name + "-dataset")
    report = ingest([root], out, "mmu", progress=False)
    return root, out, truth, report


def test_every_file_read_and_cross_matched(mmu_root):
    _, out, truth, report = mmu_root
    assert not report.bad, [f.error for f in report.bad]
    assert len(report.good) == 5
    ds = open_dataset(out)
    # 3 LS + 2 HSC + 3 DESI + 2 SDSS + 3 Gaia = 13 objects, 2 of them joined into the first LS row
    assert len(ds) == 11
    assert report.multi_source_rows == 1
    ls_ids = idmod.ls_id(truth["ls"]["RELEASE"], truth["ls"]["BRICKID"], truth["ls"]["OBJID"])
    row = ds.objects([ls_ids[0]]).iloc[0]
    assert row["id_desi"] == truth["desi"]["TARGETID"][0]
    assert row["id_gaia"] == truth["gaia"]["source_id"][0]
    assert row["n_sources"] == 3
    assert 0.2 < row["xmatch_sep_arcsec"] < 0.5
    assert row["kind"] == "galaxy"  # DESI says GALAXY; spectroscopy wins over Gaia's "star"
    assert row["ra"] == pytest.approx(150.0) and row["dec"] == pytest.approx(2.0)  # the LS member's position
    assert row["z"] == pytest.approx(truth["desi"]["z"][0])  # scalars from every member
    assert row["phot_g"] == pytest.approx(truth["gaia"]["phot_g_mean_flux"][0])
    assert row["flux_g"] == pytest.approx(truth["ls"]["FLUX_G"][0])  # LS before DESI's copy of the LS flux
    assert row["name_ls"] == truth["ls"]["object_id"][0].decode()
    assert set(ds.sources) == {"image_ls", "image_hsc", "spectrum_desi", "spectrum_sdss", "xp_gaia"}
    assert all(c in ds.catalog.columns for c in schema.SCALAR_COLUMNS)


def test_legacy_survey_images_read_back(mmu_root):
    _, out, truth, _ = mmu_root
    ds = open_dataset(out)
    ids = idmod.ls_id(truth["ls"]["RELEASE"], truth["ls"]["BRICKID"], truth["ls"]["OBJID"])
    got = ds.read("image_ls", ids)
    assert got["image_array"].shape == (3, 4, 96, 96)
    np.testing.assert_array_equal(got["image_array"], truth["ls"]["image_array"][:, :, 32:128, 32:128])
    crop = (slice(None), slice(None), slice(32, 128), slice(32, 128))
    clean = truth["ls"]["bit_mask"][:, None, 32:128, 32:128]
    np.testing.assert_array_equal(got["image_ivar"], np.where(clean, truth["ls"]["image_ivar"][crop], 0))
    assert ((got["image_ivar"] == 0) == got["image_mask"]).all()  # as the mock: masked pixels carry no weight
    assert got["image_band"][0].tolist() == list(schema.LS_BANDS)
    # MMU's bit_mask is a clean-pixel map; the dataset's image_mask is True = bad (as the mock's)
    np.testing.assert_array_equal(got["image_mask"][:, 0], ~truth["ls"]["bit_mask"][:, 32:128, 32:128])
    np.testing.assert_allclose(got["image_psf_fwhm"], truth["ls"]["image_psf_fwhm"], rtol=1e-6)
    cat = ds.objects(ids)
    np.testing.assert_allclose(cat["flux_w4"], truth["ls"]["FLUX_W4"], rtol=1e-6)
    np.testing.assert_allclose(cat["shape_e2"], truth["ls"]["SHAPE_E2"], rtol=1e-6)
    assert cat["kind"].tolist() == ["galaxy", "star", "galaxy"]  # TYPE PSF -> star


def test_hsc_images_and_magnitudes(mmu_root):
    _, out, truth, report = mmu_root
    ds = open_dataset(out)
    ids = truth["hsc"]["object_id"]
    got = ds.read("image_hsc", ids)
    np.testing.assert_array_equal(got["image_array"], truth["hsc"]["image_array"][:, :, 24:120, 24:120])
    assert got["image_band"][0].tolist() == list(schema.HSC_BANDS)
    # no ivar in MMU HSC files: 1 / local variance from the catalog, per band
    np.testing.assert_allclose(got["image_ivar"][:, 2, 0, 0], 1 / truth["hsc"]["i_variance_value"], rtol=1e-5)
    cat = ds.objects(ids)
    np.testing.assert_allclose(cat["mag_y"], truth["hsc"]["y_cmodel_mag"], rtol=1e-6)
    np.testing.assert_allclose(cat["a_r"], truth["hsc"]["a_r"], rtol=1e-6)
    np.testing.assert_allclose(cat["hsc_shape12"], truth["hsc"]["i_sdssshape_shape12"], rtol=1e-6)
    assert any("variance" in n for f in report.good for n in f.notes)


def test_desi_spectra_kept_on_their_grid(mmu_root):
    _, out, truth, _ = mmu_root
    ds = open_dataset(out)
    ids = truth["desi"]["TARGETID"][1:]  # [0] was merged into an LS row and took its id
    got = ds.read("spectrum_desi", ids)
    np.testing.assert_array_equal(got["spectrum_flux"][:, 10:], truth["desi"]["spectrum_flux"][1:, 10:])
    np.testing.assert_array_equal(got["spectrum_lambda"], truth["desi"]["spectrum_lambda"][1:])
    assert got["spectrum_mask"][:, :10].all() and not got["spectrum_mask"][:, 10:].any()
    assert (got["spectrum_ivar"][:, :10] == 0).all()
    assert ds.objects(ids)["kind"].tolist() == ["galaxy", "qso"]
    np.testing.assert_allclose(ds.objects(ids)["z"], truth["desi"]["z"][1:], rtol=1e-6)


def test_sdss_spectra_resampled_with_stable_ids(mmu_root):
    _, out, truth, _ = mmu_root
    ds = open_dataset(out)
    t = truth["sdss"]
    ids = idmod.sdss_id(t["PLATE"], t["MJD"], t["FIBERID"])
    assert ids[0] == 266 * 10**10 + 51602 * 10**4 + 3
    got = ds.read("spectrum_sdss", ids)
    grid = schema.sdss_wavelength()
    assert got["spectrum_flux"].shape == (2, len(grid))
    np.testing.assert_allclose(got["spectrum_lambda"][0], grid.astype(np.float32))
    # linear interpolation in log-lambda of the input, checked against numpy directly
    good = t["spectrum_lambda"][1] > 0
    lam_in = t["spectrum_lambda"][1][good].astype(np.float64)
    inside = (grid > lam_in[0]) & (grid < lam_in[-1])
    expect = np.interp(np.log10(grid[inside]), np.log10(lam_in), t["spectrum_flux"][1][good])
    np.testing.assert_allclose(got["spectrum_flux"][1][inside], expect, rtol=1e-5)
    assert got["spectrum_mask"][1][~inside].all()  # outside the observed range (incl. MMU padding)
    assert ds.objects(ids)["kind"].tolist() == ["galaxy", "star"]


def test_gaia_xp_coefficients(mmu_root):
    _, out, truth, _ = mmu_root
    ds = open_dataset(out)
    ids = truth["gaia"]["source_id"][1:]
    got = ds.read("xp_gaia", ids)
    np.testing.assert_array_equal(got["coeff"], truth["gaia"]["coeff"][1:])
    np.testing.assert_array_equal(got["coeff_error"], truth["gaia"]["coeff_error"][1:])
    cat = ds.objects(ids)
    np.testing.assert_allclose(cat["parallax"], truth["gaia"]["parallax"][1:])
    assert cat["kind"].tolist() == ["star", "star"]


def test_optional_lsf_kept_only_when_every_file_has_it(mmu_root, tmp_path):
    _, out, truth, _ = mmu_root
    got = open_dataset(out).read("spectrum_desi", truth["desi"]["TARGETID"][1:])
    np.testing.assert_array_equal(got["spectrum_lsf_sigma"], truth["desi"]["spectrum_lsf_sigma"][1:])
    rng = np.random.default_rng(3)
    root = tmp_path / "two"
    producers.mmu_desi(producers.mmu_path(root, "edr_sv3", 1), [1.0, 2.0], [0.0, 0.0], rng)
    other = producers.mmu_path(root, "edr_sv3", 2)
    producers.mmu_desi(other, [3.0], [0.0], rng)
    import h5py

    with h5py.File(other, "a") as f:
        del f["spectrum_lsf_sigma"]
        for key in ("TARGETID", "object_id"):
            f[key][...] = [7]
    report = ingest([root], tmp_path / "ds", "mmu", progress=False)
    assert not report.bad
    ds = open_dataset(tmp_path / "ds")
    got = ds.read("spectrum_desi", ds.ids)
    assert "spectrum_lsf_sigma" not in got  # half the rows lacking it would misalign the field
    assert got["spectrum_flux"].shape == (3, 7781)


def test_hsc_without_variance_columns_gets_robust_noise_ivar(tmp_path):
    import h5py

    rng = np.random.default_rng(4)
    path = producers.mmu_path(tmp_path / "in", "pdr3_wide", 1)
    producers.mmu_hsc(path, [30.0, 30.1], [-1.0, -1.1], rng)  # pixels: N(0, 0.1) noise
    with h5py.File(path, "a") as f:
        for b in "grizy":
            del f[f"{b}_variance_value"]
    report = ingest([tmp_path / "in"], tmp_path / "ds", "mmu", progress=False)
    assert any("MAD" in n for f in report.good for n in f.notes)
    ds = open_dataset(tmp_path / "ds")
    ivar = ds.read("image_hsc", ds.ids)["image_ivar"]
    np.testing.assert_allclose(ivar, 1 / 0.1**2, rtol=0.05)  # 1 / sigma^2 of the noise, per cutout and band
