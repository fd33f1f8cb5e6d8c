"""Result pages that keep a second model's best matches: the serving (fine-tuned) model ranks,
and the anchor model's (the base's) top few are guaranteed a place on the first page.

A fine-tuned model gathers each category tightly, which raises mAP, but a query it places among
the wrong category then finds nothing relevant on the page; the base, trained on all of
ImageNet, still ranks its nearest look-alikes first. Giving the base's top ``slots`` the last
places of the page brings the base's Recall@k back at little cost to the ranking, and shows
buyers results the tuned model would have hidden, so their clicks can correct it (exploration).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

T = TypeVar("T", bound=Hashable)

#: The first page of results: the anchor's places are on it (and Recall@10 reads it).
PAGE = 10


def blend_pages(primary: Sequence[T], anchor: Sequence[T], page: int, slots: int) -> list[T]:
    """``primary``'s ranking with ``anchor``'s first ``slots`` items on its first ``page``.

    The page holds as many of ``primary``'s first items as leave room for those of ``anchor``'s
    top ``slots`` that are not among them; those follow, in ``anchor``'s order; then the rest of
    ``primary``. With ``slots`` 0 (or an anchor that agrees) it is ``primary`` unchanged.
    """
    guaranteed = list(dict.fromkeys(anchor[: max(0, min(slots, page))]))
    head: list[T] = []
    for item in primary:
        missing = sum(1 for g in guaranteed if g not in head)
        if len(head) + missing >= page:
            break
        head.append(item)
    shown = head + [g for g in guaranteed if g not in head]
    taken = set(shown)
    return shown + [item for item in primary if item not in taken]
