"""Schemathesis against the service's own OpenAPI document, over a real socket: generated
requests, valid and invalid, never get a 5xx or a response that breaks the documented schema.

Driven through schemathesis' Python API and hypothesis directly: its pytest plugin does not
run under pytest 9 (AttributeError on ``Function._nodeid``).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi import checks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_HEADER = "X-Request-Timeout-Ms"


@schemathesis.check
def not_a_server_error_unless_asked(ctx, response, case) -> bool | None:
    """No 5xx, except the documented 504 of a deadline the request itself set shorter than
    its work takes (hypothesis readily sends ``X-Request-Timeout-Ms: 1e-308``)."""
    try:
        asked = float((case.headers or {}).get(TIMEOUT_HEADER, "nan"))
    except (TypeError, ValueError):
        asked = float("nan")
    if response.status_code == 504 and asked < 1000:
        assert "from X-Request-Timeout-Ms" in response.json()["error"]
        return None
    return schemathesis.checks.not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error_unless_asked,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
EXAMPLES = 30


def _operations(url: str):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def _with_real_names(cases):
    """Random names almost always miss (404): point two cases in three at served models and
    half of them at a served version, so the deeper paths are generated too."""

    def aim(pair):
        case, (name, version) = pair
        parameters = case.path_parameters or {}
        if name is not None and "name" in parameters:
            parameters["name"] = name
        if version is not None and "version" in parameters:
            parameters["version"] = version
        return case

    choices = st.tuples(
        st.sampled_from([None, "gap", "global_context"]), st.sampled_from([None, "1"])
    )
    return st.tuples(cases, choices).map(aim)


def _exercise(operation, calls: dict[str, int]):
    """A hypothesis test of one operation: generated cases, sent, checked."""
    label = operation.label

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_with_real_names(operation.as_strategy()))
    def exercise(case) -> None:
        calls[label] = calls.get(label, 0) + 1
        case.call_and_validate(checks=CHECKS, timeout=30)

    return exercise


def test_no_5xx_and_every_response_matches_the_schema(server) -> None:
    failures: dict[str, str] = {}
    calls: dict[str, int] = {}
    for operation in _operations(server.url):
        try:
            _exercise(operation, calls)()
        except Exception as error:  # collect every operation's failure, then report them all
            failures[operation.label] = str(error)[:3000]
    assert failures == {}
    assert len(calls) >= 23 and min(calls.values()) > 0, calls
