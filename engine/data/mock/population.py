"""Physical properties of every mock object, drawn for the whole survey at once (vectorised).

Correlations follow nature: smooth galaxies are massive, old, metal-rich, dust-poor and
passive and live preferentially in clusters; spirals and edge-on disks form stars on a main
sequence that rises with redshift; mergers and disturbed systems are starbursty. Stars get
Teff / log g / [Fe/H] / distance, quasars a redshift, slope and line width.

Everything here depends only on (n, seed); per-object rendering uses its own seeds, so the
numbers of worker processes never change the result.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from engine.data import schema
from engine.data.mock import sky

KIND_FRACTIONS = {"galaxy": 0.85, "star": 0.10, "qso": 0.05}
HSC_FRACTION = 0.20
DESI_GALAXY_FRACTION = 0.50
SDSS_FRACTION = 0.15
LENS_FRACTION = 0.005
XP_G_LIMIT = 17.65  # Gaia DR3 published XP spectra for G < 17.65

#: Field abundance of the ten Galaxy10-DECaLS classes. Rare-in-labels classes (disturbed, cigars, edge-on:
#: fainter or smaller, so fewer pass the labelling cut) are boosted so every class has enough labelled examples.
FIELD_MORPH_WEIGHTS = np.array([0.10, 0.07, 0.07, 0.09, 0.09, 0.10, 0.10, 0.10, 0.14, 0.14])
CLUSTER_BOOST = np.array([0.8, 1.2, 3.0, 2.5, 2.0, 0.5, 0.4, 0.3, 0.5, 0.6])
SMOOTH = (2, 3, 4)
#: Rendering parameters (not catalog columns): morphology drawn for every galaxy, sizes, etc.
RENDER_COLUMNS = ("p_morph", "p_sigma_v", "p_re_arcsec", "p_source_z", "p_theta_e", "p_gmag", "p_parallax",
                  "p_rmag", "p_alpha", "p_fwhm")
MORPH_MASS_MU = np.array([10.0, 10.5, 10.9, 10.6, 10.4, 10.5, 10.4, 10.2, 10.0, 10.3])
MORPH_SSFR_MU = np.array([-9.7, -9.6, -11.7, -11.4, -11.3, -10.1, -10.0, -9.8, -9.9, -10.1])


@cache
def _cosmology_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Planck18 luminosity / angular distance (Mpc) and age (Gyr) on a z grid, for fast interpolation."""
    from astropy.cosmology import Planck18

    z = np.linspace(0.0, 4.0, 801)
    z[0] = 1e-5
    return (z, Planck18.luminosity_distance(z).value, Planck18.angular_diameter_distance(z).value,
            Planck18.age(z).value)


def lum_dist_mpc(z):
    zt, dl, _, _ = _cosmology_tables()
    return np.interp(z, zt, dl)


def ang_dist_mpc(z):
    zt, _, da, _ = _cosmology_tables()
    return np.interp(z, zt, da)


def age_universe_gyr(z):
    zt, _, _, age = _cosmology_tables()
    return np.interp(z, zt, age)


def sample_galaxy_z(rng: np.random.Generator, k: int) -> np.ndarray:
    """Magnitude-limited redshifts: a bright sample (mode ~0.2) plus a fainter tail to z = 1.2."""
    bright = rng.random(k) < 0.75
    z = np.where(bright, rng.gamma(3.0, 0.075, k), rng.gamma(3.0, 0.2, k))
    bad = (z < 0.01) | (z > 1.2)
    while bad.any():
        z[bad] = rng.gamma(3.0, 0.12, bad.sum())
        bad = (z < 0.01) | (z > 1.2)
    return z


def exact_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to n, each within one of n * fraction (so tiny mocks have every kind)."""
    raw = {k: n * f for k, f in fractions.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    if n >= len(fractions):
        for k in counts:  # at least one of each kind when there is room
            if counts[k] == 0:
                donor = max(counts, key=counts.get)
                counts[donor] -= 1
                counts[k] += 1
    return counts


def draw_population(n: int, seed: int) -> pd.DataFrame:
    """One row per object with kind, position, truth and rendering parameters; row i is object i."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E1F]))
    counts = exact_counts(n, KIND_FRACTIONS)
    kinds = np.array(["galaxy"] * counts["galaxy"] + ["star"] * counts["star"] + ["qso"] * counts["qso"])
    kinds = kinds[rng.permutation(n)]
    pop = pd.DataFrame({"object_id": np.arange(n, dtype=np.int64) + 1_000_000, "kind": kinds})
    for col in ("ra", "dec", "truth_z"):
        pop[col] = np.nan
    for col in schema.TRUTH_COLUMNS:
        pop[col] = np.nan
    pop["truth_morphology"] = -1
    pop["truth_morphology_rendered"] = -1
    pop["truth_is_lens"] = False
    pop["truth_group"] = -1
    for col in RENDER_COLUMNS:
        pop[col] = np.nan
    gal = np.flatnonzero(kinds == "galaxy")
    _draw_galaxies(rng, pop, gal)
    _draw_stars(rng, pop, np.flatnonzero(kinds == "star"))
    _draw_qsos(rng, pop, np.flatnonzero(kinds == "qso"))
    pop["ebv"] = sky.ebv_map(pop["ra"].to_numpy(), pop["dec"].to_numpy())
    _choose_sources(rng, pop)
    return pop


