"""Analytic spectral energy distributions for mock galaxies, stars and quasars.

No template files can be downloaded here, so every spectrum is built from physics-shaped
pieces: simple-stellar-population-like continua (blackbody mixtures for turn-off stars and
giants, a 4000 A break, Balmer / Ca H&K / G-band / Mg / Na / Fe absorption), Calzetti dust,
nebular emission lines scaled by SFR, a warm-dust mid-IR bump (so WISE sees star formation),
stellar photospheres by Teff / log g / [Fe/H], and quasar power laws with broad lines.

An :class:`SED` is a list of named *parts* (``old``, ``young``, ``source`` ...), each a
function of observed wavelength; the spectrum, the photometry and the per-component image
colours all come from the same parts, so they agree by construction. Flux densities are in
1e-17 erg/s/cm^2/A, observed frame, Milky-Way extinction applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

C_KMS = 299_792.458
HC_K = 1.438777e8  # hc/k in Angstrom * Kelvin
L_SUN_5500 = 5.3e29  # solar luminosity density at 5500 A, erg/s/A
MPC_CM = 3.0857e24
UNIT = 1e-17  # spectrum flux unit, erg/s/cm^2/A

# --- emission / absorption line lists (rest-frame, vacuum-ish Angstrom) -------------------

NEBULAR_LINES: dict[str, float] = {
    "[OII]3726": 3726.03,
    "[OII]3729": 3728.82,
    "Hdelta": 4101.74,
    "Hgamma": 4340.47,
    "Hbeta": 4861.33,
    "[OIII]4959": 4958.91,
    "[OIII]5007": 5006.84,
    "[NII]6548": 6548.05,
    "Halpha": 6562.80,
    "[NII]6584": 6583.45,
    "[SII]6717": 6716.44,
    "[SII]6731": 6730.82,
}
QSO_LINES: dict[str, tuple[float, float]] = {  # name: (rest wavelength, rest equivalent width A)
    "Lyalpha": (1215.67, 90.0),
    "CIV": (1549.06, 35.0),
    "CIII]": (1908.73, 22.0),
    "MgII": (2798.75, 32.0),
    "Hgamma": (4340.47, 15.0),
    "Hbeta": (4861.33, 55.0),
    "Halpha": (6562.80, 250.0),
}
#: Stellar absorption features: (rest wavelength, intrinsic sigma A).
ABSORPTION = {
    "CaK": (3933.66, 4.0),
    "CaH": (3968.47, 4.0),
    "Hepsilon": (3970.07, 5.0),
    "Hdelta": (4101.74, 6.0),
    "Gband": (4304.4, 8.0),
    "Hgamma": (4340.47, 6.0),
    "Hbeta": (4861.33, 6.0),
    "Mgb": (5175.0, 8.0),
    "Fe5270": (5270.0, 6.0),
    "Fe5335": (5335.0, 6.0),
    "NaD": (5892.9, 5.0),
    "Halpha": (6562.80, 6.0),
    "CaT8498": (8498.0, 4.0),
    "CaT8542": (8542.0, 4.0),
    "CaT8662": (8662.0, 4.0),
}
TIO_HEADS = (4954.0, 5167.0, 5448.0, 6158.0, 7054.0, 7589.0, 8432.0)


# --- basic shapes --------------------------------------------------------------------------


def blackbody_lambda(lam: np.ndarray, temp: float) -> np.ndarray:
    """Planck B_lambda(T) up to a constant, normalised to 1 at 5500 A."""
    x = HC_K / (lam * temp)
    x0 = HC_K / (5500.0 * temp)
    with np.errstate(over="ignore"):
        return (5500.0 / lam) ** 5 * np.expm1(x0) / np.expm1(np.minimum(x, 700.0))


def gaussian(lam: np.ndarray, center: float, sigma: np.ndarray | float) -> np.ndarray:
    """Unit-area Gaussian profile (per A)."""
    return np.exp(-0.5 * ((lam - center) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)


def add_line(out: np.ndarray, lam: np.ndarray, center: float, sigma: np.ndarray | float, flux: float) -> None:
    """Add a Gaussian line of integrated ``flux`` to ``out`` in place, touching only +-8 sigma (lam sorted)."""
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), lam.shape)
    half = 8 * float(sig.max(initial=0.0))
    lo, hi = np.searchsorted(lam, (center - half, center + half))
    if hi > lo:
        out[lo:hi] += flux * gaussian(lam[lo:hi], center, sig[lo:hi])


def calzetti_k(lam_rest: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) starburst attenuation curve k(lambda), R_V = 4.05, extended smoothly."""
    mu = np.clip(lam_rest, 1000.0, 1e6) / 1e4
    short = 2.659 * (-2.156 + 1.509 / mu - 0.198 / mu**2 + 0.011 / mu**3) + 4.05
    long = 2.659 * (-1.857 + 1.040 / mu) + 4.05
    k = np.where(mu < 0.63, short, long)
    return np.maximum(k, 0.0) * np.where(mu > 2.2, (2.2 / mu) ** 1.5, 1.0)


