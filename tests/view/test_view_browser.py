"""The viewer page in a real headless Chromium: view a slide, click a fibre, change its class, re-aggregate.

Skips when playwright or a Chromium binary is missing (``apt-get install chromium``;
playwright's own browsers are never downloaded). ``NCLSM_VIEWER_SCREENSHOT=PATH``
also saves the zoomed-in screenshot there (PNG; ``docs/viewer.jpg`` is one, saved as JPEG).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import imagecodecs
import numpy as np
import pandas as pd
import pytest

from nclsm_scale.layout import read_fibre_table
from nclsm_scale.tables import FibreClass

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                             "/usr/bin/chromium") if p and Path(p).is_file()), None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")


@pytest.fixture(scope="module")
def page(viewer):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        yield page
        browser.close()


def _loaded(page) -> None:
    page.wait_for_function(
        "() => { const v = window.nclsmViewer; if (!v || v.world.getItemCount() !== 3) return false;"
        " for (let i = 0; i < 3; i++) if (!v.world.getItemAt(i).getFullyLoaded()) return false; return true; }",
        timeout=60_000)


def test_view_a_slide_click_a_fibre_change_its_class_and_reaggregate(page, viewer, view_run, tmp_path) -> None:
    layout = view_run["layout"]
    table, _ = read_fibre_table(layout.fibre_table("V1"))
    before = pd.read_parquet(layout.slides_table).set_index("slide").loc["V1"]
    whole = table[(table["curation_class"] == "AM") & (table["solidity"] > 0.95)]
    fibre = whole.iloc[len(whole) // 2]
    fid, x, y = int(fibre["fibre_id"]), float(fibre["centroid_x_px"]), float(fibre["centroid_y_px"])

    page.goto(f"{viewer['url']}/slide/V1")
    page.wait_for_selector("#summary td[data-col='n_AM']")
    assert page.inner_text("#summary td[data-col='n_AM']") == str(int(before["n_AM"]))
    _loaded(page)
    # zoom in on 500 x 500 level-0 px around the fibre
    page.evaluate("([x, y]) => { const v = window.nclsmViewer; const it = v.world.getItemAt(0);"
                  " v.viewport.fitBounds(it.imageToViewportRectangle(x - 250, y - 250, 500, 500), true); }", [x, y])
    _loaded(page)
    box = page.locator("#osd").bounding_box()
    at = page.evaluate("([x, y]) => { const it = window.nclsmViewer.world.getItemAt(0);"
                       " const p = it.imageToViewerElementCoordinates(new OpenSeadragon.Point(x + 0.5, y + 0.5));"
                       " return [p.x, p.y]; }", [x, y])
    page.mouse.move(box["x"] + at[0], box["y"] + at[1])
    page.wait_for_selector("#tip:not([hidden])", timeout=10_000)
    assert page.inner_text("#tip").startswith(f"#{fid} AM")
    shot = page.screenshot()
    (tmp_path / "viewer.png").write_bytes(shot)
    if os.environ.get("NCLSM_VIEWER_SCREENSHOT"):
        Path(os.environ["NCLSM_VIEWER_SCREENSHOT"]).write_bytes(shot)
    rgb = imagecodecs.png_decode(shot)[..., :3].astype(int)
    near_am = (np.abs(rgb - np.array(FibreClass.AM.rgb)).sum(axis=-1) < 30).sum()
    assert near_am > 2000  # the AM outlines are drawn

    page.mouse.click(box["x"] + at[0], box["y"] + at[1])
    page.wait_for_function(f"() => document.querySelector(\"#fibre td[data-col='fibre_id']\")?.textContent === '{fid}'")
    assert page.inner_text("#fibre td[data-col='curation_class']") == "AM"
    assert page.inner_text("#fibre td[data-col='area_um2']") == f"{fibre['area_um2']:.4g}".rstrip(".")

    page.select_option("#class-select", "FR")
    page.click("#set-class")
    page.wait_for_function("() => document.querySelector(\"#fibre td[data-col='curation_class']\")?.textContent"
                           " === 'FR'")
    assert "V1" in page.inner_text("#pending") and page.is_enabled("#reaggregate")
    assert pd.read_csv(layout.overrides("V1"))["fibre_id"].tolist() == [fid]

    page.click("#reaggregate")
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('re-aggregated')",
                           timeout=300_000)
    after = pd.read_parquet(layout.slides_table).set_index("slide").loc["V1"]
    assert after["n_AM"] == before["n_AM"] - 1 and after["n_FR"] == before["n_FR"] + 1
    assert page.inner_text("#summary td[data-col='n_AM']") == str(int(after["n_AM"]))
    assert page.inner_text("#summary td[data-col='n_FR']") == str(int(after["n_FR"]))
    assert page.inner_text("#pending") == "Tables are up to date."
