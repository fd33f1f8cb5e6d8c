"""Category validation: does an upload look like the category its seller declared?

The prediction combines two kinds of evidence:
  * neighbours: the top-k most similar catalogue images (never the image itself; optionally not
    the same seller's), each voting for its category with weight similarity**power, plus the
    registered exemplars of each category (one exemplar is enough for a new category);
  * prototypes: each category's mean vector (its catalogue images and exemplars), kept durable
    and incremental by :mod:`.evidence`.
An upload is a *mismatch* when another category wins with ``confidence`` = 1 - (score of the
declared category / score of the winner) >= the threshold: the image must look like the winner
*and* not like what was declared, so confusable pairs (shirt / t-shirt) rarely accuse anyone.
A declared category with fewer than ``min_examples`` images and no exemplar cannot be judged:
no accusation without evidence.

The prototypes are judged first: where they alone leave no room for a mismatch (the declared
category's prototype weight exceeds what any neighbour vote could overturn), the upload is ok
without its k-NN, which is most of the validator's cost (an engine search that holds the GIL).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..events import Neighbour
from ..index import Hit, IndexPoint, VectorIndex
from ..settings import Settings
from .evidence import CategoryEvidence

log = logging.getLogger(__name__)

Outcome = Literal["ok", "mismatch", "cannot_judge"]


@dataclass(frozen=True)
class ValidationSettings:
    """Defaults calibrated with `lookalike validate-eval` on clothing-small, 10% mislabels,
    three random stream orders: precision >= 0.90 at recall ~0.79 (see the README)."""

    threshold: float = 0.85
    k: int = 30
    min_examples: int = 5
    exclude_same_seller: bool = False
    power: float = 4.0  # near neighbours count much more than far ones
    prototype_weight: float = 0.6
    prototype_temperature: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidationSettings:
        """The one mapping from LOOKALIKE_VALIDATION_* to the validator's settings."""
        return cls(
            threshold=settings.validation_threshold,
            k=settings.validation_k,
            min_examples=settings.validation_min_examples,
            exclude_same_seller=settings.validation_exclude_same_seller,
        )


@dataclass(frozen=True)
class Upload:
    image_id: str
    seller_id: str
    category: str
    vector: np.ndarray


@dataclass
class Verdict:
    outcome: Outcome
    declared: str
    predicted: str | None
    confidence: float
    votes: dict[str, float] = field(default_factory=dict)
    prototype_scores: dict[str, float] = field(default_factory=dict)
    evidence: list[Neighbour] = field(default_factory=list)


#: An image as the validator counts it: (category, vector); None where it does not exist.
State = tuple[str, np.ndarray] | None


