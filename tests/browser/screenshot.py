"""docs/img/map.png from a running server: the page at a city, a box drawn, its weekly series.

    .venv/bin/python -m tests.browser.screenshot http://127.0.0.1:8000 docs/img/map.png \\
        --center 14.44,50.08 --zoom 11 --box 14.40,50.05,14.47,50.10
"""

from __future__ import annotations

import argparse
import shutil
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync "
    "--use-angle=swiftshader --enable-unsafe-swiftshader --window-size=1280,800"
).split()
READY = (
    "const h = window.tripsMap; return !!h && h.ready && h.map.loaded()"
    " && h.map.areTilesLoaded() && h.renderedTrips() > 0"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("--center", help="lon,lat (default: the trips' extent)")
    ap.add_argument("--zoom", type=float, default=11)
    ap.add_argument("--box", help="minx,miny,maxx,maxy drawn as the area")
    args = ap.parse_args()
    profile = tempfile.mkdtemp(prefix="trips-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(args.url.rstrip("/") + "/")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(READY))
        if args.center:
            lon, lat = map(float, args.center.split(","))
            driver.execute_script(
                "const [lon, lat, zoom] = arguments;"
                " window.tripsMap.map.jumpTo({center: [lon, lat], zoom})",
                lon,
                lat,
                args.zoom,
            )
            WebDriverWait(driver, 60).until(lambda d: d.execute_script(READY))
        if args.box:
            box = [float(v) for v in args.box.split(",")]
            driver.execute_script("return window.tripsMap.selectBox(...arguments)", *box)
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
