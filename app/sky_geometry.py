"""Where the sky plot cuts the RA circle, so a field straddling RA = 0/360 is drawn in one piece.

A catalog spanning RA 359.5 … 0.5 would be split across the two ends of a 0–360 axis, and no box
on it could contain both halves. The plot therefore uses a *plot RA*: true RA shifted by −360 for
objects at or past a cut placed in the widest empty RA gap (so the field becomes −0.5 … 0.5). All
sky-plot coordinates (box, zoom ranges, overlays, cutout mosaic) are plot RA; the axis labels show
them modulo 360. Catalogs whose widest gap already contains RA = 0 keep plot RA = RA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Shift only when it shortens the plotted RA span by at least this much (deg): an all-sky
#: catalog with a small hole keeps the familiar 0-360 axis.
MIN_GAIN_DEG = 30.0

#: Bokeh tick formatter code: plot RA back to 0 <= RA < 360 on the axis.
TICK_JS = "const v = ((tick % 360) + 360) % 360; return String(+v.toFixed(6));"


@dataclass(frozen=True)
class RaWrap:
    """``cut`` in degrees: objects with RA >= cut are drawn at RA - 360 (cut 0: no shift)."""

    cut: float = 0.0

    @classmethod
    def for_ra(cls, ra: np.ndarray) -> RaWrap:
        """Cut in the middle of the widest gap between objects, when that beats cutting at 0."""
        r = np.sort(np.mod(np.asarray(ra, dtype=np.float64), 360.0))
        r = r[np.isfinite(r)]
        if len(r) < 2:
            return cls(0.0)
        gaps = np.diff(r)
        i = int(np.argmax(gaps))
        wrap_gap = r[0] + 360.0 - r[-1]
        if gaps[i] - wrap_gap < MIN_GAIN_DEG:
            return cls(0.0)
        return cls(float((r[i] + r[i + 1]) / 2.0))

    @property
    def shifted(self) -> bool:
        return self.cut != 0.0

    def to_plot(self, ra):
        """True RA (deg) -> plot RA; arrays keep their dtype."""
        if not self.shifted:
            return ra
        ra = np.mod(ra, 360.0)
        return np.where(ra >= self.cut, ra - 360.0, ra).astype(np.result_type(ra), copy=False)

    @staticmethod
    def to_sky(x):
        """Plot RA -> true RA in [0, 360)."""
        return np.mod(x, 360.0)

    def tick_formatter(self):
        """Bokeh formatter showing plot RA as true RA (None when no shift, Bokeh's default is better)."""
        if not self.shifted:
            return None
        from bokeh.models import CustomJSTickFormatter

        return CustomJSTickFormatter(code=TICK_JS)
