"""HTTP API on the Faust web server.

POST /search          an image (multipart field "image", or a raw image/* body) or JSON
                      {"image_id": ..., "k": 10, "filter": {"category": ..., "seller_id": ...}}
GET  /images/{id}     the indexed record of one image
GET  /stats           indexed images per model version, dead letters, worker counters
GET  /dead-letters    latest dead letters (?limit=N)
POST /clicks          a click on a search result (JSON Click) -> the clicks topic
POST /vectors         stored vectors by image id (for `lookalike train`)
GET  /alerts, GET /alerts/{id}, POST /alerts/{id}/review, GET|POST /exemplars
GET  /versions        the model-version registry
GET  /rollout/status  rollout progress, coverage, gate, evaluation, agreement (?quick=1)
POST /rollout/{step}  start {"encoder"}, promote {"force", "eval_dir"}, rollback, abort,
                      retire {"drop"}
GET  /health          liveness

Views are thin: they read the request, run the blocking work on the API executor, and answer
JSON. Errors are mapped to statuses in one place (:mod:`.errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import faust
from faust.web import Request, Response, View
from pydantic import ValidationError

from ..consumers import AlertStore, DeadLetterLedger, SendFn
from ..encoders import Encoder
from ..errors import Conflict, InvalidRequest, LookalikeError, NotFound
from ..events import Click, describe_validation_error
from ..executors import WorkerExecutors, run_in
from ..index import VectorIndex
from ..rollout import Rollout, VersionRegistry
from ..search import SearchService
from ..settings import Settings
from ..validation import CategoryValidator
from .errors import message_for, status_for
from .requests import json_object, parse_search_request, search_served

log = logging.getLogger(__name__)


class WorkerServices(Protocol):
    """What the API needs of a worker (the worker's runtime provides it)."""

    settings: Settings
    executors: WorkerExecutors
    search: SearchService
    index: VectorIndex
    registry: VersionRegistry
    ledger: DeadLetterLedger
    alerts: AlertStore
    rollout: Rollout
    encoder: Encoder
    validator: CategoryValidator | None

    def stats(self) -> dict[str, Any]: ...

    def review_alert(self, alert_id: str, decision: str, note: str | None) -> dict | None: ...

    def add_exemplar(self, data: bytes, category: str, exemplar_id: str | None) -> dict: ...


def _error(view: View, error: LookalikeError) -> Response:
    return view.json({"error": message_for(error)}, status=status_for(error))


def answering(
    handler: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    """A view method whose lookalike errors become JSON error answers."""

    async def wrapped(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(view, request, *args, **kwargs)
        except LookalikeError as exc:
            return _error(view, exc)

    return wrapped


def register_api(
    app: faust.App, worker: WorkerServices, log_search: SendFn, send_click: SendFn
) -> None:
    """Add the API's pages to ``app``'s web server."""

    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in(worker.executors.api, fn, *args)

    _search_views(app, worker, off_loop, log_search, send_click)
    _catalogue_views(app, worker, off_loop)
    _alert_views(app, worker, off_loop)
    _rollout_views(app, worker, off_loop)

    # aiohttp caps request bodies at 1 MiB by default; query images may be larger.
    web_app = getattr(app.web, "web_app", None)
    if web_app is not None and hasattr(web_app, "_client_max_size"):
        web_app._client_max_size = worker.settings.max_image_bytes + (1 << 20)


OffLoop = Callable[..., Awaitable[Any]]


def _search_views(
    app: faust.App,
    worker: WorkerServices,
    off_loop: OffLoop,
    log_search: SendFn,
    send_click: SendFn,
) -> None:
    @app.page("/search")
    class SearchView(View):
        @answering
        async def post(self, request: Request) -> Response:
            search_request = await parse_search_request(request)
            response = await off_loop(worker.search.search, search_request)
            served = search_served(response)
            # Logged before answering: a click can only refer to a search we recorded.
            await log_search(served.search_id.encode(), served.model_dump_json().encode())
            worker.rollout.recent.record(response)  # for the rollout's agreement report
            return self.json(response)

    @app.page("/clicks")
    class ClicksView(View):
        @answering
        async def post(self, request: Request) -> Response:
            """A front end reports a click on a search result (JSON Click)."""
            try:
                click = Click.model_validate_json(await request.read() or b"{}")
            except ValidationError as exc:
                raise InvalidRequest(f"invalid click: {describe_validation_error(exc)}") from None
            await send_click(click.search_id.encode(), click.model_dump_json().encode())
            worker.rollout.recent.click(click.search_id, click.image_id)
            return self.json({"accepted": True, "click_id": click.click_id}, status=202)

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "encoder": worker.encoder.version})


def _catalogue_views(app: faust.App, worker: WorkerServices, off_loop: OffLoop) -> None:
    @app.page("/images/{image_id}")
    class ImageView(View):
        @answering
        async def get(self, request: Request, image_id: str) -> Response:
            return self.json(await off_loop(worker.search.get_image, image_id))

    @app.page("/vectors")
    class VectorsView(View):
        @answering
        async def post(self, request: Request) -> Response:
            """Stored vectors by image id, for the training job: {"version", "image_ids"};
            with "payloads": true, the stored records instead."""
            body = await json_object(request)
            ids, version = body.get("image_ids"), body.get("version")
            if not isinstance(ids, list) or not isinstance(version, str) or len(ids) > 1000:
                raise InvalidRequest('vectors need {"version": "...", "image_ids": [<=1000]}')
            if version not in await off_loop(worker.index.versions):
                raise NotFound("model version", version, f"no index for model version {version!r}")
            ids = [str(i) for i in ids]
            if body.get("payloads"):
                payloads = await off_loop(worker.index.payloads, version, ids)
                return self.json({"version": version, "payloads": payloads})
            found = await off_loop(worker.index.vectors, version, ids)
            return self.json(
                {"version": version, "vectors": {k: v.tolist() for k, v in found.items()}}
            )

    @app.page("/stats")
    class StatsView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await off_loop(worker.stats))

    @app.page("/dead-letters")
    class DeadLettersView(View):
        async def get(self, request: Request) -> Response:
            limit = int(request.query.get("limit", 50))
            return self.json({"dead_letters": await off_loop(worker.ledger.latest, limit)})

    @app.page("/versions")
    class VersionsView(View):
        async def get(self, request: Request) -> Response:
            records = await off_loop(worker.registry.all)
            return self.json({"versions": [r.as_dict() for r in records]})


