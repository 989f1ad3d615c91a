"""Property-based fuzzing of the served OpenAPI document: no input may produce a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.server.conftest import LiveServer, MODEL  # noqa: E402
from tests.core.fixtures import model_path  # noqa: E402

_live = LiveServer(model_path(MODEL), max_tokens_limit=8)  # small answers: fast runs
# the document the app serves, fuzzed over real HTTP against the live server (an in-process ASGI
# client would run the app's lifespan again: a second model load beside the live one)
schema = schemathesis.openapi.from_dict(_live.app.openapi())


@pytest.fixture(scope="module", autouse=True)
def _ready():
    _live.start()
    yield
    _live.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@pytest.mark.slow
def test_no_request_makes_the_server_fail(case) -> None:
    response = case.call(base_url=_live.url, timeout=60)
    case.validate_response(response, checks=[not_a_server_error])


def test_the_fuzzed_document_is_the_served_one() -> None:
    import httpx

    assert httpx.get(_live.url + "/openapi.json", timeout=10).json() == _live.app.openapi()
