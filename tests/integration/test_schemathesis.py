"""Property-based probing of the app's own OpenAPI schema with schemathesis, the real PostGIS
behind it (the sample ingested): no operation answers 500, and no answer breaks its schema.

Covers every operation the app has when the test runs (routes added later are picked up), with
a bounded number of examples each. The infinite SSE streams and /metrics are left out.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from service.api.app import create_app
from service.api.geojson import ClusterCollection, TripCollection
from service.settings import Settings
from tests.conftest import SAMPLE, database_copy
from tests.helpers import ingest, query

MAX_EXAMPLES = 25
EXCLUDED = r"^/(ingestions/events|ingestions/\{job_id\}/events|metrics)$"


@pytest.fixture(scope="module")
def api_db(server_url: str, template_db: str) -> Iterator[str]:
    """One database for the module's whole run (per-test copies would cost a copy per case)."""
    yield from database_copy(server_url, template_db, "trips_st")


@pytest.fixture(scope="module")
def api_schema(api_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("schemathesis")
    inbox = base / "inbox"
    inbox.mkdir()
    (inbox / "trips.csv").write_bytes(Path(SAMPLE).read_bytes())
    s = Settings(
        database_url=api_db,
        data_dir=inbox,
        upload_dir=base / "uploads",
        api_log=None,
        watch_inbox=False,
        heartbeat_seconds=1.0,
        stale_after_seconds=5.0,
        max_upload_mb=1,
        _env_file=None,
    )
    assert ingest(api_db, s, inbox / "trips.csv")["state"] == "succeeded"
    app = create_app(s)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield schema.exclude(path_regex=EXCLUDED)
    asgi.shutdown_lifespans()  # the app's pool and worker close before its database is dropped


# Open issues in other modules' routes, reported to their owners; tolerated only as exactly
# this one failure (a 500, ST100, or any other failure still fails the test). None open now.
KNOWN: dict[str, str] = {}
CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.content_type_conformance,
    checks.status_code_conformance,
    checks.response_headers_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_500_and_answers_match_the_schema(api_schema: Any, mode: GenerationMode) -> None:
    """Every operation, MAX_EXAMPLES cases each; every failing operation is listed."""
    failures: dict[str, str] = {}
    ran = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def probe(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        t = time.monotonic()
        try:
            probe()
        except Unsatisfiable:  # nothing to negate (no parameters, or only free-form strings)
            assert mode == GenerationMode.NEGATIVE, label
        except (Exception, BaseExceptionGroup) as e:  # one broken route must not hide others
            text = f"{type(e).__name__}: {e}"
            known = KNOWN.get(label)
            if known and known in text and "ST100" not in text and text.count("- ST") == 1:
                warnings.warn(f"{label}: known issue, reported: {known}", stacklevel=1)
            else:
                failures[label] = text[:3000]
        ran.append((label, round(time.monotonic() - t, 1)))
    print(f"{mode}: operations probed (seconds):", ran)
    assert len(ran) >= 12, ran
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())


@pytest.mark.parametrize(
    "path,query_,model",
    [
        ("/trips", {"limit": 30}, TripCollection),
        ("/clusters", {}, ClusterCollection),
    ],
)
def test_geojson_answers_match_their_documented_schema(
    api_schema: Any, path: str, query_: dict[str, Any], model: Any
) -> None:
    """A non-empty answer of each GeoJSON route conforms to its OpenAPI schema and model."""
    operation = api_schema[path]["GET"]
    response = operation.Case(query=query_).call_and_validate(checks=CHECKS)
    assert response.headers["content-type"][0].startswith("application/geo+json")
    fc = model.model_validate(response.json())
    assert fc.features, path
    if path == "/trips":
        assert fc.next_after_id == fc.features[-1].id and fc.links[0].rel == "next"


def test_the_store_survived(api_db: str) -> None:
    """After every hostile example, the sample is intact (run after the schemathesis test)."""
    assert query(api_db, "SELECT count(*) AS n FROM trips")[0]["n"] >= 100
    assert query(api_db, "SELECT count(*) AS n FROM regions")[0]["n"] >= 3
