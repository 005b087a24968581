"""The web page at / in a real headless Chromium (selenium) against a real uvicorn server on 127.0.0.1.

The page is driven as a user would: pick a model, upload a sample, switch to the segmenter. It is served the demo
store (model_store/: demo-classifier and demo-segmenter, real trained models) when `make model-store` has built
it, else the server suite's store (the real ImageNet MobileNetV2 and a random-weight segmenter).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.server.conftest import API_KEY, IMAGENET, SEGMENTER, LiveServer, launch_server, running

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "server" / "static"
SAMPLES = STATIC / "samples"
DEMO_STORE = ROOT / "model_store"
DEMO_CLASSIFIER, DEMO_SEGMENTER = "demo-classifier", "demo-segmenter"
ARTIFACT = ROOT / "logs" / "web_page_classifier.png"  # the screenshot kept after the run (logs/ is not tracked)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WAIT_SECONDS = 60
WINDOW = (1280, 900)
MAX_SAMPLE_BYTES = 40_000
MAX_SAMPLE_SIDE = 320


@dataclass(frozen=True)
class Scenario:
    """Which store the page is served, and what to drive it with."""

    store: Path
    classifier: str
    segmenter: str
    sample: str  # a file in server/static/samples that suits the classifier


@dataclass
class PageUnderTest:
    """The running servers (one open, one with an API key and only the classifier), the browser, the scenario."""

    server: LiveServer
    keyed: LiveServer
    driver: WebDriver
    scenario: Scenario


def has_demo_store() -> bool:
    """Whether `make model-store` built the demo classifier and segmenter."""
    return all((DEMO_STORE / name / "1" / "manifest.json").is_file() for name in (DEMO_CLASSIFIER, DEMO_SEGMENTER))


def scenario(request: pytest.FixtureRequest) -> Scenario:
    """The demo store if built (no export needed), else the server suite's store (built by its fixture)."""
    if has_demo_store():
        return Scenario(DEMO_STORE, DEMO_CLASSIFIER, DEMO_SEGMENTER, "shapes-ring-circle.jpg")
    return Scenario(request.getfixturevalue("store"), IMAGENET, SEGMENTER, "photo-chelsea.jpg")