def _alert_views(app: faust.App, worker: WorkerServices, off_loop: OffLoop) -> None:
    def validator() -> CategoryValidator:
        if worker.validator is None:
            raise Conflict("category validation is off (LOOKALIKE_VALIDATION_ENABLED)")
        return worker.validator

    @app.page("/alerts")
    class AlertsView(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            alerts = await off_loop(
                lambda: worker.alerts.list(
                    seller_id=q.get("seller_id"),
                    category=q.get("category"),
                    status=q.get("status"),
                    limit=int(q.get("limit", 50)),
                )
            )
            return self.json({"alerts": alerts})

    @app.page("/alerts/{alert_id}")
    class AlertView(View):
        @answering
        async def get(self, request: Request, alert_id: str) -> Response:
            alert = await off_loop(worker.alerts.get, alert_id)
            if alert is None:
                raise NotFound("alert", alert_id)
            return self.json(alert)

    @app.page("/alerts/{alert_id}/review")
    class ReviewView(View):
        @answering
        async def post(self, request: Request, alert_id: str) -> Response:
            body = await json_object(request)
            decision = body.get("decision")
            if decision not in ("confirmed", "dismissed"):
                raise InvalidRequest('review needs {"decision": "confirmed" | "dismissed"}')
            result = await off_loop(worker.review_alert, alert_id, decision, body.get("note"))
            if result is None:
                raise NotFound("alert", alert_id)
            return self.json(result)

    @app.page("/exemplars")
    class ExemplarsView(View):
        @answering
        async def get(self, request: Request) -> Response:
            return self.json({"exemplars": validator().exemplar_counts()})

        @answering
        async def post(self, request: Request) -> Response:
            validator()
            form = await request.post()
            upload = form.get("image")
            category = form.get("category")
            if upload is None or not hasattr(upload, "file") or not category:
                raise InvalidRequest("exemplars need a file field 'image' and a 'category'")
            result = await off_loop(
                worker.add_exemplar, upload.file.read(), str(category), form.get("exemplar_id")
            )
            return self.json(result)


def _rollout_views(app: faust.App, worker: WorkerServices, off_loop: OffLoop) -> None:
    rollout = worker.rollout

    @app.page("/rollout/status")
    class RolloutStatusView(View):
        async def get(self, request: Request) -> Response:
            quick = request.query.get("quick") in ("1", "true")
            return self.json(await off_loop(rollout.status, quick))

    @app.page("/rollout/{step}")
    class RolloutView(View):
        @answering
        async def post(self, request: Request, step: str) -> Response:
            body = await json_object(request)
            if step == "start":
                if not isinstance(body.get("encoder"), str):
                    raise InvalidRequest('rollout start needs {"encoder": NAME_OR_PT_PATH}')
                return self.json(await rollout.start(body["encoder"]))
            if step == "promote":
                force, eval_dir = bool(body.get("force")), body.get("eval_dir")
                return self.json(await rollout.promote(force, eval_dir))
            if step == "rollback":
                return self.json(await rollout.on_writer(rollout.rollback))
            if step == "abort":
                return self.json(await rollout.on_writer(rollout.abort))
            if step == "retire":
                return self.json(await rollout.on_writer(rollout.retire, bool(body.get("drop"))))
            raise NotFound(
                "rollout step",
                step,
                f"no rollout step {step!r} (start, promote, rollback, abort, retire)",
            )