class CategoryValidator:
    def __init__(
        self,
        index: VectorIndex,
        version: str,
        dim: int,
        settings: ValidationSettings | None = None,
        load_prototypes: bool = True,
        worker: str = "local",
        shared: bool = False,
    ) -> None:
        """``load_prototypes``: read the version's durable evidence (counting it from the index
        once if it has none yet); False starts empty (calibration). ``shared``: other workers
        write the same index (a Qdrant server)."""
        self.index = index
        self.version = version
        self.settings = settings or ValidationSettings()
        index.ensure_exemplars(version, dim)
        store = index.records("evidence", "key", indexed=("version",)) if load_prototypes else None
        self.prototypes = CategoryEvidence(store, version, dim, worker, shared)
        if load_prototypes and not self.prototypes.load() and index.count(version):
            started = time.monotonic()
            self.prototypes.rebuild(
                ((str(p.get("category")), v) for p, v in index.scroll_vectors(version)),
                (),
            )
            log.warning(
                "counted the category evidence of %s from its %d images in %.1fs (once: it is "
                "kept and updated from now on)",
                version,
                index.count(version),
                time.monotonic() - started,
            )

    # --- what the write step tells it ------------------------------------------------------------
    def states(self, image_ids: Sequence[str]) -> dict[str, State]:
        """Blocking. The images as the index holds them now: read before a write changes them."""
        if not image_ids:
            return {}
        payloads = self.index.payloads(self.version, image_ids)
        vectors = self.index.vectors(self.version, list(payloads))
        return {
            image_id: (str(payload.get("category")), vectors[image_id])
            for image_id, payload in payloads.items()
            if image_id in vectors
        }

    def observe(self, uploads: Sequence[Upload], before: Mapping[str, State]) -> None:
        """``uploads`` were written to the index; ``before`` is what it held for them."""
        current = dict(before)
        for upload in uploads:
            after = (upload.category, upload.vector)
            self.prototypes.move(current.get(upload.image_id), after)
            current[upload.image_id] = after
        self.prototypes.commit()

    def forget(self, image_ids: Sequence[str], before: Mapping[str, State]) -> None:
        """``image_ids`` were removed from the index: their evidence goes too."""
        for image_id in image_ids:
            self.prototypes.move(before.get(image_id), None)
        self.prototypes.commit()

    def set_category(self, image_id: str, category: str, before: State) -> None:
        """``image_id`` moved to ``category`` (an attribute change or a confirmed alert)."""
        if before is not None and before[0] != category:
            self.prototypes.move(before, (category, before[1]))
            self.prototypes.commit()

    def support(self, category: str) -> int:
        """Images plus exemplars of ``category`` the validator knows."""
        return self.prototypes.count(category)

    # --- exemplars -------------------------------------------------------------------------
    def add_exemplar(self, exemplar_id: str, category: str, vector: np.ndarray) -> None:
        """Register an example image of ``category``: usable at once, no retraining."""
        vector = np.asarray(vector, dtype=np.float32)
        old = self.index.exemplar(self.version, exemplar_id)
        self.index.upsert_exemplar(
            self.version,
            IndexPoint(
                exemplar_id,
                vector,
                {"image_id": exemplar_id, "category": category, "exemplar": True},
            ),
        )
        before = None if old is None else (str(old["category"]), old["vector"])
        self.prototypes.move(before, (category, vector), exemplar=True)
        self.prototypes.commit()

    def exemplar_counts(self) -> dict[str, int]:
        return self.prototypes.exemplar_counts()

    # --- judging ---------------------------------------------------------------------------
    def _evidence_for(self, upload: Upload, hits: list[Hit]) -> list[Hit]:
        """Drop the image itself (and, if asked, its seller's images) from the neighbours: an
        over-fetched unfiltered k-NN, so the whole batch is one engine call."""
        kept = [
            h
            for h in hits
            if h.image_id != upload.image_id
            and not (
                self.settings.exclude_same_seller and h.payload.get("seller_id") == upload.seller_id
            )
        ]
        return kept[: self.settings.k]

    def judge(self, uploads: Sequence[Upload], *, every_score: bool = False) -> list[Verdict]:
        """Blocking (Qdrant queries): run off the event loop. An upload that its prototypes
        alone clear is ok without a k-NN search, and its verdict carries their prediction and
        confidence only; ``every_score``: search for every upload, so each verdict's
        confidence is the full one (calibration sweeps thresholds over them)."""
        if not uploads:
            return []
        verdicts: list[Verdict | None] = [
            None if every_score else self._cleared_by_prototypes(u) for u in uploads
        ]
        pending = [n for n, verdict in enumerate(verdicts) if verdict is None]
        searched = self._judge_by_neighbours([uploads[n] for n in pending])
        for n, verdict in zip(pending, searched, strict=True):
            verdicts[n] = verdict
        return [v for v in verdicts if v is not None]

    def _too_little_evidence(self, category: str) -> bool:
        """No accusation without evidence: too few images of ``category`` and no exemplar."""
        return self.support(category) < self.settings.min_examples and not (
            self.prototypes.exemplars(category)
        )

    def _cleared_by_prototypes(self, upload: Upload) -> Verdict | None:
        """An ok verdict when no neighbour vote could make ``upload`` a mismatch (cannot judge
        when its category has too little evidence); else None: it needs its neighbours.

        A mismatch needs combined[declared] <= (1 - threshold) x combined[winner]. The
        neighbours' votes add at most (1 - prototype_weight) to the winner and take nothing
        from the declared category, so if prototype_weight x p[declared] exceeds
        (1 - threshold) x ((1 - prototype_weight) + prototype_weight x max other p), no vote
        can tip it."""
        s = self.settings
        if self._too_little_evidence(upload.category):
            return Verdict("cannot_judge", upload.category, None, 0.0)
        probs = _softmax(self.prototypes.similarities(upload.vector), s.prototype_temperature)
        declared = probs.get(upload.category, 0.0)
        others = [p for c, p in probs.items() if c != upload.category]
        best_other = max(others, default=0.0)
        w = s.prototype_weight
        if w * declared <= (1 - s.threshold) * ((1 - w) + w * best_other) * (1 + 1e-9):
            return None
        predicted = max(probs, key=probs.__getitem__)
        confidence = 1.0 - declared / probs[predicted]
        return Verdict("ok", upload.category, predicted, round(confidence, 4))

    def _judge_by_neighbours(self, uploads: Sequence[Upload]) -> list[Verdict]:
        if not uploads:
            return []
        k = self.settings.k
        vectors = [u.vector for u in uploads]
        # Over-fetch: the image itself (a replaced image) or its seller's images are dropped.
        fetch = k * 3 if self.settings.exclude_same_seller else k + 1
        fields = ("image_id", "category", "seller_id")
        found = self.index.search_many(self.version, vectors, fetch, payload_fields=fields)
        catalogue = [
            self._evidence_for(upload, hits) for upload, hits in zip(uploads, found, strict=True)
        ]
        exemplars = (
            self.index.search_exemplars(self.version, vectors, k)
            if self.prototypes.exemplar_counts()
            else [[] for _ in uploads]
        )

        return [
            self._verdict(upload, hits, ex_hits)
            for upload, hits, ex_hits in zip(uploads, catalogue, exemplars, strict=True)
        ]

    def _verdict(self, upload: Upload, hits: list[Hit], exemplar_hits: list[Hit]) -> Verdict:
        s = self.settings
        neighbours = [(h, False) for h in hits] + [(h, True) for h in exemplar_hits]
        if self._too_little_evidence(upload.category):
            return Verdict("cannot_judge", upload.category, None, 0.0)
        weights: dict[str, float] = defaultdict(float)
        for hit, _ in neighbours:
            weights[str(hit.payload.get("category"))] += max(float(hit.score), 0.0) ** s.power
        total = sum(weights.values())
        votes = {c: w / total for c, w in weights.items()} if total > 0 else {}
        prototype_scores = self.prototypes.similarities(upload.vector)
        proto_probs = _softmax(prototype_scores, temperature=s.prototype_temperature)
        combined = {
            c: (1 - s.prototype_weight) * votes.get(c, 0.0)
            + s.prototype_weight * proto_probs.get(c, 0.0)
            for c in set(votes) | set(proto_probs)
        }
        if not combined:
            return Verdict("cannot_judge", upload.category, None, 0.0)
        predicted = max(combined, key=combined.__getitem__)
        confidence = 1.0 - combined.get(upload.category, 0.0) / combined[predicted]
        if predicted == upload.category or confidence < s.threshold:
            return Verdict("ok", upload.category, predicted, round(confidence, 4))
        # Only an alert carries its evidence: building it for every upload costs the pipeline.
        evidence = [
            Neighbour(
                image_id=hit.image_id,
                score=round(float(hit.score), 4),
                category=str(hit.payload.get("category")),
                seller_id=None if exemplar else hit.payload.get("seller_id"),
                exemplar=exemplar,
            )
            for hit, exemplar in sorted(neighbours, key=lambda n: -n[0].score)
        ]
        return Verdict(
            "mismatch",
            upload.category,
            predicted,
            round(confidence, 4),
            {c: round(v, 4) for c, v in sorted(combined.items(), key=lambda kv: -kv[1])},
            {c: round(v, 4) for c, v in sorted(prototype_scores.items(), key=lambda kv: -kv[1])},
            evidence,
        )


def _softmax(scores: dict[str, float], temperature: float) -> dict[str, float]:
    if not scores:
        return {}
    keys = list(scores)
    values = np.array([scores[k] for k in keys]) / temperature
    values = np.exp(values - values.max())
    values /= values.sum()
    return dict(zip(keys, values.tolist(), strict=True))
