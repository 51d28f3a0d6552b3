"""The API docs UI at ``/docs``, served whole by the service (not in the OpenAPI document).

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, so it is blank on a network that
cannot reach one. Here the page refers only to Swagger UI's files as the ``fastapi-offline``
package ships them, each served by a route of its own: three fixed paths (a mounted static
directory would answer, and label its metrics with, any path under it).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse, Response

__all__ = ["ASSET_PATHS", "DOCS_PATH", "router"]

DOCS_PATH = "/docs"
# Swagger UI 5's bundle, stylesheet and icon, by the path each is served at.
_ASSETS = {
    f"{DOCS_PATH}/swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
    f"{DOCS_PATH}/swagger-ui.css": ("swagger-ui.css", "text/css"),
    f"{DOCS_PATH}/favicon.png": ("favicon.png", "image/png"),
}
ASSET_PATHS = frozenset(_ASSETS)
_STATIC = Path(str(files("fastapi_offline").joinpath("static")))
# Assets change only with the package: a day in the browser's cache, then revalidated.
_CACHE_CONTROL = "public, max-age=86400"

router = APIRouter(include_in_schema=False)


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    js, css, favicon = (f"{root}{path}" for path in _ASSETS)
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=js,
        swagger_css_url=css,
        swagger_favicon_url=favicon,
    )


def _asset_route(path: str, name: str, media_type: str) -> None:
    file = _STATIC / name
    if not file.is_file():
        raise RuntimeError(f"fastapi-offline no longer ships static/{name}")

    async def asset() -> Response:
        return FileResponse(file, media_type=media_type, headers={"Cache-Control": _CACHE_CONTROL})

    asset.__name__ = f"docs_{Path(name).stem.replace('-', '_')}"
    router.add_api_route(path, asset, methods=["GET"])


for _path, (_name, _media_type) in _ASSETS.items():
    _asset_route(_path, _name, _media_type)
