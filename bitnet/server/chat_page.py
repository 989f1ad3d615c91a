"""The chat page at ``/``: HTML, JS and CSS shipped in the package (bitnet/server/static/).

No CDN and no build step: the files are served as they are. The page loads without an API key;
its calls to this server's OpenAI API carry the key the user enters (docs/serving.md). Routes
are left out of the OpenAPI document, which describes the API only.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

# route -> (file in bitnet/server/static, media type)
PAGE_FILES = {
    "/": ("chat.html", "text/html; charset=utf-8"),
    "/static/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    "/static/chat.css": ("chat.css", "text/css; charset=utf-8"),
}

# the page runs only its own script and style, and talks only to this server
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


def page_file(name: str) -> bytes:
    """One of the page's files, from the installed package."""
    path = resources.files("bitnet.server").joinpath("static", name)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"the chat page's file {name} is missing from the installed "
                                f"bitnet package ({path}); reinstall bitnet") from None


def add_chat_page(app: FastAPI) -> None:
    """Registers the page's routes on ``app``; the files are read now, once."""
    for route, (name, media_type) in PAGE_FILES.items():
        app.add_api_route(route, _static_endpoint(page_file(name), media_type), methods=["GET"],
                          include_in_schema=False, name=f"chat page: {name}")


def _static_endpoint(body: bytes, media_type: str):
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY,
               "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-cache"}  # a new bitnet's page, not a stale one

    async def endpoint() -> Response:
        return Response(body, media_type=media_type, headers=headers)

    return endpoint
