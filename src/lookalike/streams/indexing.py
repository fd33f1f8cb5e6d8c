"""The indexing step of the pipeline, independent of Faust so it can be tested on its own.

``IndexingPipeline.process`` takes a micro-batch of raw upload messages and, blocking (it is
run in an executor, never on the event loop): parses each event, fetches and decodes its image
in a thread pool, embeds the good ones in one forward pass, and upserts them into every target
model version. Bad inputs come back as dead letters; infrastructure failures (Qdrant down)
raise, so the caller retries and the offsets stay uncommitted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch

from ..consumers.qdrant_index import IndexPoint, QdrantIndex
from ..encoders.base import Encoder
from ..errors import ImageRejected
from ..events import CategoryAlert, DeadLetter, ImageUploaded, parse_upload
from ..images import ImageFetcher, decode_image, original_size
from ..validation import CategoryValidator, Upload

log = logging.getLogger(__name__)

#: Errors that say the machine is short of memory, not that an image is bad.
_RESOURCE_ERRORS: tuple[type[BaseException], ...] = (MemoryError, torch.cuda.OutOfMemoryError)


@dataclass(frozen=True)
class InboundMessage:
    """One message value and where it came from (for dead letters and logs)."""

    value: bytes
    topic: str
    partition: int
    offset: int


@dataclass
class _Prepared:
    message: InboundMessage
    event: ImageUploaded
    tensor: torch.Tensor
    width: int
    height: int
    sha256: str


@dataclass
class BatchResult:
    indexed: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Seconds spent per stage (prepare = parse + fetch + decode + preprocess), for logs/stats.
    timings: dict[str, float] = field(default_factory=dict)
    #: Category validation: outcome counts, and the alerts to publish.
    verdicts: dict[str, int] = field(default_factory=dict)
    alerts: list[CategoryAlert] = field(default_factory=list)
    #: Between stages: the images still going, and (after embed) their vectors.
    prepared: list[_Prepared] = field(default_factory=list, repr=False)
    vectors: list = field(default_factory=list, repr=False)


def dead_letter_for(
    message: InboundMessage, error: Exception, event: ImageUploaded | None = None
) -> DeadLetter:
    stage = error.stage if isinstance(error, ImageRejected) else "embed"
    reason = (
        error.reason if isinstance(error, ImageRejected) else f"{type(error).__name__}: {error}"
    )
    payload, encoding = DeadLetter.encode_payload(message.value)
    return DeadLetter(
        reason=reason,
        stage=stage,
        error_type=type(error).__name__,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        event_id=event.event_id if event else None,
        image_id=event.image_id if event else None,
        payload=payload,
        payload_encoding=encoding,
    )


class IndexingPipeline:
    def __init__(
        self,
        encoder: Encoder,
        index: QdrantIndex,
        fetcher: ImageFetcher,
        *,
        max_pixels: int,
        decode_threads: int = 4,
        versions: Sequence[str] | None = None,
        validator: CategoryValidator | None = None,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.fetcher = fetcher
        self.max_pixels = max_pixels
        # Model versions every upload is written to (the rollout issue adds a candidate here).
        self.versions = list(versions or [encoder.version])
        self.validator = validator
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")

    def close(self) -> None:
        self._decode_pool.shutdown(wait=True, cancel_futures=True)

    # --- stages ------------------------------------------------------------------------------
    def _prepare(self, message: InboundMessage) -> _Prepared | DeadLetter:
        event: ImageUploaded | None = None
        try:
            event = parse_upload(message.value)
            data = self.fetcher.fetch(event.image)
            image = decode_image(
                data, max_pixels=self.max_pixels, target_size=self.encoder.preprocessing.resize
            )
            width, height = original_size(image)
            tensor = self.encoder.preprocess(image)
            return _Prepared(
                message, event, tensor, width, height, hashlib.sha256(data).hexdigest()
            )
        except ImageRejected as exc:
            return dead_letter_for(message, exc, event)
        except Exception as exc:  # a bug or an image that breaks a library: never stop the worker
            log.exception(
                "unexpected error preparing %s:%s@%s",
                message.topic,
                message.partition,
                message.offset,
            )
            rejected = ImageRejected(f"unexpected {type(exc).__name__}: {exc}", stage="decode")
            return dead_letter_for(message, rejected, event)

    def _embed(self, prepared: list[_Prepared]) -> tuple[list[_Prepared], list, list[DeadLetter]]:
        try:
            vectors = self.encoder.embed_tensors([p.tensor for p in prepared])
            return prepared, list(vectors), []
        except _RESOURCE_ERRORS:
            raise  # the machine's fault, not the image's: the caller retries the batch
        except Exception:
            log.exception("batch embedding failed; embedding images one by one")
        kept, vectors, letters = [], [], []
        for item in prepared:
            try:
                vectors.append(self.encoder.embed_tensors([item.tensor])[0])
                kept.append(item)
            except _RESOURCE_ERRORS:
                raise
            except Exception as exc:  # this image alone breaks the model
                letters.append(
                    dead_letter_for(
                        item.message,
                        ImageRejected(
                            f"embedding failed: {type(exc).__name__}: {exc}", stage="embed"
                        ),
                        item.event,
                    )
                )
        return kept, vectors, letters

    # --- the three stages: each blocking, each run in its own executor by the agent ----------
    def prepare(self, messages: Sequence[InboundMessage]) -> BatchResult:
        """Parse, fetch, decode and preprocess, in parallel on the decode pool."""
        result = BatchResult()
        started = time.perf_counter()
        for outcome in self._decode_pool.map(self._prepare, messages):
            if isinstance(outcome, DeadLetter):
                result.dead_letters.append(outcome)
            else:
                result.prepared.append(outcome)
        result.timings["prepare"] = time.perf_counter() - started
        return result

    def embed(self, result: BatchResult) -> BatchResult:
        """One forward pass for the batch (images that break the model are dead-lettered)."""
        if result.prepared:
            started = time.perf_counter()
            kept, vectors, letters = self._embed(result.prepared)
            result.prepared, result.vectors = kept, vectors
            result.dead_letters.extend(letters)
            result.timings["embed"] = time.perf_counter() - started
        return result

    def write(self, result: BatchResult) -> BatchResult:
        """Upsert into every target version. Raises on infrastructure failure: retry it."""
        if not result.prepared:
            return result
        uploads = [
            Upload(item.event.image_id, item.event.seller_id, item.event.category, vector)
            for item, vector in zip(result.prepared, result.vectors, strict=True)
        ]
        if self.validator is not None:
            self._validate(result, uploads)
        started = time.perf_counter()
        now = datetime.now(UTC).isoformat()
        for version in self.versions:
            points = [
                IndexPoint(item.event.image_id, vector, self._payload(item, version, now))
                for item, vector in zip(result.prepared, result.vectors, strict=True)
            ]
            self.index.upsert(version, points)
        result.timings["upsert"] = time.perf_counter() - started
        result.indexed = [item.event.image_id for item in result.prepared]
        if self.validator is not None:
            self.validator.observe(uploads)
        return result

    def _validate(self, result: BatchResult, uploads: list[Upload]) -> None:
        """Judge each upload against what was indexed before its batch (uploads are indexed
        whatever the verdict)."""
        assert self.validator is not None
        started = time.perf_counter()
        verdicts = self.validator.judge(uploads)
        for item, verdict in zip(result.prepared, verdicts, strict=True):
            result.verdicts[verdict.outcome] = result.verdicts.get(verdict.outcome, 0) + 1
            if verdict.outcome != "mismatch":
                continue
            event = item.event
            result.alerts.append(
                CategoryAlert(
                    image_id=event.image_id,
                    listing_id=event.listing_id,
                    seller_id=event.seller_id,
                    declared_category=event.category,
                    predicted_category=str(verdict.predicted),
                    confidence=min(1.0, max(0.0, verdict.confidence)),
                    model_version=self.validator.version,
                    votes=verdict.votes,
                    prototype_scores=verdict.prototype_scores,
                    evidence=verdict.evidence,
                    source_event_id=event.event_id,
                )
            )
        result.timings["validate"] = time.perf_counter() - started

    def process(self, messages: Sequence[InboundMessage]) -> BatchResult:
        """All three stages in a row. Blocking: run in an executor."""
        return self.write(self.embed(self.prepare(messages)))

    @staticmethod
    def _payload(item: _Prepared, version: str, indexed_at: str) -> dict:
        event = item.event
        return {
            "image_id": event.image_id,
            "listing_id": event.listing_id,
            "seller_id": event.seller_id,
            "category": event.category,
            "attributes": event.attributes,
            "source": event.image.reference(),
            "source_kind": event.image.kind,
            "content_sha256": item.sha256,
            "width": item.width,
            "height": item.height,
            "event_id": event.event_id,
            "model_version": version,
            "occurred_at": event.occurred_at.isoformat(),
            "indexed_at": indexed_at,
        }
