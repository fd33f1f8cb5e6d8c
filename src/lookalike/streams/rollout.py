"""Model-version rollout inside the worker: start, backfill, gate, promote, rollback, abort,
retire.

Every step that changes which versions are written runs on the worker's single writer thread
(``runtime.index_executor``), between live batches' writes, so no live event is applied to one
set of versions and not the other. The backfill is a loop driven by a Faust task; its durable
state (cursor, counts) is in the version registry (see :mod:`lookalike.lifecycle.backfill`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..encoders.base import Encoder
from ..lifecycle.agreement import RecentSearches, agreement
from ..lifecycle.backfill import Backfill, Prepared, image_ids
from ..lifecycle.versions import RolloutError, VersionRecord

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger(__name__)

#: Passes over the images the candidate still lacks after the scroll (see backfill.missing).
RECONCILE_ROUNDS = 3
AGREEMENT_SAMPLE = 30


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Rollout:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.recent = RecentSearches()
        #: This process's backfill: what it found done when it started, and its own work.
        self.session: dict[str, Any] = {}

    # --- plumbing ------------------------------------------------------------------------------
    async def _off(self, executor: Executor, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def on_writer(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._off(self.rt.index_executor, fn, *args)

    def _backfill(self, candidate: VersionRecord) -> Backfill:
        rt = self.rt
        return Backfill(
            rt.index,
            rt.registry,
            source=candidate.backfill["source"],
            target=candidate.version,
            encoder=rt.encoders[candidate.version],
            fetcher=rt.fetcher,
            blobs=rt.blobs,
            max_pixels=rt.settings.max_image_pixels,
            page_size=rt.settings.backfill_batch,
        )

    # --- the backfill loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Forever (a Faust task, cancelled at shutdown): backfill whenever a candidate needs it."""
        while True:
            try:
                worked = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("backfill step failed; retrying in 2s (progress is kept)")
                await asyncio.sleep(2.0)
                continue
            if not worked:
                await asyncio.sleep(1.0)

    async def step(self) -> bool:
        """One backfill batch (or the end-of-scroll check). False when there is nothing to do."""
        rt = self.rt
        candidate = await self._off(rt.backfill_executor, rt.registry.candidate)
        if (
            candidate is None
            or candidate.backfill.get("done")
            or candidate.version not in rt.encoders
        ):
            return False
        backfill = self._backfill(candidate)
        state = candidate.backfill
        if self.session.get("version") != candidate.version:
            held = await self._off(rt.backfill_executor, rt.index.count, candidate.version)
            self.session = {
                "version": candidate.version,
                "started": time.monotonic(),
                "resumed_with": held,
                "scanned": 0,
                "embedded": 0,
                "written": 0,
            }
            log.info(
                "backfill of %s from %s: %s (%d images already in it)",
                candidate.version,
                backfill.source,
                f"resuming at cursor {state.get('cursor')}" if state.get("cursor") else "starting",
                held,
            )
        if not state.get("scrolled"):
            page = await self._off(rt.backfill_executor, backfill.next_page, state.get("cursor"))
            progress = {
                "scanned": page.scanned,
                "cursor": page.next_cursor,
                "scrolled": page.next_cursor is None,
            }
            await self._process(backfill, page.todo, progress)
            self.session["scanned"] += page.scanned
            return True
        rounds = int(state.get("rounds", 0))
        missing = await self._off(rt.backfill_executor, backfill.missing)
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
            return True
        await self.on_writer(
            lambda: backfill.update(done=True, missing=len(missing), finished_at=_now())
        )
        log.info(
            "backfill of %s done: %d images embedded in total, %d missing",
            candidate.version,
            state.get("embedded", 0),
            len(missing),
        )
        return True

    async def _process(self, backfill: Backfill, payloads: list[dict], progress: dict) -> None:
        rt = self.rt
        pool = rt.pipeline._decode_pool  # shared with live decoding: same cores either way
        prepared: list[Prepared] = await self._off(
            rt.backfill_executor, lambda: list(pool.map(backfill.prepare_one, payloads))
        )
        ready = [p for p in prepared if p.tensor is not None]
        vectors: list = []
        chunk = max(1, rt.settings.inference_batch)
        for start in range(0, len(ready), chunk):
            # Low priority on the model thread: a live batch never waits for more than a chunk.
            future = rt.model_executor.submit_low(backfill.embed, ready[start : start + chunk])
            vectors.extend(await asyncio.wrap_future(future))
        outcome = await self.on_writer(backfill.write, prepared, vectors, progress)
        self.session["embedded"] += len(ready)
        self.session["written"] += outcome.written
        rt.counters.backfill_embedded += len(ready)
        for image_id, reason in outcome.failed.items():
            log.warning("backfill cannot re-embed %s: %s", image_id, reason)

    # --- steps asked for through the API ---------------------------------------------------------
    async def start(self, spec: str) -> dict[str, Any]:
        rt = self.rt
        if (existing := rt.registry.candidate()) is not None:
            raise RolloutError(
                f"{existing.version} is already a candidate: promote or abort it first"
            )
        model: Encoder = await self._off(rt.api_executor, rt.load_encoder, spec)
        record = await self.on_writer(self._start, model, spec)
        log.info(
            "rollout started: candidate %s (%s); dual-writing from now on", model.version, spec
        )
        return record.as_dict()

    def _start(self, model: Encoder, spec: str) -> VersionRecord:
        rt = self.rt
        serving = rt.registry.serving()
        assert serving is not None
        record = rt.registry.start(model.version, spec, model.dim)
        name = rt.index.collection_name(model.version)
        with rt.index.lock:  # a collection left by an earlier, aborted try: start clean
            if rt.index.client.collection_exists(name):
                rt.index.client.delete_collection(name)
        rt.index.ensure_collection(model.version, model.dim)
        record.backfill = {
            "source": serving.version,
            "total": rt.index.count(serving.version),
            "cursor": None,
            "scanned": 0,
            "embedded": 0,
            "skipped": 0,
            "failed": 0,
            "failures": {},
            "started_at": _now(),
            "done": False,
        }
        rt.registry.save(record)
        rt.encoders[model.version] = model
        rt.retarget()
        return record

    def coverage(self, source: str, target: str) -> dict[str, Any]:
        """Blocking. Which live images (by id, not just counts) the target lacks or has extra."""
        a, b = image_ids(self.rt.index, source), image_ids(self.rt.index, target)
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
        from ..evaluation import evaluate

        rt = self.rt
        candidate, serving = rt.registry.candidate(), rt.registry.serving()
        if candidate is None or serving is None:
            raise RolloutError("no candidate to evaluate: `lookalike rollout start ENCODER`")
        if not eval_dir.is_dir():
            raise RolloutError(
                f"--eval-dir {eval_dir} is not a folder (on the worker's machine)", 400
            )
        metrics = {
            which: evaluate(rt.encoders[record.version], eval_dir, progress=False).as_dict()
            for which, record in (("serving", serving), ("candidate", candidate))
        }
        result = {
            "eval_dir": str(eval_dir),
            **metrics,
            "passed": metrics["candidate"]["map"] >= metrics["serving"]["map"],
            "at": _now(),
        }
        candidate = rt.registry.candidate()
        if candidate is not None:
            candidate.evaluation = result
            rt.registry.save(candidate)
        return result

    def gate(self) -> dict[str, Any]:
        """Blocking (on the writer thread for promote). Why the candidate may not be promoted."""
        rt = self.rt
        candidate, serving = rt.registry.candidate(), rt.registry.serving()
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
            await self._off(self.rt.api_executor, self.evaluate, Path(eval_dir))
        return await self.on_writer(self._promote, force)

    def _promote(self, force: bool) -> dict[str, Any]:
        rt = self.rt
        gate = self.gate()
        if rt.registry.candidate() is None:
            raise RolloutError("no candidate to promote: `lookalike rollout start ENCODER` first")
        if not gate["ready"] and not force:
            raise RolloutError(
                "the candidate does not pass the gate: "
                + "; ".join(gate["reasons"])
                + " (wait for the backfill, or --force)"
            )
        candidate = rt.registry.candidate()
        assert candidate is not None
        rt.index.set_serving(candidate.version)  # atomic alias switch: search reads it next
        serving, previous = rt.registry.promote()
        rt.retarget()
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
        rt = self.rt
        previous = rt.registry.in_state("previous")
        if previous is None:
            raise RolloutError("no previous version to roll back to (it was retired)")
        rt.index.set_serving(previous.version)
        serving, demoted = rt.registry.rollback()
        rt.retarget()
        log.warning(
            "rolled back: %s serves again; %s is a candidate again",
            serving.version,
            demoted.version,
        )
        return {"serving": serving.version, "candidate": demoted.version}

    def abort(self) -> dict[str, Any]:
        rt = self.rt
        record = rt.registry.abort()
        rt.retarget()
        self._drop(record.version)
        log.warning("rollout aborted: candidate %s dropped", record.version)
        return {"aborted": record.version}

    def retire(self, drop: bool) -> dict[str, Any]:
        rt = self.rt
        record = rt.registry.retire()
        rt.retarget()
        if drop:
            self._drop(record.version)
        log.info("retired %s (collection %s)", record.version, "dropped" if drop else "kept")
        return {"retired": record.version, "dropped": drop}

    def _drop(self, version: str) -> None:
        index = self.rt.index
        with index.lock:
            index.client.delete_collection(index.collection_name(version))

    # --- status -----------------------------------------------------------------------------------
    def status(self, quick: bool = False) -> dict[str, Any]:
        """Blocking. Versions, backfill progress with ETA, coverage, evaluation, agreement."""
        rt = self.rt
        records = rt.registry.all()
        by_state = {r.state: r for r in records if r.state in ("serving", "candidate", "previous")}
        status: dict[str, Any] = {
            state: (by_state[state].version if state in by_state else None)
            for state in ("serving", "candidate", "previous")
        }
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
            ids = sorted(image_ids(rt.index, serving.version))
            sample = ids[:: max(1, len(ids) // AGREEMENT_SAMPLE)][:AGREEMENT_SAMPLE]
            status["agreement"] = {
                "versions": [serving.version, other.version],
                **agreement(rt.index, serving.version, other.version, self.recent, sample),
            }
        return status

    def progress(self, candidate: VersionRecord) -> dict[str, Any]:
        state = dict(candidate.backfill)
        total = max(self.rt.index.count(state.get("source", "")), 1)
        scanned = int(state.get("scanned", 0))
        held = self.rt.index.count(candidate.version)
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
