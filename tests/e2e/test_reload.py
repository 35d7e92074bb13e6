"""Hot reload under load, over a real socket: new weights take over, broken versions do not."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import start_server
from tests.images import digit_png
from tests.models import export_untrained

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def publish(
    source: Path, repository: Path, name: str, version: int, broken: str | None = None
) -> None:
    """Put a copy of ``source`` into the repository as ``name/version``, atomically.

    ``broken``: "savedmodel" (garbage saved_model.pb), "card" (the card is not JSON) or
    "signature" (a SavedModel whose signatures take float32 ``x``).
    """
    staging = repository / name / f".tmp-{uuid.uuid4().hex}"
    shutil.copytree(source, staging)
    card_file = staging / "assets.extra" / "model_card.json"
    card = json.loads(card_file.read_text())
    card.update(name=name, version=version)
    card_file.write_text(json.dumps(card))
    if broken == "savedmodel":
        (staging / "saved_model.pb").write_bytes(b"not a SavedModel")
    elif broken == "card":
        card_file.write_text("{not json")
    elif broken == "signature":
        _wrong_signature_model(staging)
    staging.rename(repository / name / str(version))


def _wrong_signature_model(folder: Path) -> None:
    """Replace the SavedModel in ``folder`` by one with the right signature names, wrong input."""
    import tensorflow as tf

    class Wrong(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def predict(self, x):
            return {"probabilities": tf.nn.softmax(x)}

    module = Wrong()
    other = folder.parent / f"{folder.name}-wrong"
    signatures = {"serving_default": module.predict, "feature_maps": module.predict}
    tf.saved_model.save(module, str(other), signatures=signatures)
    shutil.rmtree(folder / "variables")
    (other / "saved_model.pb").replace(folder / "saved_model.pb")
    (other / "variables").replace(folder / "variables")
    shutil.rmtree(other)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)  # the interval between two checks of the condition
    raise AssertionError("condition not reached in time")


def versions(client: httpx.Client, name: str) -> dict[int, str]:
    response = client.get(f"/models/{name}")
    if response.status_code != 200:
        return {}
    return {v["version"]: v["state"] for v in response.json()["versions"]}


CLIENTS = 8


def _expected_scores(folder: Path, images) -> np.ndarray:
    """The oracle: the version's SavedModel called directly, in this process."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    return signature(images=tf.constant(images))["probabilities"].numpy()


def test_new_weights_take_over_under_load_without_failed_requests(
    demo_repository, digits, tmp_path
) -> None:
    """Eight clients send without pause while version 2, with other weights, replaces version
    1, and three broken versions come and fail: every answer is 200 and comes from the weights
    of the version it names (in-flight requests finish on the version they reserved), and once
    version 1 is unloaded only version 2's weights answer."""
    repository = tmp_path / "models"
    (repository / "gap").mkdir(parents=True)
    publish(demo_repository / "gap" / "1", repository, "gap", 1)
    retrained = export_untrained(tmp_path / "other", "gap", "gap", digits)  # its version 1
    images = digits.test.images[:CLIENTS]
    expected = {
        1: _expected_scores(demo_repository / "gap" / "1", images),
        2: _expected_scores(retrained, images),
    }
    assert not np.allclose(expected[1], expected[2], atol=1e-3)  # the weights differ
    server = start_server(repository, tmp_path / "server.log", CONVBRIDGE_POLL_INTERVAL_S="0.2")
    # (client, sent at, status, version in the body, X-Model-Version, the ten scores)
    answers: list[tuple[int, float, int, int | None, int | None, list[float]]] = []
    stop = threading.Event()

    def traffic(client_index: int) -> None:
        png = digit_png(images[client_index])
        with httpx.Client(base_url=server.url, timeout=30) as http:
            deadline = time.monotonic() + 180  # bounded even if the test fails early
            while not stop.is_set() and time.monotonic() < deadline:
                sent = time.monotonic()
                response = http.post(
                    "/models/gap/classify?top_k=10",
                    content=png,
                    headers={"Content-Type": "image/png"},
                )
                body = response.json() if response.status_code == 200 else {}
                told = response.headers.get("x-model-version")
                scores = {
                    e["index"]: e["score"]
                    for e in body.get("predictions", [{}])[0].get("top_k", [])
                }
                answers.append(
                    (
                        client_index,
                        sent,
                        response.status_code,
                        body.get("version"),
                        int(told) if told else None,
                        [scores.get(i, -1.0) for i in range(10)],
                    )
                )

    workers = [threading.Thread(target=traffic, args=(i,)) for i in range(CLIENTS)]
    try:
        server.wait_ready()
        for worker in workers:
            worker.start()
        client = httpx.Client(base_url=server.url, timeout=30)
        wait_for(lambda: len(answers) > 40)
        publish(retrained, repository, "gap", 2)
        wait_for(lambda: versions(client, "gap").get(1) == "available")  # version 1 unloaded
        unloaded = time.monotonic()
        broken = {3: "savedmodel", 4: "card", 5: "signature"}
        for version, breakage in broken.items():
            publish(demo_repository / "gap" / "1", repository, "gap", version, broken=breakage)
            wait_for(lambda v=version: versions(client, "gap").get(v) == "failed")
        settled = len(answers)
        wait_for(lambda: len(answers) > settled + 40)  # traffic goes on beside failed versions
        stop.set()
        for worker in workers:
            worker.join()

        counts = {v: sum(1 for a in answers if a[3] == v) for v in (1, 2)}
        print(f"\n{len(answers)} requests from {CLIENTS} clients during the reloads: {counts}")
        assert {status for _, _, status, *_ in answers} == {200}  # zero failed requests
        for client_index, _, _, version, told, scores in answers:
            assert told == version  # X-Model-Version agrees with the body
            np.testing.assert_allclose(scores, expected[version][client_index], atol=1e-5)
        assert counts[1] > 0 and counts[2] > 0
        # Requests sent once version 1 was unloaded could only reserve version 2.
        assert {a[3] for a in answers if a[1] > unloaded} == {2}
        states = client.get("/models/gap").json()["versions"]
        assert {v["version"]: v["state"] for v in states} == {
            1: "available",
            2: "ready",
            3: "failed",
            4: "failed",
            5: "failed",
        }
        reasons = {v["version"]: v["error"] for v in states if v["state"] == "failed"}
        assert "model_card.json" in reasons[4]
        assert "takes x: float32[None, 4]; the card needs images: uint8" in reasons[5]
        assert str(repository) not in str(reasons)  # no server paths in responses
        metrics = client.get("/metrics").text
        for version in broken:
            assert (
                f'convbridge_model_load_failures_total{{model="gap",version="{version}"}} 1.0'
                in metrics
            )
        assert 'convbridge_model_loaded{device="/CPU:0",model="gap",version="1"}' not in metrics
        assert 'convbridge_model_loaded{device="/CPU:0",model="gap",version="2"} 1.0' in metrics

        # A model folder that appears is loaded; one that disappears is unloaded.
        (repository / "gmp").mkdir()
        publish(demo_repository / "gmp" / "1", repository, "gmp", 1)
        wait_for(lambda: versions(client, "gmp").get(1) == "ready")
        assert (
            client.post(
                "/models/gmp/classify",
                content=digit_png(images[0]),
                headers={"Content-Type": "image/png"},
            ).status_code
            == 200
        )
        shutil.rmtree(repository / "gmp")
        wait_for(lambda: client.get("/models/gmp").status_code == 404)
        assert [m["name"] for m in client.get("/models").json()["models"]] == ["gap"]
        client.close()
    finally:
        stop.set()
        for worker in workers:
            if worker.is_alive():
                worker.join()
        assert server.stop() == 0


