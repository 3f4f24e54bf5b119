"""Simulate one object end to end: SED -> photometry -> images (+ segmap) -> spectra -> Gaia XP.

Every random draw comes from a generator seeded by (survey seed, object index), so an
object's data do not depend on which worker made it or on how the survey was chunked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import galsim
import numpy as np

from engine.data import schema
from engine.data.mock import images, photometry, population, segmaps, spectra, xp
from engine.data.mock.photometry import BAND_INDEX, BANDS
from engine.data.mock.sed import SED, galaxy_sed, qso_sed, star_sed
from engine.data.mock.structure import Component, build_galaxy

C_KMS = 299_792.458
#: A galaxy gets a morphology label (truth_morphology >= 0) only where a person could classify it,
#: as in Galaxy10-DECaLS (r < 17.77): bright enough and resolved. Fainter ones are rendered the same, label -1.
LABEL_R_MAG = 18.5
LABEL_MIN_RE = 1.2  # arcsec


@dataclass
class ObjectData:
    """Everything made for one object: catalog scalars and one row per array source it has."""

    index: int
    catalog: dict[str, float]
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def object_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0xAB10]))


def make_sed(row: dict, rng: np.random.Generator) -> SED:
    """The object's SED in spectrum units (scaled to its apparent brightness)."""
    kind = row["kind"]
    if kind == "galaxy":
        source = None
        if row["truth_is_lens"]:
            zs = float(row["p_source_z"])
            source = {"z": zs, "lum_dist_mpc": float(population.lum_dist_mpc(zs)), "log_mstar": rng.uniform(9.5, 10.2),
                      "ssfr": -8.6, "magnification": rng.uniform(12, 30)}
        z = float(row["truth_z"])
        return galaxy_sed(z=z, lum_dist_mpc=float(population.lum_dist_mpc(z)), ebv=float(row["ebv"]),
                          log_mstar=float(row["truth_log_mstar"]), ssfr=float(row["truth_ssfr"]),
                          age_gyr=float(row["truth_age"]), logz=float(row["truth_metallicity"]),
                          dust_av=float(row["truth_dust_av"]), sigma_v=float(row["p_sigma_v"]), source=source)
    if kind == "star":
        sed = star_sed(teff=float(row["truth_teff"]), logg=float(row["truth_logg"]), feh=float(row["truth_feh"]),
                       ebv=float(row["ebv"]), rv_kms=float(row["truth_z"]) * C_KMS)
        return _scale_to(sed, "phot_g", float(row["p_gmag"]))
    sed = qso_sed(z=float(row["truth_z"]), alpha=float(row["p_alpha"]), ebv=float(row["ebv"]),
                  fwhm_kms=float(row["p_fwhm"]), rng=rng)
    return _scale_to(sed, "flux_r", float(row["p_rmag"]))


def _scale_to(sed: SED, band: str, ab_mag: float) -> SED:
    total = sum(photometry.band_maggies(sed).values())[BAND_INDEX[band]]
    return sed.scaled(10 ** (-0.4 * ab_mag) / total)


