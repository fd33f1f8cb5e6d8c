"""Model-version rollout inside the worker: start, backfill, gate, promote, rollback, abort,
retire.

Every step that changes which versions are written runs on the worker's single writer thread
(``executors.write``), between live batches' writes, so no live event is applied to one
set of versions and not the other. The backfill is a loop driven by a Faust task; its durable
state (cursor, counts) is in the version registry (see :mod:`.backfill`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..encoders import Encoder
from ..errors import InvalidRequest, RolloutError
from ..executors import WorkerExecutors, retry_with_backoff, run_in
from ..index import VectorIndex
from ..utc import utcnow_iso
from .agreement import RecentSearches, agreement
from .backfill import Backfill, Prepared
from .models import WorkerModels
from .versions import VersionRecord, VersionRegistry

log = logging.getLogger(__name__)

#: Passes over the images the candidate still lacks after the scroll (see backfill.missing).
RECONCILE_ROUNDS = 3
AGREEMENT_SAMPLE = 30


@dataclass(frozen=True)
class BackfillInputs:
    """Where the backfill reads images again, and how much it does per step."""

    read_source: Callable[[dict[str, Any]], bytes]  # an indexed payload -> the image's bytes
    decode_pool: Executor  # shared with live decoding: the same cores either way
    max_pixels: int
    page_size: int  # images per step (the cursor is saved after each)
    chunk: int  # images per forward pass on the model thread


class Rollout:
    def __init__(
        self,
        index: VectorIndex,
        registry: VersionRegistry,
        models: WorkerModels,
        executors: WorkerExecutors,
        inputs: BackfillInputs,
        on_versions_changed: Callable[[], None],
    ) -> None:
        self.index = index
        self.registry = registry
        self.models = models
        self.executors = executors
        self.inputs = inputs
        #: Blocking, on the writer thread: rewire live writes after the written set changed.
        self.on_versions_changed = on_versions_changed
        self.recent = RecentSearches()
        #: This process's backfill: what it found done when it started, and its own work.
        self.session: dict[str, Any] = {}
        #: Images the backfill embedded in this process (for the worker's counters).
        self.embedded = 0

    # --- plumbing ------------------------------------------------------------------------------
    async def _off(self, executor: Executor, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in(executor, fn, *args)

    async def on_writer(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in(self.executors.write, fn, *args)

    def _backfill(self, candidate: VersionRecord) -> Backfill:
        return Backfill(
            self.index,
            self.registry,
            source=candidate.backfill["source"],
            target=candidate.version,
            encoder=self.models.encoders[candidate.version],
            read_source=self.inputs.read_source,
            max_pixels=self.inputs.max_pixels,
            page_size=self.inputs.page_size,
        )

    # --- the backfill loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Forever (a Faust task, cancelled at shutdown): backfill whenever a candidate needs it."""
        while True:
            worked = await retry_with_backoff(
                "a backfill step", self.step, log, kept="progress is kept", first_delay=2.0
            )
            if not worked:
                await asyncio.sleep(1.0)

    async def step(self) -> bool:
        """One backfill batch (or the end-of-scroll check). False when there is nothing to do."""
        background = self.executors.backfill
        candidate = await self._off(background, self.registry.candidate)
        if (
            candidate is None
            or candidate.backfill.get("done")
            or candidate.version not in self.models.encoders
        ):
            return False
        backfill = self._backfill(candidate)
        state = candidate.backfill
        if self.session.get("version") != candidate.version:
            await self._begin_session(candidate, backfill)
        if not state.get("scrolled"):
            page = await self._off(background, backfill.next_page, state.get("cursor"))
            progress = {
                "scanned": page.scanned,
                "cursor": page.next_cursor,
                "scrolled": page.next_cursor is None,
            }
            await self._process(backfill, page.todo, progress)
            self.session["scanned"] += page.scanned
            return True
        await self._reconcile(candidate, backfill)
        return True

    async def _begin_session(self, candidate: VersionRecord, backfill: Backfill) -> None:
        """This process starts (or resumes) the candidate's backfill."""
        held = await self._off(self.executors.backfill, self.index.count, candidate.version)
        self.session = {
            "version": candidate.version,
            "started": time.monotonic(),
            "resumed_with": held,
            "scanned": 0,
            "embedded": 0,
            "written": 0,
        }
        cursor = candidate.backfill.get("cursor")
        log.info(
            "backfill of %s from %s: %s (%d images already in it)",
            candidate.version,
            backfill.source,
            f"resuming at cursor {cursor}" if cursor else "starting",
            held,
        )

    async def _reconcile(self, candidate: VersionRecord, backfill: Backfill) -> None:
        """After the scroll: backfill what the candidate still lacks (a few passes), then mark
        the backfill done."""
        state = candidate.backfill
        rounds = int(state.get("rounds", 0))
        missing = await self._off(self.executors.backfill, backfill.missing)
        if missing and rounds < RECONCILE_ROUNDS:
            log.info(
                "backfill of %s: %d images still missing, pass %d",
                candidate.version,
                len(missing),
                rounds + 1,
            )
            for start in range(0, len(missing), backfill.page_size):
                await self._process(backfill, missing[start : start + backfill.page_size], {})
            await self.on_writer(lambda: backfill.update(rounds=rounds + 1))
            return
        await self.on_writer(
            lambda: backfill.update(done=True, missing=len(missing), finished_at=utcnow_iso())
        )
        log.info(
            "backfill of %s done: %d images embedded in total, %d missing",
            candidate.version,
            state.get("embedded", 0),
            len(missing),
        )

    async def _process(self, backfill: Backfill, payloads: list[dict], progress: dict) -> None:
        pool = self.inputs.decode_pool
        prepared: list[Prepared] = await self._off(
            self.executors.backfill, lambda: list(pool.map(backfill.prepare_one, payloads))
        )
        ready = [p for p in prepared if p.tensor is not None]
        vectors: list = []
        chunk = max(1, self.inputs.chunk)
        for start in range(0, len(ready), chunk):
            # Low priority on the model thread: a live batch never waits for more than a chunk.
            future = self.executors.model.submit_low(backfill.embed, ready[start : start + chunk])
            vectors.extend(await asyncio.wrap_future(future))
        outcome = await self.on_writer(backfill.write, prepared, vectors, progress)
        self.session["embedded"] += len(ready)
        self.session["written"] += outcome.written
        self.embedded += len(ready)
        for image_id, reason in outcome.failed.items():
            log.warning("backfill cannot re-embed %s: %s", image_id, reason)

    # --- steps asked for through the API ---------------------------------------------------------
    async def start(self, spec: str) -> dict[str, Any]:
        if (existing := self.registry.candidate()) is not None:
            raise RolloutError(
                f"{existing.version} is already a candidate: promote or abort it first"
            )
        model: Encoder = await self._off(self.executors.api, self.models.load, spec)
        record = await self.on_writer(self._start, model, spec)
        log.info(
            "rollout started: candidate %s (%s); dual-writing from now on", model.version, spec
        )
        return record.as_dict()

    def _start(self, model: Encoder, spec: str) -> VersionRecord:
        serving = self.registry.serving()
        assert serving is not None
        record = self.registry.start(model.version, spec, model.dim)
        # A collection left by an earlier, aborted try: start clean.
        self.index.drop_version(model.version)
        self.index.ensure_collection(model.version, model.dim)
        record.backfill = {
            "source": serving.version,
            "total": self.index.count(serving.version),
            "cursor": None,
            "scanned": 0,
            "embedded": 0,
            "skipped": 0,
            "failed": 0,
            "failures": {},
            "started_at": utcnow_iso(),
            "done": False,
        }
        self.registry.save(record)
        self.models.encoders[model.version] = model
        self.on_versions_changed()
        return record

    def coverage(self, source: str, target: str) -> dict[str, Any]:
        """Blocking. Which live images (by id, not just counts) the target lacks or has extra."""
        a, b = self.index.image_ids(source), self.index.image_ids(target)
        return {
            source: len(a),
            target: len(b),
            "missing": len(a - b),
            "extra": len(b - a),
            "missing_sample": sorted(a - b)[:10],
            "extra_sample": sorted(b - a)[:10],
        }

    def evaluate(self, eval_dir: Path) -> dict[str, Any]:
        """Blocking: offline metrics of serving and candidate on a labelled folder."""
        from ..evaluation import compare_on_folder, evaluate

        candidate, serving = self.registry.candidate(), self.registry.serving()
        if candidate is None or serving is None:
            raise RolloutError("no candidate to evaluate: `lookalike rollout start ENCODER`")
        if not eval_dir.is_dir():
            raise InvalidRequest(f"--eval-dir {eval_dir} is not a folder (on the worker's machine)")
        anchor, slots = self.registry.in_state("anchor"), self.models.settings.search_anchor_slots
        if anchor is not None and slots:
            # Scored as search serves them: the anchor's top matches kept on each page.
            encoders = {
                which: self.models.encoders[record.version]
                for which, record in (
                    ("serving", serving),
                    ("candidate", candidate),
                    ("anchor", anchor),
                )
            }
            report = compare_on_folder(
                encoders, eval_dir, "serving", progress=False, anchor="anchor", anchor_slots=slots
            )
            metrics = {
                which: {name: found["value"] for name, found in report["models"][which].items()}
                for which in ("serving", "candidate")
            }
        else:
            metrics = {
                which: evaluate(
                    self.models.encoders[record.version], eval_dir, progress=False
                ).as_dict()
                for which, record in (("serving", serving), ("candidate", candidate))
            }
        result = {
            "eval_dir": str(eval_dir),
            "anchor_slots": slots if anchor is not None else 0,
            **metrics,
            "passed": metrics["candidate"]["map"] >= metrics["serving"]["map"],
            "at": utcnow_iso(),
        }
        candidate = self.registry.candidate()
        if candidate is not None:
            candidate.evaluation = result
            self.registry.save(candidate)
        return result

    def gate(self) -> dict[str, Any]:
        """Blocking (on the writer thread for promote). Why the candidate may not be promoted."""
        candidate, serving = self.registry.candidate(), self.registry.serving()
        if candidate is None or serving is None:
            return {"ready": False, "reasons": ["no candidate"]}
        reasons = []
        if not candidate.backfill.get("done"):
            reasons.append("the backfill is not finished")
        coverage = self.coverage(serving.version, candidate.version)
        if coverage["missing"] or coverage["extra"]:
            reasons.append(
                f"the candidate lacks {coverage['missing']} live images and holds "
                f"{coverage['extra']} that are not live (e.g. "
                f"{(coverage['missing_sample'] + coverage['extra_sample'])[:3]})"
            )
        evaluation = candidate.evaluation
        if evaluation is not None and not evaluation.get("passed"):
            reasons.append(
                f"candidate mAP {evaluation['candidate']['map']:.4f} < serving "
                f"{evaluation['serving']['map']:.4f} on {evaluation['eval_dir']}"
            )
        return {"ready": not reasons, "reasons": reasons, "coverage": coverage}

    async def promote(self, force: bool, eval_dir: str | None) -> dict[str, Any]:
        if eval_dir:
            await self._off(self.executors.api, self.evaluate, Path(eval_dir))
        return await self.on_writer(self._promote, force)

    def _promote(self, force: bool) -> dict[str, Any]:
        gate = self.gate()
        if self.registry.candidate() is None:
            raise RolloutError("no candidate to promote: `lookalike rollout start ENCODER` first")
        if not gate["ready"] and not force:
            raise RolloutError(
                "the candidate does not pass the gate: "
                + "; ".join(gate["reasons"])
                + " (wait for the backfill, or --force)"
            )
        candidate = self.registry.candidate()
        assert candidate is not None
        self.index.set_serving(candidate.version)  # atomic alias switch: search reads it next
        serving, previous = self.registry.promote()
        self.on_versions_changed()
        log.warning(
            "promoted %s to serving%s; %s is the previous version, still dual-written until "
            "`lookalike rollout retire`",
            serving.version,
            " (forced past: " + "; ".join(gate["reasons"]) + ")" if not gate["ready"] else "",
            previous.version,
        )
        return {
            "serving": serving.version,
            "previous": previous.version,
            "gate": gate,
            "evaluation": serving.evaluation,
        }

    def rollback(self) -> dict[str, Any]:
        previous = self.registry.in_state("previous")
        if previous is None:
            raise RolloutError("no previous version to roll back to (it was retired)")
        self.index.set_serving(previous.version)
        serving, demoted = self.registry.rollback()
        self.on_versions_changed()
        log.warning(
            "rolled back: %s serves again; %s is a candidate again",
            serving.version,
            demoted.version,
        )
        return {"serving": serving.version, "candidate": demoted.version}

    def abort(self) -> dict[str, Any]:
        record = self.registry.abort()
        self.on_versions_changed()
        self.index.drop_version(record.version)
        log.warning("rollout aborted: candidate %s dropped", record.version)
        return {"aborted": record.version}

    def anchor(self) -> dict[str, Any]:
        record = self.registry.anchor()
        log.info(
            "%s is the anchor: still written, its best matches kept on each first page when "
            "LOOKALIKE_SEARCH_ANCHOR_SLOTS > 0 (now %d)",
            record.version,
            self.models.settings.search_anchor_slots,
        )
        return {"anchor": record.version, "slots": self.models.settings.search_anchor_slots}

    def retire(self, drop: bool, anchor: bool = False) -> dict[str, Any]:
        record = self.registry.retire(anchor)
        self.on_versions_changed()
        if drop:
            self.index.drop_version(record.version)
        log.info("retired %s (collection %s)", record.version, "dropped" if drop else "kept")
        return {"retired": record.version, "dropped": drop}

    # --- status -----------------------------------------------------------------------------------
    def status(self, quick: bool = False) -> dict[str, Any]:
        """Blocking. Versions, backfill progress with ETA, coverage, evaluation, agreement."""
        records = self.registry.all()
        shown = ("serving", "candidate", "previous", "anchor")
        by_state = {r.state: r for r in records if r.state in shown}
        status: dict[str, Any] = {
            state: (by_state[state].version if state in by_state else None) for state in shown
        }
        status["anchor_slots"] = self.models.settings.search_anchor_slots
        status["versions"] = [
            {k: v for k, v in r.as_dict().items() if k not in ("backfill", "evaluation")}
            for r in records
        ]
        candidate = by_state.get("candidate")
        if candidate is not None:
            status["backfill"] = self.progress(candidate)
            status["evaluation"] = candidate.evaluation
            if not quick:
                status["gate"] = self.gate()
        # After a promotion the old version is still written: compare with it too.
        other = candidate or by_state.get("previous")
        serving = by_state.get("serving")
        if not quick and other is not None and serving is not None:
            ids = sorted(self.index.image_ids(serving.version))
            sample = ids[:: max(1, len(ids) // AGREEMENT_SAMPLE)][:AGREEMENT_SAMPLE]
            status["agreement"] = {
                "versions": [serving.version, other.version],
                **agreement(self.index, serving.version, other.version, self.recent, sample),
            }
        return status

    def progress(self, candidate: VersionRecord) -> dict[str, Any]:
        state = dict(candidate.backfill)
        total = max(self.index.count(state.get("source", "")), 1)
        scanned = int(state.get("scanned", 0))
        held = self.index.count(candidate.version)
        state["total"] = total
        state["candidate_holds"] = held
        state["percent"] = (
            100.0 if state.get("done") else round(min(99.9, 100 * scanned / total), 1)
        )
        session = self.session if self.session.get("version") == candidate.version else {}
        elapsed = time.monotonic() - session["started"] if session else 0.0
        rate = session.get("scanned", 0) / elapsed if elapsed > 0 else 0.0
        state["images_per_second"] = (
            round(session.get("embedded", 0) / elapsed, 2) if elapsed else None
        )
        state["eta_seconds"] = (
            0.0 if state.get("done") else round(max(total - scanned, 0) / rate, 1) if rate else None
        )
        state["session"] = {k: v for k, v in session.items() if k != "started"}
        state["failures"] = dict(list(state.get("failures", {}).items())[:10])
        return state