def _draw_galaxies(rng: np.random.Generator, pop: pd.DataFrame, idx: np.ndarray) -> None:
    k = len(idx)
    structures = sky.make_structures(rng, k, sample_galaxy_z, ang_dist_mpc)
    ra, dec = sky.uniform_positions(rng, k)
    z = sample_galaxy_z(rng, k)
    group = np.full(k, -1)
    in_cluster = np.zeros(k, bool)
    start = 0
    order = rng.permutation(k)
    for gid, s in enumerate(structures):
        members = order[start : start + s.n_members]
        start += s.n_members
        ra[members], dec[members], z[members] = sky.member_positions(rng, s)
        group[members] = gid
        in_cluster[members] = s.kind == "cluster"
    weights = np.where(in_cluster[:, None], FIELD_MORPH_WEIGHTS * CLUSTER_BOOST, FIELD_MORPH_WEIGHTS)
    weights = weights / weights.sum(axis=1, keepdims=True)
    morph = (rng.random(k)[:, None] > np.cumsum(weights, axis=1)).sum(axis=1)
    morph = np.minimum(morph, 9)
    smooth = np.isin(morph, SMOOTH)
    log_mstar = np.clip(MORPH_MASS_MU[morph] + rng.normal(0, 0.3, k) + 0.9 * z, 8.6, 11.9)
    # the star-forming main sequence rises ~(1+z)^2.5; quenched galaxies stay quenched
    ssfr = (MORPH_SSFR_MU[morph] + rng.normal(0, 0.3, k) + np.where(smooth, 0.8, 2.5) * np.log10(1 + z)
            - 0.15 * (log_mstar - 10.5))
    t_univ = age_universe_gyr(z)
    age_frac = np.where(smooth, rng.normal(0.75, 0.08, k), rng.normal(0.38, 0.1, k))
    age = np.clip(age_frac * t_univ, 0.3, t_univ - 0.2)
    logz = np.clip(0.05 + 0.2 * (log_mstar - 10.8) + rng.normal(0, 0.08, k), -1.0, 0.35)
    dust = np.where(smooth, np.abs(rng.normal(0.1, 0.06, k)),
                    np.clip(0.45 + 0.3 * (log_mstar - 10.0) + rng.normal(0, 0.15, k), 0.05, 1.6))
    dust = np.where(np.isin(morph, (8, 9)), np.minimum(dust * 1.8, 2.5), dust)
    sigma_v = np.where(smooth, 10 ** (2.25 + 0.28 * (log_mstar - 11.0)), 10 ** (1.9 + 0.15 * (log_mstar - 10.0)))
    # sizes (kpc): early types are compact at low mass and grow fast with mass; disks are larger
    re_kpc = np.where(smooth, 10 ** (0.62 + 0.56 * (log_mstar - 11.0)), 10 ** (0.72 + 0.25 * (log_mstar - 10.5)))
    re_kpc = re_kpc * 10 ** rng.normal(0, 0.12, k) / (1 + z) ** 0.5
    re_arcsec = re_kpc / (ang_dist_mpc(z) * 1e3) * 206264.806
    re_arcsec = np.clip(re_arcsec, 0.15, 6.0)  # the nearest giants would overflow a 25" cutout
    rows = pop.index[idx]
    pop.loc[rows, "ra"] = ra
    pop.loc[rows, "dec"] = dec
    pop.loc[rows, "truth_z"] = z
    pop.loc[rows, "truth_group"] = group
    pop.loc[rows, "truth_log_mstar"] = log_mstar
    pop.loc[rows, "truth_ssfr"] = ssfr
    pop.loc[rows, "truth_age"] = age
    pop.loc[rows, "truth_metallicity"] = logz
    pop.loc[rows, "truth_dust_av"] = dust
    pop.loc[rows, "p_morph"] = morph
    pop.loc[rows, "truth_morphology_rendered"] = morph
    pop.loc[rows, "p_sigma_v"] = sigma_v
    pop.loc[rows, "p_re_arcsec"] = re_arcsec
    # the label (truth_morphology) is set per object once its brightness is known: see objects.LABEL_R_MAG
    # rare strong lenses: massive smooth deflectors at intermediate z
    n_lens = int(np.ceil(LENS_FRACTION * k)) if k >= 20 else 0
    cand = np.flatnonzero(smooth & (z > 0.12) & (z < 0.75))
    if n_lens and len(cand):
        chosen = rng.choice(cand, size=min(n_lens, len(cand)), replace=False)
        lens_rows = rows[chosen]
        pop.loc[lens_rows, "truth_is_lens"] = True
        pop.loc[lens_rows, "p_source_z"] = z[chosen] + rng.uniform(0.4, 1.4, len(chosen))
        pop.loc[lens_rows, "p_theta_e"] = rng.uniform(1.6, 3.0, len(chosen))  # resolvable at LS seeing


