"""Outreach: a guided tour for demos on a touch screen — a spiral galaxy, its look-alikes found by
the model, a gravitational lens, and a star's blurry spectrum made sharp — with large images,
big buttons and plain-language captions."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from app import engine_links, images, search
from app.messages import AppMessage
from app.views import View
from app.views.spectrum import superres_plot
from engine.data import schema

SPIRALS = [schema.MORPHOLOGY_CLASSES.index(c) for c in ("barred spiral", "unbarred tight spiral", "unbarred loose spiral")]

CAPTIONS = {
    "spiral": "**A spiral galaxy.** Billions of stars turning around a bright centre. The arms are where new stars are born; "
              "their light makes them look blue.",
    "lookalikes": "**Its look-alikes.** The AI model has never been told what a spiral is. It learned by itself to put "
                  "galaxies that look alike close together — these are the ones it finds most similar.",
    "lens": "**A gravitational lens.** A heavy galaxy bends the light of a galaxy far behind it, like a magnifying glass, "
            "stretching it into arcs around itself.",
    "star": "**A star's spectrum made sharp.** A telescope splits starlight into colours. From a blurry, low-resolution "
            "measurement the model draws the sharp spectrum a big spectrograph would see, dark lines and all.",
}
STEPS = tuple(CAPTIONS)


def pick_tour(store) -> dict[str, int | None]:
    """One object per step, chosen from the catalog (truth where it exists, otherwise predictions)."""
    cat = store.catalog
    has_img = cat.get("has_image_ls", False) | cat.get("has_image_hsc", False)
    galaxies = cat[(cat["kind"] == "galaxy") & has_img]
    morph = next((c for c in ("truth_morphology", "pred_morphology") if c in cat.columns), None)
    spirals = galaxies[galaxies[morph].isin(SPIRALS)] if morph and pd_numeric(galaxies[morph]) else galaxies
    spiral = _brightest(spirals if len(spirals) else galaxies)
    lens_col = next((c for c in ("truth_is_lens", "pred_is_lens") if c in cat.columns), None)
    lens = _brightest(galaxies[galaxies[lens_col].fillna(False).astype(bool)]) if lens_col else None
    stars = cat[cat["kind"] == "star"]
    xp = stars[stars["has_xp_gaia"]] if "has_xp_gaia" in stars else stars.iloc[:0]
    star = int(xp["object_id"].iloc[0]) if len(xp) else (int(stars["object_id"].iloc[0]) if len(stars) else None)
    return {"spiral": spiral, "lookalikes": spiral, "lens": lens, "star": star}


def pd_numeric(s) -> bool:
    return np.issubdtype(s.dtype, np.number)


def _brightest(frame) -> int | None:
    if len(frame) == 0:
        return None
    flux = next((c for c in ("flux_r", "flux_g", "mag_r") if c in frame.columns), None)
    if flux is None:
        return int(frame["object_id"].iloc[0])
    order = frame[flux].to_numpy()
    i = int(np.nanargmin(order)) if flux.startswith("mag") else int(np.nanargmax(order))
    return int(frame["object_id"].iloc[i])


class OutreachView(View):
    title = "Outreach"
    step = param.Integer(default=0, bounds=(0, len(STEPS) - 1))

    def __init__(self, store, state, **params):
        super().__init__(store, state, **params)
        self.tour = pick_tour(store)
        self.prev = pn.widgets.Button(label="◀ Back", color="light", height=70, width=180, stylesheets=[":host {font-size: 22px}"])
        self.next = pn.widgets.Button(label="Next ▶", color="primary", height=70, width=180)
        self.prev.on_click(lambda _: setattr(self, "step", max(0, self.step - 1)))
        self.next.on_click(lambda _: setattr(self, "step", min(len(STEPS) - 1, self.step + 1)))
        self.explore = pn.widgets.Button(label="Explore this object", height=70, width=240)
        self.explore.on_click(self._explore)

    def _explore(self, _):
        oid = self.tour[STEPS[self.step]]
        if oid is not None:
            self.state.param.update(object_id=oid, tab="object")

    def _big_image(self, oid: int):
        cut = self.store.cutout(oid)
        if cut is None:
            return pn.pane.Markdown(f"*(object {oid} has no picture)*")
        rgb = images.lupton_rgb(cut[1], cut[0])
        return pn.pane.PNG(images.png_bytes(rgb, 480), width=480, height=480)

    @param.depends("step")
    def page(self):
        name = STEPS[self.step]
        oid = self.tour[name]
        caption = pn.pane.Markdown(CAPTIONS[name], styles={"font-size": "22px", "max-width": "640px"})
        if oid is None:
            return pn.Column(caption, pn.pane.Markdown("*This dataset has no such object, so this stop is skipped.*",
                                                       styles={"font-size": "20px"}))
        try:
            if name == "lookalikes":
                hits = search.by_object(self.store, "image", oid, 6)
                body = pn.FlexBox(*[self._big_image(int(o)) for o in hits["object_id"]])
                for img in body:
                    img.width = img.height = 220
            elif name == "star":
                out = engine_links.call(engine_links.predictor(self.store, "superres").superres, oid, n_samples=4, seed=0)
                body = superres_plot(out, oid)
            else:
                body = self._big_image(oid)
        except AppMessage as msg:
            body = pn.pane.Alert(str(msg), alert_type=msg.level)
        except Exception as exc:  # a demo must keep going: say what failed and move on
            body = pn.pane.Alert(f"This stop could not be shown for object {oid}: {exc}", alert_type="warning")
        return pn.Column(pn.pane.Markdown(f"## Stop {self.step + 1} of {len(STEPS)}"), caption, body)

    def __panel__(self):
        hv.extension("bokeh")
        return pn.Column(pn.Row(self.prev, self.next, self.explore), self.page, sizing_mode="stretch_width")
