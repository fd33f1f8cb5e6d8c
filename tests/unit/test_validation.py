"""Unit tests for lookalike.validation: the category validator on hand-made unit vectors in a real
index (each backend: the embedded engine and the Qdrant-server code path), so every outcome is
known in advance.

Category A lives around the 1st axis, B around the 2nd, C around the 3rd (a little seeded noise);
D (exemplars only), E and F (few images) around later axes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from backends import BACKENDS, open_backend, reopen

from lookalike.index import IndexPoint, QdrantIndex, VectorIndex
from lookalike.validation import CategoryValidator, Upload, ValidationSettings, Verdict

DIM = 16
VERSION = "hand-v1"
AXES = {"A": 0, "B": 1, "C": 2, "D": 3, "E": 4, "F": 5}
PER_CATEGORY = 6
SETTINGS = ValidationSettings(min_examples=3, k=10)


def around(category: str, seed: int, noise: float = 0.05) -> np.ndarray:
    """A unit vector near the axis of ``category`` (deterministic for a seed)."""
    rng = np.random.default_rng([AXES[category], seed])
    vector = np.zeros(DIM)
    vector[AXES[category]] = 1.0
    vector += rng.normal(0.0, noise, DIM)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def seller_of(i: int) -> str:
    return "s1" if i % 2 == 0 else "s2"


def point(image_id: str, category: str, seed: int, seller: str) -> IndexPoint:
    return IndexPoint(
        image_id,
        around(category, seed),
        {"image_id": image_id, "category": category, "seller_id": seller},
    )


#: image id -> category of every catalogue point (A, B, C x 6, and F x 2).
CATALOGUE = {f"{c.lower()}-{i}": c for c in "ABC" for i in range(PER_CATEGORY)} | {
    "f-0": "F",
    "f-1": "F",
}


def fill(index: VectorIndex) -> None:
    index.upsert(
        VERSION,
        [
            point(image_id, category, int(image_id.split("-")[1]), seller_of(int(image_id[-1])))
            for image_id, category in CATALOGUE.items()
        ],
    )


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


class Holder:
    """The test's index, which a test may reopen (a restart)."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder = kind, folder
        self.index = open_backend(kind, folder, "t")

    def reopen(self) -> VectorIndex:
        self.index = reopen(self.index, self.kind, self.folder)
        return self.index


@pytest.fixture
def holder(kind: str, tmp_path: Path) -> Iterator[Holder]:
    held = Holder(kind, tmp_path)
    held.index.ensure_collection(VERSION, DIM)
    fill(held.index)
    try:
        yield held
    finally:
        held.index.close()


@pytest.fixture
def index(holder: Holder) -> VectorIndex:
    return holder.index


@pytest.fixture
def validator(index: VectorIndex) -> CategoryValidator:
    return CategoryValidator(index, VERSION, DIM, SETTINGS)


def judge_one(validator: CategoryValidator, upload: Upload) -> Verdict:
    verdicts = validator.judge([upload])
    assert len(verdicts) == 1
    return verdicts[0]


def upload(image_id: str, looks_like: str, declared: str, seller: str = "s9", seed: int = 99):
    return Upload(image_id, seller, declared, around(looks_like, seed))


# --- start-up --------------------------------------------------------------------------------


def test_start_up_loads_counts_and_prototypes(validator: CategoryValidator) -> None:
    assert {c: validator.support(c) for c in "ABCDF"} == {
        "A": 6,
        "B": 6,
        "C": 6,
        "D": 0,
        "F": 2,
    }
    assert validator.prototypes.count("A") == PER_CATEGORY
    assert validator.exemplar_counts() == {}
    sims = validator.prototypes.similarities(around("B", 1234))
    assert set(sims) == {"A", "B", "C", "F"}
    assert max(sims, key=sims.__getitem__) == "B"
    assert sims["B"] > 0.95
    assert all(sims[c] < 0.3 for c in "ACF")


def test_no_prototypes_without_load(index: VectorIndex) -> None:
    fresh = CategoryValidator(index, VERSION, DIM, SETTINGS, load_prototypes=False)
    assert fresh.support("A") == 0
    assert fresh.prototypes.similarities(around("A", 1)) == {}
    # ... so nothing can be judged (no accusation without evidence), whatever the neighbours say.
    assert judge_one(fresh, upload("x", "A", "B")).outcome == "cannot_judge"