def _draw_stars(rng: np.random.Generator, pop: pd.DataFrame, idx: np.ndarray) -> None:
    k = len(idx)
    ra, dec = sky.uniform_positions(rng, k)
    kind = rng.choice(3, size=k, p=[0.75, 0.2, 0.05])  # dwarf, giant, hot
    teff = np.where(kind == 0, rng.uniform(3300, 6800, k), np.where(kind == 1, rng.uniform(4000, 5200, k),
                                                                     rng.uniform(7200, 10500, k)))
    logg = np.where(kind == 1, rng.uniform(1.5, 3.2, k), rng.uniform(4.0, 4.8, k))
    feh = np.clip(rng.normal(-0.45, 0.4, k), -2.5, 0.5)
    gmag = 13.0 + 7.5 * rng.power(1.8, k)  # counts rise toward the faint end
    abs_g = np.where(kind == 1, rng.normal(0.6, 0.7, k),
                     np.where(teff < 5800, 4.7 + 0.0025 * (5800 - teff), 4.7 - 0.0011 * (teff - 5800)))
    dist_pc = 10 ** ((gmag - abs_g + 5) / 5)
    rows = pop.index[idx]
    pop.loc[rows, "ra"] = ra
    pop.loc[rows, "dec"] = dec
    pop.loc[rows, "truth_z"] = rng.normal(0, 80, k) / sky.C_KMS
    pop.loc[rows, "truth_teff"] = teff
    pop.loc[rows, "truth_logg"] = logg
    pop.loc[rows, "truth_feh"] = feh
    pop.loc[rows, "p_gmag"] = gmag
    pop.loc[rows, "p_parallax"] = 1000.0 / dist_pc


def _draw_qsos(rng: np.random.Generator, pop: pd.DataFrame, idx: np.ndarray) -> None:
    k = len(idx)
    ra, dec = sky.uniform_positions(rng, k)
    rows = pop.index[idx]
    pop.loc[rows, "ra"] = ra
    pop.loc[rows, "dec"] = dec
    pop.loc[rows, "truth_z"] = np.clip(rng.normal(1.7, 0.75, k), 0.3, 3.6)
    pop.loc[rows, "p_rmag"] = rng.uniform(18.5, 22.0, k)
    pop.loc[rows, "p_alpha"] = rng.normal(-0.5, 0.3, k)
    pop.loc[rows, "p_fwhm"] = rng.uniform(2500, 7000, k)


def _choose_sources(rng: np.random.Generator, pop: pd.DataFrame) -> None:
    """Which objects get which data: LS images for all, HSC for ~20 %, DESI spectra for half the
    galaxies and every star and quasar, SDSS spectra for ~15 %, Gaia XP for stars with G < 17.65."""
    n = len(pop)
    kind = pop["kind"].to_numpy()
    pop["p_hsc"] = False
    pop.loc[rng.choice(n, size=int(round(HSC_FRACTION * n)), replace=False), "p_hsc"] = True
    gal = np.flatnonzero(kind == "galaxy")
    desi = np.zeros(n, bool)
    desi[kind != "galaxy"] = True
    desi[rng.choice(gal, size=int(round(DESI_GALAXY_FRACTION * len(gal))), replace=False)] = True
    pop["p_desi"] = desi
    pop["p_sdss"] = False
    pop.loc[rng.choice(n, size=int(round(SDSS_FRACTION * n)), replace=False), "p_sdss"] = True
    pop["p_xp"] = (kind == "star") & (pop["p_gmag"].to_numpy() < XP_G_LIMIT)
