"""What reviewers do with category validation: decide alerts, and register exemplars."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from ..consumers import AlertStore
from ..encoders import Encoder
from ..images import decode_image
from ..index import VectorIndex
from ..utc import utcnow_iso
from .validator import CategoryValidator

log = logging.getLogger(__name__)


def review_alert(
    alerts: AlertStore,
    index: VectorIndex,
    validator: CategoryValidator | None,
    alert_id: str,
    decision: str,
    note: str | None,
) -> dict[str, Any] | None:
    """Blocking. A confirmed alert corrects the image's category in every version (and in the
    validator's evidence). None when there is no such alert."""
    alert = alerts.get(alert_id)
    if alert is None:
        return None
    now = utcnow_iso()
    alerts.review(alert_id, decision, now, note)  # type: ignore[arg-type]
    corrected = False
    if decision == "confirmed":
        image_id, category = alert["image_id"], alert["predicted_category"]
        before = validator.states([image_id]).get(image_id) if validator is not None else None
        for version in index.versions():
            corrected |= index.update_payload(
                version,
                image_id,
                {
                    "category": category,
                    "declared_category": alert["declared_category"],
                    "category_corrected_at": now,
                },
            )
        if validator is not None:
            validator.set_category(image_id, category, before)
    log.info("alert %s %s (index corrected: %s)", alert_id, decision, corrected)
    return {**(alerts.get(alert_id) or {}), "index_corrected": corrected}


def add_exemplar(
    validator: CategoryValidator,
    encoder: Encoder,
    data: bytes,
    category: str,
    exemplar_id: str | None,
    max_pixels: int,
) -> dict[str, Any]:
    """Blocking: decode, embed with the serving encoder, register."""
    image = decode_image(data, max_pixels=max_pixels, target_size=encoder.preprocessing.resize)
    vector = encoder.embed_images([image])[0]
    exemplar_id = exemplar_id or "exemplar-" + hashlib.sha256(data).hexdigest()[:16]
    validator.add_exemplar(exemplar_id, category, vector)
    log.info("registered exemplar %s for category %r", exemplar_id, category)
    return {
        "exemplar_id": exemplar_id,
        "category": category,
        "exemplars": validator.exemplar_counts().get(category, 0),
    }
