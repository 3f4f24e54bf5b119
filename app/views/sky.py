"""Sky: the whole catalog rasterized over RA/Dec (HoloViews ``rasterize``: numpy binning up to 2 M
rows, Datashader's kernels above, see :mod:`app.raster`), coloured by any column; a tap
selects the nearest object; search hits and the selection drawn on top; zoomed in far enough,
each visible object's own cutout drawn at its position (overlays in :mod:`app.views.sky_layers`).
Coordinates are plot RA (:mod:`app.sky_geometry`), so a field across RA = 0 is one piece."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from app.raster import aggregator_for, hover_selector, sky_points, sky_rasterize, sparse_spread
from app.views import View
from app.views.sky_layers import CUTOUT_MAX, cutout_layer, focus_ranges, hits_layer, selected_layer

__all__ = ["CUTOUT_MAX", "SkyView", "aggregator_for", "hover_selector"]

#: A tap selects the nearest object within this many screen pixels.
TAP_RADIUS_PX = 12
PLOT_WIDTH = 820
#: Box select lists at most this many objects.
BOX_MAX = 500


def _known(axis_range) -> bool:
    """A plot range the browser really reported: two finite numbers (not None, not NaN)."""
    return axis_range is not None and all(v is not None and np.isfinite(v) for v in axis_range)


class SkyView(View):
    title = "Sky"
    aggregator = param.Parameter(default=aggregator_for("count"))

    def __init__(self, store, state, **params):
        super().__init__(store, state, **params)
        self.search = pn.widgets.TextInput(placeholder="object id, or RA Dec (deg or 10h00m28s +02d12m21s)", label="Go to")
        self.search.param.watch(lambda e: self.state.goto(e.new), "value")
        self.colour = pn.widgets.Select.from_param(state.param.colour, label="Colour by")
        self.cmap = pn.widgets.Select(label="Colour map", options=["viridis", "fire", "kbc", "coolwarm"], value="viridis")
        self._range = (None, None)
        self.selection = pn.widgets.Tabulator(None, show_index=False, disabled=True, height=220, page_size=50,
                                              pagination="local", sizing_mode="stretch_width", visible=False)
        self.selection.on_click(self._on_row_click)
        self.selection_note = pn.pane.Markdown("", visible=False)
        self.plot = pn.pane.HoloViews(self._build(), sizing_mode="stretch_width", min_height=520)
        state.param.watch(self._refocus, "focus")
        state.param.watch(lambda e: setattr(self, "aggregator", aggregator_for(e.new)), "colour")
        self.aggregator = aggregator_for(state.colour)

    # --- plot ----------------------------------------------------------------------------

    def _points(self, colour: str):
        return sky_points(self.store, colour)

    def _build(self, focus=None):
        points = hv.DynamicMap(pn.bind(self._points, self.state.param.colour))
        self._focus_bounds = None
        if focus is not None:
            # on the points, so the raster's first frame is binned over the focused field at full plot
            # resolution (the browser reports no range until the user moves the plot) and the axes,
            # inheriting the dimension ranges, start there; the cutout layer's first frame uses the same
            ranges = focus_ranges(self.store, focus)
            self._focus_bounds = (*ranges["ra"], *ranges["dec"])
            points = points.redim.range(**ranges)
        raster = sky_rasterize(points, aggregator=self.param.aggregator, selector=hover_selector(len(self.store.catalog)))
        shaded = sparse_spread(raster, threshold=0.6, max_px=3).apply.opts(cmap=self.cmap.param.value)
        shaded = shaded.opts(
            tools=["hover", "box_select", "tap"], colorbar=True, cnorm="eq_hist", invert_xaxis=True, bgcolor="#0b0b1a",
            responsive=True, min_height=520, xlabel="RA (deg)", ylabel="Dec (deg)", active_tools=["wheel_zoom"],
        )
        if self.store.ra_wrap.shifted:
            shaded = shaded.opts(xformatter=self.store.ra_wrap.tick_formatter())
        self.tap = hv.streams.Tap(source=raster, x=None, y=None)
        self.tap.add_subscriber(self._on_tap)
        self.box = hv.streams.BoundsXY(source=raster, bounds=None)
        self.box.add_subscriber(self._on_box)
        self.ranges = hv.streams.RangeXY(source=raster)
        self.ranges.add_subscriber(self._on_range)
        hits = hv.DynamicMap(self._hits, streams=[self.state.param.hits])
        selected = hv.DynamicMap(self._selected, streams=[self.state.param.object_id])
        self.plot_size = hv.streams.PlotSize(source=raster)
        cutouts = hv.DynamicMap(self._cutouts, streams=[self.ranges, self.plot_size])
        return (shaded * cutouts * hits * selected).opts(hv.opts.Overlay(responsive=True, min_height=520))

    def _refocus(self, event) -> None:
        if event.new is not None:
            self.plot.object = self._build(event.new)

    def _on_range(self, x_range=None, y_range=None) -> None:
        if _known(x_range) and _known(y_range):  # a freshly replaced plot first reports (nan, nan)
            self._range = (x_range, y_range)

    def tap_radius_deg(self) -> float:
        """TAP_RADIUS_PX in degrees at the current zoom (the whole catalog's span before any zoom)."""
        x_range = self._range[0]
        if x_range is None or None in x_range:
            x0, x1, _, _ = self.store.plot_bounds()
            span = (x1 - x0) or 1.0
        else:
            span = abs(x_range[1] - x_range[0])
        return span / PLOT_WIDTH * TAP_RADIUS_PX

    def _on_tap(self, x=None, y=None) -> None:
        if x is None or y is None:
            return
        oid = self.store.nearest(float(self.store.ra_wrap.to_sky(x)), float(y), self.tap_radius_deg())
        if oid is not None:
            self.state.select(oid)

    def _on_box(self, bounds=None) -> None:
        """Box select: list the objects inside (first BOX_MAX); clicking a row selects that object."""
        if bounds is None:
            return
        ra0, dec0, ra1, dec1 = bounds
        inside = self.store.in_box(ra0, ra1, dec0, dec1)
        cols = [c for c in ("object_id", "ra", "dec", "kind", "z", self.state.colour) if c in inside.columns]
        self.selection.value = inside[list(dict.fromkeys(cols))].head(BOX_MAX).reset_index(drop=True)
        more = f" (first {BOX_MAX} listed)" if len(inside) > BOX_MAX else ""
        self.selection_note.object = f"**{len(inside):,} objects in the box**{more}; click a row to open one."
        self.selection.visible = self.selection_note.visible = True

    def _on_row_click(self, event) -> None:
        self.state.select(int(self.selection.value["object_id"].iloc[event.row]))

    def _hits(self, hits=None):
        return hits_layer(self.store, hits)

    def _selected(self, object_id=None):
        return selected_layer(self.store, self.state.row)

    def _cutouts(self, x_range=None, y_range=None, width=None, height=None, scale=None):
        known = _known(x_range) and _known(y_range)
        bounds = (*x_range, *y_range) if known else (self._focus_bounds or self.store.plot_bounds())
        return cutout_layer(self.store, bounds, aspect=(height / width) if width and height else 0.5)

    def __panel__(self):
        controls = pn.Row(self.search, self.colour, self.cmap, sizing_mode="stretch_width")
        return pn.Column(controls, self.plot, self.selection_note, self.selection, sizing_mode="stretch_width")
