"""Real-browser fixtures: the app served by ``pn.serve`` in a thread over a tiny mock dataset,
driven by Debian's chromium through Python playwright (never ``playwright install``).

Without chromium the tests skip locally but FAIL when ``CI`` is set, so CI cannot pass them by
not running them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("AION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IDLE = "() => window.Bokeh !== undefined && Bokeh.documents.length > 0 && Bokeh.documents[0].is_idle"
K = 6

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build_index(dataset: Path, view: str = "image") -> None:
    """Embed with the engine's pixel-PCA baseline and build its FAISS index (seconds on 64 objects),
    through the same CLI users run."""
    from engine.cli import main

    for verb in ("embed", "index"):
        rc = main([verb, "--dataset", str(dataset), "--model", "pixel-pca", "--view", view])
        assert rc == 0, f"aion-engine {verb} failed for the browser-test dataset"


@pytest.fixture(scope="session")
def served_app(tiny_mock, tmp_path_factory):
    """(base url, AppConfig) of the app served over ``tiny_mock`` with an image index."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail(f"chromium not found at {CHROMIUM}; the browser tests must run in CI (apt install chromium)")
        pytest.skip(f"chromium not found at {CHROMIUM}")
    import panel as pn

    from app.config import AppConfig
    from app.main import build_app
    from engine import paths

    root = tmp_path_factory.mktemp("browser")
    index_root = root / "indexes"
    saved_root, paths.INDEX_ROOT = paths.INDEX_ROOT, index_root  # the engine's index root for this session
    config = AppConfig(dataset_dir=tiny_mock, model="pixel-pca", index_root=index_root, labels_path=root / "labels.sqlite")
    port = _free_port()
    server = pn.serve({"/": lambda: build_app(config)}, port=port, threaded=True, show=False, start=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", config
    with contextlib.suppress(RuntimeError):  # "Thread already stopping": reset() stops servers again
        server.stop()
        server.join(timeout=10)
        pn.state.reset()
    paths.INDEX_ROOT = saved_root


@pytest.fixture(scope="session")
def image_index(served_app, tiny_mock):
    """Build the image index after the server started: the app opens searchers lazily."""
    _build_index(tiny_mock)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, served_app):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    pg.aion_errors = []
    pg.on("pageerror", lambda exc: pg.aion_errors.append(str(exc)))
    yield pg
    context.close()


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until Bokeh has rendered and the server has no pending updates (no sleeps)."""
    page.wait_for_function(IDLE, timeout=timeout_ms)


def open_app(page, base: str, query: str = "") -> None:
    page.goto(base + "/" + (f"?{query}" if query else ""))
    wait_idle(page)
