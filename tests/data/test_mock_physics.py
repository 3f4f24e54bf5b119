"""Physics of the mock survey: colours, lines, photometry and populations behave as in nature."""

from __future__ import annotations

import numpy as np
import pytest
import speclite.filters
from scipy.stats import spearmanr

from engine.data.mock import photometry
from engine.data.mock.objects import make_sed, object_rng
from engine.data.mock.population import draw_population
from engine.data.mock.sed import NEBULAR_LINES
from engine.data.store import open_dataset


@pytest.fixture(scope="module")
def pop():
    p = draw_population(1500, 5)
    p.insert(0, "index", np.arange(len(p)))
    return p


def _gr(sed) -> float:
    m = sum(photometry.band_maggies(sed).values())
    return -2.5 * np.log10(m[photometry.BAND_INDEX["flux_g"]] / m[photometry.BAND_INDEX["flux_r"]])


def test_passive_galaxies_redden_with_redshift(pop):
    passive = pop[(pop["kind"] == "galaxy") & (pop["truth_ssfr"] < -11.0) & (pop["truth_z"] < 0.7)].head(60)
    assert len(passive) >= 30
    gr = [_gr(make_sed(row, object_rng(5, row["index"]))) for row in passive.to_dict("records")]
    rho, _ = spearmanr(passive["truth_z"], gr)
    assert rho > 0.7, rho
    # and they are redder than star-forming galaxies at the same redshift
    sf = pop[(pop["kind"] == "galaxy") & (pop["truth_ssfr"] > -10.3) & (pop["truth_z"] < 0.15)].head(30)
    old = passive[passive["truth_z"] < 0.15]
    gr_sf = np.median([_gr(make_sed(r, object_rng(5, r["index"]))) for r in sf.to_dict("records")])
    gr_old = np.median([_gr(make_sed(r, object_rng(5, r["index"]))) for r in old.to_dict("records")])
    assert gr_old > gr_sf + 0.15, (gr_old, gr_sf)


def test_population_correlations(pop):
    gal = pop[pop["kind"] == "galaxy"]
    smooth = gal["p_morph"].isin([2, 3, 4])
    spiral = gal["p_morph"].isin([5, 6, 7])
    assert gal.loc[smooth, "truth_log_mstar"].median() > gal.loc[spiral, "truth_log_mstar"].median() + 0.2
    assert gal.loc[smooth, "truth_ssfr"].median() < gal.loc[spiral, "truth_ssfr"].median() - 1.0
    assert gal.loc[smooth, "truth_age"].median() > gal.loc[spiral, "truth_age"].median()
    assert gal.loc[smooth, "truth_dust_av"].median() < gal.loc[spiral, "truth_dust_av"].median()
    assert gal["truth_z"].between(0.01, 1.2).all()
    assert spearmanr(gal["truth_log_mstar"], gal["truth_metallicity"])[0] > 0.5
    # cluster members share their cluster's redshift; clusters are rich in smooth galaxies
    members = gal[gal["truth_group"] >= 0]
    spread = members.groupby("truth_group")["truth_z"].std().dropna()
    assert (spread < 0.01).all() and len(spread) >= 5
    assert smooth[gal["truth_group"] >= 0].mean() > smooth[gal["truth_group"] < 0].mean()
    lenses = gal[gal["truth_is_lens"]]
    assert 1 <= len(lenses) <= 0.02 * len(gal)
    assert (lenses["p_source_z"] > lenses["truth_z"]).all()


def test_filter_matrix_matches_speclite():
    """The precomputed photometry matrix gives what speclite's own integration gives."""
    row = {"kind": "galaxy", "truth_is_lens": False, "truth_z": 0.12, "ebv": 0.03, "truth_log_mstar": 10.4,
           "truth_ssfr": -9.8, "truth_age": 4.0, "truth_metallicity": 0.0, "truth_dust_av": 0.5, "p_sigma_v": 90.0}
    sed = make_sed(row, object_rng(0, 0))
    ours = sum(photometry.band_maggies(sed).values())
    lam = np.arange(3000.0, 290000.0, 1.0)
    flux = sed.total(lam) * 1e-17
    for band in ("flux_g", "flux_r", "flux_z", "flux_w1", "mag_i", "phot_bp"):
        filt = speclite.filters.load_filter(photometry.schema.FILTER_CURVES[band])
        ref = filt.get_ab_maggies(flux, lam)
        assert ours[photometry.BAND_INDEX[band]] == pytest.approx(float(ref), rel=5e-3), band


