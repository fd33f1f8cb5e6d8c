"""The operator's console: one web page (plain HTML, a script and a style sheet, no build step)
served by the worker at ``/``, and the API reference at ``/docs``, which draws ``/openapi.json``.

The page talks to the same HTTP API as any client. When the API has tokens, the page asks for
one and keeps it in the browser's localStorage (sent as ``Authorization: Bearer``); a read
token shows Search, an admin token everything. Thumbnails come from ``/thumbnails/{id}``,
fetched with the token and shown as blob URLs (an ``<img src>`` cannot send a header).

The files ship inside the package (``static/``, listed in pyproject's package-data).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

#: What the worker serves, by name: the two pages and the assets under /console/.
PAGES = {"console": "index.html", "docs": "docs.html"}
ASSETS = {
    "console.js": "text/javascript",
    "docs.js": "text/javascript",
    "console.css": "text/css",
}
#: The pages load nothing from elsewhere (no CDN can be reached where workers run), run no
#: inline script, and show images only from the API (as blob URLs).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
        "style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class File:
    body: bytes
    content_type: str


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath("static", name).read_bytes()


def page(name: str) -> File:
    """``console`` or ``docs``."""
    return File(_read(PAGES[name]), "text/html")


def asset(name: str) -> File | None:
    """A script or style sheet by name (None: no such asset)."""
    if name not in ASSETS:
        return None
    return File(_read(name), ASSETS[name])


def files() -> list[str]:
    """Every file the console needs (a test checks they ship with the package)."""
    return sorted([*PAGES.values(), *ASSETS])
