"""Simulated buyers, so the whole click loop can run here: search with an image from a labelled
folder, then click results of the query's category, with a position bias.

The buyer model is a cascade: read the results from the top, continue to the next with
probability ``continue_prob`` (so rank r is seen with probability continue_prob^(r-1)); click a
seen result with probability ``click_relevant`` when its category matches the query's, else
``click_irrelevant``; after a click, keep reading with probability ``continue_after_click``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class BuyerModel:
    continue_prob: float = 0.85
    click_relevant: float = 0.9
    click_irrelevant: float = 0.02
    continue_after_click: float = 0.3

    def clicked_ranks(self, relevant: Sequence[bool], rng: random.Random) -> list[int]:
        ranks: list[int] = []
        for rank, is_relevant in enumerate(relevant, 1):
            if rank > 1 and rng.random() >= self.continue_prob:
                break
            if rng.random() < (self.click_relevant if is_relevant else self.click_irrelevant):
                ranks.append(rank)
                if rng.random() >= self.continue_after_click:
                    break
        return ranks


@dataclass
class SimulationReport:
    searches: int = 0
    searches_with_click: int = 0
    clicks: int = 0
    relevant_clicks: int = 0
    failed_searches: int = 0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "searches": self.searches,
            "searches_with_click": self.searches_with_click,
            "clicks": self.clicks,
            "relevant_clicks": self.relevant_clicks,
            "failed_searches": self.failed_searches,
            "ctr": round(self.searches_with_click / self.searches, 4) if self.searches else None,
            "errors": self.errors[:5],
        }


def simulate_clicks(
    client: httpx.Client,
    queries: Sequence[tuple[Path, str]],
    *,
    k: int = 10,
    buyer: BuyerModel | None = None,
    seed: int = 0,
    on_search: Callable[[], None] | None = None,
) -> SimulationReport:
    """Play one buyer per (image, category) query against a running API (``client`` has its
    base URL). Clicks go through ``POST /clicks`` like a front end's would."""
    buyer = buyer or BuyerModel()
    rng = random.Random(seed)
    report = SimulationReport()
    for number, (path, category) in enumerate(queries):
        session = f"sim-{seed}-{number}"
        response = client.post(
            "/search",
            files={"image": (path.name, path.read_bytes())},
            data={"k": str(k), "user_id": f"sim-buyer-{number % 97}", "session_id": session},
        )
        if on_search is not None:
            on_search()
        if response.status_code != 200:
            report.failed_searches += 1
            report.errors.append(f"{path}: HTTP {response.status_code} {response.text[:200]}")
            continue
        body = response.json()
        report.searches += 1
        results = body["results"]
        relevant = [r.get("category") == category for r in results]
        ranks = buyer.clicked_ranks(relevant, rng)
        report.searches_with_click += bool(ranks)
        for rank in ranks:
            result = results[rank - 1]
            reply = client.post(
                "/clicks",
                json={
                    "search_id": body["search_id"],
                    "image_id": result["image_id"],
                    "rank": rank,
                    "session_id": session,
                    "dwell_seconds": round(rng.uniform(2, 60), 1),
                },
            )
            reply.raise_for_status()
            report.clicks += 1
            report.relevant_clicks += relevant[rank - 1]
    return report
