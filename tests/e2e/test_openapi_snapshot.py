"""The OpenAPI document is a contract: it changes only on purpose, together with its snapshot.

After a deliberate API change, write the new snapshot and review its diff:
    .venv/bin/python -c "import json, httpx; print(json.dumps(httpx.get(
        'http://127.0.0.1:8000/openapi.json').json(), indent=1, sort_keys=True))" \
        > tests/snapshots/openapi.json
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
SNAPSHOT = Path(__file__).resolve().parent.parent / "snapshots" / "openapi.json"


def _operations(document: dict) -> dict[str, dict]:
    return {
        f"{method.upper()} {path}": operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


def test_the_openapi_document_matches_the_snapshot(client) -> None:
    served = client.get("/openapi.json").json()
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    served_operations, expected_operations = _operations(served), _operations(expected)
    assert sorted(served_operations) == sorted(expected_operations)
    assert len(served_operations) == 26
    changed = [
        key for key in expected_operations if served_operations[key] != expected_operations[key]
    ]
    assert changed == [], f"operations differ from the snapshot: {changed}"
    assert served["components"] == expected["components"]
    assert served == expected
