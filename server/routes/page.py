"""GET /: the web page (server/static) for browsers; every other client keeps the JSON index of endpoints."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from server.dependencies import RegistryDep, SettingsDep
from server.routes import status

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PATH = "/static"  # the page refers to its files relative to itself: static/app.js, static/samples/...

# Everything the page loads comes from this server; scripts only from files (no inline code), images also as the
# data: and blob: URLs the page builds from the server's answers.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def wants_html(request: Request) -> bool:
    """Whether the client asks for HTML (a browser navigating), rather than anything (curl, httpx: */*)."""
    return "text/html" in request.headers.get("accept", "").lower()


@router.get("/")
async def page(request: Request, settings: SettingsDep, registry: RegistryDep) -> Response:
    """The web page for a browser; the JSON index of endpoints (GET / in the API docs) for everyone else."""
    if wants_html(request):
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)
    return await status.index(settings, registry)


def static_files() -> StaticFiles:
    """The page's files (HTML, JS, CSS, samples); paths that leave the folder are 404s."""
    return StaticFiles(directory=STATIC_DIR, check_dir=True)
