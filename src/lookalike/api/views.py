"""HTTP API on the Faust web server (the routes and their roles: :data:`.models.ROUTES`).

POST /search          an image (multipart field "image", or a raw image/* body) or JSON
                      {"image_id": ..., "k": 10, "filter": {"category": ..., "seller_id": ...}}
GET  /images/{id}     the indexed record of one image
POST /clicks          a click on a search result (JSON Click) -> the clicks topic
GET  /stats           indexed images per model version, dead letters, worker counters, readiness
GET  /dead-letters    latest dead letters (?limit=N)
POST /vectors         stored vectors by image id (for `lookalike train`)
GET  /alerts, GET /alerts/{id}, POST /alerts/{id}/review, GET|POST /exemplars
GET  /versions        the model-version registry
GET  /rollout/status  rollout progress, coverage, gate, evaluation, agreement (?quick=1)
POST /rollout/{start,promote,rollback,abort,retire,anchor}
GET  /health          liveness: the process answers (cheap, no checks)
GET  /ready           readiness: broker, index, encoder (and disk) usable, or why not (503)
GET  /thumbnails/{id} a JPEG thumbnail of an indexed image (?size=N), cached on disk
GET  /metrics         Prometheus metrics: the /stats snapshot and the worker's histograms
GET  /, /docs, /openapi.json   the console, the API reference, the OpenAPI document (.pages)

Views are thin: they validate the request with the models of :mod:`.models`, run the blocking
work on the API executor, and answer JSON. Errors become JSON with a status in one place (the
middleware of :mod:`.middleware`, statuses in :mod:`.errors`).

A search is logged to Kafka before it is answered, but never waits on a broker that is gone for
longer than LOOKALIKE_SEARCH_LOG_TIMEOUT: past that it is answered with ``"logged": false`` and
counted (``api.searches_unlogged`` in /stats), because a marketplace's search should not fail
for its analytics. A click cannot be kept anywhere else: without the broker it is refused (503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import faust
from faust.web import Request, Response, View

from ..consumers import AlertStore, DeadLetterLedger, SendFn
from ..encoders import Encoder
from ..errors import (
    BrokerUnavailable,
    Conflict,
    InvalidRequest,
    NotFound,
    NotReady,
)
from ..events import Click
from ..executors import WorkerExecutors, describe_error, run_in
from ..health import Health
from ..index import VectorIndex
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..metrics import Instruments, render
from ..rollout import Rollout, VersionRegistry
from ..search import SearchService, ThumbnailService
from ..settings import Settings
from ..validation import CategoryValidator
from .models import (
    AlertsQuery,
    DeadLettersQuery,
    ExemplarFields,
    LearnQuery,
    NoFields,
    ReviewRequest,
    RolloutPromote,
    RolloutRetire,
    RolloutStart,
    RolloutStatusQuery,
    ThumbnailQuery,
    VectorsRequest,
)
from .pages import register_pages
from .requests import parse_fields, parse_json, parse_search_request, read_body, read_form
from .requests import search_served as served_event
from .sending import BoundedSend

log = logging.getLogger(__name__)

#: The parts /ready always reports on (others appear when they fail).
READY_PARTS = ("broker", "index", "encoder")
#: How long /ready waits for the index to answer.
READY_CHECK_TIMEOUT = 3.0


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
    health: Health
    thumbnails: ThumbnailService
    instruments: Instruments

    def stats(self) -> dict[str, Any]: ...

    def review_alert(self, alert_id: str, decision: str, note: str | None) -> dict | None: ...

    def add_exemplar(self, data: bytes, category: str, exemplar_id: str | None) -> dict: ...


@dataclass
class ApiCounters:
    searches_logged: int = 0
    searches_unlogged: int = 0
    clicks_accepted: int = 0
    clicks_refused: int = 0


OffLoop = Callable[..., Awaitable[Any]]


def register_api(
    app: faust.App, worker: WorkerServices, log_search: SendFn, send_click: SendFn
) -> ApiCounters:
    """Add the API's pages to ``app``'s web server (its middlewares come with the app's
    ``web_application_options``: :func:`.middleware.web_options`)."""

    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in(worker.executors.api, fn, *args)

    counters = ApiCounters()
    timeout = worker.settings.search_log_timeout
    _search_views(
        app,
        worker,
        off_loop,
        counters,
        BoundedSend(log_search, timeout, "searches"),
        BoundedSend(send_click, timeout, "clicks"),
    )
    _health_views(app, worker, off_loop)
    _catalogue_views(app, worker, off_loop)
    _stats_views(app, worker, off_loop, counters)
    _alert_views(app, worker, off_loop)
    _rollout_views(app, worker, off_loop)
    register_pages(app)
    return counters


async def _json_body(
    request: Request, settings: Settings, model: type, what: str = "request body"
) -> Any:
    raw = await read_body(request, settings.api_max_json_bytes, "LOOKALIKE_API_MAX_JSON_BYTES")
    return parse_json(model, raw, what)


def _search_views(
    app: faust.App,
    worker: WorkerServices,
    off_loop: OffLoop,
    counters: ApiCounters,
    log_search: BoundedSend,
    send_click: BoundedSend,
) -> None:
    settings = worker.settings

    @app.page("/search")
    class SearchView(View):
        async def post(self, request: Request) -> Response:
            search_request = await parse_search_request(
                request,
                max_image_bytes=settings.max_image_bytes,
                max_json_bytes=settings.api_max_json_bytes,
            )
            kind = "image" if search_request.image_bytes is not None else "image_id"
            with worker.instruments.search.labels(query=kind).time():
                response = await off_loop(worker.search.search, search_request)
            served = served_event(response)
            # Logged before answering, so a click can refer to it: bounded (module docstring).
            logged = await log_search(served.search_id.encode(), served.model_dump_json().encode())
            if logged:
                counters.searches_logged += 1
            else:
                counters.searches_unlogged += 1
            worker.rollout.recent.record(response)  # for the rollout's agreement report
            return self.json(response | {"logged": logged})

    @app.page("/clicks")
    class ClicksView(View):
        async def post(self, request: Request) -> Response:
            """A front end reports a click on a search result (JSON Click)."""
            click = await _json_body(request, settings, Click, "click")
            if not await send_click(click.search_id.encode(), click.model_dump_json().encode()):
                counters.clicks_refused += 1
                raise BrokerUnavailable(
                    f"the click could not be handed to Kafka within {send_click.timeout:g}s "
                    "(the broker is unreachable): send it again later"
                )
            counters.clicks_accepted += 1
            worker.rollout.recent.click(click.search_id, click.image_id)
            return self.json({"accepted": True, "click_id": click.click_id}, status=202)


def _health_views(app: faust.App, worker: WorkerServices, off_loop: OffLoop) -> None:
    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            """Liveness: cheap on purpose; /ready says whether the worker can do its job."""
            return self.json({"status": "ok"})

    @app.page("/ready")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            report = await readiness(worker, off_loop)
            if not report["ready"]:
                failing = [
                    f"{p}: {c['reason']}" for p, c in report["checks"].items() if not c["ok"]
                ]
                report["error"] = "not ready: " + "; ".join(failing)
            return self.json(report, status=200 if report["ready"] else 503)


async def readiness(worker: WorkerServices, off_loop: OffLoop) -> dict[str, Any]:
    """What the health record says (broker, failing batches), plus a live look at the index and
    the serving encoder."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(off_loop(worker.search.serving_version), READY_CHECK_TIMEOUT)
    except NotReady as exc:
        checks["encoder"] = str(exc)
    except TimeoutError:
        checks["index"] = f"the index did not answer within {READY_CHECK_TIMEOUT:g}s"
    except Exception as exc:
        checks["index"] = describe_error(exc)
    report = worker.health.report(READY_PARTS)
    for part, reason in checks.items():
        report["checks"][part] = {"ok": False, "reason": reason}
    report["ready"] = all(check["ok"] for check in report["checks"].values())
    return report


