"""SearchServed and Click wire models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lookalike.api import search_served
from lookalike.events import Click, SearchServed


def test_search_served_from_an_api_response() -> None:
    response = {
        "search_id": "s1",
        "model_version": "m-w1-p2",
        "query": {
            "type": "image_id",
            "image_id": "img-1",
            "k": 2,
            "filter": {},
            "user_id": "u",
            "session_id": None,
        },
        "results": [
            {"image_id": "a", "score": 0.9, "rank": 1},
            {"image_id": "b", "score": 0.8, "rank": 2},
        ],
    }
    served = search_served(response)
    assert served.query_image_id == "img-1" and served.user_id == "u"
    assert [(r.image_id, r.rank) for r in served.results] == [("a", 1), ("b", 2)]
    assert SearchServed.model_validate_json(served.model_dump_json()) == served


def test_click_validation() -> None:
    click = Click(search_id="s1", image_id="b", rank=2, dwell_seconds=3.0)
    assert Click.model_validate_json(click.model_dump_json()) == click
    assert click.click_id  # generated, so duplicates can be recognised downstream
    for bad in (
        {"search_id": "s1", "image_id": "b", "rank": 0},
        {"search_id": "s1", "rank": 1},
        {"search_id": "s1", "image_id": "b", "rank": 1, "dwell_seconds": -1},
        {"search_id": "s1", "image_id": "b", "rank": 1, "surprise": True},
    ):
        with pytest.raises(ValidationError):
            Click.model_validate(bad)
