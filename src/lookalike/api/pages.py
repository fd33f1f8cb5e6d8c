"""The console (``/`` and ``/console/{asset}``), the API reference (``/docs``) and the OpenAPI
document (``/openapi.json``): files and a generated document, no data."""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from .. import console
from ..errors import NotFound
from .openapi import cached_document


def register_pages(app: faust.App) -> None:
    def file_response(view: View, file: console.File) -> Response:
        return view.bytes(
            file.body,
            content_type=file.content_type,
            headers=dict(console.SECURITY_HEADERS),
        )

    @app.page("/")
    class ConsoleView(View):
        async def get(self, request: Request) -> Response:
            return file_response(self, console.page("console"))

    @app.page("/console/{asset}")
    class AssetView(View):
        async def get(self, request: Request, asset: str) -> Response:
            found = console.asset(asset)
            if found is None:
                raise NotFound("console file", asset)
            return file_response(self, found)

    @app.page("/docs")
    class DocsView(View):
        async def get(self, request: Request) -> Response:
            return file_response(self, console.page("docs"))

    @app.page("/openapi.json")
    class OpenApiView(View):
        async def get(self, request: Request) -> Response:
            return self.json(cached_document())
