"""Embedding map: a 2-D PCA projection of a view's embeddings, datashaded; tap selects the nearest
object, and the selection and current search hits are drawn on top (linked to the sky by the
shared state). Its dimensions are u1/u2 so its axes never link to the sky's ra/dec."""

from __future__ import annotations

import datashader as ds
import holoviews as hv
import numpy as np
import panel as pn
from holoviews.operation.datashader import dynspread, rasterize
from scipy.spatial import cKDTree

from app.messages import AppMessage
from app.views import View, notice


class MapView(View):
    title = "Embedding map"

    def __init__(self, store, state, **params):
        super().__init__(store, state, **params)
        self.body = pn.Column(sizing_mode="stretch_width")
        state.param.watch(self._build, "view")
        self._build()

    def _build(self, *_):
        try:
            frame = self.store.embedding_map(self.state.view)
        except AppMessage as msg:
            self.body[:] = [notice(str(msg), msg.level)]
            return
        self.frame = frame
        self.tree = cKDTree(frame[["u1", "u2"]].to_numpy())
        self.pos = {int(o): i for i, o in enumerate(frame["object_id"].to_numpy())}
        points = hv.Points(frame, kdims=["u1", "u2"], vdims=["kind", "object_id"])
        raster = rasterize(points, aggregator=ds.count_cat("kind")) if frame["kind"].nunique() > 1 else rasterize(points)
        shaded = dynspread(raster, threshold=0.6, max_px=3).opts(responsive=True, min_height=520, tools=["hover"],
                                                                   xlabel="PC 1", ylabel="PC 2")
        self.tap = hv.streams.Tap(source=raster, x=None, y=None)
        self.tap.add_subscriber(self._on_tap)
        marks = hv.DynamicMap(self._marks, streams=[self.state.param.object_id, self.state.param.hits])
        self.body[:] = [pn.pane.Markdown(f"PCA of the **{self.state.view}** embeddings ({len(frame):,} objects); "
                                         "tap a point to select it."),
                        pn.pane.HoloViews(shaded * marks, sizing_mode="stretch_width", min_height=520)]

    def _on_tap(self, x=None, y=None) -> None:
        if x is None or y is None:
            return
        span = float(np.ptp(self.frame["u1"].to_numpy())) or 1.0
        dist, i = self.tree.query([x, y])
        if dist <= span / 40:
            self.state.select(int(self.frame["object_id"].iloc[i]))

    def _marks(self, object_id=None, hits=None):
        layers = []
        if hits is not None and len(hits):
            rows = [self.pos[int(o)] for o in hits["object_id"] if int(o) in self.pos]
            layers.append(hv.Points(self.frame.iloc[rows], kdims=["u1", "u2"], vdims=["object_id"]).opts(
                color="#ff7f0e", size=9, fill_alpha=0, line_width=2))
        if object_id is not None and int(object_id) in self.pos:
            layers.append(hv.Points(self.frame.iloc[[self.pos[int(object_id)]]], kdims=["u1", "u2"], vdims=["object_id"]).opts(
                color="red", marker="square", size=16, fill_alpha=0, line_width=2))
        return hv.Overlay(layers or [hv.Points([], kdims=["u1", "u2"])])

    def __panel__(self):
        return self.body
