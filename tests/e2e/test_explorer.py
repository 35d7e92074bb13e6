"""The explorer page in a real browser: Debian's headless chromium, driven through its
chromium-driver by Selenium, against the session's server on 127.0.0.1."""

from __future__ import annotations

import re
import shutil

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.images import digit_png

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT = 120


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "the browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
        "--no-proxy-server",
        # The network ends at this machine: any other host fails to resolve, as offline.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for(driver, script: str, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        lambda d: d.execute_script(script)
    )


def _cards(driver) -> dict[str, dict]:
    return driver.execute_script(
        """
        const cards = {};
        for (const card of document.querySelectorAll("article.model")) {
          const figures = [...card.querySelectorAll("figure.layer")];
          cards[card.dataset.model] = {
            top: card.dataset.topLabel || null,
            error: card.dataset.error || null,
            latency: card.querySelector(".latency").textContent,
            facts: card.querySelector(".facts").textContent,
            bars: card.querySelectorAll("ol.scores li").length,
            layers: figures.map((f) => f.dataset.layer),
            loaded: figures.map((f) => f.dataset.loaded === "true"
              && f.querySelector("img.grid").naturalWidth > 0),
            overlay: card.dataset.overlay || null,
            overlayClass: card.dataset.overlayClass || null,
            overlayWidth: card.querySelector("img.overlay").naturalWidth,
            classes: card.querySelectorAll(".class-picker option").length,
          };
        }
        return cards;
        """
    )


def test_a_digit_through_every_model_in_the_browser(
    browser, server, digits, tmp_path, demo_repository
) -> None:
    image, label = digits.test.images[3], str(int(digits.test.labels[3]))
    upload = tmp_path / "digit.png"
    upload.write_bytes(digit_png(image, scale=4))  # 112x112, resized by the server
    with httpx.Client(base_url=server.url, timeout=30) as client:
        listed = client.get("/models").json()["models"]
        models = [m["name"] for m in listed]
        bridges = {m["name"]: m["bridge"] for m in listed}
        expected = {
            name: client.post(
                f"/models/{name}/classify",
                content=upload.read_bytes(),
                headers={"Content-Type": "image/png"},
            ).json()["predictions"][0]["top_k"][0]["label"]
            for name in models
        }

    browser.get(server.url + "/")
    _wait_for(browser, f"return document.body.dataset.models === '{len(models)}'")
    browser.find_element("id", "file").send_keys(str(upload))
    _wait_for(browser, "return document.body.dataset.state === 'done'")
    _wait_for(
        browser,
        "return [...document.querySelectorAll('article.model')]"
        ".every((c) => c.dataset.mapsLoaded === 'true')",
    )
    cards = _cards(browser)
    browser.save_screenshot(str(tmp_path / "explorer.png"))

    assert sorted(cards) == sorted(models)
    assert {name: card["top"] for name, card in cards.items()} == expected
    assert sum(card["top"] == label for card in cards.values()) >= len(models) - 1
    for name, card in cards.items():
        assert card["error"] is None and card["bars"] == 3
        assert re.search(r"server \d+\.\d ms \(decode", card["latency"]), card["latency"]
        assert card["facts"].startswith(f"bridge: {bridges[name]} · ")
        assert "parameters" in card["facts"] and "held-out accuracy" in card["facts"]
        assert card["layers"] and all(card["loaded"]), (name, card)
        # Where it looked: the overlay of its top class beside the bars, and a class picker.
        assert card["overlay"] == "loaded" and card["overlayWidth"] >= 2 * 28, (name, card)
        assert card["overlayClass"] == expected[name] and card["classes"] == 11

    shot = Image.open(tmp_path / "explorer.png")
    assert shot.size[0] >= 1000 and np.asarray(shot.convert("L")).std() > 10  # not blank
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_channel_paging_and_a_drawn_digit(browser, server) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(server.url + "/")
    _wait_for(browser, "return Number(document.body.dataset.models) > 0")
    for box in browser.find_elements("css selector", "input[name=model]"):
        if box.get_attribute("value") != "gap":
            box.click()  # only gap, to keep this quick
    canvas = browser.find_element("id", "canvas")
    # A vertical stroke: a "1".
    stroke = ActionChains(browser).move_to_element_with_offset(canvas, 0, -90).click_and_hold()
    for _ in range(3):
        stroke = stroke.move_by_offset(0, 60)
    stroke.release().perform()
    browser.find_element("id", "use-drawing").click()
    _wait_for(browser, "return document.body.dataset.state === 'done'")
    _wait_for(browser, "return document.querySelector('article.model').dataset.mapsLoaded")
    cards = _cards(browser)
    assert list(cards) == ["gap"] and cards["gap"]["top"] is not None
    conv1 = "article.model figure.layer[data-layer=conv1]"
    assert browser.find_element("css selector", f"{conv1} .channels").text == (
        "channels 0–15 of 32"
    )
    browser.find_element("css selector", f"{conv1} .next").click()
    _wait_for(
        browser,
        f"const f = document.querySelector('{conv1}');"
        "return f.querySelector('.channels').textContent === 'channels 16–31 of 32'"
        " && f.dataset.loaded === 'true'",
    )
    assert not browser.find_element("css selector", f"{conv1} .prev").get_attribute("disabled")
    assert browser.find_element("css selector", f"{conv1} .next").get_attribute("disabled")

    # Another class in the picker: the overlay is fetched again, for that class.
    from selenium.webdriver.support.ui import Select

    picker = Select(browser.find_element("css selector", "article.model .class-picker"))
    wanted = "4" if cards["gap"]["top"] != "4" else "5"
    picker.select_by_visible_text(wanted)
    _wait_for(
        browser,
        "const c = document.querySelector('article.model');"
        f"return c.dataset.overlay === 'loaded' && c.dataset.overlayClass === '{wanted}'",
    )


def test_the_page_is_self_contained(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/explorer.js", "/static/explorer.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?https?://", response.text)
    assert not re.search(r"(src|href)=\"https?://", page.text)
    assert 'href="/docs"' in page.text and 'href="/metrics"' in page.text


def _requested_elsewhere(driver, origin: str) -> list[str]:
    """Resources the page loaded from anywhere but ``origin``."""
    names = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    return [name for name in names if not name.startswith((origin, "data:", "blob:"))]


def test_the_api_docs_render_offline(browser, server, client) -> None:
    """/docs (Swagger UI 5) and /redoc from the package's own assets, the network cut at
    127.0.0.1: both render the operations, and the CSP names no other origin."""
    page = client.get("/docs")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy
    assert 'src="/docs-assets/swagger-ui-bundle.js"' in page.text and "cdn" not in page.text
    operations = len(
        [op for methods in client.get("/openapi.json").json()["paths"].values() for op in methods]
    )

    browser.get(server.url + "/docs")
    _wait_for(browser, "return document.querySelectorAll('.opblock').length > 0")
    rendered = browser.execute_script("return document.querySelectorAll('.opblock').length")
    assert rendered == operations
    version = browser.execute_script("return window.versions && window.versions.swaggerUi")
    assert version is None or str(version.get("version", "5")).startswith("5")
    assert _requested_elsewhere(browser, server.url) == []
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []  # no CSP violation, no failed load

    browser.get(server.url + "/redoc")
    _wait_for(browser, "return document.querySelectorAll('[data-section-id]').length > 10")
    assert "classify" in browser.find_element("tag name", "body").text.lower()
    assert _requested_elsewhere(browser, server.url) == []
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
