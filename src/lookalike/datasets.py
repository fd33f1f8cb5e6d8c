"""Labelled image folders: one sub-folder per category (evaluation, calibration, demos)."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigurationError
from .publish import iter_image_files


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
