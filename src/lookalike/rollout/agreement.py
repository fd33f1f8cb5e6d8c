"""How much a candidate version agrees with the serving one, on what users actually searched.

* recent searches: the worker remembers its last searches by image id (query id and the ids it
  served) and the clicks reported on them (POST /clicks); the candidate answers the same
  queries and we report overlap@k with what was served, and how many clicked results the
  candidate also ranks in its top k.
* a sample of indexed images: each searched by id in both versions, overlap@k.

Overlap@k = |top-k(serving) ∩ top-k(candidate)| / k, averaged over queries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..index import VectorIndex


@dataclass
class _Served:
    query_image_id: str
    results: list[str]
    clicked: set[str] = field(default_factory=set)


class RecentSearches:
    """The last ``size`` by-id searches the API answered, with their clicks (in memory)."""

    def __init__(self, size: int = 500) -> None:
        self.size = size
        self._searches: OrderedDict[str, _Served] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, response: dict[str, Any]) -> None:
        query = response.get("query", {})
        if query.get("type") != "image_id":
            return  # an uploaded query image is not kept, so the candidate cannot re-run it
        with self._lock:
            self._searches[response["search_id"]] = _Served(
                query["image_id"], [r["image_id"] for r in response["results"]]
            )
            while len(self._searches) > self.size:
                self._searches.popitem(last=False)

    def click(self, search_id: str, image_id: str) -> None:
        with self._lock:
            if (served := self._searches.get(search_id)) is not None:
                served.clicked.add(image_id)

    def snapshot(self) -> list[_Served]:
        with self._lock:
            return list(self._searches.values())


def _top_ids(index: VectorIndex, version: str, image_id: str, k: int) -> list[str] | None:
    record = index.get(version, image_id, with_vector=True)
    if record is None:
        return None
    hits = index.search(version, record["vector"], k, exclude_image_ids=[image_id])
    return [h.image_id for h in hits]


def agreement(
    index: VectorIndex,
    serving: str,
    candidate: str,
    recent: RecentSearches,
    sample_ids: list[str],
    k: int = 10,
) -> dict[str, Any]:
    overlaps, click_hits, clicks = [], 0, 0
    for served in recent.snapshot():
        top = _top_ids(index, candidate, served.query_image_id, k)
        if top is None or not served.results:
            continue
        overlaps.append(len(set(top) & set(served.results[:k])) / k)
        clicks += len(served.clicked)
        click_hits += len(served.clicked & set(top))
    sample = []
    for image_id in sample_ids:
        a, b = _top_ids(index, serving, image_id, k), _top_ids(index, candidate, image_id, k)
        if a is not None and b is not None:
            sample.append(len(set(a) & set(b)) / k)
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {
        "k": k,
        "recent_searches": {
            "n": len(overlaps),
            f"overlap@{k}": mean(overlaps),
            "clicks": clicks,
            f"clicked_in_candidate_top{k}": round(click_hits / clicks, 4) if clicks else None,
        },
        "sample": {"n": len(sample), f"overlap@{k}": mean(sample)},
    }
