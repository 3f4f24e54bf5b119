"""Segmentation: the model's per-class masks over the colour image, with opacity, class toggles and
an outline mode; the mock survey's true segmap beside it where one exists."""

from __future__ import annotations

import threading

import holoviews as hv
import numpy as np
import panel as pn
import param
from scipy import ndimage

from app import engine_links, images
from app.messages import AppMessage
from app.views import View, guarded, nothing_selected
from engine.data import schema

COLOURS = {"disk": (31, 119, 180), "bulge": (255, 127, 14), "bar": (214, 39, 40), "arms": (44, 160, 44),
           "knots": (148, 103, 189), "neighbour": (140, 86, 75)}
_CACHE_LOCK = threading.Lock()
#: the dihedral views of a cutout (``engine.tasks.augment.N_VIEWS``; not imported here, it pulls in torch)
N_VIEWS = 8


def mask_rgba(masks: dict[str, np.ndarray], classes: list[str], outline: bool) -> np.ndarray:
    """(H, W, 4) uint8 overlay: each shown class in its colour (later classes on top), or only edges."""
    shape = next(iter(masks.values())).shape
    out = np.zeros((*shape, 4), np.uint8)
    for name in schema.SEGMENTATION_CLASSES:
        if name not in classes or name not in masks:
            continue
        m = np.asarray(masks[name], bool)
        if outline:
            m = m & ~ndimage.binary_erosion(m, iterations=1)
        out[m, :3] = COLOURS[name]
        out[m, 3] = 255
    return out


def predicted_masks(store, object_id: int, views: int = 1) -> dict[str, np.ndarray]:
    """The model's masks for an object (averaged over ``views`` turned cutouts), computed once per server
    per object and number of views."""
    cache = store.__dict__.setdefault("_segmentation_cache", {})
    key = (object_id, views)
    with _CACHE_LOCK:
        if key in cache:
            return cache[key]
    masks = engine_links.call(engine_links.predictor(store, "segmentation").segmentation, object_id, views=views)
    with _CACHE_LOCK:
        cache[key] = masks
    return masks


class SegmentationView(View):
    title = "Segmentation"
    opacity = param.Magnitude(default=0.55)
    classes = param.ListSelector(default=list(schema.SEGMENTATION_CLASSES), objects=list(schema.SEGMENTATION_CLASSES))
    outline = param.Boolean(default=False, doc="Draw class boundaries instead of filled masks.")
    average_views = param.Boolean(default=False, label="Average the 8 turned cutouts", doc=(
        "Predict on the cutout in all eight rotations/reflections and average the maps: finer arms and bars, "
        "for eight encodings instead of one."))

    def _panel(self, masks: dict | None, title: str, cube, source):
        n = cube.shape[-1]
        base = hv.RGB(images.lupton_rgb(cube, source)[::-1], kdims=["sx", "sy"], bounds=(0, 0, n, n))
        opts = dict(width=380, height=380, xaxis=None, yaxis=None, title=title)
        if masks is None:
            return base.opts(**opts)
        over = hv.RGB(mask_rgba(masks, list(self.classes), self.outline)[::-1], kdims=["sx", "sy"], vdims=list("RGBA"),
                      bounds=(0, 0, n, n)).opts(alpha=1.0 if self.outline else self.opacity)
        return (base * over).opts(**opts)

    @param.depends("state.object_id", "opacity", "classes", "outline", "average_views")
    @guarded
    def panels(self):
        if (msg := nothing_selected(self.state)) is not None:
            return msg
        oid = int(self.state.object_id)
        cut = self.store.cutout(oid)
        if cut is None:
            raise AppMessage(f"Object {oid} has no image, so there is nothing to segment.", "info")
        source, cube, _ = cut
        try:
            views = N_VIEWS if self.average_views else 1
            title = f"predicted, {views} views averaged" if views > 1 else "predicted"
            pred = self._panel(predicted_masks(self.store, oid, views), title, cube, source)
        except AppMessage as msg:
            pred = pn.pane.Alert(str(msg), alert_type=msg.level, width=380)
        truth = self.store.truth_segmentation(oid)
        right = self._panel(truth, "truth (segmaps.h5)", cube, source) if truth is not None else pn.pane.Markdown(
            "*No true segmap for this object (only mock galaxies have one).*", width=380)
        return pn.Row(pred, right)

    def legend(self):
        items = "".join(f"<span style='color:rgb{c};font-weight:bold'>■</span> {n} &nbsp;" for n, c in COLOURS.items())
        return pn.pane.HTML(items)

    def __panel__(self):
        controls = pn.Param(self, parameters=["opacity", "classes", "outline", "average_views"], show_name=False, width=260,
                            widgets={"classes": pn.widgets.CheckBoxGroup})
        return pn.Row(controls, pn.Column(self.legend(), self.panels))
