"""Everything one worker process holds: encoder, index, fetcher, dead-letter ledger, counters.

Opened once before the Faust worker starts, closed after it stops. The executors keep blocking
work (inference, Qdrant, SQLite) off the event loop so Faust keeps heart-beating and committing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch

from ..consumers import AlertStore, DeadLetterLedger, QdrantIndex
from ..encoders import Encoder, configure_threads, load_encoder_from_settings
from ..errors import ConfigurationError
from ..images import ImageFetcher, decode_image
from ..search import SearchService
from ..settings import Settings
from ..validation import CategoryValidator, ValidationSettings
from .indexing import IndexingPipeline

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """Since this worker process started (durable totals come from Qdrant and the ledger)."""

    started_at: float = field(default_factory=time.time)
    events_consumed: int = 0
    images_indexed: int = 0
    images_updated: int = 0
    images_removed: int = 0
    #: Late or replayed events ignored because the index held a newer one for their image.
    stale_events: int = 0
    dead_letters: int = 0
    batches: int = 0
    last_batch_seconds: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)


def open_index(settings: Settings) -> QdrantIndex:
    try:
        return QdrantIndex.from_settings(settings)
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise ConfigurationError(
                f"{settings.qdrant_path} is open in another process (embedded Qdrant allows one): "
                "stop the other lookalike worker, or give this one another --data-dir"
            ) from None
        raise


class Runtime:
    def __init__(self, settings: Settings, encoder: Encoder | None = None) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        configure_threads(settings.torch_threads, reserve=1)
        self.encoder = encoder or load_encoder_from_settings(settings)
        if encoder is None:
            started = time.perf_counter()
            self.encoder.warm_up()
            log.info("encoder warmed up in %.1fs", time.perf_counter() - started)
        log.info(
            "encoder %s (%d dims) on %s, %s%s, %d torch threads",
            self.encoder.version,
            self.encoder.dim,
            self.encoder.device,
            self.encoder.precision,
            ", compiled" if self.encoder.compiled else "",
            torch.get_num_threads(),
        )
        self.index = open_index(settings)
        self.index.ensure_collection(self.encoder.version, self.encoder.dim)
        serving = self.index.serving_version()
        if serving is None:
            self.index.set_serving(self.encoder.version)
        elif serving != self.encoder.version:
            log.warning(
                "serving version is %s but this worker writes %s: searches will fail until a "
                "worker with the serving encoder runs",
                serving,
                self.encoder.version,
            )
        self.fetcher = ImageFetcher.from_settings(settings)
        self.ledger = DeadLetterLedger(settings.ledger_path)
        self.alerts = AlertStore(settings.alerts_path)
        self.validator: CategoryValidator | None = None
        if settings.validation_enabled:
            self.validator = CategoryValidator(
                self.index,
                self.encoder.version,
                self.encoder.dim,
                ValidationSettings(
                    threshold=settings.validation_threshold,
                    k=settings.validation_k,
                    min_examples=settings.validation_min_examples,
                    exclude_same_seller=settings.validation_exclude_same_seller,
                ),
                in_memory=settings.qdrant_url is None,
            )
        self.pipeline = IndexingPipeline(
            self.encoder,
            self.index,
            self.fetcher,
            max_pixels=settings.max_image_pixels,
            decode_threads=settings.decode_threads,
            validator=self.validator,
        )
        self.search = SearchService(self.encoder, self.index, settings.max_image_pixels)
        # One thread per pipeline stage, so consecutive batches overlap (prepare fans out to the
        # decode pool); API requests have their own threads so a search never queues behind a
        # whole batch's decoding.
        self.prepare_executor = ThreadPoolExecutor(1, thread_name_prefix="prepare")
        self.model_executor = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self.index_executor = ThreadPoolExecutor(1, thread_name_prefix="write")
        self.api_executor = ThreadPoolExecutor(2, thread_name_prefix="api")
        self.counters = Counters()

    def stats(self) -> dict[str, object]:
        """Blocking (Qdrant counts): run in an executor."""
        return {
            "serving_version": self.index.serving_version(),
            "encoder": self.encoder.describe(),
            "indexed": {v: self.index.count(v) for v in self.index.versions()},
            "dead_letters": self.ledger.count(),
            "dead_letters_by_stage": self.ledger.count_by_stage(),
            "alerts": self.alerts.counts(),
            "validation": dict(self.counters.verdicts),
            "worker": {
                "uptime_seconds": round(time.time() - self.counters.started_at, 1),
                "events_consumed": self.counters.events_consumed,
                "images_indexed": self.counters.images_indexed,
                "images_updated": self.counters.images_updated,
                "images_removed": self.counters.images_removed,
                "stale_events": self.counters.stale_events,
                "dead_letters": self.counters.dead_letters,
                "batches": self.counters.batches,
                "last_batch_seconds": round(self.counters.last_batch_seconds, 3),
            },
        }

    def review_alert(self, alert_id: str, decision: str, note: str | None) -> dict | None:
        """Blocking. A confirmed alert corrects the image's category in every version."""
        alert = self.alerts.get(alert_id)
        if alert is None:
            return None
        now = datetime.now(UTC).isoformat()
        self.alerts.review(alert_id, decision, now, note)  # type: ignore[arg-type]
        corrected = False
        if decision == "confirmed":
            for version in self.index.versions():
                corrected |= self.index.update_payload(
                    version,
                    alert["image_id"],
                    {
                        "category": alert["predicted_category"],
                        "declared_category": alert["declared_category"],
                        "category_corrected_at": now,
                    },
                )
            record = self.index.get(self.encoder.version, alert["image_id"], with_vector=True)
            if self.validator is not None and record is not None:
                self.validator.recategorize(
                    alert["image_id"], alert["predicted_category"], record["vector"]
                )
        log.info("alert %s %s (index corrected: %s)", alert_id, decision, corrected)
        return {**(self.alerts.get(alert_id) or {}), "index_corrected": corrected}

    def add_exemplar(self, data: bytes, category: str, exemplar_id: str | None) -> dict:
        """Blocking: decode, embed, register."""
        assert self.validator is not None
        image = decode_image(
            data,
            max_pixels=self.settings.max_image_pixels,
            target_size=self.encoder.preprocessing.resize,
        )
        vector = self.encoder.embed_images([image])[0]
        exemplar_id = exemplar_id or "exemplar-" + hashlib.sha256(data).hexdigest()[:16]
        self.validator.add_exemplar(exemplar_id, category, vector)
        log.info("registered exemplar %s for category %r", exemplar_id, category)
        return {
            "exemplar_id": exemplar_id,
            "category": category,
            "exemplars": self.validator.exemplar_counts().get(category, 0),
        }

    def close(self) -> None:
        for executor in (
            self.prepare_executor,
            self.model_executor,
            self.index_executor,
            self.api_executor,
        ):
            executor.shutdown(wait=True, cancel_futures=True)
        self.pipeline.close()
        self.fetcher.close()
        self.ledger.close()
        self.alerts.close()
        self.index.close()
