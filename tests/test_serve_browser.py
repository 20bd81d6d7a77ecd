"""The server's page in a real browser: Debian's chromium headless, driven by selenium through
Debian's chromium-driver, with networking limited to the loopback server.

On the tests' 16-study store (no analysis run): "cardiomegaly" gives k result thumbnails, one opens
with its overlay, and the map says how to store a projection. On a demo-like store (the site-B
phantom study, 300 studies, with `separability` run as `make demo` runs it): a newcomer's three
clicks (search, a cardiomegaly result, its overlay), the embedding map drawn and a click on one of
its points opening that image, and the finding filters; no console errors. That test takes the
README's screenshot (written to docs/serve.png with EMBEDSTORE_WRITE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from serve_process import started
from skip_policy import CHROMIUM_MISSING

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()), reason=CHROMIUM_MISSING)
K = 6
SHOT = Path(__file__).resolve().parent.parent / "docs" / "serve.png"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", "--window-size=1200,1000",
                 # networking limited to the loopback server: no host resolves, other requests go to a dead proxy
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                 "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(condition, what: str, seconds: float = 120):
    for _ in range(int(seconds / 0.25)):
        got = condition()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _loaded(driver, selector: str) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length",
        selector)


def test_search_open_a_result_and_see_its_overlay(small_phantoms, browser, tmp_path):
    from selenium.webdriver.common.by import By

    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    with started(store, log=tmp_path / "server.log") as base:
        browser.get(base + "/")
        _wait(lambda: browser.execute_script("return document.getElementById('version').options.length"), "versions")
        box = browser.find_element(By.ID, "k")
        box.clear()
        box.send_keys(str(K))
        browser.find_element(By.ID, "search").send_keys("cardiomegaly\n")
        _wait(lambda: _loaded(browser, "#results img.thumb") >= K, f"{K} thumbnails")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#results .card")) == K
        browser.find_elements(By.CSS_SELECTOR, "#results .card")[0].click()
        _wait(lambda: _loaded(browser, "#overlay") == 1, "the Grad-CAM overlay", seconds=180)
        assert _loaded(browser, "#detail-image") == 1
        assert browser.find_element(By.ID, "finding").get_attribute("value") == "Cardiomegaly"
        # no separability on this store: the map says which command stores its projection
        _wait(lambda: "embedstore separability" in browser.find_element(By.ID, "map-status").text, "the map's note")
        assert not browser.find_elements(By.CSS_SELECTOR, "#map svg, #map canvas")
        _no_console_errors(browser)


def _no_console_errors(driver):
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors


# The map's points: vega's SVG renderer draws each as a path under the symbol mark's group and
# keeps its scenegraph item on the element (`__data__`), whose datum is the /map row.
POINTS = "#map g.mark-symbol.role-mark path"  # role-legend-symbol: the legend's
# "index:image id" of a point (not image arguments[1]) that is on top at its own centre (points
# overlap), so that a real click there lands on it.
TOPMOST_POINT = """
document.getElementById("map").scrollIntoView({block: "center"});
for (const el of document.querySelectorAll(arguments[0])) {
  const r = el.getBoundingClientRect();
  if (el.__data__.datum.image_id !== arguments[1]
      && document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === el) {
    return [...document.querySelectorAll(arguments[0])].indexOf(el) + ":" + el.__data__.datum.image_id;
  }
}
return null;
"""


def _labels(card) -> list[str]:
    from selenium.webdriver.common.by import By

    return card.find_element(By.CSS_SELECTOR, ".labels").text.split(", ")


def _search(driver, text: str, at_least: int):
    from selenium.webdriver.common.by import By

    driver.execute_script("document.getElementById('status').textContent = ''")  # no stale "results for"
    box = driver.find_element(By.ID, "search")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    _wait(lambda: f"for “{text}”" in driver.find_element(By.ID, "status").text, f"results for {text!r}")
    _wait(lambda: _loaded(driver, "#results img.thumb") >= at_least, f"{at_least} thumbnails")
    return driver.find_elements(By.CSS_SELECTOR, "#results .card")


def test_a_newcomer_finds_cardiomegaly_in_three_clicks_and_the_map_opens_images(site_b_study, browser, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    import embedstore

    store = tmp_path / "store"
    shutil.copytree(site_b_study / "store", store)
    embedstore.open(store).separability("v1")  # the map's stored projection, as `make demo` stores it
    with started(store, log=tmp_path / "server.log") as base:
        browser.set_window_size(1280, 1500)
        browser.get(base + "/")
        _wait(lambda: browser.execute_script("return document.getElementById('present').options.length > 1"),
              "the findings")
        # click 1: type a finding and press Search (k is the page's default, 12)
        cards = _search(browser, "cardiomegaly", 12)
        assert len(cards) == 12
        # click 2: a result whose labels include cardiomegaly
        card = next(c for c in cards if "Cardiomegaly" in _labels(c))
        image_id = card.get_attribute("data-image-id")
        card.click()
        _wait(lambda: browser.find_element(By.ID, "detail-title").text == image_id, "the detail view")
        # click 3, only if needed: the overlay's finding is already the one searched for
        finding = Select(browser.find_element(By.ID, "finding"))
        if finding.first_selected_option.get_attribute("value") != "Cardiomegaly":
            finding.select_by_value("Cardiomegaly")
        _wait(lambda: _loaded(browser, "#overlay") == 1, "the Grad-CAM overlay", seconds=180)
        assert "finding=Cardiomegaly" in browser.find_element(By.ID, "overlay").get_attribute("src")
        assert _loaded(browser, "#detail-image") == 1

        # the map: every stored point of v1's PCA drawn, the results ringed, cardiomegaly coloured
        stored = httpx.get(f"{base}/map", params={"version": "v1"}, timeout=60).json()
        assert len(stored) > 50
        _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, POINTS)) == len(stored), "the map's points")
        assert browser.find_elements(By.CSS_SELECTOR, "#map svg")
        assert browser.find_element(By.ID, "map-colour").get_attribute("value") == "Cardiomegaly"
        drawn = browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(p => p.__data__.datum)", POINTS)
        assert sorted(d["image_id"] for d in drawn) == sorted(p["image_id"] for p in stored)
        assert {d["image_id"] for d in drawn if d["status"] == "positive"} == \
            {p["image_id"] for p in stored if "Cardiomegaly" in p["labels"].split(", ")}
        results = {c.get_attribute("data-image-id") for c in browser.find_elements(By.CSS_SELECTOR, "#results .card")}
        assert {d["image_id"] for d in drawn if d["hit"] == 1} == results & {p["image_id"] for p in stored}

        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(tmp_path / "serve.png"))

        # a real click on a point (one on top at its centre) opens that image
        browser.find_element(By.ID, "close").click()
        index, point_id = browser.execute_script(TOPMOST_POINT, POINTS, image_id).split(":", 1)
        browser.find_elements(By.CSS_SELECTOR, POINTS)[int(index)].click()
        _wait(lambda: browser.find_element(By.ID, "detail").is_displayed()
              and browser.find_element(By.ID, "detail-title").text == point_id, "the clicked point's detail view")
        _wait(lambda: _loaded(browser, "#detail-image") == 1, "the clicked point's image")

        # the finding filters: with cardiomegaly, without effusion; the page sends names, never SQL
        Select(browser.find_element(By.ID, "present")).select_by_value("Cardiomegaly")
        Select(browser.find_element(By.ID, "absent")).select_by_value("Effusion")
        cards = _search(browser, "cardiomegaly", 1)
        assert cards and all("Cardiomegaly" in _labels(c) and "Effusion" not in _labels(c) for c in cards)
        _no_console_errors(browser)

    from PIL import Image

    with Image.open(tmp_path / "serve.png") as img:
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20  # not a blank page
    if os.environ.get("EMBEDSTORE_WRITE_SCREENSHOT") == "1":  # the README's docs/serve.png, on request only
        shutil.copy(tmp_path / "serve.png", SHOT)