def test_judge_nothing(validator: CategoryValidator) -> None:
    assert validator.judge([]) == []


# --- verdicts --------------------------------------------------------------------------------


def test_a_looking_image_declared_b_is_a_mismatch(validator: CategoryValidator) -> None:
    verdict = judge_one(validator, upload("new-1", "A", "B"))
    assert verdict.outcome == "mismatch"
    assert verdict.declared == "B"
    assert verdict.predicted == "A"
    assert SETTINGS.threshold <= verdict.confidence <= 1.0
    assert sum(verdict.votes.values()) == pytest.approx(1.0, abs=1e-3)
    assert max(verdict.votes, key=verdict.votes.__getitem__) == "A"
    assert verdict.votes["A"] > 0.9
    assert max(verdict.prototype_scores, key=verdict.prototype_scores.__getitem__) == "A"
    # Evidence: the k nearest catalogue images, each with its indexed category and its score.
    assert len(verdict.evidence) == SETTINGS.k
    for n in verdict.evidence:
        assert n.category == CATALOGUE[n.image_id]
        assert -1.0 <= n.score <= 1.0
        assert n.exemplar is False
        assert n.seller_id in {"s1", "s2"}
    scores = [n.score for n in verdict.evidence]
    assert scores == sorted(scores, reverse=True)
    assert {n.image_id for n in verdict.evidence[:PER_CATEGORY]} == {
        f"a-{i}" for i in range(PER_CATEGORY)
    }
    assert all(n.score > 0.9 for n in verdict.evidence[:PER_CATEGORY])


def test_a_looking_image_declared_a_is_ok(validator: CategoryValidator) -> None:
    verdict = judge_one(validator, upload("new-2", "A", "A"))
    assert verdict.outcome == "ok"
    assert verdict.predicted == "A"
    assert verdict.confidence == 0.0


def test_one_batch_judges_each_upload_on_its_own(validator: CategoryValidator) -> None:
    verdicts = validator.judge(
        [upload("u1", "A", "B"), upload("u2", "C", "C"), upload("u3", "C", "A")]
    )
    assert [(v.outcome, v.predicted) for v in verdicts] == [
        ("mismatch", "A"),
        ("ok", "C"),
        ("mismatch", "C"),
    ]


def blend(image_id: str, a: str, b: str, share_of_b: float, declared: str) -> Upload:
    """An image between categories ``a`` and ``b`` (``share_of_b`` of the way to b)."""
    vector = (1 - share_of_b) * around(a, 7) + share_of_b * around(b, 8)
    return Upload(image_id, "s9", declared, (vector / np.linalg.norm(vector)).astype(np.float32))


