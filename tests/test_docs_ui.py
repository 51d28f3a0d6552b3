"""``/docs`` works offline: Swagger UI's assets come from the package, never from a CDN."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from playwright.async_api import Page, Route

from tests.servers import transcripts_process

ASSET_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


async def test_the_docs_page_refers_only_to_the_services_own_assets(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text
    assert "https://" not in page.text
    assets = ASSET_REFERENCE.findall(page.text)
    assert sorted(Path(asset).suffix for asset in assets) == [".css", ".js", ".png"]

    for asset in assets:
        assert asset.startswith("/"), asset
        response = await client.get(asset)
        assert response.status_code == 200, asset
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type in CONTENT_TYPES[Path(asset).suffix], (asset, media_type)
        assert len(response.content) > 1000, asset
    bundle = await client.get(next(asset for asset in assets if asset.endswith(".js")))
    assert b"SwaggerUIBundle" in bundle.content


async def test_the_docs_render_in_a_browser_with_no_network(page: Page, tmp_path: Path) -> None:
    refused: list[str] = []

    async def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort()

    await page.route("**/*", loopback_only)
    env = {"TRANSCRIPTS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}"}
    with transcripts_process("serve", env=env, cwd=tmp_path) as server:
        await page.goto(f"{server.base_url}/docs")
        await page.wait_for_selector(".opblock", timeout=30_000)
        operations = await page.locator(".opblock").count()
        title = await page.locator(".info .title").inner_text()

    assert operations > 10
    assert title.startswith("transcripts")
    assert refused == []
