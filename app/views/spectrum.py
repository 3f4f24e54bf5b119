"""Spectrum: observed flux with its error band, observed/rest frame, emission and absorption line
markers at the object's redshift (slider to move them), smoothing and zoom; below it the
super-resolution panel (low-res input, generated DESI-resolution spectrum with its spread across
samples, the true spectrum and the residual)."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from app import engine_links
from app.messages import AppMessage
from app.views import View, guarded, nothing_selected

#: Rest-frame vacuum wavelengths (Angstrom) of lines seen in galaxy, QSO and star spectra.
LINES = {
    "Lyα": 1215.67, "C IV": 1549.06, "Mg II": 2798.75, "[O II]": 3728.48, "Ca K": 3934.78, "Ca H": 3969.59,
    "Hδ": 4102.89, "Hγ": 4341.68, "Hβ": 4862.68, "[O III]": 5008.24, "Mg b": 5176.7, "Na D": 5895.6,
    "Hα": 6564.61, "[N II]": 6585.27, "[S II]": 6718.29,
}


def smooth(flux: np.ndarray, width: int) -> np.ndarray:
    """Boxcar smoothing ignoring NaNs (masked pixels); width 1 returns the input."""
    if width <= 1:
        return flux
    ok = np.isfinite(flux)
    kernel = np.ones(width)
    num = np.convolve(np.where(ok, flux, 0.0), kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def line_markers(z: float, lo: float, hi: float, rest_frame: bool):
    """VLines + Labels for lines that fall inside [lo, hi] in the displayed frame."""
    shown = {name: (w if rest_frame else w * (1 + z)) for name, w in LINES.items()}
    shown = {k: v for k, v in shown.items() if lo <= v <= hi}
    vlines = hv.VLines(list(shown.values()), kdims=["wavelength"]).opts(color="#888", line_dash="dashed", line_width=1)
    labels = hv.Labels([(v, 0, k) for k, v in shown.items()], kdims=["wavelength", "flux"], vdims=["line"])
    return vlines, labels


class SpectrumView(View):
    title = "Spectrum"
    rest_frame = param.Boolean(default=False, doc="Show rest-frame wavelengths (divide by 1 + z).")
    redshift = param.Number(default=0.0, bounds=(0.0, 7.0), step=0.001, doc="z used for line markers and rest frame.")
    smoothing = param.Integer(default=1, bounds=(1, 51), doc="Boxcar width in pixels.")
    n_samples = param.Integer(default=4, bounds=(1, 16), doc="Super-resolution samples (spread = their std).")
    run_superres = param.Event(label="Generate high-resolution spectrum")

    def __init__(self, store, state, **params):
        super().__init__(store, state, **params)
        self.superres_pane = pn.Column(sizing_mode="stretch_width", objects=[pn.pane.Markdown(
            "*Super-resolution turns a low-resolution input (Gaia XP or broad-band photometry) into a "
            "DESI-resolution spectrum with the model; press the button to run it for this object.*")])
        state.param.watch(self._on_object, "object_id")
        self._on_object()

    def _on_object(self, *_):
        row = self.state.row
        if row is None:
            return
        z = next((float(row[c]) for c in ("z", "pred_z", "truth_z") if c in row.index and np.isfinite(row[c])), 0.0)
        self.redshift = float(np.clip(z, 0, 7))
        self.superres_pane[:] = [pn.pane.Markdown("*Press the button to generate the high-resolution spectrum.*")]

    @param.depends("state.object_id", "rest_frame", "redshift", "smoothing")
    @guarded
    def observed(self):
        if (msg := nothing_selected(self.state)) is not None:
            return msg
        spec = self.store.spectrum(self.state.object_id)
        if spec is None:
            raise AppMessage(f"Object {self.state.object_id} has no spectrum in this dataset.", "info")
        wave = spec["wavelength"] / ((1 + self.redshift) if self.rest_frame else 1.0)
        flux = np.where(spec["mask"], np.nan, spec["flux"])
        flux = smooth(flux, self.smoothing)
        err = spec["error"] / np.sqrt(self.smoothing)
        dim_w = hv.Dimension("wavelength", label="rest wavelength (Å)" if self.rest_frame else "observed wavelength (Å)")
        band = hv.Spread((wave, flux, err), kdims=[dim_w], vdims=["flux", "error"]).opts(color="#9ecae1", alpha=0.6, line_alpha=0)
        curve = hv.Curve((wave, flux), kdims=[dim_w], vdims=["flux"]).opts(color="#08519c", line_width=1)
        vlines, labels = line_markers(self.redshift, float(wave.min()), float(wave.max()), self.rest_frame)
        top = float(np.nanpercentile(flux, 99.5)) if np.isfinite(flux).any() else 1.0
        labels = labels.clone([(x, top, t) for x, _, t in labels.data.itertuples(index=False)])
        return (band * curve * vlines * labels.opts(text_font_size="9pt", yoffset=0, text_color="#555")).opts(
            responsive=True, height=360, title=f"{spec['source']} spectrum of {self.state.object_id} (z = {self.redshift:.3f})",
            tools=["hover", "xwheel_zoom"], active_tools=["xwheel_zoom"], ylabel="flux (1e-17 erg/s/cm²/Å)")

    @param.depends("run_superres", watch=True)
    def _generate(self):
        if self.state.row is None:
            return
        try:
            out = engine_links.call(engine_links.predictor(self.store, "superres").superres,
                                    int(self.state.object_id), n_samples=self.n_samples, seed=0)
            self.superres_pane[:] = [superres_plot(out, self.state.object_id)]
        except AppMessage as msg:
            self.superres_pane[:] = [pn.pane.Alert(str(msg), alert_type=msg.level)]
        except Exception as exc:  # the engine's errors name the object and what it lacks
            self.superres_pane[:] = [pn.pane.Alert(f"Super-resolution failed for {self.state.object_id}: {exc}", alert_type="danger")]

    def __panel__(self):
        controls = pn.Param(self.param, parameters=["rest_frame", "redshift", "smoothing"], show_name=False, width=260)
        sr_controls = pn.Param(self.param, parameters=["n_samples", "run_superres"], show_name=False, width=260)
        return pn.Column(pn.Row(controls, self.observed), pn.Row(sr_controls, self.superres_pane), sizing_mode="stretch_width")


def superres_plot(out: dict, object_id: int):
    """Input, generated mean with ±1σ across samples, truth and residual (generated − truth)."""
    wave, mean, std = np.asarray(out["wavelength"]), np.asarray(out["mean"]), np.asarray(out["std"])
    # own dimension names: the observed-spectrum plot above must not share (link) these axes
    w = hv.Dimension("sr_wavelength", label="observed wavelength (Å)")
    f = hv.Dimension("sr_flux", label="flux (1e-17 erg/s/cm²/Å)")
    layers = [hv.Spread((wave, mean, std), kdims=[w], vdims=[f, "spread"], label="spread across samples").opts(alpha=0.35, color="#fd8d3c"),
              hv.Curve((wave, mean), kdims=[w], vdims=[f], label="generated (mean)").opts(color="#d94801", line_width=1.2)]
    inp = out.get("input") or {}
    notes = []
    if out.get("input_kind") == "photometry" and len(inp.get("wavelength", [])):
        lam, flam = photometry_points(inp, float(wave.min()), float(wave.max()))
        if len(lam):
            layers.append(hv.Scatter((lam, flam), kdims=[w], vdims=[f], label="input photometry").opts(
                size=10, color="black", marker="square"))
        notes.append("Input: broad-band photometry (black squares, converted from nanomaggies to f_λ).")
    elif out.get("input_kind") == "xp":
        notes.append(f"Input: {len(inp.get('coeff_bp', []))} + {len(inp.get('coeff_rp', []))} Gaia XP coefficients "
                     "(a blurred spectrum described by a few numbers).")
    truth = out.get("truth")
    panels = []
    if truth is not None:
        truth = np.asarray(truth, float)
        layers.insert(0, hv.Curve((wave, truth), kdims=[w], vdims=[f], label="true spectrum").opts(color="#6baed6", alpha=0.8))
        resid = hv.Curve((wave, mean - truth), kdims=[w], vdims=[hv.Dimension("sr_residual", label="residual")]).opts(
            color="#54278f", responsive=True, height=160, title="residual (generated − truth)")
        panels.append(resid * hv.HLine(0).opts(color="#999"))
    main = hv.Overlay(layers).opts(responsive=True, height=340, legend_position="top_left",
                                   title=f"Super-resolution of {object_id}")
    return pn.Column(*(pn.pane.Markdown(n) for n in notes),
                     *(pn.pane.HoloViews(p, sizing_mode="stretch_width") for p in [main, *panels]),
                     sizing_mode="stretch_width", css_classes=["aion-superres"])


#: f_lambda in 1e-17 erg/s/cm^2/A of 1 nanomaggy at 1 A: 3.631e-29 erg/s/cm^2/Hz * c (2.998e18 A/s) / 1e-17.
NMGY_TO_FLAM_1E17 = 3.631e-29 * 2.998e18 / 1e-17


def photometry_points(inp: dict, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Legacy Survey band fluxes (nanomaggies) as f_lambda points inside the spectrum's range."""
    lam = np.asarray(inp["wavelength"], float)
    flux = np.asarray(inp["flux"], float)
    ls = np.array([b.startswith("flux_") for b in inp.get("bands", ["flux_"] * len(lam))])
    keep = ls & (lam >= lo) & (lam <= hi) & np.isfinite(flux)
    return lam[keep], flux[keep] * NMGY_TO_FLAM_1E17 / lam[keep] ** 2
