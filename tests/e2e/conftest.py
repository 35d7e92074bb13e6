"""Fixtures shared by the tests that talk to a real server."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture(scope="module")
def client(server):
    """An httpx client bound to the session's server."""
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
