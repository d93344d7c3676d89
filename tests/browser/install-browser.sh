#!/usr/bin/env bash
# Makes sure headless Chromium, its WebDriver and GDAL's ogrinfo are installed (browser tests in
# tests/browser/, the OAPIF test in tests/integration/test_ogc.py). As root it installs the
# Debian packages; otherwise it prints the command and the tests that need them are skipped.
set -euo pipefail

pkgs=()
[ -x /usr/bin/chromium ] || pkgs+=(chromium)
[ -x /usr/bin/chromedriver ] || pkgs+=(chromium-driver)
command -v ogrinfo >/dev/null 2>&1 || pkgs+=(gdal-bin)
[ "${#pkgs[@]}" = 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
  echo "installing ${pkgs[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
else
  echo "The browser and GDAL tests need: sudo apt-get install -y ${pkgs[*]}" >&2
  echo "(without them those tests are skipped)" >&2
fi
