"""The worker's composition root: everything one worker process holds, opened once before the
Faust worker starts and closed after it stops.

It builds the parts (index, version registry and encoders, fetcher, pipeline, validator,
search, click join, executors, rollout) and wires them; the logic lives in those parts. The
executors keep blocking work (inference, Qdrant, SQLite) off the event loop so Faust keeps
heart-beating and committing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from ..clicks import ClickJoin, PairFileWriter
from ..consumers import AlertStore, DeadLetterLedger
from ..encoders import Encoder, configure_threads, resolve_device
from ..events import EventLimits
from ..executors import WorkerExecutors
from ..health import Health
from ..images import BlobStore, ImageFetcher, ThumbnailCache, payload_bytes
from ..index import open_index
from ..indexing import ClockStore, IndexingPipeline
from ..metrics import ConsumerLag, Instruments
from ..rollout import BackfillInputs, Rollout, VersionRegistry, WorkerModels
from ..search import SearchService, ThumbnailService
from ..settings import Settings
from ..tuning import Tuning
from ..validation import CategoryValidator, ValidationSettings, add_exemplar, review_alert
from .counters import Counters

log = logging.getLogger(__name__)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        encoder: Encoder | None = None,
        encoder_loader: Callable[[str], Encoder] | None = None,
        *,
        encoder_processes: bool = False,
    ) -> None:
        """``encoder_processes``: run each version's encoder in a child process when the
        tuning says so (the worker; see encoders/process.py)."""
        self.settings = settings
        #: What is failing now, and why (GET /ready): reported by the broker monitor and by
        #: batches retrying an infrastructure error.
        self.health = Health()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        configure_threads(settings.torch_threads, reserve=1)
        self.index = open_index(settings)
        self.registry = VersionRegistry(self.index)
        self.clocks = ClockStore(self.index)
        self.blobs = BlobStore(settings.blobs_path, packs=settings.blob_packs)
        repaired = self.registry.reconcile(self.index.serving_version())
        if repaired:
            log.warning("version registry: %s (the worker stopped half-way)", repaired)
        #: Batch sizes, forward chunk, decode workers, the encoder's process: the settings, else
        #: chosen for the encoder's device and this machine's cores.
        device = encoder.device if encoder is not None else resolve_device(settings.device)
        self.tuning = Tuning.choose(settings, device.type)
        self._open_models(
            encoder, encoder_loader, separate=encoder_processes and self.tuning.encoder_process
        )
        log.info("throughput: %s", self.tuning.describe())
        self.fetcher = ImageFetcher.from_settings(settings)
        self.ledger = DeadLetterLedger(settings.ledger_path)
        self.alerts = AlertStore(settings.alerts_path)
        self.validator: CategoryValidator | None = self._make_validator()
        self.pipeline = self._make_pipeline()
        self.retarget()
        self.search = SearchService(
            self.encoder,
            self.index,
            settings.max_image_pixels,
            self.blobs if settings.keep_query_images else None,
            encoders=self.encoders,
            anchor=self._anchor_version,
            anchor_slots=settings.search_anchor_slots,
        )
        self.click_join = ClickJoin(
            settings.clicks_path, window=settings.click_window, grace=settings.click_grace
        )
        self.pair_files = PairFileWriter(settings.training_pairs_dir)
        self.thumbnails = self._make_thumbnails()
        self.executors = WorkerExecutors()
        self.counters = Counters()
        #: Histograms for /metrics; the consumer lag the worker measures every few seconds.
        self.instruments = Instruments()
        self.consumer_lag = ConsumerLag()
        self.rollout = self._make_rollout()

    def _anchor_version(self) -> str | None:
        record = self.registry.in_state("anchor")
        return record.version if record is not None else None

    def _open_models(
        self,
        encoder: Encoder | None,
        encoder_loader: Callable[[str], Encoder] | None,
        separate: bool,
    ) -> None:
        self.models = WorkerModels(
            self.settings,
            self.index,
            self.registry,
            injected=encoder,
            loader=encoder_loader,
            separate_processes=separate,
        )
        self.models.open()
        #: One encoder per written model version (serving, candidate, previous); shared.
        self.encoders = self.models.encoders
        serving = self.registry.serving()
        assert serving is not None
        self.encoder = self.encoders[serving.version]
        self._log_encoders()

    def _make_pipeline(self) -> IndexingPipeline:
        settings = self.settings
        return IndexingPipeline(
            self.encoder,
            self.index,
            self.fetcher,
            max_pixels=settings.max_image_pixels,
            decode_threads=self.tuning.decode_threads,
            decode_processes=self.tuning.decode_processes,
            validator=self.validator,
            clocks=self.clocks,
            blobs=self.blobs,
            limits=EventLimits.from_settings(settings),
        )

    def _make_thumbnails(self) -> ThumbnailService:
        settings = self.settings
        cache = ThumbnailCache(
            settings.thumbnails_path, settings.thumbnail_cache_bytes, settings.max_image_pixels
        )
        return ThumbnailService(self.search, self.index, self.fetcher, self.blobs, cache)

    def _make_rollout(self) -> Rollout:
        settings = self.settings
        return Rollout(
            self.index,
            self.registry,
            self.models,
            self.executors,
            BackfillInputs(
                read_source=partial(payload_bytes, fetcher=self.fetcher, blobs=self.blobs),
                decode_pool=self.pipeline.decode_pool,
                max_pixels=settings.max_image_pixels,
                page_size=settings.backfill_batch,
                chunk=self.tuning.inference_batch,
            ),
            on_versions_changed=self.retarget,
        )

    def _log_encoders(self) -> None:
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

    def _make_validator(self) -> CategoryValidator | None:
        if not self.settings.validation_enabled:
            return None
        return CategoryValidator(
            self.index,
            self.encoder.version,
            self.encoder.dim,
            ValidationSettings.from_settings(self.settings),
            worker=self.settings.worker_name,
            shared=self.settings.qdrant_url is not None,
        )

    def retarget(self) -> None:
        """Blocking; on the writer thread. Make the pipeline write every written version (and
        the validator follow the serving one) after a registry change."""
        written = self.registry.written()
        self.models.keep_only({r.version for r in written})
        serving = written[0]
        self.encoder = self.encoders[serving.version]
        if self.validator is not None and self.validator.version != serving.version:
            self.validator = self._make_validator()
            self.pipeline.validator = self.validator
        self.pipeline.set_targets(
            {r.version: self.encoders[r.version] for r in written}, serving.version
        )

    # --- what the API asks of the worker --------------------------------------------------------
    def review_alert(self, alert_id: str, decision: str, note: str | None) -> dict | None:
        """Blocking. A confirmed alert corrects the image's category in every version."""
        return review_alert(self.alerts, self.index, self.validator, alert_id, decision, note)

    def add_exemplar(self, data: bytes, category: str, exemplar_id: str | None) -> dict:
        """Blocking: decode, embed, register."""
        assert self.validator is not None
        return add_exemplar(
            self.validator,
            self.encoder,
            data,
            category,
            exemplar_id,
            self.settings.max_image_pixels,
        )

    def stats(self) -> dict[str, Any]:
        """Blocking (index counts): run in an executor."""
        index, counters = self.index, self.counters
        return {
            "serving_version": index.serving_version(),
            "encoder": self.encoder.describe(),
            "indexed": {v: index.count(v) for v in index.versions()},
            "index": index.describe(),
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
            "validation": dict(counters.verdicts),
            "online": self.click_join.online_metrics(),
            "clicks": self.click_join.counts()
            | {"training_pairs": len(self.pair_files), "pairs_dir": str(self.pair_files.root)},
            "consumer_lag": self.consumer_lag.snapshot(),
            "thumbnails": self.thumbnails.cache.usage(),
            "worker": {
                "started_at": counters.started_at,
                "uptime_seconds": round(time.time() - counters.started_at, 1),
                "events_consumed": counters.events_consumed,
                "images_indexed": counters.images_indexed,
                "images_updated": counters.images_updated,
                "images_removed": counters.images_removed,
                "stale_events": counters.stale_events,
                "backfill_embedded": self.rollout.embedded,
                "dead_letters": counters.dead_letters,
                "batches": counters.batches,
                "last_batch_seconds": round(counters.last_batch_seconds, 3),
            },
        }

    def close(self) -> None:
        self.executors.shutdown()
        self.pipeline.close()
        self.models.close()
        self.fetcher.close()
        self.ledger.close()
        self.blobs.close()
        self.alerts.close()
        self.click_join.close()
        self.index.close()
