"""The tiny mock dataset honours the dataset contract of engine.data.schema, with every source."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import schema
from engine.data.store import open_dataset


@pytest.fixture(scope="module")
def ds(tiny_mock):
    with open_dataset(tiny_mock) as d:
        yield d


def test_every_source_and_column_present(ds):
    cat = ds.catalog
    assert len(cat) == 64
    assert set(ds.sources) == set(schema.SOURCES)
    for col in (*schema.REQUIRED_COLUMNS, *schema.SCALAR_COLUMNS, *schema.TRUTH_COLUMNS, *schema.FLAG_COLUMNS):
        assert col in cat.columns, col
    counts = cat["kind"].value_counts()
    assert counts["galaxy"] == 54 and counts["star"] == 7 and counts["qso"] == 3
    assert cat["ra"].between(148.5, 151.5).all() and cat["dec"].between(0.5, 3.5).all()


def test_source_membership(ds):
    cat = ds.catalog
    assert cat["has_image_ls"].all()
    assert 0.15 <= cat["has_image_hsc"].mean() <= 0.25
    assert cat.loc[cat["kind"] != "galaxy", "has_spectrum_desi"].all()
    gal = cat[cat["kind"] == "galaxy"]
    assert 0.4 <= gal["has_spectrum_desi"].mean() <= 0.6
    assert 0.1 <= cat["has_spectrum_sdss"].mean() <= 0.2
    assert (cat["has_segmap"] == (cat["kind"] == "galaxy")).all()
    assert cat["has_xp_gaia"].sum() >= 1 and (cat.loc[cat["has_xp_gaia"], "kind"] == "star").all()


def test_array_shapes_units_and_bands(ds):
    cat = ds.catalog
    ids = cat["object_id"].to_numpy()[:5]
    ls = ds.read("image_ls", ids)
    assert ls["image_array"].shape == (5, 4, schema.IMAGE_SIZE, schema.IMAGE_SIZE)
    assert ls["image_array"].dtype == np.float32 and ls["image_mask"].dtype == bool
    assert ls["image_band"].tolist() == [list(schema.LS_BANDS)] * 5
    np.testing.assert_allclose(ls["image_scale"], schema.LS_PIXEL_SCALE)
    assert ((ls["image_ivar"] == 0) == ls["image_mask"]).all()  # masked pixels carry no weight
    hsc_ids = cat.loc[cat["has_image_hsc"], "object_id"].to_numpy()[:3]
    hsc = ds.read("image_hsc", hsc_ids)
    assert hsc["image_array"].shape == (3, 5, schema.IMAGE_SIZE, schema.IMAGE_SIZE)
    assert hsc["image_band"][0].tolist() == list(schema.HSC_BANDS)
    desi_ids = cat.loc[cat["has_spectrum_desi"], "object_id"].to_numpy()[:2]
    desi = ds.read("spectrum_desi", desi_ids)
    np.testing.assert_allclose(desi["spectrum_lambda"][0], schema.desi_wavelength(), rtol=1e-6)
    assert desi["spectrum_mask"].dtype == bool and desi["spectrum_mask"].any()
    assert (desi["spectrum_ivar"][desi["spectrum_mask"]] == 0).all()
    sdss_id = cat.loc[cat["has_spectrum_sdss"], "object_id"].to_numpy()[:1]
    np.testing.assert_allclose(ds.read("spectrum_sdss", sdss_id)["spectrum_lambda"][0], schema.sdss_wavelength(),
                               rtol=1e-6)
    xp_ids = cat.loc[cat["has_xp_gaia"], "object_id"].to_numpy()
    xp = ds.read("xp_gaia", xp_ids)
    assert xp["coeff"].shape == (len(xp_ids), 2 * schema.XP_N_COEFF)
    assert (xp["coeff_error"] > 0).all()
    seg = ds.read("segmap", cat.loc[cat["has_segmap"], "object_id"].to_numpy())["segmap"]
    assert seg.dtype == np.uint8 and seg.shape[1:] == (schema.IMAGE_SIZE, schema.IMAGE_SIZE)
    assert (seg & schema.SEGMENTATION_BIT["disk"]).any() and (seg & schema.SEGMENTATION_BIT["bulge"]).any()


def test_scalars_are_nan_exactly_where_not_measured(ds):
    cat = ds.catalog
    has_spec = cat["has_spectrum_desi"] | cat["has_spectrum_sdss"]
    assert cat.loc[has_spec, "z"].notna().all() and cat.loc[~has_spec, "z"].isna().all()
    np.testing.assert_allclose(cat.loc[has_spec, "z"], cat.loc[has_spec, "truth_z"], atol=1e-3)
    hsc = cat["has_image_hsc"]
    for col in (*schema.HSC_EXTINCTION_COLUMNS, *schema.HSC_SHAPE_COLUMNS):
        assert cat.loc[hsc, col].notna().all() and cat.loc[~hsc, col].isna().all(), col
    star = cat["kind"] == "star"
    for col in schema.GAIA_COLUMNS:
        assert cat.loc[star, col].notna().all() and cat.loc[~star, col].isna().all(), col
    for col in (*schema.LS_FLUX_COLUMNS, "ebv", *schema.LS_SHAPE_COLUMNS):
        assert cat[col].notna().all(), col
    assert (cat.loc[~star & (cat["kind"] == "qso"), "shape_r"] == 0).all()
    gal = cat["kind"] == "galaxy"
    assert cat.loc[gal, "truth_log_mstar"].notna().all() and cat.loc[~gal, "truth_log_mstar"].isna().all()
    assert cat.loc[star, "truth_teff"].notna().all()
    assert cat.loc[~gal, "truth_morphology"].eq(-1).all()
    labelled = cat.loc[gal & (cat["truth_morphology"] >= 0)]
    assert len(labelled) >= 5
    assert (labelled["truth_morphology"] == labelled["truth_morphology_rendered"]).all()


def test_dataset_info_records_provenance(ds):
    prov = ds.info["provenance"]
    assert prov["seed"] == 0 and prov["n"] == 64 and prov["generator"] == "engine.data.mock"