def test_prototypes_settle_clear_uploads_without_a_search(
    validator: CategoryValidator, index: VectorIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The short cut never changes an outcome: images from clearly A to clearly B, declared A,
    B and C, judged with and without it; only the uploads it cannot settle are searched."""
    uploads = [
        blend(f"u{n}-{declared}", "A", "B", share, declared)
        for n, share in enumerate(np.linspace(0.0, 1.0, 21))
        for declared in "ABC"
    ] + [upload("f-like", "F", "F"), upload("new-cat", "A", "Z")]
    searched: list[int] = []
    search_many = index.search_many

    def counting(version, vectors, k, payload_fields=None):  # noqa: ANN001, ANN202
        searched.append(len(vectors))
        return search_many(version, vectors, k, payload_fields)

    monkeypatch.setattr(index, "search_many", counting)
    full = validator.judge(uploads, every_score=True)
    assert searched == [len(uploads)]
    searched.clear()
    fast = validator.judge(uploads)
    assert [v.outcome for v in fast] == [v.outcome for v in full]
    outcomes = {v.outcome for v in full}
    assert outcomes == {"ok", "mismatch", "cannot_judge"}  # every path is exercised
    assert len(searched) == 1
    count = {o: sum(v.outcome == o for v in full) for o in outcomes}
    # Never searched: the cannot-judge ones and some ok ones; but some ok ones needed it.
    assert count["mismatch"] < searched[0] < count["mismatch"] + count["ok"]
    for f, v in zip(fast, full, strict=True):
        if v.outcome == "mismatch":  # alerts keep their whole evidence
            assert (f.predicted, f.confidence, f.votes, f.evidence) == (
                v.predicted,
                v.confidence,
                v.votes,
                v.evidence,
            )


@pytest.mark.parametrize("declared", ["Z-brand-new", "F"])
@pytest.mark.parametrize("looks_like", ["A", "F"])
def test_too_few_examples_cannot_be_judged(
    validator: CategoryValidator, declared: str, looks_like: str
) -> None:
    """F has 2 images (min_examples 3), Z none: never an accusation, even for an A lookalike."""
    verdict = judge_one(validator, upload("new-3", looks_like, declared))
    assert verdict.outcome == "cannot_judge"
    assert verdict.predicted is None
    assert verdict.confidence == 0.0
    assert verdict.declared == declared


def test_the_image_itself_is_never_evidence(validator: CategoryValidator) -> None:
    vector = around("A", 0)  # exactly a-0's vector
    # Declared B so the verdict is an alert, which is what carries evidence.
    control = judge_one(validator, Upload("copy-of-a-0", "s1", "B", vector))
    assert control.outcome == "mismatch"
    assert control.evidence[0].image_id == "a-0"
    assert control.evidence[0].score == pytest.approx(1.0, abs=1e-4)

    verdict = judge_one(validator, Upload("a-0", "s1", "B", vector))  # a replay of a-0
    assert verdict.outcome == "mismatch"
    assert "a-0" not in {n.image_id for n in verdict.evidence}
    assert len([n for n in verdict.evidence if not n.exemplar]) == SETTINGS.k
    assert judge_one(validator, Upload("a-0", "s1", "A", vector)).outcome == "ok"


def test_exclude_same_seller(index: VectorIndex) -> None:
    candidate = upload("new-4", "A", "B", seller="s1")
    including = judge_one(CategoryValidator(index, VERSION, DIM, SETTINGS), candidate)
    assert "s1" in {n.seller_id for n in including.evidence}

    settings = ValidationSettings(min_examples=3, k=10, exclude_same_seller=True)
    excluding = judge_one(CategoryValidator(index, VERSION, DIM, settings), candidate)
    assert excluding.evidence
    assert {n.seller_id for n in excluding.evidence} == {"s2"}
    # s2's A images still give it away.
    assert excluding.outcome == "mismatch"
    assert excluding.predicted == "A"


# --- exemplars -------------------------------------------------------------------------------


def test_one_exemplar_makes_a_new_category_usable(validator: CategoryValidator) -> None:
    assert judge_one(validator, upload("new-5", "D", "D")).outcome == "cannot_judge"

    validator.add_exemplar("ex-d-1", "D", around("D", 1))
    assert validator.exemplar_counts() == {"D": 1}
    assert validator.support("D") == 1

    accused = judge_one(validator, upload("new-6", "D", "A"))
    assert accused.outcome == "mismatch"
    assert accused.predicted == "D"
    assert accused.confidence >= SETTINGS.threshold
    exemplars = [n for n in accused.evidence if n.exemplar]
    assert [(n.image_id, n.category) for n in exemplars] == [("ex-d-1", "D")]
    assert exemplars[0].score > 0.9
    assert exemplars[0].seller_id is None

    honest = judge_one(validator, upload("new-7", "D", "D"))
    assert honest.outcome == "ok"
    assert honest.predicted == "D"


def test_exemplars_are_kept_apart_from_the_catalogue(
    validator: CategoryValidator, index: VectorIndex
) -> None:
    validator.add_exemplar("ex-d-1", "D", around("D", 1))
    validator.add_exemplar("ex-d-2", "D", around("D", 2))
    assert validator.exemplar_counts() == {"D": 2}
    assert index.count(VERSION) == len(CATALOGUE)  # not in the catalogue collection
    assert index.count_exemplars(validator.version, "D") == 2
    if isinstance(index, QdrantIndex):
        assert index.exemplar_collection(validator.version) in {
            c.name for c in index.client.get_collections().collections
        }


def test_exemplars_persist_across_validators(holder: Holder, kind: str, tmp_path: Path) -> None:
    first = CategoryValidator(holder.index, VERSION, DIM, SETTINGS)
    first.add_exemplar("ex-d-1", "D", around("D", 1))

    second = CategoryValidator(holder.reopen(), VERSION, DIM, SETTINGS)
    assert second.exemplar_counts() == {"D": 1}
    assert second.support("D") == 1
    assert second.prototypes.count("D") == 1
    assert judge_one(second, upload("new-8", "D", "D")).outcome == "ok"
    assert judge_one(second, upload("new-9", "D", "B")).predicted == "D"

    # Another index (or model version) has its own exemplars.
    other_index = open_backend(kind, tmp_path / "other")
    try:
        other = CategoryValidator(other_index, VERSION, DIM, SETTINGS)
        assert other.exemplar_counts() == {}
    finally:
        other_index.close()


def test_registering_the_same_exemplar_twice_counts_it_once(
    holder: Holder, validator: CategoryValidator
) -> None:
    validator.add_exemplar("ex-d-1", "D", around("D", 1))
    validator.add_exemplar("ex-d-1", "D", around("D", 1))  # e.g. the same file sent twice
    restarted = CategoryValidator(holder.reopen(), VERSION, DIM, SETTINGS)
    assert restarted.exemplar_counts() == {"D": 1}
    assert validator.exemplar_counts() == restarted.exemplar_counts()


# --- observe ---------------------------------------------------------------------------------


def test_observe_lets_a_category_cross_min_examples(
    validator: CategoryValidator, index: VectorIndex
) -> None:
    def grow(image_id: str, seed: int) -> None:
        new = Upload(image_id, "s3", "E", around("E", seed))
        before = validator.states([image_id])  # as the pipeline does: read, write, tell
        index.upsert(VERSION, [point(image_id, "E", seed, "s3")])
        validator.observe([new], before)

    probe = upload("probe", "E", "E")
    for i in range(SETTINGS.min_examples - 1):
        grow(f"e-{i}", i)
        assert validator.support("E") == i + 1
        assert judge_one(validator, probe).outcome == "cannot_judge"
    grow("e-last", 50)
    assert validator.support("E") == SETTINGS.min_examples
    assert validator.prototypes.count("E") == SETTINGS.min_examples
    verdict = judge_one(validator, probe)
    assert verdict.outcome == "ok"
    assert verdict.predicted == "E"
    # ... and E images declared A are now caught.
    assert judge_one(validator, upload("probe-2", "E", "A")).predicted == "E"


def test_observe_counts_a_replaced_image_once(validator: CategoryValidator) -> None:
    again = Upload("a-0", "s1", "A", around("A", 0))
    validator.observe([again, again], validator.states(["a-0"]))
    assert validator.support("A") == PER_CATEGORY
    validator.observe([Upload("brand-new", "s1", "E", around("E", 1))] * 2, {})
    assert validator.support("E") == 1


def test_a_replaced_image_moves_its_evidence_exactly(validator: CategoryValidator) -> None:
    probe = around("C", 5)
    before = validator.prototypes.similarities(probe)
    moved = Upload("a-0", "s1", "C", around("C", 40))  # replaced by a C image, declared C
    validator.observe([moved], validator.states(["a-0"]))
    assert (validator.support("A"), validator.support("C")) == (PER_CATEGORY - 1, PER_CATEGORY + 1)
    back = validator.states(["a-0"])["a-0"]  # the index still holds the A image (not written)
    validator.observe([Upload("a-0", "s1", "A", back[1])], {"a-0": ("C", moved.vector)})
    assert validator.prototypes.similarities(probe) == pytest.approx(before, abs=1e-6)


def test_restart_rebuilds_from_the_index(holder: Holder, index: VectorIndex) -> None:
    running = CategoryValidator(index, VERSION, DIM, SETTINGS)
    extra = [point(f"e-{i}", "E", i, "s3") for i in range(4)]
    index.upsert(VERSION, extra)
    running.observe([Upload(p.image_id, "s3", "E", p.vector) for p in extra], {})

    restarted = CategoryValidator(holder.reopen(), VERSION, DIM, SETTINGS)
    for category in "ABCEF":
        assert restarted.support(category) == running.support(category)
        assert restarted.prototypes.count(category) == running.prototypes.count(category)
    assert restarted.support("E") == 4
    probe = around("E", 77)
    assert restarted.prototypes.similarities(probe) == pytest.approx(
        running.prototypes.similarities(probe), abs=1e-5
    )
    assert judge_one(restarted, upload("new-10", "E", "C")).outcome == "mismatch"
