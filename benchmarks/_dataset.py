"""Shared by the benchmarks: the labelled image folder they run on."""

from __future__ import annotations

from pathlib import Path

from lookalike.publish import iter_image_files

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared/datasets/clothing-small/train"


def labelled_images(dataset: Path, limit: int | None = None) -> list[tuple[Path, str]]:
    """(file, category) pairs, round-robin over the category folders so any prefix of the list
    covers every category."""
    if not dataset.is_dir():
        raise SystemExit(
            f"dataset folder {dataset} not found; pass --dataset DIR (a folder per category)"
        )
    per_category = [
        [(f, d.name) for f in iter_image_files([d])]
        for d in sorted(dataset.iterdir())
        if d.is_dir()
    ]
    picked: list[tuple[Path, str]] = []
    while any(per_category) and (limit is None or len(picked) < limit):
        for files in per_category:
            if files and (limit is None or len(picked) < limit):
                picked.append(files.pop(0))
    return picked
