"""The bearer token over a real socket."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import start_server
from tests.images import digit_png

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_token_protected_server(demo_repository, digits, tmp_path) -> None:
    server = start_server(demo_repository, tmp_path / "server.log", CONVBRIDGE_API_TOKEN="t0ken")
    try:
        server.wait_ready()  # /readyz needs no token
        png = digit_png(digits.test.images[0])
        headers = {"Content-Type": "image/png"}
        refused = httpx.post(f"{server.url}/models/gap/classify", content=png, headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        allowed = httpx.post(
            f"{server.url}/models/gap/classify",
            content=png,
            headers={**headers, "Authorization": "Bearer t0ken"},
        )
        assert allowed.status_code == 200 and allowed.json()["model"] == "gap"
        assert httpx.get(f"{server.url}/metrics").status_code == 200
        assert "t0ken" not in server.log()
    finally:
        assert server.stop() == 0
