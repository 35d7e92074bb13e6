"""Bearer token and CORS, in process: no models are needed to check who gets in."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.main import create_app
from service.metrics import Metrics
from service.settings import Settings


def client(tmp_path, **settings: object) -> TestClient:
    app = create_app(Settings(repository=tmp_path, **settings), Metrics(CollectorRegistry()))
    return TestClient(app)  # no lifespan: the routes answer 503 "starting" once let in


def test_without_a_token_setting_everything_is_open(tmp_path) -> None:
    assert client(tmp_path).get("/models").status_code == 503


def test_the_token_guards_everything_but_health_metrics_and_the_page(tmp_path) -> None:
    http = client(tmp_path, api_token="s3cret")
    for path in ("/models", "/models/gap", "/v1/models/gap", "/v2/models/gap", "/docs"):
        refused = http.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in refused.json()["error"]
    wrong = http.get("/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    allowed = http.get("/models", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 503  # let in; the models are not loaded in this test
    # The explorer page loads without the token; it asks for it and sends it to the API.
    for path in ("/healthz", "/metrics", "/v2/health/live", "/", "/static/explorer.js"):
        assert http.get(path).status_code == 200, path
    # Open means the static mount only: a dot-dot path stays inside it and finds nothing.
    assert http.get("/static/%2e%2e/models").status_code == 404
    assert http.get("/readyz").status_code == 503  # open, and honest about readiness


def test_cors_is_off_by_default_and_follows_the_setting(tmp_path) -> None:
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    closed = client(tmp_path).options("/models/gap/classify", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    http = client(tmp_path, cors_origins=["http://app.example"], api_token="s3cret")
    opened = http.options("/models/gap/classify", headers=preflight)
    assert opened.status_code == 200
    assert opened.headers["access-control-allow-origin"] == "http://app.example"
    other = http.options(
        "/models/gap/classify", headers={**preflight, "Origin": "http://evil.example"}
    )
    assert other.headers.get("access-control-allow-origin") != "http://evil.example"


def test_classifys_shortcut_keeps_the_token_the_body_limit_and_cors(tmp_path) -> None:
    """The shortcut past the middleware stack (api/hot_path.py) answers as the long way does;
    an encoded query key (top%5Fk) sends the same request the long way."""
    http = client(tmp_path, api_token="s3cret", max_body_bytes=2000)
    token = {"Authorization": "Bearer s3cret", "Content-Type": "image/png"}
    for query in ("top_k=2", "top%5Fk=2"):
        refused = http.post(f"/models/gap/classify?{query}", content=b"x")
        assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Bearer")
        big = http.post(f"/models/gap/classify?{query}", content=bytes(2001), headers=token)
        assert big.status_code == 413 and "2,000" in big.json()["error"], big.text
        let_in = http.post(f"/models/gap/classify?{query}", content=b"x", headers=token)
        assert let_in.status_code == 503  # past both guards; no models in this test
    cors = client(tmp_path, cors_origins=["http://app.example"])
    answer = cors.post(
        "/models/gap/classify",
        content=b"x",
        headers={"Origin": "http://app.example", "Content-Type": "image/png"},
    )
    assert answer.headers["access-control-allow-origin"] == "http://app.example"
