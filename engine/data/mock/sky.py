"""Where mock objects sit: a patch of sky around COSMOS (RA 150, Dec 2) with clusters, groups
and field galaxies, so a sky map shows the clumps and voids of real large-scale structure.

Cluster and group members share the structure's redshift (plus a velocity dispersion); the
projected member density follows a cored isothermal (beta = 2/3) profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RA_RANGE = (148.5, 151.5)
DEC_RANGE = (0.5, 3.5)
C_KMS = 299_792.458


@dataclass(frozen=True)
class Structure:
    """A cluster or group: centre, redshift, core radius (deg), velocity dispersion (km/s)."""

    kind: str  # "cluster" | "group"
    ra: float
    dec: float
    z: float
    core_deg: float
    sigma_v: float
    n_members: int


def uniform_positions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform on the sphere within the patch (uniform in RA and sin(Dec))."""
    ra = rng.uniform(*RA_RANGE, n)
    s0, s1 = np.sin(np.radians(DEC_RANGE))
    dec = np.degrees(np.arcsin(rng.uniform(s0, s1, n)))
    return ra, dec


def ebv_map(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Smooth Galactic reddening over the patch (COSMOS has E(B-V) ~ 0.02), always positive."""
    ra = np.asarray(ra)
    dec = np.asarray(dec)
    wave = np.sin(2 * np.pi * (ra - RA_RANGE[0]) / 2.1) * np.cos(2 * np.pi * (dec - DEC_RANGE[0]) / 1.7)
    return 0.019 + 0.007 * wave + 0.004 * np.sin(2 * np.pi * (ra + dec) / 3.3)


def make_structures(rng: np.random.Generator, n_galaxies: int, sample_z, ang_dist_mpc) -> list[Structure]:
    """A few rich clusters (~12 % of galaxies) and many groups (~25 %), the rest is field.

    ``sample_z(rng, k)`` draws redshifts from the survey's distribution; ``ang_dist_mpc(z)``
    converts to angular sizes.
    """
    structures: list[Structure] = []
    n_cluster_members = int(round(0.12 * n_galaxies))
    n_clusters = max(1, int(round(n_cluster_members / 200))) if n_cluster_members >= 3 else 0
    sizes = _split(rng, n_cluster_members, n_clusters)
    for k in sizes:
        z = float(rng.uniform(0.05, 0.35))
        core = np.degrees(0.25 / ang_dist_mpc(z))
        ra, dec = _centre(rng, margin=0.3)
        structures.append(Structure("cluster", ra, dec, z, float(core), float(rng.uniform(600, 1000)), int(k)))
    n_group_members = int(round(0.25 * n_galaxies))
    left = n_group_members
    while left >= 3:
        k = int(min(left, rng.integers(3, 20)))
        z = float(sample_z(rng, 1)[0])
        core = np.degrees(0.08 / ang_dist_mpc(z))
        ra, dec = _centre(rng, margin=0.1)
        structures.append(Structure("group", ra, dec, z, float(core), float(rng.uniform(150, 400)), k))
        left -= k
    return structures


def member_positions(rng: np.random.Generator, s: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RA, Dec, z of a structure's members: cored isothermal projected profile, shared redshift."""
    x_t = 12.0
    u = rng.uniform(0, 1, s.n_members)
    x = np.sqrt(np.expm1(u * np.log1p(x_t**2)))
    phi = rng.uniform(0, 2 * np.pi, s.n_members)
    r = x * s.core_deg
    dec = np.clip(s.dec + r * np.sin(phi), *DEC_RANGE)
    ra = np.clip(s.ra + r * np.cos(phi) / np.cos(np.radians(s.dec)), *RA_RANGE)
    z = s.z + rng.normal(0, s.sigma_v / C_KMS * (1 + s.z), s.n_members)
    return ra, dec, np.clip(z, 0.01, 1.2)


def _centre(rng: np.random.Generator, margin: float) -> tuple[float, float]:
    ra = float(rng.uniform(RA_RANGE[0] + margin, RA_RANGE[1] - margin))
    dec = float(rng.uniform(DEC_RANGE[0] + margin, DEC_RANGE[1] - margin))
    return ra, dec


def _split(rng: np.random.Generator, total: int, parts: int) -> list[int]:
    if parts <= 0:
        return []
    weights = rng.dirichlet(np.full(parts, 3.0))
    sizes = np.floor(weights * total).astype(int)
    sizes[0] += total - sizes.sum()
    return [int(s) for s in sizes]
