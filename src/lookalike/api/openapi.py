"""``/openapi.json``: an OpenAPI 3.1 document generated from the route table and the pydantic
models that validate the requests (:mod:`.models`), so it cannot drift from what the views
accept. Roles become security requirements (open routes need none) and an ``x-role`` on each
operation; every error answer is the one JSON shape ``{"error": "..."}``."""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .models import JSON, ROUTES, ErrorAnswer, Route

REF = "#/components/schemas/{model}"
PATH_PARAMETER = re.compile(r"{([^}]+)}")

ROLE_TEXT = {
    "open": "Open: no token needed.",
    "read": "Needs a read or an admin token (when the API has tokens).",
    "admin": "Needs an admin token (when the API has tokens).",
}
#: The errors a route may answer, beside its own success status.
ERRORS = {
    "400": "the request does not fit its model (the message names each field)",
    "401": "no valid bearer token",
    "403": "a read token on an admin route",
    "404": "not found (image, alert, model version, route)",
    "413": "a body over its limit",
    "503": "not ready: nothing serving, no encoder, the broker or a disk failing",
}


def _version() -> str:
    try:
        return version("lookalike")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0"


def _models(routes: tuple[Route, ...]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {"ErrorAnswer": ErrorAnswer}
    for route in routes:
        for model in (route.body, route.query, route.form, route.answer):
            if model is not None:
                found[model.__name__] = model
    return list(found.values())


def _schemas(routes: tuple[Route, ...]) -> dict[str, Any]:
    _, top = models_json_schema(
        [(model, "validation") for model in _models(routes)], ref_template=REF
    )
    return top.get("$defs", {})


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in PATH_PARAMETER.findall(route.path)
    ]
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template=REF)
        for name, field in route.query.model_fields.items():
            parameter = {
                "name": name,
                "in": "query",
                "required": field.is_required(),
                "schema": schema["properties"][name],
            }
            if field.description:
                parameter["description"] = field.description
            parameters.append(parameter)
    return parameters


def _form_schema(route: Route) -> dict[str, Any]:
    """The form model's text fields plus its file fields, in one object schema."""
    assert route.form is not None
    schema = route.form.model_json_schema(ref_template=REF)
    schema.pop("$defs", None)
    for name in route.files:
        schema["properties"][name] = {"type": "string", "format": "binary"}
    schema["required"] = [*schema.get("required", []), *route.files]
    return schema


def _request_body(route: Route) -> dict[str, Any] | None:
    content: dict[str, Any] = {}
    if route.body is not None:
        content[JSON] = {"schema": _ref(route.body)}
    if route.form is not None:
        content["multipart/form-data"] = {"schema": _form_schema(route)}
    if route.raw_body is not None:
        content[route.raw_body] = {"schema": {"type": "string", "format": "binary"}}
    if not content:
        return None
    # A body model whose fields all have defaults may be sent empty.
    required = route.form is not None or any(
        field.is_required() for field in (route.body.model_fields.values() if route.body else [])
    )
    return {"required": required, "content": content}


def _success(route: Route) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for media in route.produces:
        if media == JSON:
            schema = _ref(route.answer) if route.answer is not None else {"type": "object"}
        elif media.startswith("image/"):
            schema = {"type": "string", "format": "binary"}
        else:
            schema = {"type": "string"}
        content[media] = {"schema": schema}
    return {"description": route.summary, "content": content}


def _errors(route: Route) -> dict[str, str]:
    skip = set()
    if route.role == "open":
        skip |= {"401", "403"}
    if route.role != "admin":
        skip.add("403")
    if route.body is None and route.form is None and route.raw_body is None:
        skip.add("413")
    return {code: why for code, why in ERRORS.items() if code not in skip}


def _operation(route: Route) -> dict[str, Any]:
    name = re.sub(r"[^A-Za-z0-9]+", "_", f"{route.method} {route.path}").strip("_").lower()
    error = {"content": {JSON: {"schema": _ref(ErrorAnswer)}}}
    operation: dict[str, Any] = {
        "operationId": name or "root",
        "summary": route.summary,
        "description": ROLE_TEXT[route.role],
        "tags": [route.role],
        "x-role": route.role,
        "security": [] if route.role == "open" else [{"bearer": []}],
        "responses": {
            str(route.status): _success(route),
            **{code: {"description": why, **error} for code, why in _errors(route).items()},
        },
    }
    parameters = _parameters(route)
    if parameters:
        operation["parameters"] = parameters
    body = _request_body(route)
    if body is not None:
        operation["requestBody"] = body
    return operation


def openapi_document(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lookalike",
            "version": _version(),
            "description": "Visual search over a marketplace's image stream: search by image or "
            "id, clicks for the learning loop, category alerts, model rollouts, the pipeline's "
            "health. Send `Authorization: Bearer TOKEN` when the worker has tokens "
            "(LOOKALIKE_API_READ_TOKENS, LOOKALIKE_API_ADMIN_TOKENS).",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(routes),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "tags": [{"name": role, "description": text} for role, text in ROLE_TEXT.items()],
    }


@cache
def cached_document() -> dict[str, Any]:
    """The document of :data:`ROUTES` (built once per process)."""
    return openapi_document()
