"""The server's page in a real browser: Debian's chromium headless, driven by selenium through
Debian's chromium-driver, with networking limited to the loopback server. It types "cardiomegaly",
sees k result thumbnails load, opens one, sees the overlay image load, with no console errors;
and takes the README's screenshot (written to docs/serve.png with EMBEDSTORE_WRITE_SCREENSHOT=1).
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
        browser.save_screenshot(str(tmp_path / "serve.png"))
        logs = browser.get_log("browser")
    errors = [e for e in logs if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    from PIL import Image

    with Image.open(tmp_path / "serve.png") as img:
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20  # not a blank page
    if os.environ.get("EMBEDSTORE_WRITE_SCREENSHOT") == "1":  # the README's docs/serve.png, on request only
        shutil.copy(tmp_path / "serve.png", SHOT)
