"""The transcript viewer at ``/ui/``: a page a person can open, served whole by the service.

The viewer is plain HTML, CSS and JavaScript modules under ``transcripts/ui/`` in the package
(no framework, no build step, nothing from a CDN). It calls the enveloped dialect with the
key the person pasted, from ``sessionStorage``, in a header: never in a URL.

Paths
    ``/ui/`` answers the page; ``/ui`` redirects to it with a relative ``Location`` (``ui/``),
    so the page's relative asset paths and API calls hold under any ``root_path`` prefix. The
    assets are served at ``/ui/assets/{version}/{name}``, one fixed route per file (a mounted
    static directory would answer, and label its metrics with, any path under it).
    ``version`` is a digest of every asset, so an asset asked for at the current version is
    cached for a year (``immutable``); at another version (a page from another replica in a
    rolling deploy) it is the current file, revalidated every time. The page itself is
    ``no-cache``. None of these is in the OpenAPI document.

What the page may do (``Content-Security-Policy``)
    Scripts, styles, images and API calls come from the service's own origin only; no inline
    script or style, no ``eval``, no plugin, no frame, no form submission anywhere, no
    ``<base>``, and Trusted Types required for DOM sinks, so the viewer can only put transcript
    text into the page as text. Recordings are the one thing from elsewhere: ``media-src``
    lists the origins the configured store signs links for, the ``PUBLIC_URL`` origin for the
    local store (the page may be opened under another name, ``localhost`` for ``127.0.0.1``),
    the ``S3_ENDPOINT_URL`` origin for MinIO or another endpoint, and ``https://*.amazonaws.com``
    for AWS itself (virtual-hosted bucket names are subdomains). Media cannot run script, so
    this widens nothing beyond what the store already serves. Every answer also carries
    ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.

Features
    The page is the same whatever the service offers; which optional controls it shows (search,
    the live stream, exports, redaction, cursor pages) it learns from a ``<meta>`` element the
    service fills in from its own routes: an operation's path, or a query parameter the
    operation declares. So a control appears when the route lands, and the page never offers
    what the service would answer 404 to.
"""

from __future__ import annotations

import hashlib
import html
import weakref
from importlib.resources import files
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, RedirectResponse, Response

from transcripts.settings import Settings
from transcripts.state import app_state

__all__ = [
    "ASSET_NAMES",
    "UI_PATH",
    "VERSION",
    "content_security_policy",
    "features",
    "recording_origins",
    "router",
]

UI_PATH = "/ui"
_PACKAGE = files("transcripts") / "ui"
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
ASSET_NAMES = ("app.js", "api.js", "live.js", "format.js", "app.css", "icon.svg")
_ASSETS = {name: _PACKAGE.joinpath(name).read_bytes() for name in ASSET_NAMES}
VERSION = hashlib.sha256(b"".join(_ASSETS.values())).hexdigest()[:16]
_PAGE = (
    _PACKAGE.joinpath("index.html")
    .read_text(encoding="utf-8")
    .replace("@ASSETS@", f"assets/{VERSION}")
)

_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"
_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Recordings of AWS S3 itself: presigned links name the bucket as a subdomain or in the path.
AWS_S3_ORIGINS = ("https://*.amazonaws.com",)

# The routes each optional control needs, as the service declares them.
_SESSION = "/api/agents/agent-session/{session_id}"
_TRANSCRIPT = f"{_SESSION}/transcript/"
_STREAM = f"{_TRANSCRIPT}stream/"
_SEARCH = "/api/agents/transcripts/search/"
_HISTORY = "/api/billing/usage/"
EXPORT_FORMATS = ("vtt", "srt", "txt", "md", "jsonl")

router = APIRouter(include_in_schema=False)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def recording_origins(settings: Settings) -> tuple[str, ...]:
    """The origins a recording link of the configured store may point at."""
    if settings.recordings_backend == "local":
        return (_origin(settings.public_url),)
    if settings.s3_endpoint_url:
        return (_origin(settings.s3_endpoint_url),)
    return AWS_S3_ORIGINS


def content_security_policy(settings: Settings) -> str:
    media = " ".join(("'self'", *recording_origins(settings)))
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            f"media-src {media}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        )
    )


_FEATURES: weakref.WeakKeyDictionary[Starlette, str] = weakref.WeakKeyDictionary()


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route reads, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


def _declared_query_names(route: object) -> set[str]:
    """Query parameters a route reads from the raw query string and declares to the OpenAPI
    document itself (``?redact=`` on the hot transcript reads)."""
    extra = getattr(route, "openapi_extra", None) or {}
    return {
        parameter["name"]
        for parameter in extra.get("parameters", ())
        if isinstance(parameter, dict) and parameter.get("in") == "query"
    }


def features(app: Starlette) -> str:
    """The optional controls ``app`` can back, as the page's space-separated tokens."""
    known = _FEATURES.get(app)
    if known is not None:
        return known
    query: dict[str, set[str]] = {}
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        # As the OpenAPI document spells it: a parameter without its convertor.
        path = route.path_format or route.path
        if path and "GET" in (route.methods or ()) and isinstance(dependant, Dependant):
            names = _query_names(dependant) | _declared_query_names(route)
            query.setdefault(path.rstrip("/") + "/", set()).update(names)
    tokens = []
    if _SEARCH in query:
        tokens.append("search")
    if _STREAM in query:
        tokens.append("stream")
    if "redact" in query.get(_TRANSCRIPT, set()):
        tokens.append("redact")
    history = query.get(_HISTORY, set())
    tokens.extend(name for name in ("cursor", "include_transcript") if name in history)
    formats = [
        name
        for name in EXPORT_FORMATS
        if f"{_TRANSCRIPT}{name}/" in query or f"{_TRANSCRIPT}{{format}}/" in query
    ]
    if formats:
        tokens.append("export=" + ",".join(formats))
    found = _FEATURES[app] = " ".join(tokens)
    return found


@router.get(UI_PATH)
async def viewer_redirect() -> Response:
    # Relative, so it lands on the page under whatever prefix the browser sees.
    return RedirectResponse("ui/", status_code=308, headers=_COMMON_HEADERS)


@router.get(f"{UI_PATH}/")
async def viewer_page(request: Request) -> HTMLResponse:
    settings = app_state(request.app).settings
    page = _PAGE.replace("@FEATURES@", html.escape(features(request.app)))
    return HTMLResponse(
        page,
        headers={
            **_COMMON_HEADERS,
            "Cache-Control": _REVALIDATE,
            "Content-Security-Policy": content_security_policy(settings),
        },
    )


def _asset_route(name: str) -> None:
    body = _ASSETS[name]
    media_type = _MEDIA_TYPES[name[name.rindex(".") :]]

    async def asset(version: Annotated[str, Path(max_length=64)]) -> Response:
        cache = _IMMUTABLE if version == VERSION else _REVALIDATE
        headers = {**_COMMON_HEADERS, "Cache-Control": cache}
        return Response(body, media_type=media_type, headers=headers)

    asset.__name__ = "viewer_" + name.replace(".", "_")
    router.add_api_route(f"{UI_PATH}/assets/{{version}}/{name}", asset, methods=["GET"])


for _name in ASSET_NAMES:
    _asset_route(_name)
