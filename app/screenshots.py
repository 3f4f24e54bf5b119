"""Reproducible screenshots of the app for docs/app.md: serves the app on the given data, drives
Debian's chromium through playwright, and writes small PNGs ``app_{sky,object,similar,segmentation,
spectrum,map}.png``::

    .venv/bin/python -m app.screenshots --dataset data/mock-default --model assets/models/aion-nano \\
        --index-root indexes --out docs/img

Every wait is on the page's own state (Bokeh idle, a figure title, a gallery card), never a sleep.
A shot that cannot be made (e.g. no index for the similar view) is reported and the others still run.
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IDLE = "() => window.Bokeh !== undefined && Bokeh.documents.length > 0 && Bokeh.documents[0].is_idle"
JS_FIGURE_TITLED = """(text) => Bokeh.index.all_views().some(
  v => v.model.type === 'Figure' && v.model.title && String(v.model.title.text).includes(text))"""
#: The sky figure (its x axis is "RA (deg)") is drawn.
JS_SKY_DRAWN = """() => Bokeh.index !== undefined && Array.from(Bokeh.index.all_views()).some(v => v.model.type === 'Figure'
  && v.model.below.length && v.model.below[0].axis_label === 'RA (deg)')"""
#: Screen position of a data point in the Bokeh figure whose x axis has the given label.
JS_DATA_TO_SCREEN = """([xlabel, x, y]) => {
  for (const v of Bokeh.index.all_views()) {
    if (v.model.type === 'Figure' && v.model.below.length && v.model.below[0].axis_label === xlabel) {
      const r = v.canvas_view.el.getBoundingClientRect()
      return [r.left + v.frame.x_scale.compute(x), r.top + v.frame.y_scale.compute(y)]
    }
  }
  return null
}"""
#: The sky figure (x axis "RA (deg)") shows less than half a degree of RA: "go to" has zoomed in.
JS_SKY_ZOOMED = """() => Array.from(Bokeh.index.all_views()).some(v => v.model.type === 'Figure'
  && v.model.below.length && v.model.below[0].axis_label === 'RA (deg)'
  && Math.abs(v.model.x_range.end - v.model.x_range.start) < 0.5)"""
SHOTS = ("sky", "object", "similar", "segmentation", "spectrum", "map")
TIMEOUT_MS = 300_000  # generous: the box may be shared with training jobs


def pick_object(dataset: Path) -> int:
    """An object with an LS image, a segmentation map and a DESI spectrum, so every view has content."""
    import pandas as pd

    cat = pd.read_parquet(dataset / "catalog.parquet")
    flags = [c for c in ("has_image_ls", "has_segmap", "has_spectrum_desi") if c in cat.columns]
    rows = cat.loc[cat[flags].all(axis=1)] if flags else cat
    if "kind" in rows.columns and (rows["kind"] == "galaxy").any():
        rows = rows.loc[rows["kind"] == "galaxy"]
    if rows.empty:
        raise SystemExit(f"{dataset}: no object with {', '.join(flags)}; pass --object-id")
    return int(rows["object_id"].iloc[0])


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, *, interval: float = 0.1, timeout: float | None = None,
                  alive: Callable[[], None] | None = None) -> bool:
    """Poll 127.0.0.1:``port`` until it accepts connections (True) or ``timeout`` s pass (False).
    ``alive()`` runs between tries and raises to give up (e.g. the server process exited). A bare
    socket, not page.goto: a refused goto renders chromium's error page first, a cycle that would
    count in every timing."""
    deadline = None if timeout is None else time.time() + timeout
    while deadline is None or time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        if alive is not None:
            alive()
        time.sleep(interval)
    return False


def serve(config, wait_s: float = 60.0) -> tuple[object, str]:
    """The app served in a thread on a free loopback port (the browser tests serve it this way too);
    waits up to ``wait_s`` for the port to accept connections."""
    import panel as pn

    from app.main import build_app

    port = free_port()
    server = pn.serve({"/": lambda: build_app(config)}, port=port, threaded=True, show=False, start=True)
    wait_for_port(port, timeout=wait_s)
    return server, f"http://127.0.0.1:{port}/"


def small_png(png: bytes, width: int) -> bytes:
    """Downscale to ``width`` px and quantize to 256 colours: docs images of ~100-200 KB."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _wait_idle(page) -> None:
    page.wait_for_function(IDLE, timeout=TIMEOUT_MS)


