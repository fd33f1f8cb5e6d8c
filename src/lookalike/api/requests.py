"""Reading requests: bodies within their byte limits, JSON bodies, query strings and multipart
forms validated by the models of :mod:`.models`, search requests, and the logged form of an
answered search. Every problem becomes an :class:`~lookalike.errors.InvalidRequest` that says
what is expected."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import BodyTooLarge, InvalidRequest
from ..events import SearchServed, ServedResult, describe_validation_error
from ..search import SearchRequest
from .models import SearchById, SearchFields

ModelT = TypeVar("ModelT", bound=BaseModel)

CHUNK = 64 * 1024
NEEDS_AN_IMAGE = (
    "a search needs an image (multipart field 'image', or an image/* body) or a JSON body "
    '{"image_id": "...", "k": 10, "filter": {...}}'
)
IMAGE_TYPES = ("image/", "application/octet-stream")
FORM_TYPES = ("multipart/", "application/x-www-form-urlencoded")


def _invalid(what: str, exc: ValidationError) -> InvalidRequest:
    if any(err["type"] == "json_invalid" for err in exc.errors()):
        return InvalidRequest(f"{what} is not valid JSON: {describe_validation_error(exc)}")
    return InvalidRequest(f"invalid {what}: {describe_validation_error(exc)}")


async def read_body(request: Any, limit: int, setting: str) -> bytes:
    """The body, at most ``limit`` bytes *after* any Content-Encoding is undone (aiohttp
    inflates gzip/deflate in bounded chunks; we stop reading at the limit, so a small
    compressed body cannot inflate past it)."""
    declared = request.content_length
    if declared is not None and declared > limit and not request.headers.get("Content-Encoding"):
        raise BodyTooLarge(limit, setting)
    body = bytearray()
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(limit, setting)
    except BodyTooLarge:
        raise
    except Exception as exc:  # a body that is cut short or not decodable (bad gzip)
        raise InvalidRequest(f"cannot read the request body: {type(exc).__name__}: {exc}") from None
    return bytes(body)


def parse_json(model: type[ModelT], raw: bytes, what: str = "request body") -> ModelT:
    """``raw`` (empty means ``{}``) as ``model``, or an InvalidRequest naming each problem."""
    try:
        return model.model_validate_json(raw.strip() or b"{}")
    except ValidationError as exc:
        raise _invalid(what, exc) from None


def parse_fields(model: type[ModelT], fields: Any, what: str = "query parameters") -> ModelT:
    try:
        return model.model_validate(dict(fields))
    except ValidationError as exc:
        raise _invalid(what, exc) from None


async def read_form(request: Any) -> tuple[dict[str, str], dict[str, bytes]]:
    """A multipart (or url-encoded) form: its text fields and its files' bytes. Its size is
    capped by aiohttp's client_max_size (see :func:`.middleware.web_options`)."""
    try:
        form = await request.post()
    except InvalidRequest:
        raise
    except Exception as exc:
        status = getattr(exc, "status", None)
        if status == 413:
            raise  # aiohttp's own "too large": the middleware answers it as JSON
        raise InvalidRequest(f"malformed form body: {type(exc).__name__}: {exc}") from None
    texts: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for name, value in form.items():
        if hasattr(value, "file"):
            files[name] = value.file.read()
        elif name in texts:
            raise InvalidRequest(f"form field {name!r} is given twice")
        else:
            texts[name] = str(value)
    return texts, files


def _filters(fields: SearchFields) -> dict[str, Any]:
    return {
        key: value
        for key in ("category", "seller_id", "listing_id")
        if (value := getattr(fields, key)) is not None
    }


async def parse_search_request(
    request: Any, *, max_image_bytes: int, max_json_bytes: int
) -> SearchRequest:
    """A SearchRequest from a multipart upload (file field ``image``), a raw image body
    (``image/*``, parameters in the query string) or a JSON body ``{"image_id": ...}``."""
    content_type = request.content_type or ""
    if content_type.startswith(FORM_TYPES):
        texts, files = await read_form(request)
        image = files.pop("image", None)
        if image is None:
            image = files.pop("file", None)  # the field name older clients used
        if image is None or files:
            raise InvalidRequest("a form search needs one multipart file field named 'image'")
        fields = parse_fields(SearchFields, texts, "form fields")
        return SearchRequest(
            k=fields.k,
            conditions=_filters(fields),
            image_bytes=image,
            user_id=fields.user_id,
            session_id=fields.session_id,
        )
    if content_type.startswith(IMAGE_TYPES):
        fields = parse_fields(SearchFields, request.query)
        body = await read_body(request, max_image_bytes, "LOOKALIKE_MAX_IMAGE_BYTES")
        if not body:  # also what a POST without any body looks like to aiohttp
            raise InvalidRequest(NEEDS_AN_IMAGE)
        return SearchRequest(
            k=fields.k,
            conditions=_filters(fields),
            image_bytes=body,
            user_id=fields.user_id,
            session_id=fields.session_id,
        )
    raw = await read_body(request, max_json_bytes, "LOOKALIKE_API_MAX_JSON_BYTES")
    if not raw.strip():
        raise InvalidRequest(NEEDS_AN_IMAGE)
    by_id = parse_json(SearchById, raw, "JSON search")
    return SearchRequest(
        k=by_id.k,
        conditions=by_id.filter.model_dump(exclude_none=True) if by_id.filter else {},
        image_id=by_id.image_id,
        user_id=by_id.user_id,
        session_id=by_id.session_id,
    )


def search_served(response: dict[str, Any]) -> SearchServed:
    """The SearchServed event of an answered search (logged before the answer is sent)."""
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
