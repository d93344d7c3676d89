"""The map page in headless Chromium (selenium) against a real `trips serve`: it draws the stored
trips without console errors, a box drawn on the page shows the API's weekly average, and an
upload from its form is followed live to `succeeded`.

Needs /usr/bin/chromium and /usr/bin/chromedriver (tests/browser/install-browser.sh, run by
`make install`) and the map page's node_modules (`npm ci`); skipped without them. With
TRIPS_SCREENSHOT_DIR set, the screenshot is written there (docs/img for the docs' map.png).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import Settings
from service.web.page import MAPLIBRE
from tests.e2e.test_cli_and_server import TRIPS, _env, _free_port, wait_for_line
from tests.helpers import ingest
from tests.integration.analytics_data import make_trips, write_csv

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 60

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER) and MAPLIBRE.is_dir()),
    reason="chromium, chromedriver or the map page's node_modules missing "
    "(make install; tests/browser/install-browser.sh)",
)


@pytest.fixture
def server(db_url: str, settings: Settings, inbox: Path, sample_csv: Path) -> Iterator[str]:
    """`trips serve` on a free port, with the sample ingested before it starts."""
    assert ingest(db_url, settings, sample_csv)["state"] == "succeeded"
    port = _free_port()
    proc = subprocess.Popen(
        [TRIPS, "serve", "--port", str(port)],
        env=_env(db_url, inbox, TRIPS_COLUMNS_DIR=""),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_line(proc, "Application startup complete", timeout=60)
        threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="trips-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # WebGL in software: MapLibre draws with it when there is no GPU
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--window-size=1280,800",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver: Any, base: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + "/")
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script(
            "const h = window.tripsMap; return !!h && h.ready && h.map.loaded()"
            " && h.map.areTilesLoaded() && h.renderedTrips() > 0"
        )
    )


def _errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _screenshot(driver: Any, tmp_path: Path) -> None:
    target = Path(os.environ.get("TRIPS_SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(target / "map.png"))


def test_page_draws_the_stored_trips_without_errors(server: str, browser: Any) -> None:
    _open(browser, server)
    counts = browser.execute_script(
        "const h = window.tripsMap;"
        " return [h.renderedTrips(), h.renderedClusters(), h.tilesLoaded, h.map.getZoom()]"
    )
    assert counts[0] > 0 and counts[1] > 0 and counts[2] > 0
    assert counts[3] > 3  # fitted to the trips' extent, not the world
    assert _errors(browser) == []


def test_box_drawn_on_the_page_shows_the_api_numbers(
    server: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    _open(browser, server)
    # Drawn through the page's UI: the Box button, then two clicks on the map.
    browser.find_element(By.ID, "draw-box").click()
    canvas = browser.find_element(By.CSS_SELECTOR, "#map canvas")
    w, h = canvas.size["width"], canvas.size["height"]
    ActionChains(browser).move_to_element_with_offset(canvas, -w // 3, -h // 3).click().perform()
    ActionChains(browser).move_to_element_with_offset(canvas, w // 3, h // 3).click().perform()
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return !!window.tripsMap.lastStats")
    )
    bbox = browser.execute_script("return window.tripsMap.area.bbox")
    shown = browser.execute_script("return window.tripsMap.lastStats")
    api = httpx.get(
        f"{server}/stats/weekly-average",
        params={"bbox": ",".join(map(repr, bbox)), "match": "origin"},
        timeout=30,
    ).json()
    assert shown == api and api["trips"] > 0
    assert browser.find_element(By.ID, "r-trips").text == str(api["trips"])
    assert browser.find_element(By.ID, "r-weeks").text == str(api["weeks"])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart rect")) == api["weeks"]

    # The page's hook with a known box, and `match` changed in the form.
    Select(browser.find_element(By.ID, "match")).select_by_value("either")
    shown = browser.execute_script("return window.tripsMap.selectBox(14.3, 49.9, 14.6, 50.2)")
    api = httpx.get(
        f"{server}/stats/weekly-average",
        params={"bbox": "14.3,49.9,14.6,50.2", "match": "either"},
        timeout=30,
    ).json()
    assert shown == api and api["trips"] > 0

    # A region from the dropdown, with the box cleared.
    browser.execute_script("return window.tripsMap.clear()")
    WebDriverWait(browser, WAIT).until(
        lambda d: len(Select(d.find_element(By.ID, "region")).options) > 1
    )
    Select(browser.find_element(By.ID, "region")).select_by_value("Turin")
    WebDriverWait(browser, WAIT).until(
        lambda d: (
            d.find_element(By.ID, "r-trips").text
            == str(
                httpx.get(f"{server}/stats/weekly-average", params={"region": "Turin"}).json()[
                    "trips"
                ]
            )
        )
    )
    browser.execute_script("return window.tripsMap.selectBox(14.3, 49.9, 14.6, 50.2)")
    Select(browser.find_element(By.ID, "region")).select_by_value("")
    _screenshot(browser, tmp_path)
    assert _errors(browser) == []


def test_upload_from_the_form_is_followed_to_succeeded(
    server: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path = write_csv(make_trips(3, 300), tmp_path / "page-upload.csv")
    with open(path, "a", encoding="utf-8") as f:
        f.write("Prague,POINT (1 2),not a point,2018-05-01 00:00:00,funny_car\n")
    _open(browser, server)
    browser.find_element(By.ID, "file").send_keys(str(path))
    browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    done = "#jobs li[data-state=succeeded]"

    def finished(d: Any) -> Any:
        for li in d.find_elements(By.CSS_SELECTOR, done):
            if li.find_element(By.CSS_SELECTOR, ".name").text == "page-upload.csv":
                return li
        return None

    li = WebDriverWait(browser, WAIT).until(finished)
    assert li.find_element(By.CSS_SELECTOR, "progress").get_attribute("value") == "100"
    assert "1 rejected" in li.find_element(By.CSS_SELECTOR, ".meta").text
    li.find_element(By.CSS_SELECTOR, "button.show-rejections").click()
    WebDriverWait(browser, WAIT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rejections tbody tr")) == 1
    )
    cell = browser.find_element(By.CSS_SELECTOR, "#rejections tbody tr td")
    assert cell.text == "304"  # header, 302 trips, then the bad row
    assert _errors(browser) == []
