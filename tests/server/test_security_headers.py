"""Every answer of a real server carries X-Content-Type-Options: nosniff, whatever its type or status; every HTML
page has a Content-Security-Policy, and the API docs load nothing from another origin."""

from __future__ import annotations

import re

import httpx

from tests.server.conftest import CLASSIFIER, SEGMENTER
from tests.server.oracle import png_bytes, random_rgb


def test_every_answer_says_nosniff(client: httpx.Client) -> None:
    image = png_bytes(random_rgb(48, 64, seed=1))
    answers = {
        "health": client.get("/health"),
        "metrics": client.get("/metrics"),
        "docs (HTML)": client.get("/docs"),
        "page (HTML)": client.get("/", headers={"Accept": "text/html"}),
        "static file": client.get("/static/app.js"),
        "predict": client.post(f"/predict?model={CLASSIFIER}", content=image, headers={"Content-Type": "image/png"}),
        "segment (PNG)": client.post(f"/segment?model={SEGMENTER}", content=image,
                                     headers={"Content-Type": "image/png"}),
        "bad upload (400)": client.post(f"/predict?model={CLASSIFIER}", content=b"not an image",
                                        headers={"Content-Type": "image/png"}),
        "unknown route (404)": client.get("/nowhere"),
        "long URI (414)": client.get("/health?" + "x" * 9000),
    }
    assert {name: (a.status_code, a.headers.get("x-content-type-options")) for name, a in answers.items()} == {
        "health": (200, "nosniff"), "metrics": (200, "nosniff"), "docs (HTML)": (200, "nosniff"),
        "page (HTML)": (200, "nosniff"), "static file": (200, "nosniff"), "predict": (200, "nosniff"),
        "segment (PNG)": (200, "nosniff"), "bad upload (400)": (400, "nosniff"),
        "unknown route (404)": (404, "nosniff"), "long URI (414)": (414, "nosniff")}


def test_the_api_docs_load_only_this_servers_files_under_a_policy(client: httpx.Client) -> None:
    for page in ("/docs", "/redoc"):
        answer = client.get(page)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "http" not in policy
        urls = re.findall(r"(?:src|href)=[\"']([^\"']+)", answer.text)
        assert urls and all(url.startswith("/docs-static/") for url in urls), urls  # no CDN, no web fonts
        assert "https://" not in answer.text
        for url in urls:
            assert client.get(url).status_code == 200, url
    page = client.get("/", headers={"Accept": "text/html"})
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]  # the web page keeps its own, stricter
