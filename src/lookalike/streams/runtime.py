"""Everything one worker process holds: encoder, index, fetcher, dead-letter ledger, counters.

Opened once before the Faust worker starts, closed after it stops. The executors keep blocking
work (inference, Qdrant, SQLite) off the event loop so Faust keeps heart-beating and committing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch

from ..blobs import BlobStore
from ..clicks import ClickJoin, PairFileWriter
from ..consumers import AlertStore, DeadLetterLedger, QdrantIndex
from ..encoders import Encoder, configure_threads, load_encoder
from ..errors import ConfigurationError
from ..images import ImageFetcher, decode_image
from ..lifecycle.clock import ClockStore
from ..lifecycle.versions import VersionRecord, VersionRegistry
from ..search import SearchService
from ..settings import Settings
from ..validation import CategoryValidator, ValidationSettings
from .indexing import IndexingPipeline
from .priority import PriorityExecutor
from .rollout import Rollout

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
    #: Images the rollout backfill embedded in this process.
    backfill_embedded: int = 0
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
    def __init__(
        self,
        settings: Settings,
        encoder: Encoder | None = None,
        encoder_loader: Callable[[str], Encoder] | None = None,
    ) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        configure_threads(settings.torch_threads, reserve=1)
        self._injected = {encoder.version: encoder} if encoder is not None else {}
        self._encoder_loader = encoder_loader
        self.index = open_index(settings)
        self.registry = VersionRegistry.for_index(self.index)
        self.clocks = ClockStore.for_index(self.index)
        self.blobs = BlobStore(settings.blobs_path)
        repaired = self.registry.reconcile(self.index.serving_version())
        if repaired:
            log.warning("version registry: %s (the worker stopped half-way)", repaired)
        #: One encoder per written model version (serving, candidate, previous).
        self.encoders: dict[str, Encoder] = {}
        if self.registry.serving() is None:
            self._bootstrap(encoder)
        for record in self.registry.written():
            self.index.ensure_collection(record.version, record.dim)
            if record.version not in self.encoders:
                self.encoders[record.version] = self.encoder_for(record)
        serving = self.registry.serving()
        assert serving is not None
        self.encoder = self.encoders[serving.version]
        if settings.encoder not in {r.encoder for r in self.registry.written()}:
            log.warning(
                "LOOKALIKE_ENCODER=%s is not a written model version; the version registry "
                "decides (serving: %s from %s). To move to it: lookalike rollout start %s",
                settings.encoder,
                serving.version,
                serving.encoder,
                settings.encoder,
            )
        for version, model in self.encoders.items():
            log.info(
                "encoder %s (%d dims) on %s, %s%s, %d torch threads",
                version,
                model.dim,
                model.device,
                model.precision,
                ", compiled" if model.compiled else "",
                torch.get_num_threads(),
            )
        self.fetcher = ImageFetcher.from_settings(settings)
        self.ledger = DeadLetterLedger(settings.ledger_path)
        self.alerts = AlertStore(settings.alerts_path)
        self.validator: CategoryValidator | None = self._make_validator()
        self.pipeline = IndexingPipeline(
            self.encoder,
            self.index,
            self.fetcher,
            max_pixels=settings.max_image_pixels,
            decode_threads=settings.decode_threads,
            validator=self.validator,
            clocks=self.clocks,
            blobs=self.blobs,
        )
        self.retarget()
        self.search = SearchService(
            self.encoder,
            self.index,
            settings.max_image_pixels,
            self.blobs if settings.keep_query_images else None,
            encoders=self.encoders,
        )
        self.click_join = ClickJoin(
            settings.clicks_path, window=settings.click_window, grace=settings.click_grace
        )
        self.pair_files = PairFileWriter(settings.training_pairs_dir)
        # One thread per pipeline stage, so consecutive batches overlap (prepare fans out to the
        # decode pool); API requests have their own threads so a search never queues behind a
        # whole batch's decoding. The model thread runs live batches before backfill chunks.
        self.prepare_executor = ThreadPoolExecutor(1, thread_name_prefix="prepare")
        self.model_executor = PriorityExecutor("embed")
        self.index_executor = ThreadPoolExecutor(1, thread_name_prefix="write")
        self.api_executor = ThreadPoolExecutor(2, thread_name_prefix="api")
        # Click join and pair files: one thread, so SQLite and file appends stay in order.
        self.clicks_executor = ThreadPoolExecutor(1, thread_name_prefix="clicks")
        self.backfill_executor = ThreadPoolExecutor(1, thread_name_prefix="backfill")
        self.counters = Counters()
        self.rollout = Rollout(self)

    # --- model versions ----------------------------------------------------------------------
    def load_encoder(self, spec: str) -> Encoder:
        """Blocking: build and warm up the encoder ``spec`` (a name or a .pt path)."""
        if self._encoder_loader is not None:
            return self._encoder_loader(spec)
        s = self.settings
        model = load_encoder(
            spec,
            s.device,
            weights=s.encoder_weights if spec == s.encoder else None,
            download=s.download_weights,
            precision=s.precision,
            compile=s.compile,
            chunk=s.inference_batch,
        )
        started = time.perf_counter()
        model.warm_up()
        log.info("encoder %s warmed up in %.1fs", model.version, time.perf_counter() - started)
        return model

    def encoder_for(self, record: VersionRecord) -> Encoder:
        model = self._injected.get(record.version) or self.load_encoder(record.encoder)
        if model.version != record.version:
            raise ConfigurationError(
                f"model version {record.version} was built with encoder {record.encoder!r}, "
                f"which now loads as {model.version} (its weights changed): restore them, or "
                "abort/retire that version"
            )
        return model

    def _bootstrap(self, injected: Encoder | None) -> None:
        """An index without a registry: the configured encoder becomes the serving version."""
        first = injected or self.load_encoder(self.settings.encoder)
        alias = self.index.serving_version()
        if alias is not None and alias != first.version:
            raise ConfigurationError(
                f"the serving alias points at {alias}, but LOOKALIKE_ENCODER="
                f"{self.settings.encoder} is {first.version}: start the worker with the "
                "serving encoder, then `lookalike rollout start` the new one"
            )
        self.index.ensure_collection(first.version, first.dim)
        if alias is None:
            self.index.set_serving(first.version)
        self.registry.bootstrap(first.version, self.settings.encoder, first.dim)
        self.encoders[first.version] = first
        log.info("version registry: %s is the serving version", first.version)

    def _make_validator(self) -> CategoryValidator | None:
        if not self.settings.validation_enabled:
            return None
        s = self.settings
        return CategoryValidator(
            self.index,
            self.encoder.version,
            self.encoder.dim,
            ValidationSettings(
                threshold=s.validation_threshold,
                k=s.validation_k,
                min_examples=s.validation_min_examples,
                exclude_same_seller=s.validation_exclude_same_seller,
            ),
            in_memory=s.qdrant_url is None,
        )

    def retarget(self) -> None:
        """Blocking; on the writer thread. Make the pipeline write every written version (and
        the validator follow the serving one) after a registry change."""
        written = self.registry.written()
        for stale in set(self.encoders) - {r.version for r in written}:
            del self.encoders[stale]  # in place: the search service shares this dict
        serving = written[0]
        self.encoder = self.encoders[serving.version]
        if self.validator is not None and self.validator.version != serving.version:
            self.validator = self._make_validator()
            self.pipeline.validator = self.validator
        self.pipeline.set_targets(
            {r.version: self.encoders[r.version] for r in written}, serving.version
        )

    def stats(self) -> dict[str, object]:
        """Blocking (Qdrant counts): run in an executor."""
        return {
            "serving_version": self.index.serving_version(),
            "encoder": self.encoder.describe(),
            "indexed": {v: self.index.count(v) for v in self.index.versions()},
            "versions": [
                {k: v for k, v in r.as_dict().items() if k not in ("backfill", "evaluation")}
                for r in self.registry.all()
            ],
            "written_versions": list(self.pipeline.targets),
            "rollout": self.rollout.status(quick=True),
            "tombstones": self.clocks.tombstones(),
            "dead_letters": self.ledger.count(),
            "dead_letters_by_stage": self.ledger.count_by_stage(),
            "alerts": self.alerts.counts(),
            "validation": dict(self.counters.verdicts),
            "online": self.click_join.online_metrics(),
            "clicks": self.click_join.counts()
            | {"training_pairs": len(self.pair_files), "pairs_dir": str(self.pair_files.root)},
            "worker": {
                "uptime_seconds": round(time.time() - self.counters.started_at, 1),
                "events_consumed": self.counters.events_consumed,
                "images_indexed": self.counters.images_indexed,
                "images_updated": self.counters.images_updated,
                "images_removed": self.counters.images_removed,
                "stale_events": self.counters.stale_events,
                "backfill_embedded": self.counters.backfill_embedded,
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
            self.clicks_executor,
            self.backfill_executor,
        ):
            executor.shutdown(wait=True, cancel_futures=True)
        self.pipeline.close()
        self.fetcher.close()
        self.ledger.close()
        self.alerts.close()
        self.click_join.close()
        self.index.close()
