"""Labelled image folders: one sub-folder per category (evaluation, calibration, demos)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigurationError
from ..images import iter_image_files


def labelled_images(folder: Path, limit: int | None = None) -> list[tuple[Path, str]]:
    """(file, category) pairs, round-robin over the category folders so any prefix of the list
    covers every category."""
    if not folder.is_dir():
        raise ConfigurationError(f"{folder} is not a folder (expected one sub-folder per category)")
    per_category = [
        [(f, d.name) for f in iter_image_files([d])] for d in sorted(folder.iterdir()) if d.is_dir()
    ]
    if not any(per_category):
        raise ConfigurationError(f"no images in category sub-folders of {folder}")
    picked: list[tuple[Path, str]] = []
    while any(per_category) and (limit is None or len(picked) < limit):
        for files in per_category:
            if files and (limit is None or len(picked) < limit):
                picked.append(files.pop(0))
    return picked


def split_labelled(
    folder: Path, out: Path, parts: dict[str, float], seed: int = 0
) -> dict[str, dict[str, int]]:
    """Split a labelled folder into disjoint labelled folders ``out/<part>/<category>/`` of
    symlinks, per category in the given proportions (e.g. an indexed gallery, click queries and
    a held-out evaluation set). Returns image counts per part and category."""
    import random

    if not parts or any(share <= 0 for share in parts.values()):
        raise ConfigurationError("parts need positive shares, e.g. gallery=0.5,queries=0.3")
    total = sum(parts.values())
    rng = random.Random(seed)
    counts: dict[str, dict[str, int]] = {name: {} for name in parts}
    for category_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
        files = list(iter_image_files([category_dir]))
        rng.shuffle(files)
        start = 0
        for number, (name, share) in enumerate(parts.items()):
            end = (
                len(files)
                if number == len(parts) - 1
                else start + round(len(files) * share / total)
            )
            target = out / name / category_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for file in files[start:end]:
                link = target / file.name
                if not link.exists():
                    link.symlink_to(file.resolve())
            counts[name][category_dir.name] = end - start
            start = end
    return counts
