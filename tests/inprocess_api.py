"""The HTTP API in this process, as a worker runs it: the real Faust app and aiohttp server, the
real views, models and middlewares, and a real runtime (tiny encoder, embedded index). Only
Kafka is faked: a recording send that can play a broker that never answers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from fakes import TinyEncoder
from imagegen import image_bytes

from lookalike.api import register_api, web_options
from lookalike.errors import EncoderUnavailable
from lookalike.events import ConsumedMessage, ImageUploaded, InlineSource
from lookalike.settings import Settings
from lookalike.streams.app import create_app
from lookalike.streams.runtime import Runtime

READ, ADMIN = "read-token-1", "admin-token-1"
MAX_IMAGE = 200_000
MAX_JSON = 20_000


class FakeKafka:
    """A delivered send; with ``down``, a broker that never answers."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.down = False

    async def __call__(self, key: bytes | None, value: bytes) -> None:
        if self.down:
            await asyncio.Event().wait()
        self.sent.append((key, value))


def _loader(spec: str) -> Any:
    raise EncoderUnavailable(f"no encoder {spec!r} in this test")


def make_runtime(data_dir: Path, **overrides: Any) -> Runtime:
    """A worker's runtime (tiny encoder, embedded index) holding six indexed images."""
    settings = Settings(
        data_dir=data_dir,
        max_image_bytes=MAX_IMAGE,
        api_max_json_bytes=MAX_JSON,
        search_log_timeout=0.5,
        decode_threads=2,
        **overrides,
    )
    rt = Runtime(settings, encoder=TinyEncoder(), encoder_loader=_loader)
    events = [
        ImageUploaded(
            image_id=f"{category}-{seed}",
            listing_id=f"l-{seed}",
            seller_id="seller-a",
            category=category,
            image=InlineSource(data=image_bytes(category, seed)),
        )
        for category in ("circles", "stripes")
        for seed in range(3)
    ]
    messages = [ConsumedMessage("t", 0, n, e.to_json_bytes()) for n, e in enumerate(events)]
    assert len(rt.pipeline.process(messages).indexed) == len(events)
    return rt


@dataclass
class Api:
    client: TestClient
    loop: asyncio.AbstractEventLoop
    searches: FakeKafka
    clicks: FakeKafka
    token: str | None = None

    def call(
        self,
        method: str,
        path: str,
        token: str | None = "default",
        raw: bool = False,
        **kwargs: Any,
    ) -> tuple[int, Any, dict[str, str]]:
        """The status, the JSON body (``raw``: the bytes of a successful answer) and headers;
        errors are always JSON."""
        headers = dict(kwargs.pop("headers", {}))
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"

        async def go() -> tuple[int, Any, dict[str, str]]:
            response = await self.client.request(method, path, headers=headers, **kwargs)
            if response.status >= 400 or not raw:
                assert response.content_type == "application/json", await response.text()
                return response.status, await response.json(), dict(response.headers)
            return response.status, await response.read(), dict(response.headers)

        return self.loop.run_until_complete(go())


def open_api(runtime: Runtime, **overrides: Any) -> Api:
    settings = runtime.settings.model_copy(update=overrides)
    app = create_app(settings, "127.0.0.1:1", web_options(settings))
    searches, clicks = FakeKafka(), FakeKafka()
    register_api(app, runtime, log_search=searches, send_click=clicks)
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(app.web.web_app), loop=loop)
    loop.run_until_complete(client.start_server())
    return Api(client, loop, searches, clicks)


def close_api(api: Api) -> None:
    api.loop.run_until_complete(api.client.close())
    api.loop.close()