def _catalogue_views(app: faust.App, worker: WorkerServices, off_loop: OffLoop) -> None:
    settings = worker.settings

    @app.page("/images/{image_id}")
    class ImageView(View):
        async def get(self, request: Request, image_id: str) -> Response:
            return self.json(await off_loop(worker.search.get_image, image_id))

    @app.page("/thumbnails/{image_id}")
    class ThumbnailView(View):
        async def get(self, request: Request, image_id: str) -> Response:
            query = parse_fields(ThumbnailQuery, request.query)
            started = time.perf_counter()
            # Own threads: a slow image source must not hold up searches.
            data, source, etag = await run_in(
                worker.executors.thumbnails, worker.thumbnails.thumbnail, image_id, query.size
            )
            worker.instruments.thumbnail.labels(source=source).observe(
                time.perf_counter() - started
            )
            headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
            if request.headers.get("If-None-Match") == etag:
                return self.bytes(b"", status=304, headers=headers)
            return self.bytes(data, content_type="image/jpeg", headers=headers)

    @app.page("/vectors")
    class VectorsView(View):
        async def post(self, request: Request) -> Response:
            """Stored vectors by image id, for the training job: {"version", "image_ids"};
            with "payloads": true, the stored records instead."""
            body: VectorsRequest = await _json_body(request, settings, VectorsRequest)
            version, ids = body.version, list(body.image_ids)
            if version not in await off_loop(worker.index.versions):
                raise NotFound("model version", version, f"no index for model version {version!r}")
            if body.payloads:
                payloads = await off_loop(worker.index.payloads, version, ids)
                return self.json({"version": version, "payloads": payloads})
            found = await off_loop(worker.index.vectors, version, ids)
            return self.json(
                {"version": version, "vectors": {k: v.tolist() for k, v in found.items()}}
            )


