# The two commands: `make run` and `make test`. Both set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TRIPS := $(BIN)/trips
ROWS ?= 1000000
CITUS_WORKERS ?=
PYTEST_ARGS ?=

.PHONY: install citus run test lint format benchmark benchmark-copy benchmark-scale stop db-server db-up clean \
	web-assets browser-deps

install: $(VENV)/.installed web-assets browser-deps

# The map page's MapLibre GL JS, pinned in service/web/package-lock.json (no CDN at run time).
WEB_MODULES := service/web/node_modules/.package-lock.json
web-assets: $(WEB_MODULES)
$(WEB_MODULES): service/web/package-lock.json
	@if command -v npm >/dev/null; then npm --prefix service/web ci --no-audit --no-fund --silent; \
	else echo "npm is missing: the map page needs 'npm --prefix service/web ci' (node 18+)"; fi

# Headless Chromium, chromedriver and GDAL's ogrinfo for tests/browser and the OAPIF test
# (installed as root, else the command is printed and those tests are skipped).
browser-deps:
	@bash tests/browser/install-browser.sh || true

$(VENV)/.installed: pyproject.toml db/install-postgis.sh
	@if [ -z "$$DATABASE_URL" ]; then bash db/install-postgis.sh; fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# Citus for `trips db up --workers N`; not part of install (the first source build takes a
# minute or more; later runs reuse the build cached in /var/cache/trips). See docs/scaling.md.
citus:
	bash db/install-citus.sh

# The server only (the local cluster unless DATABASE_URL is set): what the tests and benchmarks
# need, as each makes and migrates databases of its own. db-up also migrates the dev database
# `trips`, which `make run` serves; a `trips` store made by other migration texts is refused
# there, and must not stop `make test`.
db-server: install
	@if [ -z "$$DATABASE_URL" ]; then $(TRIPS) db up >/dev/null; fi

db-up: db-server
	$(TRIPS) db migrate

# The inbox's files are ingested first (in the foreground, with progress; files already stored
# are skipped by sha256), so the API answers with them from its first request; then the server,
# whose watcher picks up whatever is dropped into the inbox later.
run: db-up
	@inbox=$$($(BIN)/python -c 'from service.settings import Settings; print(Settings().data_dir)'); \
	files=$$(find "$$inbox" -maxdepth 1 -type f \( -name '*.csv' -o -name '*.csv.gz' \) ! -name '.*' 2>/dev/null | sort); \
	if [ -n "$$files" ]; then $(TRIPS) ingest $$files || echo "some inbox files failed (see above); serving anyway"; fi
	@mkdir -p .local && echo $$$$ > .local/serve.pid && exec $(TRIPS) serve

# Two passes: every test on the single PostGIS; then the integration and end-to-end tests on a
# throwaway Citus cluster, a coordinator and 2 workers (tests/citus_mode.py; Citus installed
# first, db/install-citus.sh). TRIPS_SKIP_CITUS=1 runs the first pass only.
test: db-server
	$(BIN)/pytest $(PYTEST_ARGS)
	@if [ "$$TRIPS_SKIP_CITUS" = 1 ]; then echo "TRIPS_SKIP_CITUS=1: no Citus pass"; else \
	  bash db/install-citus.sh && \
	  TRIPS_TEST_CITUS=1 $(BIN)/pytest $(PYTEST_ARGS) tests/integration tests/e2e; fi

lint: install
	$(BIN)/ruff check service tests benchmarks
	$(BIN)/ruff format --check service tests benchmarks
	$(BIN)/mypy service

format: install
	$(BIN)/ruff format service tests benchmarks
	$(BIN)/ruff check --fix service tests benchmarks

# Generate -> raw COPY baseline -> trips ingest + API worker -> queries, in database bench_$(ROWS);
# results in benchmarks/results/<date>-<rows>.json and .md (default 1M rows: a few minutes).
# CITUS_WORKERS=N: the same run on a throwaway Citus cluster (a coordinator and N workers);
# results/<date>-<rows>-citus<N>.json records engine and workers.
benchmark: db-server
	$(BIN)/python -m benchmarks.run --rows $(ROWS) $(if $(CITUS_WORKERS),--citus-workers $(CITUS_WORKERS))

# Issue 2's gate: trips ingest vs raw COPY of the same 2M-row file, median of 3 runs.
benchmark-copy: db-server
	$(BIN)/python -m benchmarks.ingest_vs_copy --rows 2000000 --runs 3

# The scale curve (long: the 100M run takes the better part of an hour), then the plot.
benchmark-scale: db-server
	$(BIN)/python -m benchmarks.run --rows 1000000
	$(BIN)/python -m benchmarks.run --rows 10000000
	$(BIN)/python -m benchmarks.run --rows 100000000 --keep-db
	$(BIN)/python -m benchmarks.plot

stop:
	-@if [ -f .local/serve.pid ]; then kill $$(cat .local/serve.pid) 2>/dev/null; rm -f .local/serve.pid; fi; true
	-@test -x $(TRIPS) && $(TRIPS) db down || true

clean: stop
	rm -rf $(VENV) .local
