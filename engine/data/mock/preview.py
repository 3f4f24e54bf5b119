"""Preview pages of a mock dataset (PNG): Lupton RGB cutouts per class, segmentation overlays,
and spectra with their lines marked at the object's redshift. Written to ``<dataset>/preview/``.

These are for people: a quick look that the galaxies look like galaxies and the spectra like
spectra before anything is trained on them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.data import schema
from engine.data.rgb import lupton_rgb
from engine.data.store import open_dataset

N_PER_CLASS = 6


def _pick_examples(cat, rng) -> dict[str, np.ndarray]:
    """Object ids per row of the contact sheet: the ten classes (labelled, larger first), lenses, stars, QSOs."""
    rows: dict[str, np.ndarray] = {}
    gal = cat[cat["kind"] == "galaxy"]
    for k, name in enumerate(schema.MORPHOLOGY_CLASSES):
        sel = gal[(gal["truth_morphology"] == k)].sort_values("shape_r", ascending=False)
        rows[name] = sel["object_id"].to_numpy()[: N_PER_CLASS * 3]
    rows["strong lens"] = gal.loc[gal["truth_is_lens"], "object_id"].to_numpy()
    rows["star"] = cat.loc[cat["kind"] == "star", "object_id"].to_numpy()
    rows["quasar"] = cat.loc[cat["kind"] == "qso", "object_id"].to_numpy()
    return {k: (rng.choice(v, size=min(N_PER_CLASS, len(v)), replace=False) if len(v) else v) for k, v in rows.items()}


def contact_sheet(ds, path: Path, rng) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _pick_examples(ds.catalog, rng)
    fig, axes = plt.subplots(len(rows), N_PER_CLASS, figsize=(N_PER_CLASS * 1.3, len(rows) * 1.38))
    for r, (name, ids) in enumerate(rows.items()):
        imgs = ds.read("image_ls", ids, ["image_array"])["image_array"] if len(ids) else []
        for c in range(N_PER_CLASS):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(ids):
                ax.imshow(lupton_rgb(imgs[c]), origin="lower")
            else:
                ax.set_facecolor("black")
            if c == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("mock survey: Legacy Survey g/r/z cutouts (96x96, 0.262\"/px) per class", fontsize=9)
    fig.subplots_adjust(left=0.2, right=0.99, top=0.96, bottom=0.01, wspace=0.03, hspace=0.05)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def segmap_sheet(ds, path: Path, rng) -> Path:
    """Spirals and barred spirals with their segmentation (arms, bar, bulge) drawn over the r band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cat = ds.catalog
    big = cat[cat["has_segmap"]].sort_values("shape_r", ascending=False)
    ids = np.concatenate([big.loc[big["truth_morphology"] == k, "object_id"].to_numpy()[:n]
                          for k, n in ((5, 4), (6, 3), (7, 3), (1, 2))])
    if not len(ids):
        return path
    imgs = ds.read("image_ls", ids, ["image_array"])["image_array"]
    segs = ds.read("segmap", ids)["segmap"]
    fig, axes = plt.subplots(2, len(ids), figsize=(len(ids) * 1.4, 3.0))
    axes = np.atleast_2d(axes).reshape(2, len(ids))
    colours = {"disk": "white", "bulge": "red", "bar": "orange", "arms": "cyan", "knots": "lime", "neighbour": "magenta"}
    for c in range(len(ids)):
        axes[0, c].imshow(lupton_rgb(imgs[c]), origin="lower")
        axes[1, c].imshow(np.arcsinh(imgs[c][1] / 0.02), origin="lower", cmap="gray")
        for name, colour in colours.items():
            m = (segs[c] & schema.SEGMENTATION_BIT[name]) > 0
            if m.any():
                axes[1, c].contour(m.astype(float), levels=[0.5], colors=colour, linewidths=0.6)
        for ax in axes[:, c]:
            ax.set_xticks([])
            ax.set_yticks([])
        k = int(cat.set_index("object_id").loc[ids[c], "truth_morphology"])
        axes[0, c].set_title(schema.MORPHOLOGY_CLASSES[k], fontsize=5)
    fig.suptitle("segmentation truth: disk white, bulge red, bar orange, arms cyan, knots green, neighbours magenta",
                 fontsize=7)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.01, wspace=0.03, hspace=0.05)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def spectra_page(ds, path: Path, rng) -> Path:
    """Six DESI/SDSS spectra (star-forming, passive, lens, quasar, star, SDSS) with lines marked at z."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.data.mock.sed import NEBULAR_LINES, QSO_LINES

    cat = ds.catalog
    desi = cat[cat["has_spectrum_desi"]]
    picks = []
    sf = desi[(desi["kind"] == "galaxy") & (desi["truth_ssfr"] > -10.3)].sort_values("flux_r", ascending=False)
    passive = desi[(desi["kind"] == "galaxy") & (desi["truth_ssfr"] < -11)].sort_values("flux_r", ascending=False)
    for label, frame, source in (("star-forming galaxy", sf, "spectrum_desi"), ("passive galaxy", passive, "spectrum_desi"),
                                 ("quasar", desi[desi["kind"] == "qso"], "spectrum_desi"),
                                 ("star", desi[desi["kind"] == "star"], "spectrum_desi"),
                                 ("SDSS galaxy", cat[cat["has_spectrum_sdss"] & (cat["kind"] == "galaxy")], "spectrum_sdss"),
                                 ("faint star-forming galaxy", sf.iloc[len(sf) // 2 :], "spectrum_desi")):
        if len(frame):
            picks.append((label, int(frame["object_id"].iloc[0]), source))
    fig, axes = plt.subplots(len(picks), 1, figsize=(9, 1.7 * len(picks)))
    axes = np.atleast_1d(axes)
    absorption = {"Ca K": 3933.7, "Ca H": 3968.5, "G": 4304.4, "Mg b": 5175.0, "Na D": 5892.9}
    for ax, (label, oid, source) in zip(axes, picks, strict=True):
        d = ds.read(source, [oid])
        lam, flux, mask = d["spectrum_lambda"][0], d["spectrum_flux"][0], d["spectrum_mask"][0]
        good = ~mask
        k = max(1, len(lam) // 1500)
        kernel = np.ones(k * 3)
        weight = np.convolve(good.astype(float), kernel, mode="same")  # normalised: masked pixels do not pull it down
        smooth = np.convolve(np.where(good, flux, 0), kernel, mode="same") / np.maximum(weight, 1e-9)
        ax.plot(lam, np.where(good, flux, np.nan), lw=0.3, color="0.6")
        ax.plot(lam, np.where(good, smooth, np.nan), lw=0.6, color="k")
        lo, hi = np.nanpercentile(np.where(good, smooth, np.nan), [0.5, 99.7])
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.25 * (hi - lo))
        row = cat.set_index("object_id").loc[oid]
        z = float(row["truth_z"])
        if row["kind"] == "qso":
            lines = {k2: v[0] for k2, v in QSO_LINES.items()}
        elif row["kind"] == "star":
            lines = {**absorption, "Hbeta": NEBULAR_LINES["Hbeta"], "Halpha": NEBULAR_LINES["Halpha"]}
        else:
            lines = {**NEBULAR_LINES, **absorption}
        for name, rest in lines.items():
            obs = rest * (1 + z)
            if lam[0] < obs < lam[-1]:
                emission = row["kind"] == "qso" or (row["kind"] == "galaxy" and name in NEBULAR_LINES)
                ax.axvline(obs, color="tab:red" if emission else "tab:blue",
                           lw=0.5, alpha=0.6)
                ax.text(obs, hi + 0.15 * (hi - lo), name, fontsize=5, rotation=90, va="bottom", ha="center")
        ax.set_title(f"{label} (object {oid}, z = {z:.3f}, {source.split('_')[1].upper()})", fontsize=7, loc="left")
        ax.tick_params(labelsize=6)
    axes[-1].set_xlabel("observed wavelength [A]", fontsize=7)
    fig.text(0.005, 0.5, "flux [1e-17 erg/s/cm2/A]", rotation=90, va="center", fontsize=7)
    fig.tight_layout(rect=(0.015, 0, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_preview(root: str | os.PathLike, seed: int = 0) -> list[Path]:
    """Write contact sheet, segmentation overlays and spectra page to ``root/preview/``; returns the paths."""
    ds = open_dataset(root)
    out = Path(root) / "preview"
    out.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [contact_sheet(ds, out / "mock_cutouts.png", rng), segmap_sheet(ds, out / "mock_segmaps.png", rng),
             spectra_page(ds, out / "mock_spectra.png", rng)]
    ds.close()
    return [p for p in paths if p.exists()]