def test_unloaded_versions_give_their_memory_back(demo_repository, digits, tmp_path) -> None:
    """Twelve reloads of `flatten` (100 MB of weights each): no reload keeps a copy of the
    model, and the ten after the first two together keep less than one.

    The executor has at most two malloc arenas (CONVBRIDGE_MALLOC_ARENAS). With glibc's
    default of eight per core, TensorFlow's threads spread each load over spare arenas, and
    the tree grew by 10 to 50 MiB now and then, about 200 MiB before it leveled off
    (README, "Model lifecycle"). Before unloads ran the garbage collector, each kept about
    11 MiB.
    """
    repository = tmp_path / "models"
    source = demo_repository / "flatten" / "1"
    weights = sum(f.stat().st_size for f in (source / "variables").iterdir())
    publish(source, repository, "flatten", 1)
    server = start_server(
        repository,
        tmp_path / "server.log",
        CONVBRIDGE_POLL_INTERVAL_S="0.3",
        CONVBRIDGE_KEEP_VERSIONS="1",
        CONVBRIDGE_ALLOWED_BATCH_SIZES="[1,8,32]",
    )
    png = digit_png(digits.test.images[0])
    figures: list[int] = []
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for version in range(2, 14):
                publish(source, repository, "flatten", version)
                wait_for(
                    lambda v=version: (
                        versions(client, "flatten").get(v) == "ready"
                        and versions(client, "flatten").get(v - 1) == "available"
                    )
                )
                answer = client.post(
                    "/models/flatten/classify", content=png, headers={"Content-Type": "image/png"}
                )
                assert answer.json()["version"] == version
                # "available" comes before the unload has given the memory back
                wait_for(lambda v=version: server.log().count("memory released in") == v - 1)
                figures.append(server.resident_bytes())
    finally:
        assert server.stop() == 0
    mib = [value >> 20 for value in figures]
    print(f"\nRSS after each reload, MiB: {mib}")
    assert server.log().count("memory released in") == 12
    # The first two reloads warm the allocator up; the ten after them are measured.
    steps = [after - before for before, after in itertools.pairwise(figures[2:])]
    assert max(steps) < weights, mib  # no reload keeps a copy of the model
    # nor do the ten together keep one: a leak of a tenth of the model a reload fails here.
    # Each figure may carry a passing 10-50 MiB (a thread's cache, a reply's buffer), so the
    # least of three is the one kept at each end. What the ten keep depends on the host, and
    # it is a one-time settling, not a rate (docs/throughput.md, "Reading the benchmark"):
    # 2 to 8 MiB on a slow AMD EPYC host (84 with glibc's default arenas); 17 to 68 MiB in
    # thirteen runs on an AVX-512 EPYC, where 40 reloads went 1,573 -> 1,609 MiB by the 14th
    # and +4 over reloads 23-40.
    assert min(figures[-3:]) - min(figures[2:5]) < weights, mib