def test_catalog_flux_is_noiseless_sed_flux_within_noise(tiny_mock):
    """Catalog r flux vs speclite r flux of the object's noiseless SED, rebuilt from the population."""
    with open_dataset(tiny_mock) as ds:
        cat = ds.catalog.set_index("object_id")
    pop = draw_population(64, 0)
    pulls = []
    rfilt = speclite.filters.load_filter("decam2014-r")
    lam = np.arange(3300.0, 11000.0, 0.5)
    for i, row in enumerate(pop.to_dict("records")):
        sed = make_sed(row, object_rng(0, i))
        true_nmgy = 1e9 * float(rfilt.get_ab_maggies(sed.total(lam) * 1e-17, lam))
        got = cat.loc[row["object_id"]]
        sigma = photometry.flux_sigma_nmgy("flux_r") * np.sqrt(1 + (got["shape_r"] / 0.7) ** 2)
        pulls.append((got["flux_r"] - true_nmgy) / sigma)
    pulls = np.asarray(pulls)
    assert np.abs(pulls).max() < 5.0
    assert 0.3 < np.mean(pulls**2) < 3.0  # the noise is there and has the stated size


def test_emission_lines_sit_at_redshifted_wavelengths(tiny_mock_factory):
    """Measure H-alpha (or [O II] when H-alpha is beyond the grid) in DESI spectra of star-forming galaxies."""
    root = tiny_mock_factory(64, 0)
    with open_dataset(root) as ds:
        cat = ds.catalog
        sf = cat[(cat["kind"] == "galaxy") & cat["has_spectrum_desi"] & (cat["truth_ssfr"] > -10.5)]
        spectra = ds.read("spectrum_desi", sf["object_id"].to_numpy())
    checked = 0
    o2_rest = (0.45 * NEBULAR_LINES["[OII]3726"] + 0.60 * NEBULAR_LINES["[OII]3729"]) / 1.05
    for k, z in enumerate(sf["truth_z"].to_numpy()):
        lam, flux, ivar = spectra["spectrum_lambda"][k], spectra["spectrum_flux"][k], spectra["spectrum_ivar"][k]
        rest = NEBULAR_LINES["Halpha"] if NEBULAR_LINES["Halpha"] * (1 + z) < lam[-1] - 30 else o2_rest
        expected = rest * (1 + z)
        win = (np.abs(lam - expected) < 12) & (ivar > 0)
        side = (np.abs(lam - expected) > 25) & (np.abs(lam - expected) < 80) & (ivar > 0)
        if win.sum() < 10 or side.sum() < 20:
            continue
        line = flux[win] - np.median(flux[side])
        noise = 1 / np.sqrt(np.median(ivar[win]))
        if line.max() < 8 * noise:
            continue  # too faint to measure a peak
        pos = line > 0.3 * line.max()
        centroid = np.sum(lam[win][pos] * line[pos]) / np.sum(line[pos])
        assert abs(centroid - expected) < 2.0, (z, centroid, expected)
        checked += 1
    assert checked >= 3


def test_image_flux_matches_catalog_flux(tiny_mock):
    """Summed r-band cutout flux of compact, isolated galaxies equals the catalog flux within 10 %."""
    with open_dataset(tiny_mock) as ds:
        cat = ds.catalog
        gal = cat[(cat["kind"] == "galaxy") & (cat["shape_r"] < 2.0) & (cat["flux_r"] > 10)]
        img = ds.read("image_ls", gal["object_id"].to_numpy())
        seg = ds.read("segmap", gal["object_id"].to_numpy())["segmap"]
    checked = 0
    for k, flux in enumerate(gal["flux_r"].to_numpy()):
        if img["image_mask"][k, 1].any() or (seg[k] & 32).any():
            continue  # a cosmic ray or a neighbour adds light that is not the object's
        total = img["image_array"][k, 1].sum()
        assert total == pytest.approx(flux, rel=0.10)
        checked += 1
    assert checked >= 3


def test_gaia_xp_reconstructs_band_flux(tiny_mock):
    from engine.data.mock.xp import reconstruct

    with open_dataset(tiny_mock) as ds:
        cat = ds.catalog
        stars = cat[cat["has_xp_gaia"]]
        xp = ds.read("xp_gaia", stars["object_id"].to_numpy())
    for k, (bp, rp) in enumerate(stars[["phot_bp", "phot_rp"]].to_numpy()):
        for coeff, total in ((xp["coeff"][k, :55], bp), (xp["coeff"][k, 55:], rp)):
            x, spec = reconstruct(coeff)
            assert np.trapezoid(spec, x) == pytest.approx(total, rel=0.05)
    assert (stars["parallax"] > 0).mean() >= 0.5