def _open(page, base: str, oid: int, tab: str) -> None:
    page.goto(f"{base}?object={oid}&tab={tab}", timeout=TIMEOUT_MS)
    _wait_idle(page)


def _figure(page, title: str) -> None:
    page.wait_for_function(JS_FIGURE_TITLED, arg=title, timeout=TIMEOUT_MS)
    _wait_idle(page)


def shot_steps(oid: int) -> dict[str, Callable]:
    """For each screenshot: how to bring the page to it (after the page shows the right tab)."""

    def sky(page):
        box = page.get_by_placeholder("object id, or RA Dec", exact=False).first
        box.fill(str(oid))
        box.press("Enter")  # "go to" zooms in close enough for the cutouts to be drawn
        page.wait_for_function(JS_SKY_ZOOMED, timeout=TIMEOUT_MS)
        _wait_idle(page)

    def similar(page):
        page.locator(".aion-card").first.wait_for(timeout=TIMEOUT_MS)
        _wait_idle(page)

    def spectrum(page):
        _figure(page, f"spectrum of {oid}")
        page.get_by_role("button", name="Generate high-resolution spectrum").click()
        page.locator(".aion-superres").first.wait_for(timeout=TIMEOUT_MS)
        _figure(page, f"Super-resolution of {oid}")

    return {
        "sky": sky,
        "object": lambda page: page.get_by_text(f"Object {oid}").first.wait_for(timeout=TIMEOUT_MS),
        "similar": similar,
        "segmentation": lambda page: _figure(page, "truth"),
        "spectrum": spectrum,
        "map": lambda page: page.get_by_text("PCA of the").first.wait_for(timeout=TIMEOUT_MS),
    }


def take(base: str, oid: int, out: Path, names: tuple[str, ...], width: int) -> dict[str, str]:
    """Write ``out/app_<name>.png`` for each name; returns {name: "ok" | the reason it failed}."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    steps, status = shot_steps(oid), {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name in names:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            try:
                _open(page, base, oid, name)
                steps[name](page)
                _wait_idle(page)
                (out / f"app_{name}.png").write_bytes(small_png(page.screenshot(full_page=True), width))
                status[name] = "ok"
            except Exception as exc:  # keep the other shots; say which failed and why
                status[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            finally:
                page.close()
        browser.close()
    return status


def main(argv: list[str] | None = None) -> int:
    from app.config import AppConfig
    from engine import paths

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, default=paths.default_dataset_dir())
    p.add_argument("--model", default=str(paths.DEFAULT_MODEL_DIR), help="model folder / id the indexes were built with")
    p.add_argument("--index-root", type=Path, default=paths.INDEX_ROOT)
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--object-id", type=int, default=None, help="object shown (default: a galaxy with image, segmap, spectrum)")
    p.add_argument("--only", nargs="*", choices=SHOTS, default=list(SHOTS))
    p.add_argument("--width", type=int, default=900, help="width of the written PNGs in pixels")
    args = p.parse_args(argv)
    if not (args.dataset / "catalog.parquet").is_file():
        print(f"{args.dataset}: not a dataset folder (no catalog.parquet)", file=sys.stderr)
        return 2
    paths.INDEX_ROOT = args.index_root  # the engine's searchers read the same index root as the app
    oid = args.object_id if args.object_id is not None else pick_object(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:  # labels written by the session never touch data/
        config = AppConfig(dataset_dir=args.dataset, model=args.model, index_root=args.index_root,
                           labels_path=Path(tmp) / "labels.sqlite")
        server, base = serve(config)
        try:
            status = take(base, oid, args.out, tuple(args.only), args.width)
        finally:
            server.stop()
    for name, what in status.items():
        print(f"{args.out / f'app_{name}.png'}: {what}")
    return 0 if all(v == "ok" for v in status.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
