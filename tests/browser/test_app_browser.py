"""The app in a real browser: load, tap the sky, gallery navigation, every view renders, URL
state restores a view, unknown ids give a message. Waits on Bokeh idleness, never on sleeps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from app.screenshots import JS_DATA_TO_SCREEN

_spec = importlib.util.spec_from_file_location("browser_helpers", Path(__file__).with_name("conftest.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

pytestmark = pytest.mark.browser


def selected_text(page) -> str:
    """The header line (Panel renders Markdown inside a shadow root; CSS locators pierce it)."""
    return page.locator(".aion-selected p").first.inner_text()


def wait_selected(page, object_id: int) -> None:
    """Poll (Playwright's expect, piercing Panel's shadow DOM) until the header names the object."""
    from playwright.sync_api import expect

    expect(page.locator(".aion-selected p").first).to_contain_text(f"Selected: {object_id}", timeout=30_000)


def click_tab(page, title: str) -> None:
    page.locator(f".bk-tab:text-is('{title}')").click()
    helpers.wait_idle(page)


def test_loads_and_tap_on_sky_selects_object(page, served_app, tiny_mock):
    import pandas as pd

    base, _ = served_app
    helpers.open_app(page, base)
    assert "Selected: none" in selected_text(page)
    cat = pd.read_parquet(tiny_mock / "catalog.parquet")
    target = cat.iloc[7]
    page.wait_for_function("() => Bokeh.index.all_views().some(v => v.model.type === 'Figure')", timeout=30_000)
    xy = page.evaluate(JS_DATA_TO_SCREEN, ["RA (deg)", float(target["ra"]), float(target["dec"])])
    assert xy is not None, "sky figure not found"
    page.mouse.click(*xy)
    wait_selected(page, int(target["object_id"]))
    helpers.wait_idle(page)
    assert page.aion_errors == []


def test_gallery_shows_k_hits_and_click_selects(page, served_app, tiny_mock, image_index):
    import pandas as pd

    base, _ = served_app
    cat = pd.read_parquet(tiny_mock / "catalog.parquet")
    oid = int(cat.loc[cat["has_image_ls"], "object_id"].iloc[0])
    helpers.open_app(page, base, f"object={oid}&tab=similar")
    cards = page.locator(".aion-card")
    cards.first.wait_for(timeout=30_000)
    # default k is 12; the tiny dataset has more image objects than that
    assert cards.count() == 12
    second = int(cards.nth(1).get_attribute("data-object-id"))
    assert second != oid
    cards.nth(1).locator("img").click()
    wait_selected(page, second)
    from playwright.sync_api import expect

    # the new search ran: an object's own gallery never lists itself, and it again shows k hits
    expect(page.locator(f".aion-card[data-object-id='{second}']")).to_have_count(0, timeout=30_000)
    expect(page.locator(".aion-card")).to_have_count(12, timeout=30_000)
    assert page.aion_errors == []


def test_views_render_for_selected_object(page, served_app, tiny_mock, image_index, segmentation_head):
    import pandas as pd

    base, _ = served_app
    cat = pd.read_parquet(tiny_mock / "catalog.parquet")
    oid = int(cat.loc[cat["has_image_ls"] & cat["has_segmap"] & cat["has_spectrum_desi"], "object_id"].iloc[0])
    helpers.open_app(page, base, f"object={oid}&tab=spectrum")
    helpers.wait_figure(page, f"spectrum of {oid}")
    click_tab(page, "Segmentation")
    helpers.wait_figure(page, "truth (segmaps.h5)")
    helpers.wait_figure(page, "predicted")  # the head trained by the fixture, over the same cutout
    click_tab(page, "Embedding map")
    page.get_by_text("PCA of the image embeddings").first.wait_for(timeout=30_000)
    click_tab(page, "Spectrum")
    page.get_by_role("button", name="Generate high-resolution spectrum").click()
    helpers.wait_idle(page)
    page.locator(".aion-superres").first.wait_for(timeout=60_000)
    helpers.wait_figure(page, f"Super-resolution of {oid}")
    helpers.wait_figure(page, "residual (generated − truth)")
    assert page.aion_errors == []


def test_url_restores_view_and_unknown_id_message(page, served_app, tiny_mock):
    import pandas as pd

    base, _ = served_app
    oid = int(pd.read_parquet(tiny_mock / "catalog.parquet")["object_id"].iloc[3])
    helpers.open_app(page, base, f"object={oid}&tab=object")
    assert f"Selected: {oid}" in selected_text(page)
    page.get_by_text(f"Object {oid}").first.wait_for(timeout=30_000)
    url = page.url
    assert f"object={oid}" in url and "tab=object" in url
    page.reload()
    helpers.wait_idle(page)
    assert f"Selected: {oid}" in selected_text(page)
    assert page.locator(".bk-tab.bk-active").inner_text() == "Object"
    helpers.open_app(page, base, "object=987654321")
    page.locator(".aion-message").get_by_text("Unknown object id 987654321").first.wait_for(timeout=30_000)
