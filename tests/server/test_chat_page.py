"""The chat page at `/`: served from the package's data, self-contained, and outside the API's
key and OpenAPI document (the app's test client; no model is loaded)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bitnet.server.app import ServerSettings, create_app
from bitnet.server.chat_page import PAGE_FILES, page_file

ROOT = Path(__file__).resolve().parents[2]
STATIC = resources.files("bitnet.server").joinpath("static")


def _never_loaded():
    raise AssertionError("these tests must not load a model")


@pytest.fixture
def client() -> TestClient:
    # without `with`, the test client does not run the lifespan: no model load starts
    return TestClient(create_app(_never_loaded, ServerSettings(api_keys=["page-test-key"])))


class _Links(HTMLParser):
    """Every src/href/action attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v is not None]


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def test_the_page_is_served_at_root_from_the_package(client) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.content == STATIC.joinpath("chat.html").read_bytes()
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_every_file_the_page_loads_is_served_with_its_type(client) -> None:
    local = [u for u in _links(page_file("chat.html").decode()) if u.startswith("/")]
    assert sorted(local) == sorted(r for r in PAGE_FILES if r != "/")  # the script and the style
    for route in local:
        r = client.get(route)
        name, media_type = PAGE_FILES[route]
        assert r.status_code == 200, route
        assert r.headers["content-type"] == media_type
        assert r.content == STATIC.joinpath(name).read_bytes()


def test_the_page_loads_without_the_key_that_the_api_needs(client) -> None:
    assert client.get("/").status_code == 200
    assert client.get("/static/chat.js").status_code == 200
    assert client.get("/v1/models").status_code == 401
    models = client.get("/v1/models", headers={"Authorization": "Bearer page-test-key"})
    assert models.status_code == 200


def test_no_file_of_the_page_names_an_external_url() -> None:
    for name, _ in PAGE_FILES.values():
        text = page_file(name).decode()
        assert not re.search(r"\b[a-z][a-z0-9+.-]*://", text, re.IGNORECASE), name  # http://, ...
    for url in _links(page_file("chat.html").decode()):
        # same-origin paths only (no //host), and the empty icon that stops a /favicon.ico fetch
        assert (url.startswith("/") and not url.startswith("//")) or url == "data:,", url
    script = page_file("chat.js").decode()
    fetched = re.findall(r"fetch\(\s*([^,)]+)", script)
    assert fetched and all(re.fullmatch(r'"/[a-z0-9/.]+"', f) for f in fetched), fetched
    assert "url(" not in page_file("chat.css").decode()  # no fonts or images from elsewhere


def test_the_script_never_parses_text_as_html() -> None:
    """Model text goes into the page through textContent only."""
    script = page_file("chat.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in script, sink
    assert "textContent = content" in script  # the streamed reply's one way in


def test_the_api_document_and_docs_are_unchanged(client) -> None:
    doc = client.get("/openapi.json").json()
    assert "/" not in doc["paths"] and not any(p.startswith("/static") for p in doc["paths"])
    assert "/v1/chat/completions" in doc["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_the_wheel_carries_the_page() -> None:
    """pyproject's package data names every file of bitnet/server/static (a wheel built without
    them would serve a page that cannot load)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["bitnet"]
    files = sorted(p.relative_to(ROOT / "bitnet").as_posix()
                   for p in (ROOT / "bitnet" / "server" / "static").iterdir())
    assert files == sorted(f"server/static/{name}" for name, _ in PAGE_FILES.values())
    for f in files:
        assert any(fnmatch.fnmatch(f, p) for p in patterns), f


def test_a_missing_page_file_names_itself() -> None:
    with pytest.raises(FileNotFoundError, match="chat page's file nope.html is missing"):
        page_file("nope.html")
