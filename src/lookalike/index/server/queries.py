"""How the server backend turns lookalike's queries and collections into qdrant-client models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qdrant_client import models

from ..base import Hit, Quantization, check_conditions

#: Filters matching fewer points than this are answered exactly from the payload index (the
#: planner's full-scan threshold, in KB of vectors, is derived from it); larger ones by HNSW.
EXACT_MAX_POINTS = 5_000


def build_filter(conditions: Mapping[str, Any] | None) -> models.Filter | None:
    """{"category": "shoes", "seller_id": ["a", "b"]} -> a Qdrant filter (lists mean any-of)."""
    must: list[models.Condition] = []
    for key, value in check_conditions(conditions).items():
        match = (
            models.MatchAny(any=list(value))
            if isinstance(value, list)
            else models.MatchValue(value=value)
        )
        must.append(models.FieldCondition(key=key, match=match))
    return models.Filter(must=must) if must else None


def collection_config(dim: int | None, quantization: Quantization) -> dict[str, Any]:
    """create_collection's arguments; ``dim=None``: payload-only records."""
    if not dim:
        return {"vectors_config": {}}
    return {
        "vectors_config": models.VectorParams(size=dim, distance=models.Distance.COSINE),
        "hnsw_config": models.HnswConfigDiff(
            full_scan_threshold=max(1, EXACT_MAX_POINTS * dim * 4 // 1024)
        ),
        "quantization_config": models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, quantile=0.99, always_ram=True
            )
        )
        if quantization == "int8"
        else None,
    }


def search_params(
    quantization: Quantization, positive_filter: bool, exact: bool = False
) -> models.SearchParams:
    if exact:
        return models.SearchParams(exact=True)
    return models.SearchParams(
        # ACORN keeps a filtered HNSW search from coming back short (qdrant/qdrant#3094).
        acorn=models.AcornSearchParams(enable=True) if positive_filter else None,
        quantization=models.QuantizationSearchParams(rescore=True, oversampling=2.0)
        if quantization == "int8"
        else None,
    )


def as_hit(point: models.ScoredPoint) -> Hit:
    payload = point.payload or {}
    return Hit(str(payload.get("image_id")), point.score, payload)


def as_record(record: models.Record, with_vector: bool) -> dict[str, Any]:
    result: dict[str, Any] = dict(record.payload or {})
    if with_vector:
        result["vector"] = list(record.vector)
    return result