def _stats_views(
    app: faust.App, worker: WorkerServices, off_loop: OffLoop, counters: ApiCounters
) -> None:
    async def full_stats() -> dict[str, Any]:
        stats = await off_loop(worker.stats)
        stats["api"] = asdict(counters)
        stats["ready"] = await readiness(worker, off_loop)
        return stats

    @app.page("/stats")
    class StatsView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await full_stats())

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            """The same snapshot as /stats, so the two agree (lookalike.metrics)."""
            body = render(await full_stats(), worker.instruments)
            return self.bytes(body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    @app.page("/dead-letters")
    class DeadLettersView(View):
        async def get(self, request: Request) -> Response:
            query = parse_fields(DeadLettersQuery, request.query)
            return self.json({"dead_letters": await off_loop(worker.ledger.latest, query.limit)})

    @app.page("/versions")
    class VersionsView(View):
        async def get(self, request: Request) -> Response:
            records = await off_loop(worker.registry.all)
            return self.json({"versions": [r.as_dict() for r in records]})


def _alert_views(app: faust.App, worker: WorkerServices, off_loop: OffLoop) -> None:
    settings = worker.settings

    def validator() -> CategoryValidator:
        if worker.validator is None:
            raise Conflict("category validation is off (LOOKALIKE_VALIDATION_ENABLED)")
        return worker.validator

    @app.page("/alerts")
    class AlertsView(View):
        async def get(self, request: Request) -> Response:
            q = parse_fields(AlertsQuery, request.query)
            alerts = await off_loop(
                lambda: worker.alerts.list(
                    seller_id=q.seller_id, category=q.category, status=q.status, limit=q.limit
                )
            )
            return self.json({"alerts": alerts})

    @app.page("/alerts/{alert_id}")
    class AlertView(View):
        async def get(self, request: Request, alert_id: str) -> Response:
            alert = await off_loop(worker.alerts.get, alert_id)
            if alert is None:
                raise NotFound("alert", alert_id)
            return self.json(alert)

    @app.page("/alerts/{alert_id}/review")
    class ReviewView(View):
        async def post(self, request: Request, alert_id: str) -> Response:
            body: ReviewRequest = await _json_body(request, settings, ReviewRequest)
            result = await off_loop(worker.review_alert, alert_id, body.decision, body.note)
            if result is None:
                raise NotFound("alert", alert_id)
            return self.json(result)

    @app.page("/exemplars")
    class ExemplarsView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"exemplars": validator().exemplar_counts()})

        async def post(self, request: Request) -> Response:
            validator()
            texts, files = await read_form(request)
            fields = parse_fields(ExemplarFields, texts, "form fields")
            image = files.pop("image", None)
            if image is None or files:
                raise InvalidRequest("exemplars need one file field 'image' and a 'category'")
            result = await off_loop(worker.add_exemplar, image, fields.category, fields.exemplar_id)
            return self.json(result)