def chrome() -> WebDriver:
    """Debian's headless Chromium through its chromedriver; fails (never skips) when they are not installed."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"the browser test needs Chromium and its driver; missing: {', '.join(missing)}. "
                    "Install them with `make browser` (apt-get install chromium chromium-driver).")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--disable-extensions", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


@pytest.fixture(scope="module")
def page(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageUnderTest]:
    """The servers (the scenario's models; the keyed one only the classifier) and a browser, started together."""
    chosen = scenario(request)
    logs = tmp_path_factory.mktemp("web-page")
    launched = {"page": launch_server(chosen.store, logs / "page.log", "--models",
                                      f"{chosen.classifier},{chosen.segmenter}", "--max-delay-ms", "0"),
                "keyed": launch_server(chosen.store, logs / "keyed.log", "--models", chosen.classifier,
                                       "--api-key", API_KEY, "--max-delay-ms", "0")}
    driver = None
    try:
        driver = chrome()  # starts while the servers load their models
        with running(launched) as started:
            yield PageUnderTest(started["page"], started["keyed"], driver, chosen)
    finally:
        if driver is not None:
            driver.quit()
        for live in launched.values():
            live.server.stop()


def wait_for(driver: WebDriver, script: str, what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Poll a JS expression until it is truthy and return its value; on timeout say what and show #error."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(f"return {script}"))
    except TimeoutException as exc:
        shown = driver.execute_script("return document.getElementById('error').innerText")
        status = driver.execute_script("return document.getElementById('status').innerText")
        raise AssertionError(f"timed out waiting for {what}; #status: {status!r}; #error: {shown!r}") from exc


def wait_until_done(driver: WebDriver, what: str) -> None:
    """Wait until the page says the whole analysis (every section) is done."""
    wait_for(driver, "document.getElementById('status').innerText.startsWith('Done')", what)


def post_sample(server: LiveServer, path: str, sample: str, **params: str) -> httpx.Response:
    """The server's own answer for a sample: what the page must show."""
    with server.client() as client:
        return client.post(path, params=params, files={"file": (sample, (SAMPLES / sample).read_bytes())})


def full_page_screenshot(driver: WebDriver, target: Path) -> None:
    """A PNG of the whole page (the window grown until its viewport holds the page's height)."""
    for _ in range(3):  # the window's size includes what is not viewport; resizing can change the layout
        viewport, height = driver.execute_script(
            "return [window.innerHeight, document.documentElement.scrollHeight]")
        if viewport >= height:
            break
        outer = driver.get_window_size()["height"]
        driver.set_window_size(WINDOW[0], min(outer + height - viewport, 5000))
        time.sleep(0.2)  # one layout pass at the new size
    driver.save_screenshot(str(target))
    driver.set_window_size(*WINDOW)


def severe_console_messages(driver: WebDriver) -> list[str]:
    """Errors the page logged (uncaught exceptions, Content-Security-Policy violations, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


# ------------------------------------------------------------------ plain HTTP


def test_the_page_is_html_without_external_urls_and_other_clients_keep_the_json_index(
        page: PageUnderTest) -> None:
    with page.server.client() as client:
        html = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in html.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="(static/[^"]+)"', html.text)
        assert sorted(assets) == ["static/app.js", "static/style.css"]
        for text in [html.text, *(client.get("/" + asset).text for asset in assets)]:
            assert "http://" not in text and "https://" not in text
        assert "<script>" not in html.text and not re.search(r"\son[a-z]+\s*=", html.text)  # no inline code
        index = client.get("/")  # curl and httpx send Accept: */*
        assert index.headers["content-type"] == "application/json"
        assert index.json()["docs"] == "/docs"
        assert client.get("/docs").status_code == 200
        assert "/" in client.get("/openapi.json").json()["paths"]


def test_static_paths_cannot_escape_the_static_folder(page: PageUnderTest) -> None:
    host, port = page.server.url.removeprefix("http://").split(":")
    for path in ("/static/../server/main.py", "/static/..%2fserver/main.py", "/static/%2e%2e/server/main.py",
                 "/static/../../pyproject.toml", "/static/", "/static/samples/../../routes/page.py"):
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", path)  # sent as written: http.client does not normalise '..'
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
        finally:
            connection.close()
        assert response.status == 404, (path, response.status)
        assert "create_app" not in body and "[project]" not in body and "APIRouter" not in body


def test_the_samples_are_listed_small_jpegs(page: PageUnderTest) -> None:
    samples = json.loads((SAMPLES / "samples.json").read_text())
    assert 4 <= len(samples) <= 6
    with page.server.client() as client:
        assert client.get("/static/samples/samples.json").json() == samples
        for sample in samples:
            assert {"file", "title", "model"} <= sample.keys()
            served = client.get(f"/static/samples/{sample['file']}")
            assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
            assert served.content[:3] == b"\xff\xd8\xff" and len(served.content) <= MAX_SAMPLE_BYTES
    for sample in samples:
        with Image.open(SAMPLES / sample["file"]) as image:
            assert max(image.size) <= MAX_SAMPLE_SIDE


# ------------------------------------------------------------------ the browser


def test_the_page_in_a_browser(page: PageUnderTest, tmp_path: Path) -> None:
    driver, server, chosen = page.driver, page.server, page.scenario
    driver.get(server.url + "/")
    options = wait_for(driver, "Array.from(document.querySelectorAll('#model-picker option:not([disabled])'))"
                               ".map(o => o.value).filter(Boolean)", "the model picker")
    assert sorted(options) == sorted([chosen.classifier, chosen.segmenter])
    wait_for(driver, "document.querySelectorAll('#samples .sample img').length >= 4", "the sample thumbnails")

    # A classifier and an uploaded sample: label rows, in the server's order, with bars as long as the scores.
    Select(driver.find_element("id", "model-picker")).select_by_value(chosen.classifier)
    driver.find_element("id", "file-input").send_keys(str(SAMPLES / chosen.sample))
    expected = post_sample(server, "/predict", chosen.sample, model=chosen.classifier).json()["labels"]
    assert expected, "the classifier predicts no label for its sample"
    wait_for(driver, "document.querySelectorAll('#labels .label-row').length > 0", "the label rows")
    rows = driver.execute_script("""
        return Array.from(document.querySelectorAll('#labels .label-row')).map(row => ({
          name: row.querySelector('.label-name').innerText,
          score: Number(row.dataset.score),
          bar: row.querySelector('.bar').getBoundingClientRect().width,
          track: row.querySelector('.track').getBoundingClientRect().width}));""")
    assert [row["name"] for row in rows] == [label["name"] for label in expected]
    assert rows[0]["name"] == expected[0]["name"]
    if chosen.classifier == DEMO_CLASSIFIER:  # the trained model finds the sample's two shapes, in either order
        assert {"ring", "circle"} <= {row["name"] for row in rows[:3]}
    for row, label in zip(rows, expected, strict=True):
        assert row["score"] == pytest.approx(label["score"])
        assert row["track"] > 100
        assert row["bar"] / row["track"] == pytest.approx(label["score"], abs=0.01)

    # The occlusion curve: one point per bucket with a defined headline figure, joined by a line.
    wait_until_done(driver, "the classifier's analysis")
    points = driver.execute_script("return document.querySelectorAll('#robustness-curve circle.point').length")
    assert 1 <= points <= 6
    if points > 1:
        assert driver.find_elements("css selector", "#robustness-curve polyline.curve")

    # Saliency and the corruption curve: shown when the server answers explain=/corruption=, else "not available".
    explained = post_sample(server, "/robustness", chosen.sample, model=chosen.classifier, mask_ratio="b3", n="32",
                            explain="true").json()
    corrupted = post_sample(server, "/robustness", chosen.sample, model=chosen.classifier, n="8",
                            corruption="gaussian_noise", severity="1").json()
    assert isinstance(explained["saliency"], list) and explained["saliency"], explained.get("detail")
    shown = wait_for(driver, "Array.from(document.querySelectorAll('#saliency img'))"
                             ".filter(i => i.complete && i.naturalWidth > 0).length", "the saliency images")
    assert shown == len(explained["saliency"])
    captions = driver.execute_script("return Array.from(document.querySelectorAll('#saliency figcaption'))"
                                     ".map(c => c.innerText)")
    assert [c.split(" ")[0] for c in captions] == [e["label"].split(" ")[0] for e in explained["saliency"]]
    assert all("peak (" in caption for caption in captions)
    assert corrupted["corruption"] == {"name": "gaussian_noise", "severity": 1}
    assert driver.execute_script("return document.querySelectorAll('#corruption-curve .point').length") == 5

    full_page_screenshot(driver, tmp_path / "web_page_classifier.png")
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp_path / "web_page_classifier.png", ARTIFACT)

    # Another corruption redraws only its own curve.
    labels_before = driver.find_element("id", "labels").text
    Select(driver.find_element("id", "corruption-picker")).select_by_value("fog")
    wait_for(driver, "document.getElementById('corruption-note').innerText.includes('under fog') && "
                     "document.querySelectorAll('#corruption-curve .point').length == 5", "the fog curve")
    assert driver.find_element("id", "labels").text == labels_before
    assert driver.execute_script("return document.querySelectorAll('#robustness-curve circle.point').length") == points

    # The segmenter, on the same image: the overlay at the image's own size, and its curve.
    Select(driver.find_element("id", "model-picker")).select_by_value(chosen.segmenter)
    size = wait_for(driver, "(i => i.complete && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight])"
                            "(document.getElementById('overlay'))", "the segmentation overlay")
    overlay = post_sample(server, "/segment", chosen.sample, model=chosen.segmenter, format="overlay")
    assert size == [int(v) for v in overlay.headers["X-Image-Size"].split("x")]
    assert driver.find_element("id", "labels-panel").get_attribute("hidden") is not None
    wait_until_done(driver, "the segmenter's analysis")
    assert driver.execute_script("return document.querySelectorAll('#robustness-curve text').length") > 0
    full_page_screenshot(driver, tmp_path / "web_page_segmenter.png")

    assert base64.b64decode(driver.get_screenshot_as_base64())[:8] == b"\x89PNG\r\n\x1a\n"
    assert ARTIFACT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not driver.find_element("id", "error").text
    assert severe_console_messages(driver) == []


def test_an_error_from_the_server_is_shown(page: PageUnderTest, tmp_path: Path) -> None:
    driver = page.driver
    driver.get(page.server.url + "/")
    wait_for(driver, "document.querySelectorAll('#model-picker option:not([disabled])').length >= 2", "the models")
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_bytes(b"these bytes are not an image")
    driver.find_element("id", "file-input").send_keys(str(not_an_image))
    text = wait_for(driver, "(e => !e.hidden && e.innerText)(document.getElementById('error'))", "the error box")
    assert "not_an_image" in text and "HTTP 400" in text and text.startswith("POST /predict")


def test_with_an_api_key_the_page_asks_for_it_keeps_it_and_sends_it(page: PageUnderTest) -> None:
    driver, keyed, chosen = page.driver, page.keyed, page.scenario
    driver.get(keyed.url + "/")  # its own origin: a fresh localStorage
    text = wait_for(driver, "(e => !e.hidden && e.innerText)(document.getElementById('error'))", "the 401")
    assert "GET /models" in text and "missing_api_key" in text and "HTTP 401" in text and "API key" in text
    assert driver.execute_script("return document.querySelector('.api-key').open")
    driver.find_element("id", "api-key").send_keys(API_KEY)
    driver.find_element("css selector", "#api-key-form button[type=submit]").click()
    options = wait_for(driver, "Array.from(document.querySelectorAll('#model-picker option:not([disabled])'))"
                               ".map(o => o.value).filter(Boolean)", "the models, with the key")
    assert options == [chosen.classifier]
    assert driver.execute_script("return localStorage.getItem('occlusion-serve.api-key')") == API_KEY
    driver.refresh()  # remembered: the reloaded page sends it at once
    wait_for(driver, f"document.getElementById('model-picker').value == '{chosen.classifier}'", "the models")
    driver.find_element("id", "file-input").send_keys(str(SAMPLES / chosen.sample))
    wait_for(driver, "document.querySelectorAll('#labels .label-row').length > 0", "the labels, with the key")
    assert not driver.find_element("id", "error").text
