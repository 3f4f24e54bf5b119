"""The light components of a mock galaxy, as GalSim profiles of unit flux.

Each Galaxy10-DECaLS class gets a recipe that makes it visibly itself on a 96x96 cutout:
smooth classes are single Sersic spheroids of decreasing roundness (round -> in-between ->
cigar), spirals are bulge + exponential disk + logarithmic arms (pitch angle separates tight
from loose) + star-forming knots on the arms, barred spirals add a flat elongated bar with
arms starting at its ends, edge-on disks are very thin with or without a bulge, disturbed
galaxies are lopsided and clumpy with a plume, mergers are two overlapping galaxies with
tidal tails. GalSim has no spiral arms, so arms, clumps and tails are drawn as pixel
patterns on a fine grid and wrapped in ``galsim.InterpolatedImage``; the PSF is applied later.

A component carries the stellar *population* its light comes from (``old``, ``young``,
``source`` for lensed arcs) and the fraction of that population's light it holds, so
per-band fluxes follow the SED: red bulges and bars, blue arms and knots.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import galsim
import numpy as np

FINE_SCALE = 0.1  # arcsec per pixel of the pattern grids (finer than HSC's 0.168)
SERSIC_N = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5)  # a fixed set keeps GalSim's Sersic caches warm
_GSP = galsim.GSParams(maximum_fft_size=8192, folding_threshold=5e-3)


@dataclass(frozen=True)
class Knots:
    """Compact star-forming clumps: circular Gaussians of one width at sky-plane positions (arcsec).

    Kept analytic rather than as a ``galsim.Sum`` of Gaussians: its Fourier image is one
    outer product per knot, ten times cheaper to render."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray  # sums to 1
    sigma: float

    def kimage(self, kx: np.ndarray) -> np.ndarray:
        """Fourier image on the square grid kx x kx (GalSim's convention: a shift d multiplies by exp(-i k.d))."""
        env = np.exp(-0.5 * self.sigma**2 * (kx[None, :] ** 2 + kx[:, None] ** 2))
        phase_x = np.exp(-1j * np.outer(self.x, kx))  # (n, N)
        phase_y = np.exp(-1j * np.outer(self.y, kx))
        return env * np.einsum("n,ny,nx->yx", self.flux, phase_y, phase_x)

    def transformed(self, matrix: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> Knots:
        xy = matrix @ np.vstack([self.x, self.y])
        return Knots(xy[0] + shift[0], xy[1] + shift[1], self.flux, self.sigma)


@dataclass
class Component:
    """One light component: a unit-flux profile, its segmentation class and its share of a population."""

    name: str
    seg: str | None  # schema.SEGMENTATION_CLASSES name, or None (lensed arcs)
    profile: galsim.GSObject | Knots
    shares: dict[str, float]  # population -> fraction of that population's light
    shape: tuple[float, float] = (0.0, 0.0)  # intrinsic (e1, e2), Tractor convention g = (1-q)/(1+q)


@dataclass
class GalaxyModel:
    components: list[Component]
    re_arcsec: float  # half-light radius of the main body (pre-PSF)
    shape: tuple[float, float]  # ellipticity of the dominant component


def _sersic(n: float, hlr: float) -> galsim.GSObject:
    """Sersic profile of unit flux; a cached unit-radius profile dilated, so GalSim's maxk is computed once per n."""
    n = min(SERSIC_N, key=lambda v: abs(v - n))
    return _unit_sersic(n).dilate(max(hlr, 0.05))


@lru_cache(maxsize=16)
def _unit_sersic(n: float) -> galsim.GSObject:
    return galsim.Sersic(n=n, half_light_radius=1.0, gsparams=_GSP)


def _shape(q: float, beta_rad: float) -> tuple[float, float]:
    g = (1 - q) / (1 + q)
    return (g * np.cos(2 * beta_rad), g * np.sin(2 * beta_rad))


def _fine_grid(half_size: float) -> tuple[np.ndarray, np.ndarray]:
    n = int(np.clip(2 * half_size / FINE_SCALE, 64, 320)) // 2 * 2
    c = (np.arange(n) - n / 2 + 0.5) * FINE_SCALE
    return np.meshgrid(c, c)


def _image_profile(pattern: np.ndarray) -> galsim.GSObject:
    pattern = np.clip(pattern, 0, None)
    total = pattern.sum()
    if total <= 0:
        raise ValueError("empty light pattern")
    img = galsim.Image(np.ascontiguousarray(pattern / total, dtype=np.float64), scale=FINE_SCALE)
    # only its Fourier image on a fixed grid is used, so skip GalSim's costly maxk / stepk search
    return galsim.InterpolatedImage(img, flux=1.0, x_interpolant="linear", gsparams=_GSP, calculate_maxk=False,
                                    calculate_stepk=False)


def spiral_pattern(x, y, r_d, pitch_deg, n_arms, sharp, r_in, phase):
    """Exponential disk light modulated by logarithmic spiral arms (face-on, disk plane)."""
    r = np.hypot(x, y) + 1e-3
    theta = np.arctan2(y, x)
    arg = n_arms * (theta - phase - np.log(r / max(r_in, 0.05)) / np.tan(np.radians(pitch_deg)))
    arms = ((1 + np.cos(arg)) / 2) ** sharp
    taper = 1 - np.exp(-((r / max(r_in, 0.05)) ** 3))
    return np.exp(-r / r_d) * arms * taper


def _knots(rng, x, y, weight, n, sigma, shear: galsim.Shear | None = None,
           center: tuple[float, float] = (0.0, 0.0)) -> Knots:
    """Star-forming clumps placed where ``weight`` (the arm pattern) is bright, then inclined with the disk."""
    p = weight.ravel() / weight.sum()
    pick = rng.choice(p.size, size=n, p=p)
    fluxes = rng.lognormal(0, 0.5, n)
    knots = Knots(x.ravel()[pick].copy(), y.ravel()[pick].copy(), fluxes / fluxes.sum(), float(sigma))
    matrix = shear.getMatrix() if shear is not None else np.eye(2)
    return knots.transformed(matrix, center)


def build_galaxy(morph: int, re_arcsec: float, rng: np.random.Generator, *, lens_theta_e: float | None = None
                 ) -> GalaxyModel:
    """Components of a galaxy of Galaxy10 class ``morph`` with body half-light radius ``re_arcsec``."""
    pa = rng.uniform(0, np.pi)
    builders = {0: _disturbed, 1: _merging, 2: _smooth, 3: _smooth, 4: _smooth, 5: _spiral, 6: _spiral,
                7: _spiral, 8: _edge_on, 9: _edge_on}
    model = builders[morph](morph, re_arcsec, pa, rng)
    if lens_theta_e is not None:
        model.components.append(_lensed_arcs(lens_theta_e, rng))
    return model


def _smooth(morph, re, pa, rng) -> GalaxyModel:
    if morph == 2:
        n, q = rng.choice([3.5, 4.0, 4.5]), rng.uniform(0.82, 1.0)
    elif morph == 3:
        n, q = rng.choice([2.5, 3.0, 3.5]), rng.uniform(0.5, 0.72)
    else:
        n, q = rng.choice([1.5, 2.0, 2.5]), rng.uniform(0.16, 0.3)
    body = _sersic(n, re).shear(q=q, beta=pa * galsim.radians)
    shape = _shape(q, pa)
    comp = Component("spheroid", "bulge", body, {"old": 1.0, "young": 1.0}, shape)
    return GalaxyModel([comp], re, shape)


def _disk_components(morph, re, pa, rng, q, *, bulge_share, bar, pitch, n_arms, arm_share_old, arm_share_young,
                     knot_share, center=(0.0, 0.0), tag="") -> list[Component]:
    """Bulge + smooth disk + arms (+ bar, knots) in the disk plane, then inclined by ``q`` at ``pa``."""
    r_d = re / 1.678
    shear = galsim.Shear(q=q, beta=pa * galsim.radians)
    shape = _shape(q, pa)
    comps: list[Component] = []
    bar_share = 0.0
    r_in = 0.35 * re
    phase = rng.uniform(0, 2 * np.pi)
    if bar:
        bar_len = rng.uniform(0.9, 1.3) * re
        q_bar = rng.uniform(0.2, 0.3)
        bar_share = rng.uniform(0.14, 0.2)
        bar_prof = _sersic(0.5, 0.5 * bar_len * np.sqrt(q_bar)).shear(q=q_bar, beta=phase * galsim.radians)
        comps.append(Component(f"bar{tag}", "bar", bar_prof.shear(shear).shift(*center),
                               {"old": bar_share, "young": 0.03}, shape))
        r_in = bar_len
    if bulge_share > 0:
        q_b = rng.uniform(0.75, 1.0)
        bulge = _sersic(rng.choice([2.5, 3.0, 4.0]), max(0.18 * re, 0.25)).shear(q=q_b, beta=pa * galsim.radians)
        comps.append(Component(f"bulge{tag}", "bulge", bulge.shift(*center), {"old": bulge_share, "young": 0.0},
                               _shape(q_b, pa)))
    young_left = 1.0 - arm_share_young - knot_share - (0.03 if bar else 0.0)
    old_left = 1.0 - bulge_share - bar_share - arm_share_old
    disk = galsim.Exponential(half_light_radius=re, gsparams=_GSP).shear(shear).shift(*center)
    comps.append(Component(f"disk{tag}", "disk", disk, {"old": old_left, "young": young_left}, shape))
    if arm_share_old + arm_share_young > 0:
        x, y = _fine_grid(min(5.5 * r_d, 16.0))
        pattern = spiral_pattern(x, y, r_d, pitch, n_arms, rng.uniform(2.5, 3.5) if pitch < 20 else rng.uniform(2.0, 2.8),
                                 r_in, phase)
        arms = _image_profile(pattern).shear(shear).shift(*center)
        comps.append(Component(f"arms{tag}", "arms", arms, {"old": arm_share_old, "young": arm_share_young}, shape))
        if knot_share > 0:
            n_knots = int(rng.integers(6, 16))
            knots = _knots(rng, x, y, pattern, n_knots, sigma=max(0.04 * re, 0.12), shear=shear, center=center)
            comps.append(Component(f"knots{tag}", "knots", knots, {"young": knot_share}, shape))
    return comps


def _face_on_q(rng, lo=0.45, q0=0.12) -> float:
    cos_i = rng.uniform(lo, 1.0)
    return float(np.sqrt(cos_i**2 * (1 - q0**2) + q0**2))


def _spiral(morph, re, pa, rng) -> GalaxyModel:
    q = _face_on_q(rng)
    if morph == 5:  # barred
        kw = dict(bulge_share=rng.uniform(0.12, 0.2), bar=True, pitch=rng.uniform(14, 24), n_arms=2,
                  arm_share_old=0.3, arm_share_young=0.6, knot_share=0.08)
    elif morph == 6:  # tight
        kw = dict(bulge_share=rng.uniform(0.15, 0.25), bar=False, pitch=rng.uniform(8, 13),
                  n_arms=int(rng.choice([2, 3])), arm_share_old=0.35, arm_share_young=0.6, knot_share=0.06)
    else:  # loose
        kw = dict(bulge_share=rng.uniform(0.04, 0.1), bar=False, pitch=rng.uniform(26, 40), n_arms=2,
                  arm_share_old=0.4, arm_share_young=0.6, knot_share=0.2)
    comps = _disk_components(morph, re, pa, rng, q, **kw)
    return GalaxyModel(comps, re, _shape(q, pa))


def _edge_on(morph, re, pa, rng) -> GalaxyModel:
    q = rng.uniform(0.07, 0.13)
    shear = galsim.Shear(q=q, beta=pa * galsim.radians)
    disk = galsim.Exponential(half_light_radius=re, gsparams=_GSP).shear(shear)
    comps = []
    shape = _shape(q, pa)
    if morph == 9:
        share = rng.uniform(0.45, 0.65)
        q_b = rng.uniform(0.7, 0.95)
        bulge = _sersic(rng.choice([2.5, 3.0, 4.0]), rng.uniform(0.25, 0.35) * re).shear(q=q_b, beta=pa * galsim.radians)
        comps.append(Component("bulge", "bulge", bulge, {"old": share, "young": 0.0}, _shape(q_b, pa)))
    else:
        share = 0.0
    comps.append(Component("disk", "disk", disk, {"old": 1.0 - share, "young": 1.0}, shape))
    return GalaxyModel(comps, re, shape)


def _disturbed(morph, re, pa, rng) -> GalaxyModel:
    """Lopsided, clumpy disk with a tidal plume (one pixel pattern) + knots."""
    x, y = _fine_grid(min(4.5 * re, 18.0))
    r_d = re / 1.678
    theta0 = rng.uniform(0, 2 * np.pi)
    r = np.hypot(x, y)
    theta = np.arctan2(y, x)
    lopsided = r * (1 + 0.45 * np.cos(theta - theta0))
    body = np.exp(-lopsided / r_d)
    for _ in range(int(rng.integers(3, 7))):  # irregular lumps
        cx, cy = rng.normal(0, 0.9 * re, 2)
        s = rng.uniform(0.3, 0.8) * re
        body += rng.uniform(0.2, 0.6) * np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / s**2)
    plume = _tail(x, y, start=rng.uniform(0.6, 1.0) * re, angle=theta0 + np.pi, curl=rng.uniform(-1.2, 1.2),
                  length=rng.uniform(2.0, 3.0) * re, width=0.35 * re)
    body += 0.35 * plume
    q = _face_on_q(rng, lo=0.4)
    shear = galsim.Shear(q=q, beta=pa * galsim.radians)
    disk = _image_profile(body).shear(shear)
    knots = _knots(rng, x, y, body, int(rng.integers(5, 12)), sigma=max(0.05 * re, 0.12), shear=shear)
    shape = _shape(q, pa)
    comps = [Component("disk", "disk", disk, {"old": 0.92, "young": 0.72}, shape),
             Component("knots", "knots", knots, {"young": 0.28}, shape)]
    bulge = _sersic(3.0, max(0.15 * re, 0.2))
    comps.append(Component("bulge", "bulge", bulge, {"old": 0.08, "young": 0.0}, (0.0, 0.0)))
    return GalaxyModel(comps, re, shape)