def simulate(row: dict, seed: int) -> ObjectData:
    """All data of the object in population row ``row`` (a dict with the population's columns)."""
    index = int(row["index"])
    rng = object_rng(seed, index)
    kind = row["kind"]
    sed = make_sed(row, rng)
    maggies = photometry.band_maggies(sed)
    nmgy = {part: 1e9 * m for part, m in maggies.items()}
    total = sum(nmgy.values())
    if kind == "galaxy":
        theta_e = float(row["p_theta_e"]) if row["truth_is_lens"] else None
        model = build_galaxy(int(row["p_morph"]), float(row["p_re_arcsec"]), rng, lens_theta_e=theta_e)
        comps = list(model.components)
    else:
        part = next(iter(sed.parts))
        comps = [Component("point", None, galsim.DeltaFunction(), {part: 1.0})]
        model = None
    nb = images.neighbours(rng)
    comps += [c for c, _ in nb]
    out = ObjectData(index, {})
    cat = out.catalog

    ls_fluxes = _pop_fluxes(nmgy, nb, images.LS)
    ls = images.render(images.LS, comps, ls_fluxes, rng, detail_band=1)
    out.arrays["image_ls"] = images.stamp_fields(ls, images.LS)
    r_psf_hlr = galsim.Moffat(beta=images.MOFFAT_BETA, fwhm=float(ls.psf_fwhm[1])).half_light_radius
    if kind == "galaxy":
        own = {k: v for k, v in ls.component_images.items() if not k.startswith("neighbour")}
        out.arrays["segmap"] = {"segmap": segmaps.segmap(comps, ls.component_images, float(ls.sigma[1]))}
        hlr = half_light_radius(sum(own.values()), images.LS.scale)
        cat["shape_r"] = float(np.sqrt(max(hlr**2 - r_psf_hlr**2, 0.0)))
        cat["shape_e1"], cat["shape_e2"] = (float(v) for v in model.shape)
        r_mag = 22.5 - 2.5 * np.log10(max(float(total[BAND_INDEX["flux_r"]]), 1e-6))
        labelled = r_mag <= LABEL_R_MAG and float(row["p_re_arcsec"]) >= LABEL_MIN_RE
        cat["truth_morphology"] = int(row["p_morph"]) if labelled else -1
    else:
        cat["shape_r"], cat["shape_e1"], cat["shape_e2"] = 0.0, 0.0, 0.0
    size_factor = np.sqrt(1 + (cat["shape_r"] / 0.7) ** 2)
    for band in schema.LS_FLUX_COLUMNS:
        sigma = photometry.flux_sigma_nmgy(band) * size_factor
        cat[band] = float(total[BAND_INDEX[band]] + rng.normal(0, sigma))
    cat["ebv"] = float(row["ebv"])

    if row["p_hsc"]:
        hsc = images.render(images.HSC, comps, _pop_fluxes(nmgy, nb, images.HSC), rng)
        out.arrays["image_hsc"] = images.stamp_fields(hsc, images.HSC)
        for band, a_col in zip(schema.HSC_MAG_COLUMNS, schema.HSC_EXTINCTION_COLUMNS, strict=True):
            f = total[BAND_INDEX[band]] + rng.normal(0, photometry.flux_sigma_nmgy(band) * size_factor)
            cat[band] = float(22.5 - 2.5 * np.log10(f)) if f > 0 else np.nan
            cat[a_col] = photometry.extinction_mag(float(row["ebv"]), band)
        cat.update(hsc_moments(hsc.model[2], images.HSC.scale))

    for name, spec in (("spectrum_desi", spectra.DESI), ("spectrum_sdss", spectra.SDSS)):
        if row[f"p_{name.split('_')[1]}"]:
            fields, _ = spectra.observe(sed, spec, rng)
            out.arrays[name] = fields
    has_spec = "spectrum_desi" in out.arrays or "spectrum_sdss" in out.arrays
    z_true = float(row["truth_z"])
    cat["z"] = float(z_true + rng.normal(0, 1e-5 * (1 + z_true))) if has_spec else np.nan

    if kind == "star":
        for band in ("phot_g", "phot_bp", "phot_rp"):
            flux = photometry.maggies_to_gaia(float(sum(maggies.values())[BAND_INDEX[band]]), band)
            cat[band] = float(flux * (1 + rng.normal(0, 0.002)) + rng.normal(0, 2.0))
        gmag = float(row["p_gmag"])
        cat["parallax"] = float(row["p_parallax"] + rng.normal(0, 0.02 + 0.3 * 10 ** (0.2 * (gmag - 19))))
        if row["p_xp"]:
            out.arrays["xp_gaia"] = xp.xp_fields(sed, cat["phot_bp"], cat["phot_rp"], rng)
    return out


def _pop_fluxes(nmgy: dict[str, np.ndarray], nb, survey: images.Survey) -> dict[str, np.ndarray]:
    idx = [BANDS.index(b) for b in survey.phot_bands]
    out = {part: v[idx] for part, v in nmgy.items()}
    for comp, fluxes in nb:
        (pop,) = comp.shares
        out[pop] = np.array([fluxes[b.split("_")[1]] for b in survey.phot_bands])
    return out


def half_light_radius(img: np.ndarray, scale: float) -> float:
    """Circular half-light radius (arcsec) about the stamp centre (pixel size/2, where objects are drawn)."""
    h, w = img.shape
    y, x = np.indices(img.shape)
    r = np.hypot(x - w // 2, y - h // 2).ravel()
    order = np.argsort(r)
    cum = np.cumsum(np.clip(img.ravel()[order], 0, None))
    if cum[-1] <= 0:
        return 0.0
    return float(r[order][np.searchsorted(cum, 0.5 * cum[-1])] * scale)


def hsc_moments(img: np.ndarray, scale: float) -> dict[str, float]:
    """HSC sdss-shape-like adaptive second moments (arcsec^2) of the noiseless i-band model."""
    try:
        mom = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(img, dtype=np.float64), scale=scale))
    except galsim.GalSimError:  # adaptive moments do not converge (very extended or blended): plain moments
        return _plain_moments(img, scale)
    e1, e2 = mom.observed_shape.e1, mom.observed_shape.e2
    e = min(np.hypot(e1, e2), 0.999)
    t = 2 * (mom.moments_sigma * scale) ** 2 / np.sqrt(1 - e**2)
    return {"hsc_shape11": float(t * (1 + e1) / 2), "hsc_shape22": float(t * (1 - e1) / 2),
            "hsc_shape12": float(t * e2 / 2)}


def _plain_moments(img: np.ndarray, scale: float, radius: float = 30.0) -> dict[str, float]:
    """Unweighted second moments (arcsec^2) of the positive light within ``radius`` pixels of the centre."""
    h, w = img.shape
    y, x = np.indices(img.shape)
    dx, dy = x - w // 2, y - h // 2
    wgt = np.where(np.hypot(dx, dy) < radius, np.clip(img, 0, None), 0.0)
    tot = wgt.sum()
    if tot <= 0:
        return {"hsc_shape11": np.nan, "hsc_shape22": np.nan, "hsc_shape12": np.nan}
    mx, my = (wgt * dx).sum() / tot, (wgt * dy).sum() / tot
    s2 = scale**2
    return {"hsc_shape11": float((wgt * (dx - mx) ** 2).sum() / tot * s2),
            "hsc_shape22": float((wgt * (dy - my) ** 2).sum() / tot * s2),
            "hsc_shape12": float((wgt * (dx - mx) * (dy - my)).sum() / tot * s2)}