def ccm_extinction(lam_obs: np.ndarray, ebv: float, r_v: float = 3.1) -> np.ndarray:
    """Milky-Way transmission 10^(-0.4 A_lambda) from Cardelli, Clayton & Mathis (1989)."""
    return 10 ** (-0.4 * ebv * ccm_a_over_ebv(np.asarray(lam_obs, dtype=np.float64), r_v))


_CCM_CACHE: dict[tuple, np.ndarray] = {}


def ccm_a_over_ebv(lam: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """A_lambda / E(B-V) of the CCM89 law; cached per wavelength grid (the same few grids recur)."""
    key = (lam.size, float(lam[0]), float(lam[-1]), float(lam[lam.size // 2]), r_v)
    cached = _CCM_CACHE.get(key)
    if cached is not None:
        return cached
    x = 1e4 / lam  # inverse micron
    a = np.zeros_like(x)
    b = np.zeros_like(x)
    ir = x < 1.1
    a[ir] = 0.574 * x[ir] ** 1.61
    b[ir] = -0.527 * x[ir] ** 1.61
    opt = (x >= 1.1) & (x < 3.3)
    y = x[opt] - 1.82
    a[opt] = 1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4 + 0.01979 * y**5 - 0.77530 * y**6 + 0.32999 * y**7
    b[opt] = 1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4 - 0.62251 * y**5 + 5.30260 * y**6 - 2.09002 * y**7
    uv = x >= 3.3
    xu = np.minimum(x[uv], 8.0)
    a[uv] = 1.752 - 0.316 * xu - 0.104 / ((xu - 4.67) ** 2 + 0.341)
    b[uv] = -3.090 + 1.825 * xu + 1.206 / ((xu - 4.62) ** 2 + 0.263)
    out = r_v * (a + b / r_v)
    if len(_CCM_CACHE) < 64:
        _CCM_CACHE[key] = out
    return out


def broaden(sigma_rest: float, z: float, extra_sigma_obs: np.ndarray | float) -> np.ndarray | float:
    """Observed-frame sigma of a rest-frame Gaussian after an instrumental LSF (Gaussians add in quadrature)."""
    return np.sqrt((sigma_rest * (1 + z)) ** 2 + np.asarray(extra_sigma_obs) ** 2)


# --- stellar populations --------------------------------------------------------------------


def mass_to_light(age_gyr: float, logz: float) -> float:
    """V-band-ish mass-to-light ratio (Msun/Lsun at 5500 A) of a population of this age: rises with age."""
    return 10 ** (-0.35 + 0.9 * np.log10(max(age_gyr, 0.005)) + 0.15 * logz)


def ssp_continuum(lam_rest: np.ndarray, age_gyr: float, logz: float, sigma_v: float, z: float,
                  extra_sigma_obs: np.ndarray | float = 0.0) -> np.ndarray:
    """Shape of a single-age population (1 at 5500 A before lines): turn-off + cooler dwarfs + giants,
    a 4000 A break and absorption lines whose depths follow age and metallicity."""
    t_to = 6300.0 * (age_gyr / 10.0) ** -0.22 * (1 - 0.06 * logz)
    giant_w = 0.04 + 0.36 * np.clip(np.log10(age_gyr / 0.05) / 2.3, 0, 1)
    temps = (t_to, 0.8 * t_to, 0.62 * t_to, 4500.0 * (1 - 0.04 * logz))
    weights = ((1 - giant_w) * 0.55, (1 - giant_w) * 0.3, (1 - giant_w) * 0.15, giant_w)
    lam = np.asarray(lam_rest, dtype=np.float64)
    flux = sum(w * blackbody_lambda(lam, t) for w, t in zip(weights, temps, strict=True))
    # 4000 A break and UV blanketing grow with age and metallicity
    brk = 1 + 0.55 * (1 - np.exp(-age_gyr / 2.5)) * 10 ** (0.25 * logz)
    step = 0.5 * (1 + np.tanh((lam - 3980.0) / 40.0))
    flux = flux * (step + (1 - step) / brk)
    uv = 1 + 2.0 * (1 - np.exp(-age_gyr / 1.5)) * np.clip((3000.0 - lam) / 1500.0, 0, 1)
    flux = flux / uv
    flux = flux * np.where(lam < 912.0, 0.02, 1.0)  # Lyman limit
    # absorption lines (multiplicative), depths from age / metallicity
    zfac = 10 ** (0.3 * logz)
    balmer = 0.08 + 0.30 * np.exp(-((np.log10(age_gyr / 0.6)) ** 2) / 0.35)
    metal = (0.06 + 0.22 * (1 - np.exp(-age_gyr / 3.0))) * zfac
    depth = {
        "CaK": metal * 1.6, "CaH": metal * 1.4, "Gband": metal * 0.8, "Mgb": metal * 0.9, "Fe5270": metal * 0.4,
        "Fe5335": metal * 0.35, "NaD": metal * 0.7, "CaT8498": metal * 0.4, "CaT8542": metal * 0.5,
        "CaT8662": metal * 0.45, "Hepsilon": balmer * 0.6, "Hdelta": balmer, "Hgamma": balmer,
        "Hbeta": balmer * 0.9, "Halpha": balmer * 0.6,
    }
    flux = flux * absorption_factor(lam, depth, sigma_v, z, extra_sigma_obs)
    return flux


def absorption_factor(lam_rest: np.ndarray, depth: dict[str, float], sigma_v: float, z: float,
                      extra_sigma_obs: np.ndarray | float) -> np.ndarray:
    """Product of Gaussian absorption troughs (depth <= 0.9) broadened by velocity dispersion and LSF."""
    out = np.ones_like(lam_rest)
    extra = np.broadcast_to(np.asarray(extra_sigma_obs, dtype=np.float64), lam_rest.shape)
    for name, d in depth.items():
        lam0, sig0 = ABSORPTION[name]
        sig_rest = np.sqrt(sig0**2 + (lam0 * sigma_v / C_KMS) ** 2)
        half = 8 * sig_rest + 8 * float(extra.max(initial=0.0)) / (1 + z)
        lo, hi = np.searchsorted(lam_rest, (lam0 - half, lam0 + half))  # grids are sorted: touch only the trough
        if hi <= lo:
            continue
        sig_obs = broaden(sig_rest, z, extra[lo:hi])
        d_eff = min(d, 0.9) * sig_rest * (1 + z) / sig_obs  # conserve equivalent width under the LSF
        out[lo:hi] *= 1 - d_eff * np.exp(-0.5 * ((lam_rest[lo:hi] - lam0) * (1 + z) / sig_obs) ** 2)
    return out


# --- the SED container ----------------------------------------------------------------------

PartFn = Callable[[np.ndarray, np.ndarray | float], np.ndarray]


@dataclass
class SED:
    """Observed-frame SED as named additive parts; each part maps (lam_obs, extra_sigma_obs) -> flux."""

    z: float
    ebv: float
    parts: dict[str, PartFn] = field(default_factory=dict)
    lines: dict[str, float] = field(default_factory=dict)  # name -> observed wavelength, for plots

    def evaluate(self, lam_obs: np.ndarray, extra_sigma_obs: np.ndarray | float = 0.0,
                 parts: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Flux of each part (1e-17 erg/s/cm^2/A) on ``lam_obs``, Milky-Way extinction applied."""
        lam = np.asarray(lam_obs, dtype=np.float64)
        mw = ccm_extinction(lam, self.ebv)
        names = parts or tuple(self.parts)
        return {name: self.parts[name](lam, extra_sigma_obs) * mw for name in names}

    def total(self, lam_obs: np.ndarray, extra_sigma_obs: np.ndarray | float = 0.0) -> np.ndarray:
        return sum(self.evaluate(lam_obs, extra_sigma_obs).values())

    def scaled(self, factor: float) -> SED:
        """The same SED with every part multiplied by ``factor`` (sets the apparent brightness)."""
        parts = {name: (lambda lam, extra, fn=fn: factor * fn(lam, extra)) for name, fn in self.parts.items()}
        return SED(z=self.z, ebv=self.ebv, parts=parts, lines=dict(self.lines))


def _flux_scale(lum_dist_mpc: float, z: float) -> float:
    """From rest-frame L_lambda (erg/s/A) to observed f_lambda in spectrum units."""
    d = lum_dist_mpc * MPC_CM
    return 1.0 / (4 * np.pi * d * d * (1 + z)) / UNIT


def galaxy_sed(*, z: float, lum_dist_mpc: float, ebv: float, log_mstar: float, ssfr: float, age_gyr: float,
               logz: float, dust_av: float, sigma_v: float, source: dict | None = None) -> SED:
    """A galaxy: old population (mass-weighted age) + 100 Myr young population + nebular lines + dust.

    ``ssfr`` is log10(SFR / M*) in yr^-1. ``source`` (lenses only) adds a background
    star-forming galaxy's light with keys z, lum_dist_mpc, log_mstar, ssfr.
    """
    mstar = 10**log_mstar
    sfr = mstar * 10**ssfr
    m_young = sfr * 1e8
    m_old = max(mstar - m_young, 0.1 * mstar)
    scale = _flux_scale(lum_dist_mpc, z)
    av_gas = dust_av / 0.44
    l_old = m_old * L_SUN_5500 / mass_to_light(age_gyr, logz) * scale
    l_young = m_young * L_SUN_5500 / mass_to_light(0.1, logz) * scale

    def old(lam, extra):
        rest = lam / (1 + z)
        return l_old * ssp_continuum(rest, age_gyr, logz, sigma_v, z, extra) * _dust(rest, dust_av) + _warm_dust(
            rest, l_old, dust_av, 0.3
        )

    lines = nebular_line_fluxes(sfr, logz, av_gas) if sfr > 0 else {}
    line_flux_obs = {k: v * scale * (1 + z) for k, v in lines.items()}  # erg/s -> flux units (integrated)

    def young(lam, extra):
        rest = lam / (1 + z)
        cont = l_young * ssp_continuum(rest, 0.1, logz, sigma_v, z, extra) * _dust(rest, dust_av * 1.3)
        cont = cont + _warm_dust(rest, l_young, dust_av * 1.3, 1.0)
        for name, flux in line_flux_obs.items():
            sig = broaden(NEBULAR_LINES[name] * sigma_v * 0.6 / C_KMS, z, extra)
            add_line(cont, lam, NEBULAR_LINES[name] * (1 + z), sig, flux)
        return cont

    sed = SED(z=z, ebv=ebv, parts={"old": old, "young": young},
              lines={k: NEBULAR_LINES[k] * (1 + z) for k in lines})
    if source is not None:
        src = galaxy_sed(z=source["z"], lum_dist_mpc=source["lum_dist_mpc"], ebv=0.0, log_mstar=source["log_mstar"],
                         ssfr=source["ssfr"], age_gyr=0.8, logz=-0.3, dust_av=0.2, sigma_v=60.0)
        mag = source.get("magnification", 8.0)
        src_young, src_old = src.parts["young"], src.parts["old"]
        sed.parts["source"] = lambda lam, extra: mag * (src_young(lam, extra) + src_old(lam, extra))
        sed.lines.update({f"source {k}": v for k, v in src.lines.items()})
    return sed


def nebular_line_fluxes(sfr: float, logz: float, av_gas: float) -> dict[str, float]:
    """Line luminosities (erg/s) after dust: Halpha from Kennicutt (1998), ratios vary with metallicity."""
    l_ha = 1.26e41 * sfr
    n2 = 10 ** np.clip(-0.45 + 0.55 * logz, -1.3, -0.25)  # [NII]6584 / Halpha rises with Z
    o3 = 10 ** np.clip(0.1 - 1.0 * logz, -0.6, 0.75)  # [OIII]5007 / Hbeta falls with Z
    hb = l_ha / 2.86
    lum = {
        "Halpha": l_ha,
        "Hbeta": hb,
        "Hgamma": hb * 0.47,
        "Hdelta": hb * 0.26,
        "[NII]6584": l_ha * n2,
        "[NII]6548": l_ha * n2 / 3.0,
        "[OIII]5007": hb * o3,
        "[OIII]4959": hb * o3 / 2.98,
        "[OII]3726": l_ha * 0.45,
        "[OII]3729": l_ha * 0.60,
        "[SII]6717": l_ha * 0.17,
        "[SII]6731": l_ha * 0.12,
    }
    return {k: v * 10 ** (-0.4 * av_gas * calzetti_k(np.array([NEBULAR_LINES[k]]))[0] / 4.05)
            for k, v in lum.items()}


def _dust(lam_rest: np.ndarray, av: float) -> np.ndarray:
    return 10 ** (-0.4 * av * calzetti_k(lam_rest) / 4.05)


def _warm_dust(lam_rest: np.ndarray, l5500: float, av: float, pah: float) -> np.ndarray:
    """Mid-IR re-emission of absorbed light: two modified blackbodies + PAH bumps, scaled by A_V."""
    ir = lam_rest > 2e4
    out = np.zeros_like(lam_rest)
    if not ir.any() or av <= 0:
        return out
    lam = lam_rest[ir]
    amp = l5500 * av * 0.8
    bb = 0.7 * blackbody_lambda(lam, 45.0) / blackbody_lambda(np.array([1e6]), 45.0)
    bb += 0.3 * blackbody_lambda(lam, 160.0) / blackbody_lambda(np.array([1.8e5]), 160.0)
    bb *= (1e6 / lam) ** 2  # nu^2 emissivity folded in lambda
    bb *= 1.5e-4
    pahs = sum(w * gaussian(lam, c, s) * s for c, s, w in ((6.2e4, 1.5e3, 0.4), (7.7e4, 3e3, 1.0),
                                                           (11.3e4, 2.5e3, 0.5), (12.7e4, 2e3, 0.3)))
    out[ir] = amp * (bb + 1.2e-4 * pah * pahs) * np.clip((lam - 2e4) / 1e4, 0, 1)
    return out


def star_sed(*, teff: float, logg: float, feh: float, ebv: float, rv_kms: float) -> SED:
    """A stellar photosphere (flux at 5500 A = 1 before scaling): blackbody with line blanketing,
    Balmer lines peaking near A stars (width grows with log g), metal lines and TiO bands in cool stars."""
    z = rv_kms / C_KMS
    metal = 10 ** np.clip(0.5 * feh, -1.5, 0.3)
    cool = np.clip((6500.0 - teff) / 2500.0, 0, 1)
    balmer = 0.55 * np.exp(-(((teff - 9000.0) / 2800.0) ** 2)) + 0.08
    width = 1.0 + 0.35 * (logg - 2.5)

    def photo(lam, extra):
        rest = lam / (1 + z)
        f = blackbody_lambda(rest, teff)
        f = f / (1 + (0.8 * metal + 0.6 * cool) * np.clip((4500.0 - rest) / 1500.0, 0, 1) ** 1.5)
        f = f * np.where(rest < 3646.0, 1 - 0.45 * balmer, 1.0)  # Balmer jump
        depth = {"Hdelta": balmer, "Hgamma": balmer, "Hbeta": balmer, "Halpha": balmer * 0.8,
                 "Hepsilon": balmer * 0.6, "CaK": (0.2 + 0.6 * cool) * metal, "CaH": (0.15 + 0.5 * cool) * metal,
                 "Gband": 0.35 * cool * metal, "Mgb": (0.1 + 0.5 * cool) * metal, "NaD": (0.08 + 0.6 * cool) * metal,
                 "Fe5270": 0.3 * cool * metal, "Fe5335": 0.25 * cool * metal, "CaT8498": 0.3 * metal,
                 "CaT8542": 0.4 * metal, "CaT8662": 0.35 * metal}
        f = f * absorption_factor(rest, {k: v for k, v in depth.items()}, 30.0 * width, z, extra)
        if teff < 4200:  # TiO band heads: sharp blue edge, slow red recovery
            strength = np.clip((4200.0 - teff) / 1000.0, 0, 0.7)
            for head in TIO_HEADS:
                dl = rest - head
                f = f * (1 - strength * np.where(dl > 0, np.exp(-np.clip(dl, 0, None) / 120.0), np.exp(np.clip(dl, None, 0) / 3.0)))
        return f

    return SED(z=z, ebv=ebv, parts={"star": photo})


def qso_sed(*, z: float, alpha: float, ebv: float, fwhm_kms: float, rng: np.random.Generator) -> SED:
    """A quasar (flux at rest 3000 A = 1 before scaling): power law f_nu ~ nu^alpha, broad lines,
    a hot-dust bump for WISE, and Lyman-alpha forest absorption at the object's redshift."""
    n_abs = rng.poisson(60 * max(z - 1.6, 0))
    abs_lines = rng.uniform(912.0, 1215.0, n_abs) * (1 + z), rng.uniform(0.2, 0.9, n_abs)

    def agn(lam, extra):
        rest = lam / (1 + z)
        f = (rest / 3000.0) ** (-2 - alpha)
        f = f + 0.6 * blackbody_lambda(rest, 1300.0) / blackbody_lambda(np.array([3000.0]), 1300.0) * (rest > 1e4)
        for lam0, ew in QSO_LINES.values():
            sig = broaden(lam0 * fwhm_kms / 2.355 / C_KMS, z, extra)
            add_line(f, lam, lam0 * (1 + z), sig, ew * (1 + z) * (lam0 / 3000.0) ** (-2 - alpha))
        forest = rest < 1215.67
        tau = 0.0036 * (lam / 1215.67) ** 3.46 * forest
        f = f * np.exp(-tau) * np.where(rest < 912.0, 0.05, 1.0)
        for lam0, d in zip(*abs_lines, strict=True):
            f = f * (1 - d * np.exp(-0.5 * ((lam - lam0) / np.sqrt(0.8**2 + np.asarray(extra) ** 2)) ** 2))
        return f

    lines = {k: v[0] * (1 + z) for k, v in QSO_LINES.items()}
    return SED(z=z, ebv=ebv, parts={"agn": agn}, lines=lines)