def _tail(x, y, *, start, angle, curl, length, width) -> np.ndarray:
    """A curved tidal tail: light along a spiral-ish track leaving the body at ``start``."""
    t = np.linspace(0, 1, 60)
    rr = start + length * t
    ang = angle + curl * t
    tx, ty = rr * np.cos(ang), rr * np.sin(ang)
    out = np.zeros_like(x)
    for i in range(0, len(t), 3):
        w = np.exp(-2.0 * t[i])
        out += w * np.exp(-0.5 * ((x - tx[i]) ** 2 + (y - ty[i]) ** 2) / (width * (1 + t[i])) ** 2)
    return out


def _merging(morph, re, pa, rng) -> GalaxyModel:
    """Two overlapping galaxies with tidal tails; the light of the object is split between them."""
    sep = rng.uniform(0.9, 1.8) * re
    ang = rng.uniform(0, 2 * np.pi)
    ratio = rng.uniform(0.35, 0.6)  # secondary share
    re2 = re * rng.uniform(0.6, 0.9)
    c1 = (-ratio * sep * np.cos(ang), -ratio * sep * np.sin(ang))
    c2 = ((1 - ratio) * sep * np.cos(ang), (1 - ratio) * sep * np.sin(ang))
    comps: list[Component] = []
    for center, r_e, share, tag in ((c1, re, 1 - ratio, ""), (c2, re2, ratio, "_2")):
        q = _face_on_q(rng, lo=0.35)
        pa_i = rng.uniform(0, np.pi)
        b_share = rng.uniform(0.25, 0.45)
        bulge = _sersic(3.0, max(0.2 * r_e, 0.25)).shift(*center)
        disk = galsim.Exponential(half_light_radius=r_e, gsparams=_GSP).shear(q=q, beta=pa_i * galsim.radians)
        comps.append(Component(f"bulge{tag}", "bulge", bulge, {"old": b_share * share * 0.85, "young": 0.0}))
        comps.append(Component(f"disk{tag}", "disk", disk.shift(*center),
                               {"old": (1 - b_share) * share * 0.85, "young": share * 0.75}, _shape(q, pa_i)))
    x, y = _fine_grid(min(5.0 * re + sep, 20.0))
    tails = _tail(x - c1[0], y - c1[1], start=0.8 * re, angle=ang + np.pi, curl=rng.choice([-1, 1]) * 1.3,
                  length=2.5 * re, width=0.3 * re)
    tails += _tail(x - c2[0], y - c2[1], start=0.8 * re2, angle=ang, curl=rng.choice([-1, 1]) * 1.3,
                   length=2.2 * re, width=0.3 * re)
    comps.append(Component("tails", "disk", _image_profile(tails), {"old": 0.15, "young": 0.15}))
    comps.append(Component("knots", "knots", _knots(rng, x, y, tails + 1e-3, int(rng.integers(4, 9)),
                                                    sigma=max(0.05 * re, 0.12)), {"young": 0.10}))
    return GalaxyModel(comps, re, comps[1].shape)


def _lensed_arcs(theta_e: float, rng) -> Component:
    """Gravitationally lensed background galaxy: arcs or a near-complete ring at the Einstein radius."""
    x, y = _fine_grid(theta_e + 2.0)
    r = np.hypot(x, y)
    theta = np.arctan2(y, x)
    width = rng.uniform(0.12, 0.22)
    radial = np.exp(-0.5 * ((r - theta_e) / width) ** 2)
    n_arcs = int(rng.choice([1, 2, 4]))
    phi0 = rng.uniform(0, 2 * np.pi)
    az = 0.08 + sum(np.exp(-0.5 * (np.angle(np.exp(1j * (theta - phi0 - k * 2 * np.pi / n_arcs))) / rng.uniform(0.35, 0.9)) ** 2)
                    for k in range(n_arcs))
    return Component("lensed_arcs", None, _image_profile(radial * az), {"source": 1.0})
