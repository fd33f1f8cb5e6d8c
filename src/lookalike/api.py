"""HTTP API on the Faust web server.

POST /search          an image (multipart field "image", or a raw image/* body) or JSON
                      {"image_id": ..., "k": 10, "filter": {"category": ..., "seller_id": ...}}
GET  /images/{id}     the indexed record of one image
GET  /stats           indexed images per model version, dead letters, worker counters
GET  /dead-letters    latest dead letters (?limit=N)
POST /clicks          a click on a search result (JSON Click) -> the clicks topic
POST /vectors         stored vectors by image id (for `lookalike train`)
GET  /versions        the model-version registry
GET  /rollout/status  rollout progress, coverage, gate, evaluation, agreement (?quick=1)
POST /rollout/{step}  start {"encoder"}, promote {"force", "eval_dir"}, rollback, abort,
                      retire {"drop"}
GET  /health          liveness
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import faust
from faust.web import Request, Response, View
from pydantic import ValidationError

from .errors import ImageRejected, LookalikeError
from .events import Click, SearchServed, ServedResult, describe_validation_error
from .lifecycle.versions import RolloutError
from .search import SearchError, SearchRequest

if TYPE_CHECKING:
    from .streams.runtime import Runtime

log = logging.getLogger(__name__)


def _filters_from(mapping: Any) -> dict[str, Any]:
    return {k: mapping[k] for k in ("category", "seller_id", "listing_id") if mapping.get(k)}


async def json_object(request: Any) -> dict[str, Any]:
    """A request's JSON body as an object ({} when empty or not an object); SearchError (400)
    when it is not JSON."""
    try:
        body = json.loads(await request.read() or b"{}")
    except json.JSONDecodeError as exc:
        raise SearchError(f"request body is not valid JSON: {exc}") from None
    return body if isinstance(body, dict) else {}


async def parse_search_request(request: Any) -> SearchRequest:
    """Build a SearchRequest from a multipart upload, a raw image body or a JSON body."""
    content_type = request.content_type or ""
    if content_type.startswith("multipart/"):
        form = await request.post()
        upload = form.get("image") or form.get("file")
        if upload is None or not hasattr(upload, "file"):
            raise SearchError("multipart search needs a file field named 'image'")
        conditions = _filters_from(form)
        return SearchRequest(
            k=int(form.get("k", 10)),
            conditions=conditions,
            image_bytes=upload.file.read(),
            **_who(form),
        )
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        body = await request.read()
        query = request.query
        return SearchRequest(
            k=int(query.get("k", 10)),
            conditions=_filters_from(query),
            image_bytes=body,
            **_who(query),
        )
    body = await json_object(request)
    if not isinstance(body.get("image_id"), str):
        raise SearchError('JSON search needs {"image_id": "...", "k": 10, "filter": {...}}')
    conditions = body.get("filter") or {}
    if not isinstance(conditions, dict):
        raise SearchError('\'filter\' must be an object like {"category": "shoes"}')
    return SearchRequest(
        k=int(body.get("k", 10)), conditions=conditions, image_id=body["image_id"], **_who(body)
    )


def _who(mapping: Any) -> dict[str, str | None]:
    """Who searched (optional): logged with the search so clicks can be tied to sessions."""
    return {
        key: (str(mapping[key]) if mapping.get(key) else None) for key in ("user_id", "session_id")
    }


def search_served(response: dict[str, Any]) -> SearchServed:
    query = response["query"]
    return SearchServed(
        search_id=response["search_id"],
        query_type=query["type"],
        query_image_id=query.get("image_id"),
        query_content_sha256=query.get("content_sha256"),
        model_version=response["model_version"],
        results=[
            ServedResult(image_id=r["image_id"], rank=r["rank"], score=r["score"])
            for r in response["results"]
        ],
        user_id=query.get("user_id"),
        session_id=query.get("session_id"),
    )


def register_views(
    app: faust.App,
    runtime: Runtime,
    log_search: Callable[[bytes | None, bytes], Awaitable[None]],
    send_click: Callable[[bytes | None, bytes], Awaitable[None]],
) -> None:
    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(runtime.api_executor, fn, *args)

    def error(view: View, status: int, message: str) -> Response:
        return view.json({"error": message}, status=status)

    @app.page("/search")
    class SearchView(View):
        async def post(self, request: Request) -> Response:
            try:
                search_request = await parse_search_request(request)
                response = await off_loop(runtime.search.search, search_request)
                served = search_served(response)
                # Logged before answering: a click can only refer to a search we recorded.
                await log_search(served.search_id.encode(), served.model_dump_json().encode())
                runtime.rollout.recent.record(response)  # for the rollout's agreement report
                return self.json(response)
            except SearchError as exc:
                return error(self, exc.status, str(exc))
            except ImageRejected as exc:
                return error(self, 422, f"query image rejected: {exc.reason}")
            except ValueError as exc:  # bad k, unknown filter field
                return error(self, 400, str(exc))

    @app.page("/clicks")
    class ClicksView(View):
        async def post(self, request: Request) -> Response:
            """A front end reports a click on a search result (JSON Click)."""
            try:
                click = Click.model_validate_json(await request.read() or b"{}")
            except ValidationError as exc:
                return error(self, 400, f"invalid click: {describe_validation_error(exc)}")
            await send_click(click.search_id.encode(), click.model_dump_json().encode())
            runtime.rollout.recent.click(click.search_id, click.image_id)
            return self.json({"accepted": True, "click_id": click.click_id}, status=202)

    @app.page("/images/{image_id}")
    class ImageView(View):
        async def get(self, request: Request, image_id: str) -> Response:
            try:
                return self.json(await off_loop(runtime.search.get_image, image_id))
            except SearchError as exc:
                return error(self, exc.status, str(exc))

    @app.page("/vectors")
    class VectorsView(View):
        async def post(self, request: Request) -> Response:
            """Stored vectors by image id, for the training job: {"version", "image_ids"};
            with "payloads": true, the stored records instead."""
            try:
                body = await json_object(request)
            except SearchError as exc:
                return error(self, exc.status, str(exc))
            ids, version = body.get("image_ids"), body.get("version")
            if not isinstance(ids, list) or not isinstance(version, str) or len(ids) > 1000:
                return error(self, 400, 'vectors need {"version": "...", "image_ids": [<=1000]}')
            if version not in await off_loop(runtime.index.versions):
                return error(self, 404, f"no index for model version {version!r}")
            ids = [str(i) for i in ids]
            if body.get("payloads"):
                payloads = await off_loop(runtime.index.payloads, version, ids)
                return self.json({"version": version, "payloads": payloads})
            found = await off_loop(runtime.index.vectors, version, ids)
            return self.json(
                {"version": version, "vectors": {k: v.tolist() for k, v in found.items()}}
            )

    @app.page("/stats")
    class StatsView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await off_loop(runtime.stats))

    @app.page("/dead-letters")
    class DeadLettersView(View):
        async def get(self, request: Request) -> Response:
            limit = int(request.query.get("limit", 50))
            return self.json({"dead_letters": await off_loop(runtime.ledger.latest, limit)})

    @app.page("/alerts")
    class AlertsView(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            alerts = await off_loop(
                lambda: runtime.alerts.list(
                    seller_id=q.get("seller_id"),
                    category=q.get("category"),
                    status=q.get("status"),
                    limit=int(q.get("limit", 50)),
                )
            )
            return self.json({"alerts": alerts})

    @app.page("/alerts/{alert_id}")
    class AlertView(View):
        async def get(self, request: Request, alert_id: str) -> Response:
            alert = await off_loop(runtime.alerts.get, alert_id)
            if alert is None:
                return error(self, 404, f"no alert {alert_id!r}")
            return self.json(alert)

    @app.page("/alerts/{alert_id}/review")
    class ReviewView(View):
        async def post(self, request: Request, alert_id: str) -> Response:
            try:
                body = await json_object(request)
            except SearchError as exc:
                return error(self, exc.status, str(exc))
            decision = body.get("decision")
            if decision not in ("confirmed", "dismissed"):
                return error(self, 400, 'review needs {"decision": "confirmed" | "dismissed"}')
            result = await off_loop(runtime.review_alert, alert_id, decision, body.get("note"))
            if result is None:
                return error(self, 404, f"no alert {alert_id!r}")
            return self.json(result)

    @app.page("/exemplars")
    class ExemplarsView(View):
        async def get(self, request: Request) -> Response:
            if runtime.validator is None:
                return error(self, 409, "category validation is off (LOOKALIKE_VALIDATION_ENABLED)")
            return self.json({"exemplars": runtime.validator.exemplar_counts()})

        async def post(self, request: Request) -> Response:
            if runtime.validator is None:
                return error(self, 409, "category validation is off (LOOKALIKE_VALIDATION_ENABLED)")
            form = await request.post()
            upload = form.get("image")
            category = form.get("category")
            if upload is None or not hasattr(upload, "file") or not category:
                return error(self, 400, "exemplars need a file field 'image' and a 'category'")
            try:
                result = await off_loop(
                    runtime.add_exemplar, upload.file.read(), str(category), form.get("exemplar_id")
                )
            except ImageRejected as exc:
                return error(self, 422, f"exemplar image rejected: {exc.reason}")
            return self.json(result)

    @app.page("/versions")
    class VersionsView(View):
        async def get(self, request: Request) -> Response:
            records = await off_loop(runtime.registry.all)
            return self.json({"versions": [r.as_dict() for r in records]})

    @app.page("/rollout/status")
    class RolloutStatusView(View):
        async def get(self, request: Request) -> Response:
            quick = request.query.get("quick") in ("1", "true")
            return self.json(await off_loop(runtime.rollout.status, quick))

    @app.page("/rollout/{step}")
    class RolloutView(View):
        async def post(self, request: Request, step: str) -> Response:
            try:
                body = await json_object(request)
            except SearchError as exc:
                return error(self, exc.status, str(exc))
            rollout = runtime.rollout
            try:
                if step == "start":
                    if not isinstance(body.get("encoder"), str):
                        return error(self, 400, 'rollout start needs {"encoder": NAME_OR_PT_PATH}')
                    return self.json(await rollout.start(body["encoder"]))
                if step == "promote":
                    force, eval_dir = bool(body.get("force")), body.get("eval_dir")
                    return self.json(await rollout.promote(force, eval_dir))
                if step == "rollback":
                    return self.json(await rollout.on_writer(rollout.rollback))
                if step == "abort":
                    return self.json(await rollout.on_writer(rollout.abort))
                if step == "retire":
                    return self.json(
                        await rollout.on_writer(rollout.retire, bool(body.get("drop")))
                    )
                return error(
                    self, 404, f"no rollout step {step!r} (start, promote, rollback, abort, retire)"
                )
            except RolloutError as exc:
                return error(self, exc.status, str(exc))
            except LookalikeError as exc:  # e.g. the encoder cannot be loaded here
                return error(self, 400, str(exc))

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "encoder": runtime.encoder.version})

    # aiohttp caps request bodies at 1 MiB by default; query images may be larger.
    runtime_limit = runtime.settings.max_image_bytes + (1 << 20)
    web_app = getattr(app.web, "web_app", None)
    if web_app is not None and hasattr(web_app, "_client_max_size"):
        web_app._client_max_size = runtime_limit
