"""Prometheus, Grafana and Kubernetes files: valid, and naming only metrics the service exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.servers import ROOT

DEPLOY = ROOT / "deploy"
PROMQL_BUILTINS = {"up"}  # series Prometheus makes itself
_METRIC = re.compile(r"\b((?:convbridge|process|python)_[a-z0-9_]+)\b")
_SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "counter": ("_total",),
    "gauge": ("",),
    "summary": ("_sum", "_count", ""),
}


def _promtool(*args: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_accepts_the_config_and_rules() -> None:
    assert "SUCCESS" in _promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert "8 rules found" in _promtool("check", "rules", str(DEPLOY / "prometheus" / "rules.yml"))
    assert "SUCCESS" in _promtool("test", "rules", str(DEPLOY / "prometheus" / "rules_test.yml"))


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "convbridge.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rule_expressions() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


_SELECTOR = re.compile(r"\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_RECORDED = re.compile(r"\b(convbridge:[a-z0-9_:]+)")


@pytest.fixture(scope="module")
def exposed(server) -> dict[str, set[str]]:
    """Every series name the live server's /metrics exposes, with the labels its samples carry,
    after one REST and one gRPC inference so that every family has samples."""
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    httpx.post(f"{server.url}/v1/models/gap:predict", json={"instances": [[[[0]] * 28] * 28]})
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "gap"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28, 1), np.uint8)))
    with grpc.insecure_channel(server.grpc_target) as channel:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    from prometheus_client import CollectorRegistry

    from service.metrics import Metrics

    # A family without samples yet (no model failed to load) has the labels it declares.
    declared = {
        metric._name: set(metric._labelnames)
        for metric in vars(Metrics(CollectorRegistry(), process=False)).values()
        if hasattr(metric, "_labelnames")
    }
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            labels.setdefault(family.name + suffix, set()).update(declared.get(family.name, ()))
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_promql_expression_names_exposed_metrics_and_labels(exposed, source) -> None:
    expressions = dashboard_expressions() if source == "dashboard" else rule_expressions()
    assert expressions
    used = {name for expr in expressions for name in _METRIC.findall(expr)}
    assert used - set(exposed) == set(), f"{source} uses metrics /metrics does not expose"
    # Series the recording rules make carry the labels their expression groups by.
    groups = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
    recorded = {
        rule["record"]: {
            label.strip()
            for grouping in _GROUPING.findall(rule["expr"])
            for label in grouping.split(",")
        }
        - {"le", ""}
        for group in groups
        for rule in group["rules"]
        if "record" in rule
    }
    for expression in expressions:
        metrics = _METRIC.findall(expression)
        available = set().union(*(exposed[name] for name in metrics), set())
        available |= {"job", "instance"}  # the target labels Prometheus adds when it scrapes
        available |= set().union(*(recorded[name] for name in _RECORDED.findall(expression)), set())
        referenced = {
            label
            for selector in _SELECTOR.findall(expression)
            for label in _MATCHER.findall(selector)
        }
        referenced |= {
            label.strip()
            for grouping in _GROUPING.findall(expression)
            for label in grouping.split(",")
            if label.strip()
        }
        assert referenced <= available, (expression, referenced - available)
    if source == "dashboard":  # what operators watch is on the dashboard, not only exposed
        watched = {
            "convbridge_batch_size_sum",
            "convbridge_queue_depth",
            "convbridge_grpc_request_duration_seconds_count",
            "convbridge_requests_total",
        }
        assert watched <= used


def test_the_dashboard_covers_what_operators_watch() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "convbridge.json").read_text())
    titles = " | ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in (
        "request rate",
        "p99",
        "stage",
        "batch size",
        "queue depth",
        "errors",
        "versions loaded",
    ):
        assert topic in titles, topic
    provisioning = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert provisioning["datasources"][0]["uid"] == "prometheus"
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    assert uids == {"prometheus"}


def _render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_every_manifest_is_valid_yaml() -> None:
    files = sorted((DEPLOY / "k8s").rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_kustomize_renders_manifests_that_validate(overlay) -> None:
    import kubernetes_validate

    documents = _render(overlay)
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "PersistentVolumeClaim",
        "Service",
    ]
    for doc in documents:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["command"][:3] == ["python", "-m", "service"]
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == (1 if overlay.endswith("gpu") else None)
