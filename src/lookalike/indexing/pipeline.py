"""The indexing step of the pipeline, independent of Faust so it can be tested on its own.

``IndexingPipeline`` takes a micro-batch of raw messages from the uploads topic through three
blocking stages, each run in its own executor by the agent (never on the event loop):

* :meth:`~IndexingPipeline.prepare` parses each event (upload, attribute change or removal),
  fetches the batch's images (URLs all at once, see :mod:`lookalike.images.fetch`), and decodes
  and preprocesses them on the decode pool (threads or processes);
* :meth:`~IndexingPipeline.embed` runs one forward pass per written model version;
* :meth:`~IndexingPipeline.write` applies the batch to every written version under the per-image
  clock rule (:mod:`.clock`): upserts, payload updates, deletes with tombstones, and judges each
  upload's declared category on the way.

Bad inputs come back as dead letters; infrastructure failures (Qdrant down, a full disk, memory)
raise, so the caller retries and the offsets stay uncommitted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor

import torch

from ..encoders import Encoder
from ..errors import (
    ImageRejected,
    RejectedInput,
    ServiceUnavailable,
    Stage,
    StorageUnavailable,
)
from ..events import (
    CategoryAlert,
    ConsumedMessage,
    DeadLetter,
    EventLimits,
    ImageUploaded,
    InlineSource,
    parse_image_event,
)
from ..images import BlobStore, DecodedImage, DecodePool, ImageFetcher
from ..index import IndexPoint, VectorIndex
from ..utc import utcnow_iso
from ..validation import CategoryValidator, State, Upload
from .batch import BatchResult, ParsedChange, PreparedUpload
from .clock import ClockRecord, ClockStore, clock_of, is_current
from .plan import BatchPlan, Event, ImagePlan, plan_batch

log = logging.getLogger(__name__)

#: Errors that say the machine is short of memory, not that an image is bad.
_RESOURCE_ERRORS: tuple[type[BaseException], ...] = (MemoryError, torch.cuda.OutOfMemoryError)
#: Never an image's fault: raised so the batch is retried (offsets held), never dead-lettered.
_INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (*_RESOURCE_ERRORS, ServiceUnavailable)


def _letter(message: ConsumedMessage, error: RejectedInput, event: Event | None) -> DeadLetter:
    return DeadLetter.for_message(
        message,
        error,
        event_id=event.event_id if event else None,
        image_id=event.image_id if event else None,
    )


class IndexingPipeline:
    def __init__(
        self,
        encoder: Encoder,
        index: VectorIndex,
        fetcher: ImageFetcher,
        *,
        max_pixels: int,
        decode_threads: int = 4,
        decode_processes: int = 0,
        versions: Sequence[str] | None = None,
        validator: CategoryValidator | None = None,
        clocks: ClockStore | None = None,
        blobs: BlobStore | None = None,
        limits: EventLimits | None = None,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.fetcher = fetcher
        self.max_pixels = max_pixels
        # Model versions every event is applied to, each with its encoder: the serving version
        # and, during a rollout, the candidate (or the previous one, until it is retired).
        self.targets: dict[str, Encoder] = {v: encoder for v in versions or [encoder.version]}
        #: The version whose embedding failure dead-letters an image and whose vectors the
        #: validator judges (the serving one).
        self.primary = next(iter(self.targets))
        self.validator = validator
        self.clocks = clocks or ClockStore(index)
        self.blobs = blobs
        #: Size limits on the uploads topic's messages (None: only the wire schema).
        self.limits = limits
        #: Decoding in threads or processes; its threads also serve the rollout backfill (the
        #: same cores either way).
        self.decoder = DecodePool(decode_threads, decode_processes)

    @property
    def versions(self) -> list[str]:
        return list(self.targets)

    def set_targets(self, targets: Mapping[str, Encoder], primary: str) -> None:
        """Change the written versions (rollout start, promote, abort, retire). Batches already
        past prepare keep the versions they were prepared for, minus any no longer written."""
        assert primary in targets
        self.targets = dict(targets)
        self.primary = primary
        self.encoder = targets[primary]

    def close(self) -> None:
        self.decoder.close()

    @property
    def decode_pool(self) -> Executor:
        return self.decoder.threads

    # --- stages ------------------------------------------------------------------------------
    def _letter_or_raise(
        self, message: ConsumedMessage, event: ImageUploaded, exc: Exception, stage: Stage
    ) -> DeadLetter:
        """Bad input becomes a dead letter; the machine's or a service's trouble (the index, a
        full disk, memory) raises, so the batch is retried with its offsets held: a valid
        image is never dead-lettered for a reason of ours."""
        if isinstance(exc, RejectedInput):
            return _letter(message, exc, event)
        if isinstance(exc, _INFRASTRUCTURE_ERRORS) or StorageUnavailable.is_storage_error(exc):
            raise exc
        # A bug or an image that breaks a library: never stop the worker.
        log.error(
            "unexpected error at the %s stage of %s:%s@%s: %s",
            stage,
            message.topic,
            message.partition,
            message.offset,
            exc,
            exc_info=exc,
        )
        rejected = ImageRejected(f"unexpected {type(exc).__name__}: {exc}", stage=stage)
        return _letter(message, rejected, event)

    def _decode_all(
        self, blobs: list[bytes], targets: Mapping[str, Encoder]
    ) -> list[DecodedImage | Exception]:
        """Decode once, preprocess once per distinct preprocessing."""
        encoders = list(targets.values())
        preprocessors = {e.preprocessing.digest(): e.preprocessing.pixels for e in encoders}
        return self.decoder.decode_many(
            blobs,
            max_pixels=self.max_pixels,
            target_size=max(e.preprocessing.resize for e in encoders),
            preprocessors=preprocessors,
        )

    def _embed(
        self, encoder: Encoder, prepared: list[PreparedUpload], primary: bool
    ) -> tuple[list[PreparedUpload], list, list[DeadLetter]]:
        key = encoder.preprocessing.digest()
        try:
            vectors = encoder.embed_tensors([p.tensors[key] for p in prepared])
            return prepared, list(vectors), []
        except _INFRASTRUCTURE_ERRORS:
            raise  # the machine's fault (memory, a dead encoder process): the batch is retried
        except Exception:
            log.exception("batch embedding failed; embedding images one by one")
        kept, vectors, letters = [], [], []
        for item in prepared:
            try:
                vectors.append(encoder.embed_tensors([item.tensors[key]])[0])
                kept.append(item)
            except _INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:  # this image alone breaks the model
                if not primary:  # the serving version decides an image's fate
                    log.error("%s cannot embed %s: %s", encoder.version, item.event.image_id, exc)
                    vectors.append(None)
                    kept.append(item)
                    continue
                reason = f"embedding failed: {type(exc).__name__}: {exc}"
                letters.append(
                    _letter(item.message, ImageRejected(reason, stage="embed"), item.event)
                )
        return kept, vectors, letters

    # --- the three stages: each blocking, each run in its own executor by the agent ----------
    def prepare(self, messages: Sequence[ConsumedMessage]) -> BatchResult:
        """Parse every message, fetch the uploads' images (URLs at once), decode and
        preprocess them on the decode pool. Blocking."""
        result = BatchResult(targets=dict(self.targets), primary=self.primary)
        started = time.perf_counter()
        outcomes: list[PreparedUpload | ParsedChange | DeadLetter | None] = []
        uploads: list[tuple[int, ConsumedMessage, ImageUploaded]] = []
        for message in messages:
            try:
                event = parse_image_event(message.value, self.limits)
            except RejectedInput as exc:
                outcomes.append(_letter(message, exc, None))
                continue
            if isinstance(event, ImageUploaded):
                uploads.append((len(outcomes), message, event))
                outcomes.append(None)
            else:
                outcomes.append(ParsedChange(message, event))
        held = self.clocks.get_many(event.image_id for _, _, event in uploads)
        # Already superseded: don't fetch or embed it (write re-checks).
        uploads = [u for u in uploads if is_current(clock_of(u[2]), held.get(u[2].image_id))]
        fetched = self.fetcher.fetch_many([event.image for _, _, event in uploads])
        readable: list[tuple[int, ConsumedMessage, ImageUploaded, bytes]] = []
        for (slot, message, event), data in zip(uploads, fetched, strict=True):
            if isinstance(data, Exception):
                outcomes[slot] = self._letter_or_raise(message, event, data, "fetch")
            else:
                readable.append((slot, message, event, data))
        decoded = self._decode_all([u[3] for u in readable], result.targets)
        kept: list[tuple[bytes, str]] = []
        for (slot, message, event, data), image in zip(readable, decoded, strict=True):
            if isinstance(image, Exception):
                outcomes[slot] = self._letter_or_raise(message, event, image, "decode")
                continue
            if isinstance(event.image, InlineSource):
                kept.append((data, image.sha256))
            outcomes[slot] = PreparedUpload(
                message, event, image.pixels, image.width, image.height, image.sha256
            )
        if self.blobs is not None and kept:
            # The index keeps only the digest; a backfill needs the bytes. A full disk raises
            # StorageUnavailable: the batch is retried.
            self.blobs.put_many(kept, self.decoder.threads)
        for outcome in outcomes:
            if outcome is None:
                result.stale += 1
            elif isinstance(outcome, DeadLetter):
                result.dead_letters.append(outcome)
            else:
                result.items.append(outcome)
        result.timings["prepare"] = time.perf_counter() - started
        return result

    def embed(self, result: BatchResult) -> BatchResult:
        """One forward pass per written version (images that break the serving model are
        dead-lettered; the same encoder is run once for several versions)."""
        prepared = result.prepared
        if not prepared:
            return result
        started = time.perf_counter()
        primary = result.targets[result.primary]
        kept, vectors, letters = self._embed(primary, prepared, primary=True)
        result.dead_letters.extend(letters)
        dropped = {id(item) for item in prepared} - {id(item) for item in kept}
        result.items = [item for item in result.items if id(item) not in dropped]
        by_encoder: dict[int, list] = {id(primary): vectors}
        for version, encoder in result.targets.items():
            if id(encoder) not in by_encoder:
                by_encoder[id(encoder)] = self._embed(encoder, kept, primary=False)[1]
            result.vectors[version] = by_encoder[id(encoder)]
        result.timings["embed"] = time.perf_counter() - started
        return result

    def write(self, result: BatchResult) -> BatchResult:
        """Apply the batch to every written version. Raises on infrastructure failure: retry it
        (re-applying is harmless: equal clocks re-apply the same event)."""
        if not result.items:
            return result
        started = time.perf_counter()
        prepared = result.prepared
        slots = {id(item): n for n, item in enumerate(prepared)}
        events = [
            (item.event, slots.get(id(item)) if isinstance(item, PreparedUpload) else None)
            for item in result.items
        ]
        plan = plan_batch(events, self.clocks.get_many(e.image_id for e, _ in events))
        result.stale += len(plan.stale) + len(plan.ignored_removed)
        upserts = [p for p in plan.images if p.action == "upsert"]
        uploads = [self._upload(p, result) for p in upserts]
        if self.validator is not None and uploads:
            self._validate(result, upserts, uploads)
        # What the validator's version holds before this batch changes it: evidence moves
        # exactly (a replaced image's old vector, a removed image's category).
        before = (
            self.validator.states(
                [p.image_id for p in plan.images if p.action != "update" or "category" in p.changes]
            )
            if self.validator is not None and result.primary == self.validator.version
            else {}
        )
        now = utcnow_iso()
        self._write_uploads(result, prepared, upserts, now)
        records = [p.record for p in plan.images if p.action != "update"]
        records += self._write_updates(result, plan, now)
        result.removed = [p.image_id for p in plan.images if p.action == "remove"]
        for version in self.targets:
            self.index.delete(version, result.removed)
        # Last: a crash before this line replays the batch, which re-applies the same events.
        self.clocks.put_many(records)
        result.timings["write"] = time.perf_counter() - started
        result.indexed = [p.image_id for p in upserts]
        self._tell_validator(uploads, plan, result, before)
        for event in plan.stale + plan.ignored_removed:
            log.info(
                "ignored %s %s for image %s: the index holds a newer event for it",
                event.type,
                event.event_id,
                event.image_id,
            )
        return result

    @staticmethod
    def _upload(plan: ImagePlan, result: BatchResult) -> Upload:
        """What the validator judges: the image as the batch leaves it (later attribute changes
        of the same batch included), with the serving version's vector."""
        assert plan.upload is not None and plan.upload_slot is not None
        return Upload(
            plan.image_id,
            plan.changes.get("seller_id", plan.upload.seller_id),
            plan.changes.get("category", plan.upload.category),
            result.vectors[result.primary][plan.upload_slot],
        )

    def _write_uploads(
        self,
        result: BatchResult,
        prepared: list[PreparedUpload],
        upserts: list[ImagePlan],
        now: str,
    ) -> None:
        # Only versions still written; an upload reaches a version only if it was embedded for
        # it (a version added mid-batch gets the image from its backfill).
        versions = [v for v in self.targets if v in result.targets]
        for version in versions:
            vectors = result.vectors.get(version, [])
            points = [
                IndexPoint(
                    p.image_id,
                    vectors[p.upload_slot],
                    prepared[p.upload_slot].payload(p, version, now),
                )
                for p in upserts
                if p.upload_slot is not None and vectors[p.upload_slot] is not None
            ]
            self.index.upsert(version, points)
            # A version that could not get the new image (embedding failed for it) must not
            # keep an old copy: its backfill's final pass re-copies what it lacks.
            self.index.delete(
                version, sorted({p.image_id for p in upserts} - {p.image_id for p in points})
            )
        for version in set(self.targets) - set(versions):  # added after this batch's prepare
            self.index.delete(version, [p.image_id for p in upserts])

    def _write_updates(self, result: BatchResult, plan: BatchPlan, now: str) -> list[ClockRecord]:
        """Payload-only changes; returns the clocks to keep (an unknown image gets none: its
        upload may still come)."""
        records = []
        for p in plan.images:
            if p.action != "update":
                continue
            changes = {**p.changes, "clock": list(p.record.clock), "updated_at": now}
            found = [self.index.update_payload(v, p.image_id, changes) for v in self.targets]
            if any(found):
                records.append(p.record)
                result.updated.append(p.image_id)
        return records

    def _tell_validator(
        self,
        uploads: list[Upload],
        plan: BatchPlan,
        result: BatchResult,
        before: Mapping[str, State],
    ) -> None:
        if self.validator is None:
            return
        if result.primary != self.validator.version:
            return  # a promotion happened mid-batch; the validator is rebuilt for the new one
        self.validator.observe(uploads, before)
        self.validator.forget(result.removed, before)
        for p in plan.images:
            if p.action == "update" and "category" in p.changes and p.image_id in result.updated:
                self.validator.set_category(
                    p.image_id, p.changes["category"], before.get(p.image_id)
                )

    def _validate(
        self, result: BatchResult, upserts: list[ImagePlan], uploads: list[Upload]
    ) -> None:
        """Judge each upload against what was indexed before its batch (uploads are indexed
        whatever the verdict)."""
        assert self.validator is not None
        if result.primary != self.validator.version:
            return
        started = time.perf_counter()
        verdicts = self.validator.judge(uploads)
        for plan, upload, verdict in zip(upserts, uploads, verdicts, strict=True):
            result.verdicts[verdict.outcome] = result.verdicts.get(verdict.outcome, 0) + 1
            if verdict.outcome != "mismatch":
                continue
            event = plan.upload
            assert event is not None
            result.alerts.append(
                CategoryAlert(
                    image_id=event.image_id,
                    listing_id=plan.changes.get("listing_id", event.listing_id),
                    seller_id=upload.seller_id,
                    declared_category=upload.category,
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

    def process(self, messages: Sequence[ConsumedMessage]) -> BatchResult:
        """All three stages in a row. Blocking: run in an executor."""
        return self.write(self.embed(self.prepare(messages)))
