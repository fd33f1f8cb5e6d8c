"""Reading requests: search bodies (multipart upload, raw image, JSON by id), JSON objects,
and the logged form of an answered search."""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidRequest
from ..events import SearchServed, ServedResult
from ..search import SearchRequest


def _filters_from(mapping: Any) -> dict[str, Any]:
    return {k: mapping[k] for k in ("category", "seller_id", "listing_id") if mapping.get(k)}


def _who(mapping: Any) -> dict[str, str | None]:
    """Who searched (optional): logged with the search so clicks can be tied to sessions."""
    return {
        key: (str(mapping[key]) if mapping.get(key) else None) for key in ("user_id", "session_id")
    }


def _k(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"k must be a whole number, not {value!r}") from None


async def json_object(request: Any) -> dict[str, Any]:
    """A request's JSON body as an object ({} when empty or not an object)."""
    try:
        body = json.loads(await request.read() or b"{}")
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    return body if isinstance(body, dict) else {}


async def parse_search_request(request: Any) -> SearchRequest:
    """Build a SearchRequest from a multipart upload, a raw image body or a JSON body."""
    content_type = request.content_type or ""
    if content_type.startswith("multipart/"):
        form = await request.post()
        upload = form.get("image") or form.get("file")
        if upload is None or not hasattr(upload, "file"):
            raise InvalidRequest("multipart search needs a file field named 'image'")
        return SearchRequest(
            k=_k(form.get("k", 10)),
            conditions=_filters_from(form),
            image_bytes=upload.file.read(),
            **_who(form),
        )
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        body = await request.read()
        query = request.query
        return SearchRequest(
            k=_k(query.get("k", 10)),
            conditions=_filters_from(query),
            image_bytes=body,
            **_who(query),
        )
    body = await json_object(request)
    if not isinstance(body.get("image_id"), str):
        raise InvalidRequest('JSON search needs {"image_id": "...", "k": 10, "filter": {...}}')
    conditions = body.get("filter") or {}
    if not isinstance(conditions, dict):
        raise InvalidRequest('\'filter\' must be an object like {"category": "shoes"}')
    return SearchRequest(
        k=_k(body.get("k", 10)), conditions=conditions, image_id=body["image_id"], **_who(body)
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
