"""Benchmark the mock survey: objects/s end to end with one and two worker processes, and the
image renderer against GalSim's own per-band ``drawImage`` (the baseline, same objects, same run).

Target (issue "Foundation"): 10 000 objects in <= 5 min on 2 cores, i.e. >= 33.3 objects/s.
Writes ``bench/results/mock.json`` and ``bench/results/mock.png``.

    .venv/bin/python bench/bench_mock.py            # n = 400 per run
    .venv/bin/python bench/bench_mock.py --n 100    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.data.mock import generate, images  # noqa: E402
from engine.data.mock.objects import make_sed, object_rng  # noqa: E402
from engine.data.mock.photometry import band_maggies  # noqa: E402
from engine.data.mock.population import draw_population  # noqa: E402
from engine.data.mock.structure import build_galaxy  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGET_RATE = 10_000 / 300.0


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers are joined before we read it)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_generate(n: int, seed: int, workers: int) -> dict:
    """Wall-clock rate, and CPU seconds per object (robust when other jobs share the cores)."""
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "results") as tmp:
        c0, t0 = _cpu_seconds(), time.perf_counter()
        generate(Path(tmp) / "ds", n, seed, workers=workers, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {"workers": workers, "n": n, "seconds": round(wall, 2), "objects_per_s": round(n / wall, 2),
            "cpu_seconds": round(cpu, 2), "cpu_ms_per_object": round(1e3 * cpu / n, 2)}


def _galsim_drawimage(survey, components, pop_fluxes, fwhm) -> np.ndarray:
    """Baseline: GalSim's documented path, one ``Convolve(sum of profiles, PSF).drawImage`` per band."""
    import galsim

    out = []
    for b in range(survey.n_bands):
        profs = []
        for comp in components:
            flux = sum(share * pop_fluxes[pop][b] for pop, share in comp.shares.items())
            prof = comp.profile
            if not isinstance(prof, galsim.GSObject):  # analytic knots -> GalSim Gaussians
                prof = galsim.Sum([galsim.Gaussian(sigma=prof.sigma, flux=f).shift(x, y)
                                   for x, y, f in zip(prof.x, prof.y, prof.flux, strict=True)])
            profs.append(prof.withFlux(flux))
        psf = galsim.Moffat(beta=images.MOFFAT_BETA, fwhm=float(fwhm[b]), trunc=5 * float(fwhm[b]))
        out.append(galsim.Convolve(galsim.Sum(profs), psf).drawImage(nx=96, ny=96, scale=survey.scale).array)
    return np.asarray(out)


def bench_renderer(n_gal: int, seed: int) -> dict:
    pop = draw_population(max(4 * n_gal, 50), seed)
    pop.insert(0, "index", np.arange(len(pop)))
    rows = pop[pop["kind"] == "galaxy"].head(n_gal).to_dict("records")
    cases = []
    for row in rows:
        rng = object_rng(seed, row["index"])
        sed = make_sed(row, rng)
        fluxes = {k: 1e9 * v[:4] for k, v in band_maggies(sed).items()}
        model = build_galaxy(int(row["p_morph"]), float(row["p_re_arcsec"]), rng)
        cases.append((model.components, fluxes))
    t0 = time.perf_counter()
    fwhms = []
    for comps, fluxes in cases:
        stamp = images.render(images.LS, comps, fluxes, np.random.default_rng(0), detail_band=1)
        fwhms.append(stamp.psf_fwhm)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for (comps, fluxes), fwhm in zip(cases, fwhms, strict=True):
        _galsim_drawimage(images.LS, comps, fluxes, fwhm)
    base = time.perf_counter() - t0
    return {"galaxies": len(cases), "ours_ms_per_galaxy": round(1e3 * ours / len(cases), 2),
            "galsim_drawimage_ms_per_galaxy": round(1e3 * base / len(cases), 2),
            "speedup_vs_galsim_drawimage": round(base / ours, 2),
            "note": "ours also renders every component separately in r for the segmentation; baseline does not"}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["generate"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    labels = [f"{r['workers']} worker(s)\nwall" for r in runs] + ["2 free cores\n(from CPU time)"]
    rates = [r["objects_per_s"] for r in runs] + [10_000 / result["projected_10k_seconds_on_2_free_cores"]]
    ax1.bar(labels, rates, color=["tab:blue", "tab:blue", "tab:cyan"])
    ax1.axhline(TARGET_RATE, color="tab:red", ls="--", label="target: 10k in 5 min")
    ax1.set_ylabel("objects / s")
    ax1.set_title(f"mock survey, n = {runs[0]['n']} (load {result['loadavg_start'][0]:.1f})", fontsize=9)
    ax1.legend(fontsize=7)
    r = result["renderer"]
    ax2.bar(["GalSim drawImage\n(baseline)", "k-space renderer\n(ours)"],
            [r["galsim_drawimage_ms_per_galaxy"], r["ours_ms_per_galaxy"]], color=["0.6", "tab:green"])
    ax2.set_ylabel("ms per galaxy (4 LS bands)")
    ax2.set_title(f"image rendering: {r['speedup_vs_galsim_drawimage']}x faster", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="objects per generate run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "mock", "cpu_count": os.cpu_count(), "platform": platform.platform(),
              "loadavg_start": os.getloadavg(), "target_objects_per_s": round(TARGET_RATE, 2)}
    result["generate"] = [bench_generate(args.n, args.seed, w) for w in (1, 2)]
    one, two = (r["objects_per_s"] for r in result["generate"])
    result["two_worker_speedup"] = round(two / one, 2)
    result["projected_10k_seconds_2_workers"] = round(10_000 / two, 1)
    # what two free cores would do: total CPU per object of the 2-worker run, spread over 2 cores
    cpu2 = result["generate"][1]["cpu_ms_per_object"] / 1e3
    result["projected_10k_seconds_on_2_free_cores"] = round(10_000 * cpu2 / 2, 1)
    result["renderer"] = bench_renderer(40, args.seed)
    result["loadavg_end"] = os.getloadavg()
    (RESULTS / "mock.json").write_text(json.dumps(result, indent=2))
    plot(result, RESULTS / "mock.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
