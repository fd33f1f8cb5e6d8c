"""Every request the HTTP API takes, as pydantic models, the main answers, and the route table.

JSON bodies are strict (``"k": "10"`` or ``"force": "yes"`` are refused, not guessed at) and
refuse unknown fields; query strings and multipart form fields are text by nature, so their
models convert ``"10"`` to 10 but refuse ``"abc"``. :data:`ROUTES` names every route with its
role (who may call it), its models and what it answers: the views validate with them, the auth
middleware reads the roles, and :mod:`.openapi` generates ``/openapi.json`` from them. Answer
models describe what the views return (tests hold real answers to them); routes whose answer
has no model answer a JSON object described in their summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..events import CategoryAlert, Click, DeadLetter

Role = Literal["open", "read", "admin"]

MAX_K = 1000
MAX_LIST = 1000

Text = Annotated[str, Field(min_length=1, max_length=200)]
Note = Annotated[str, Field(max_length=2000)]
#: One value, or a list meaning "any of".
FilterValue = Text | Annotated[list[Text], Field(min_length=1, max_length=100)]


class JsonBody(BaseModel):
    """A JSON request body: strict types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class TextFields(BaseModel):
    """Query-string or multipart form fields: text converted to the declared types."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchFilter(JsonBody):
    """Exact matches on the indexed record; a list means any of its values."""

    category: FilterValue | None = None
    seller_id: FilterValue | None = None
    listing_id: FilterValue | None = None


class SearchById(JsonBody):
    """``POST /search`` with a JSON body: more like an indexed image."""

    image_id: Text
    k: int = Field(default=10, ge=1, le=MAX_K)
    filter: SearchFilter | None = None
    user_id: Text | None = None
    session_id: Text | None = None


class SearchFields(TextFields):
    """``POST /search`` with an image: multipart form fields (beside the file field ``image``),
    or query parameters of a raw ``image/*`` body."""

    k: int = Field(default=10, ge=1, le=MAX_K)
    category: Text | None = None
    seller_id: Text | None = None
    listing_id: Text | None = None
    user_id: Text | None = None
    session_id: Text | None = None


class VectorsRequest(JsonBody):
    """``POST /vectors``: stored vectors (or, with ``payloads``, records) of indexed images."""

    version: Text
    image_ids: list[Text] = Field(max_length=MAX_LIST)
    payloads: bool = False


class DeadLettersQuery(TextFields):
    limit: int = Field(default=50, ge=1, le=MAX_LIST)


class LearnQuery(TextFields):
    limit: int = Field(default=20, ge=1, le=MAX_LIST)


class AlertsQuery(TextFields):
    seller_id: Text | None = None
    category: Text | None = None
    status: Literal["open", "confirmed", "dismissed"] | None = None
    limit: int = Field(default=50, ge=1, le=MAX_LIST)


class ReviewRequest(JsonBody):
    decision: Literal["confirmed", "dismissed"]
    note: Note | None = None


class ExemplarFields(TextFields):
    """``POST /exemplars``: multipart fields beside the file field ``image``."""

    category: Text
    exemplar_id: Text | None = None


class RolloutStatusQuery(TextFields):
    quick: bool = False


class RolloutStart(JsonBody):
    encoder: Annotated[str, Field(min_length=1, max_length=4096)]


class RolloutPromote(JsonBody):
    force: bool = False
    eval_dir: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


class RolloutRetire(JsonBody):
    drop: bool = False
    anchor: bool = False  # retire the anchor version instead of the previous one


class NoFields(JsonBody):
    """A body that carries nothing (empty, or ``{}``)."""


class ThumbnailQuery(TextFields):
    size: int = Field(default=160, ge=32, le=512, description="Longest side, in pixels.")


# --- answers -------------------------------------------------------------------------------------


class Answer(BaseModel):
    """A JSON answer (documentation, and what tests check real answers against)."""

    model_config = ConfigDict(extra="forbid")


class ErrorAnswer(Answer):
    """Every error, whatever its status."""

    error: str


class SearchResult(Answer):
    """One result: the indexed record's fields (ids, category, attributes, source, ...)."""

    model_config = ConfigDict(extra="allow")

    image_id: str
    score: float
    rank: int = Field(ge=1)
    ranked_by: str | None = Field(
        default=None,
        description="The model version that placed it: the serving one, or the anchor's for "
        "the places LOOKALIKE_SEARCH_ANCHOR_SLOTS keeps (its score is then the anchor's).",
    )
    category: str | None = None
    seller_id: str | None = None
    listing_id: str | None = None


class SearchAnswer(Answer):
    search_id: str = Field(description="Name it in POST /clicks.")
    model_version: str
    query: dict = Field(description="type (image or image_id), k, filter, user and session.")
    results: list[SearchResult]
    logged: bool = Field(description="false: Kafka did not take the SearchServed record in time.")


class ClickAnswer(Answer):
    accepted: bool
    click_id: str


class HealthAnswer(Answer):
    status: Literal["ok"]


class Check(Answer):
    ok: bool
    reason: str | None = None
    failing_seconds: float | None = None


class ReadyAnswer(Answer):
    ready: bool
    checks: dict[str, Check]
    error: str | None = Field(default=None, description="When not ready: what fails, and why.")


class StoredAlert(CategoryAlert):
    """An alert as the worker keeps it: the alert, and its review."""

    status: Literal["open", "confirmed", "dismissed"]
    reviewed_at: str | None = None
    note: str | None = None


class ReviewedAlert(StoredAlert):
    index_corrected: bool = Field(description="A confirmed alert corrected the category.")


class AlertsAnswer(Answer):
    alerts: list[StoredAlert]


class DeadLettersAnswer(Answer):
    dead_letters: list[DeadLetter]


JSON = "application/json"
HTML = "text/html"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    role: Role
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    form: type[BaseModel] | None = None
    #: File fields of a multipart form (beside the ``form`` model's text fields).
    files: tuple[str, ...] = ()
    #: A media range the route also takes as a raw body (parameters in the query string).
    raw_body: str | None = None
    answer: type[BaseModel] | None = None
    #: The success status and the media types of a successful answer (errors are always JSON).
    status: int = 200
    produces: tuple[str, ...] = (JSON,)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", "open", "liveness: the process answers", answer=HealthAnswer),
    Route(
        "GET",
        "/ready",
        "open",
        "readiness: broker, index and encoder usable, or why not (503)",
        answer=ReadyAnswer,
    ),
    Route(
        "POST",
        "/search",
        "read",
        "what looks like this: an image (multipart or raw body) or an indexed image id",
        body=SearchById,
        query=SearchFields,
        form=SearchFields,
        files=("image",),
        raw_body="image/*",
        answer=SearchAnswer,
    ),
    Route("GET", "/images/{image_id}", "read", "the indexed record of one image"),
    Route(
        "GET",
        "/thumbnails/{image_id}",
        "read",
        "a JPEG thumbnail of an indexed image (made from its kept bytes or its source, cached)",
        query=ThumbnailQuery,
        produces=("image/jpeg",),
    ),
    Route(
        "POST",
        "/clicks",
        "read",
        "a buyer clicked a search result",
        body=Click,
        answer=ClickAnswer,
        status=202,
    ),
    Route(
        "GET",
        "/metrics",
        "read",
        "Prometheus metrics (text exposition format)",
        produces=("text/plain",),
    ),
    Route("GET", "/stats", "admin", "indexed images, dead letters, worker counters, readiness"),
    Route(
        "GET",
        "/dead-letters",
        "admin",
        "the latest dead letters",
        query=DeadLettersQuery,
        answer=DeadLettersAnswer,
    ),
    Route("POST", "/vectors", "admin", "stored vectors or records by id", body=VectorsRequest),
    Route("GET", "/versions", "admin", "the model-version registry"),
    Route(
        "GET",
        "/learn",
        "admin",
        "the learning loop's latest decisions, newest first (`lookalike learn status`)",
        query=LearnQuery,
    ),
    Route(
        "GET",
        "/alerts",
        "admin",
        "category alerts, latest first",
        query=AlertsQuery,
        answer=AlertsAnswer,
    ),
    Route("GET", "/alerts/{alert_id}", "admin", "one category alert", answer=StoredAlert),
    Route(
        "POST",
        "/alerts/{alert_id}/review",
        "admin",
        "confirm or dismiss (a confirmed alert corrects the category in the index)",
        body=ReviewRequest,
        answer=ReviewedAlert,
    ),
    Route("GET", "/exemplars", "admin", "registered exemplars per category"),
    Route(
        "POST",
        "/exemplars",
        "admin",
        "register an example image",
        form=ExemplarFields,
        files=("image",),
    ),
    Route("GET", "/rollout/status", "admin", "rollout progress", query=RolloutStatusQuery),
    Route("POST", "/rollout/start", "admin", "start a candidate version", body=RolloutStart),
    Route("POST", "/rollout/promote", "admin", "serve the candidate", body=RolloutPromote),
    Route("POST", "/rollout/rollback", "admin", "serve the previous version", body=NoFields),
    Route("POST", "/rollout/abort", "admin", "drop the candidate", body=NoFields),
    Route("POST", "/rollout/retire", "admin", "stop writing the previous", body=RolloutRetire),
    Route("POST", "/rollout/anchor", "admin", "keep the previous as the anchor", body=NoFields),
    # The console and the API's description: pages and documents, no data, so open; the page
    # asks for a token when the API has them (see lookalike.console).
    Route("GET", "/", "open", "the operator's console, a web page", produces=(HTML,)),
    Route(
        "GET",
        "/console/{asset}",
        "open",
        "the console's script and style sheet",
        produces=("text/javascript", "text/css"),
    ),
    Route("GET", "/docs", "open", "this API's reference, a web page", produces=(HTML,)),
    Route("GET", "/openapi.json", "open", "this API's OpenAPI 3.1 document"),
)

_BY_KEY = {(route.method, route.path): route for route in ROUTES}


def route_for(method: str, path_pattern: str) -> Route | None:
    """The route of a request (its method and the path pattern it matched); HEAD is GET's."""
    return _BY_KEY.get(("GET" if method == "HEAD" else method, path_pattern))
