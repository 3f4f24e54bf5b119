"""Real-browser fixtures: the app served by ``pn.serve`` in a thread over a tiny mock dataset,
driven by Debian's chromium through Python playwright (never ``playwright install``).

Without chromium the tests skip locally but FAIL when ``CI`` is set, so CI cannot pass them by
not running them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from app.screenshots import CHROMIUM_ARGS, IDLE, JS_FIGURE_TITLED, serve

CHROMIUM = os.environ.get("AION_CHROMIUM", "/usr/bin/chromium")
K = 6

def wait_figure(page, title_part: str, timeout_ms: int = 30_000) -> None:
    """Until a rendered Bokeh figure's title contains the text (titles are drawn on canvas)."""
    page.wait_for_function(JS_FIGURE_TITLED, arg=title_part, timeout=timeout_ms)


def _tiny_model(dataset: Path, out: Path) -> Path:
    """A random-weight AION model (dim 32, 1+1 blocks) saved as a model folder: enough for the engine's
    real embedding and super-resolution code paths to run in about a second."""
    import dataclasses

    import torch

    from engine.data import open_dataset
    from engine.model.codecs import build_codecs, fill_quantile_table
    from engine.model.loading import build_model, save_model
    from engine.model.modalities import LS_FLUX_KEYS, load_modalities
    from engine.model.presets import get_preset

    keys = (*LS_FLUX_KEYS, "tok_flux_g_gaia", "tok_flux_bp_gaia", "tok_flux_rp_gaia", "tok_image",
            "tok_spectrum_desi", "tok_xp_bp", "tok_xp_rp")
    preset = dataclasses.replace(
        get_preset("nano"), name="tiny-browser", dim=32, encoder_depth=1, decoder_depth=1, num_heads=2,
        image_hidden_dims=8, image_multisurvey_projection_dims=8, spectrum_encoder_dims=(4, 8, 8, 16),
        spectrum_decoder_dims=(8, 8, 4, 1), scalar_reservoir_size=64)
    torch.manual_seed(0)
    model, codecs = build_model(preset, keys).eval(), build_codecs(preset, keys)
    ds = open_dataset(dataset)
    scalar_keys = [k for k in keys if k not in ("tok_image", "tok_spectrum_desi")]
    for key, (modality, present) in load_modalities(ds, ds.ids, scalar_keys).items():
        fill_quantile_table(codecs[key], modality.value[torch.from_numpy(present.copy())])
    save_model(out, model, codecs, {"preset": preset.name, "note": "random weights, browser tests only"})
    return out


def _build_index(dataset: Path, model: Path, view: str = "image") -> None:
    """Embed with the model and build the FAISS index through the same CLI users run."""
    from engine.cli import main

    for verb in ("embed", "index"):
        rc = main([verb, "--dataset", str(dataset), "--model", str(model), "--view", view, "--quiet"])
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
    from engine import paths

    root = tmp_path_factory.mktemp("browser")
    index_root = root / "indexes"
    saved_root, paths.INDEX_ROOT = paths.INDEX_ROOT, index_root  # the engine's index root for this session
    model = _tiny_model(tiny_mock, root / "tiny-browser")
    config = AppConfig(dataset_dir=tiny_mock, model=str(model), index_root=index_root, labels_path=root / "labels.sqlite")
    server, base = serve(config, wait_s=30)
    yield base.rstrip("/"), config
    with contextlib.suppress(RuntimeError):  # "Thread already stopping": reset() stops servers again
        server.stop()
        server.join(timeout=10)
        pn.state.reset()
    paths.INDEX_ROOT = saved_root


@pytest.fixture(scope="session")
def image_index(served_app, tiny_mock):
    """Build the image index after the server started: the app opens searchers lazily."""
    _build_index(tiny_mock, Path(served_app[1].model))


@pytest.fixture(scope="session")
def segmentation_head(served_app, tiny_mock):
    """Train the segmentation head on the tiny model's frozen image tokens (the engine's own probe
    training, few epochs), so the segmentation view draws a *predicted* mask, not only the truth."""
    from engine.tasks.probes import SEGMENTATION_COMBO, train_probes

    result = train_probes(tiny_mock, served_app[1].model, epochs=4, progress=False, combos=(SEGMENTATION_COMBO,))
    assert "segmentation" in result, "the tiny dataset should have segmaps to train the head on"


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
