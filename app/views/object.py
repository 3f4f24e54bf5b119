"""Object: Lupton RGB composite with per-band views and stretch, catalog values, model
predictions beside truth, and the cutout as a FITS file to download."""

from __future__ import annotations

import io

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from app import images
from app.views import View, nothing_selected
from engine.data import schema

#: Prediction column -> truth column it estimates (mock data has truth; real data usually not).
PREDICTION_TRUTH = {
    "pred_z": "truth_z",
    "pred_log_mstar": "truth_log_mstar",
    "pred_ssfr": "truth_ssfr",
    "pred_morphology": "truth_morphology",
    "pred_teff": "truth_teff",
    "pred_logg": "truth_logg",
    "pred_feh": "truth_feh",
}


def cutout_fits_bytes(object_id: int, ra: float, dec: float, cube: np.ndarray, bands: list[str], source: str) -> bytes:
    """A FITS file of the cutout: one image HDU per band with a TAN WCS centred on the object."""
    from astropy.io import fits
    from astropy.wcs import WCS

    scale = (0.262 if source == "image_ls" else 0.168) / 3600
    hdus: list = [fits.PrimaryHDU()]
    hdus[0].header["OBJECT"] = str(object_id)
    hdus[0].header["SOURCE"] = source
    for band, img in zip(bands, cube, strict=True):
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [ra, dec]
        w.wcs.crpix = [(img.shape[1] + 1) / 2, (img.shape[0] + 1) / 2]
        w.wcs.cdelt = [-scale, scale]
        hdu = fits.ImageHDU(np.asarray(img, np.float32), header=w.to_header(), name=band)
        hdu.header["BUNIT"] = "nanomaggy" if source == "image_ls" else "count"
        hdus.append(hdu)
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def predictions_table(row: pd.Series, quality: dict[str, dict] | None = None) -> pd.DataFrame:
    """One line per predicted quantity: prediction and (where the catalog has it) truth; morphology
    by its Galaxy10 class name, not its index. With ``quality`` (``engine.tasks.predictions.heldout_quality``)
    a column says how far off the head that made the prediction was on held-out objects: a prediction
    without its typical error invites over-reading it."""
    lines = []
    for pred, truth in PREDICTION_TRUTH.items():
        if pred in row.index and not _missing(row[pred]):  # a galaxy has no Teff, a star no redshift
            fmt = _morphology if pred == "pred_morphology" else _fmt
            line = {"quantity": pred.removeprefix("pred_"), "predicted": fmt(row[pred]), "truth": fmt(row.get(truth))}
            if quality is not None:
                line["held-out error (n)"] = _quality(quality.get(pred))
            lines.append(line)
    columns = ["quantity", "predicted", "truth"] + (["held-out error (n)"] if quality is not None else [])
    return pd.DataFrame(lines, columns=columns)


def _quality(q: dict | None) -> str:
    """"±0.099, R² 0.72 (702)" (rms and R² on 702 held-out objects) or "85 % right (424)"."""
    if not q:
        return "—"
    n = f" ({q['n_test']})" if "n_test" in q else ""
    if "accuracy" in q:
        return f"{100 * q['accuracy']:.0f} % right{n}"
    parts = [f"±{q['rmse']:.0f}" if abs(q["rmse"]) >= 100 else f"±{q['rmse']:.2g}"] if "rmse" in q else []  # Teff: ±616 K
    if "r2" in q:
        parts.append(f"R² {q['r2']:.2f}")
    return ", ".join(parts) + n


def _missing(v) -> bool:
    return v is None or (isinstance(v, float | np.floating) and not np.isfinite(v))


def _morphology(v) -> str:
    """A Galaxy10 class index as its name ("—" for missing or -1, the non-galaxies)."""
    try:
        i = int(v)
    except (TypeError, ValueError):
        return "—"
    return schema.MORPHOLOGY_CLASSES[i] if 0 <= i < len(schema.MORPHOLOGY_CLASSES) else "—"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float | np.floating) and not np.isfinite(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)


class ObjectView(View):
    title = "Object"
    band = param.Selector(default="RGB", objects=["RGB"])
    stretch = param.Number(default=1.0, bounds=(0.05, 20), step=0.05, doc="Multiplies the automatic brightness scale.")
    q = param.Number(default=8.0, bounds=(0.5, 30), doc="Lupton Q: higher shows faint outskirts with less contrast.")

    def __init__(self, store, state, **params):
        super().__init__(store, state, **params)
        self.download = pn.widgets.FileDownload(callback=self._fits, filename="cutout.fits", label="Download FITS cutout",
                                                color="primary", disabled=True)
        state.param.watch(self._on_object, "object_id")
        self._on_object()

    def _on_object(self, *_):
        row = self.state.row
        cut = self.store.cutout(int(row["object_id"])) if row is not None else None
        bands = cut[2] if cut else []
        self.param.band.objects = {"RGB": "RGB", **{b.split("-")[-1].lower(): b for b in bands}}
        if self.band not in self.param.band.objects:
            self.band = "RGB"
        self.download.disabled = cut is None
        if row is not None:
            self.download.filename = f"aion_{int(row['object_id'])}.fits"

    def _fits(self):
        row = self.state.row
        source, cube, bands = self.store.cutout(int(row["object_id"]))
        return io.BytesIO(cutout_fits_bytes(int(row["object_id"]), float(row["ra"]), float(row["dec"]), cube, bands, source))

    @param.depends("state.object_id", "band", "stretch", "q")
    def image(self):
        if (msg := nothing_selected(self.state)) is not None:
            return msg
        cut = self.store.cutout(self.state.object_id)
        if cut is None:
            return pn.pane.Alert(f"Object {self.state.object_id} has no image in this dataset.", alert_type="info")
        source, cube, bands = cut
        n = cube.shape[-1]
        opts = dict(width=420, height=420, xaxis=None, yaxis=None, toolbar="above")
        if self.band == "RGB":
            rgb = images.lupton_rgb(cube, source, self.stretch, self.q)[::-1]
            return hv.RGB(rgb, kdims=["px", "py"], bounds=(0, 0, n, n)).opts(**opts)
        band = bands.index(self.band)
        img = images.band_image(cube, band, self.stretch)[::-1]
        return hv.Image(img, kdims=["px", "py"], bounds=(0, 0, n, n)).opts(cmap="gray", **opts)

    @param.depends("state.object_id")
    def details(self):
        row = self.state.row
        if row is None:
            return pn.Spacer()
        values = row.drop(labels=[c for c in row.index if c.startswith("has_")])
        catalog = pd.DataFrame({"column": values.index, "value": [_fmt(v) for v in values.to_numpy()]})
        preds = predictions_table(row, self.store.prediction_quality)
        blocks = [pn.pane.Markdown(f"### Object {int(row['object_id'])} · {row['kind']}")]
        if len(preds):
            blocks += [pn.pane.Markdown("**Model predictions vs truth**"), pn.widgets.Tabulator(preds, show_index=False, disabled=True)]
        else:
            blocks.append(pn.pane.Markdown("*No predictions yet: run `aion-engine predict` for this dataset and model.*"))
        blocks += [pn.pane.Markdown("**Catalog**"), pn.widgets.Tabulator(catalog, show_index=False, disabled=True, height=320)]
        return pn.Column(*blocks, width=420)

    def __panel__(self):
        controls = pn.Param(self.param, parameters=["band", "stretch", "q"], show_name=False, width=240,
                            widgets={"band": pn.widgets.RadioButtonGroup})
        return pn.Row(pn.Column(controls, self.download), self.image, self.details)