def _rollout_views(app: faust.App, worker: WorkerServices, off_loop: OffLoop) -> None:
    rollout, settings = worker.rollout, worker.settings

    @app.page("/learn")
    class LearnView(View):
        async def get(self, request: Request) -> Response:
            query = parse_fields(LearnQuery, request.query)
            return self.json({"decisions": await off_loop(_learn_decisions, settings, query.limit)})

    @app.page("/rollout/status")
    class RolloutStatusView(View):
        async def get(self, request: Request) -> Response:
            query = parse_fields(RolloutStatusQuery, request.query)
            return self.json(await off_loop(rollout.status, query.quick))

    @app.page("/rollout/start")
    class RolloutStartView(View):
        async def post(self, request: Request) -> Response:
            body: RolloutStart = await _json_body(request, settings, RolloutStart)
            return self.json(await rollout.start(body.encoder))

    @app.page("/rollout/promote")
    class RolloutPromoteView(View):
        async def post(self, request: Request) -> Response:
            body: RolloutPromote = await _json_body(request, settings, RolloutPromote)
            if body.eval_dir is not None and not Path(body.eval_dir).is_dir():
                raise InvalidRequest(
                    f"eval_dir {body.eval_dir!r} is not a folder on the worker's machine"
                )
            return self.json(await rollout.promote(body.force, body.eval_dir))

    @app.page("/rollout/rollback")
    class RolloutRollbackView(View):
        async def post(self, request: Request) -> Response:
            await _json_body(request, settings, NoFields)
            return self.json(await rollout.on_writer(rollout.rollback))

    @app.page("/rollout/abort")
    class RolloutAbortView(View):
        async def post(self, request: Request) -> Response:
            await _json_body(request, settings, NoFields)
            return self.json(await rollout.on_writer(rollout.abort))

    @app.page("/rollout/retire")
    class RolloutRetireView(View):
        async def post(self, request: Request) -> Response:
            body: RolloutRetire = await _json_body(request, settings, RolloutRetire)
            return self.json(await rollout.on_writer(rollout.retire, body.drop, body.anchor))

    @app.page("/rollout/anchor")
    class RolloutAnchorView(View):
        async def post(self, request: Request) -> Response:
            await _json_body(request, settings, NoFields)
            return self.json(await rollout.on_writer(rollout.anchor))


def _learn_decisions(settings: Settings, limit: int) -> list[dict[str, Any]]:
    """The decisions `lookalike learn run` logged under this worker's data dir (none when the
    loop has not run here). Blocking."""
    from ..learning import DecisionLog

    if not (settings.learn_path / "decisions.sqlite").exists():
        return []
    log = DecisionLog(settings.learn_path)
    try:
        return [d.as_dict() for d in log.recent(limit)]
    finally:
        log.close()
