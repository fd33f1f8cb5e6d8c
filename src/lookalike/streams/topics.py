"""Topic names, all under one prefix (LOOKALIKE_TOPIC_PREFIX).

uploads       ImageUploaded events, keyed by image id (so one image's events stay ordered)
dead-letters  DeadLetter records: the original payload, the reason and the failing stage
alerts        CategoryAlert records: uploads that do not look like their declared category
searches      SearchServed records: every search the API answered, with what it showed
clicks        Click records reported by the marketplace front end
training-pairs TrainingPair records: clicks joined to their searches
"""

from __future__ import annotations

from ..settings import Settings

UPLOADS = "uploads"
DEAD_LETTERS = "dead-letters"
ALERTS = "alerts"
SEARCHES = "searches"
CLICKS = "clicks"
TRAINING_PAIRS = "training-pairs"


def topic_names(settings: Settings) -> dict[str, str]:
    return {
        name: settings.topic(name)
        for name in (UPLOADS, DEAD_LETTERS, ALERTS, SEARCHES, CLICKS, TRAINING_PAIRS)
    }
