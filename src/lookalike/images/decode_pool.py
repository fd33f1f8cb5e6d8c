"""Decoding a micro-batch of images, in threads or in processes, with the same safety.

Each image is decoded by :func:`~lookalike.images.decode.decode_image` (pixel limit from the
header before any pixel is decoded, EXIF rotation, CMYK / 16-bit / palette handling) and then
turned into pixels by each encoder's preprocessing, wherever it runs:

* threads (the default on a CPU): Pillow releases the GIL while it decodes, but the Python
  around it does not, so threads stop scaling at a few cores (measured flat at about 1,400
  images/s from 4 to 15 threads on 16 cores);
* processes (the default beside a GPU): the bytes go to a child, the preprocessed uint8 pixels
  come back, one child per core. Children are spawned (not forked: the worker holds threads and
  torch state), each with one torch thread.

An image that cannot be decoded comes back as a :class:`~lookalike.errors.DecodeError`; a child
that dies (the machine's trouble, not the image's) raises
:class:`~lookalike.errors.ServiceUnavailable` so the batch is retried.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from ..errors import DecodeError, ServiceUnavailable
from .decode import decode_image, original_size

log = logging.getLogger(__name__)

#: Preprocessing digest -> RGB image to uint8 CHW pixels. Must pickle for processes (a bound
#: method of a dataclass instance does).
Preprocessors = Mapping[str, Callable[[Image.Image], torch.Tensor]]


@dataclass(frozen=True)
class DecodedImage:
    #: uint8 CHW pixels per preprocessing digest.
    pixels: dict[str, torch.Tensor]
    #: The upright size of the image as uploaded.
    width: int
    height: int
    sha256: str


def decode_for_encoders(
    data: bytes, max_pixels: int, target_size: int | None, preprocessors: Preprocessors
) -> DecodedImage:
    """Decode once, preprocess once per distinct preprocessing. Raises DecodeError."""
    image = decode_image(data, max_pixels=max_pixels, target_size=target_size)
    width, height = original_size(image)
    pixels = {digest: preprocess(image) for digest, preprocess in preprocessors.items()}
    return DecodedImage(pixels, width, height, hashlib.sha256(data).hexdigest())


# --- in a child process -----------------------------------------------------------------------
def _child_start() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    torch.set_num_threads(1)
    # A pool's child waits on its task queue forever once the worker is killed (the queue's
    # other end stays open in the child): leave with the parent instead of lingering.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_when_gone, args=(parent.sentinel,), name="parent-watch", daemon=True
        ).start()


def _exit_when_gone(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def _decode_in_child(
    data: bytes, max_pixels: int, target_size: int | None, preprocessors: Preprocessors
) -> tuple[Any, ...]:
    """Plain values back, never an exception object: ours carry keyword-only data that the
    default exception pickling would lose."""
    try:
        decoded = decode_for_encoders(data, max_pixels, target_size, preprocessors)
    except DecodeError as exc:
        return ("rejected", exc.reason)
    except MemoryError:
        return ("memory", "")
    except Exception as exc:  # a bug or an image that breaks a library: reported per image
        return ("unexpected", type(exc).__name__, str(exc))
    arrays = {digest: tensor.numpy() for digest, tensor in decoded.pixels.items()}
    return ("ok", arrays, decoded.width, decoded.height, decoded.sha256)


def _from_child(outcome: tuple[Any, ...]) -> DecodedImage | Exception:
    kind = outcome[0]
    if kind == "ok":
        _, arrays, width, height, sha256 = outcome
        return DecodedImage(
            {d: torch.from_numpy(a) for d, a in arrays.items()}, width, height, sha256
        )
    if kind == "rejected":
        return DecodeError(outcome[1])
    if kind == "memory":
        return MemoryError("a decode process ran out of memory")
    # Neither the image's fault nor memory: the pipeline logs it and dead-letters the image,
    # as it does for one raised in a thread.
    return RuntimeError(f"in a decode process: {outcome[1]}: {outcome[2]}")


class DecodePool:
    """Decodes micro-batches: ``processes`` > 0 decodes in that many child processes, else in
    ``threads`` threads. :attr:`threads` is also the executor for reading images (and for the
    rollout backfill, which shares the same cores)."""

    def __init__(self, threads: int, processes: int = 0) -> None:
        if threads < 1 or processes < 0:
            raise ValueError("threads must be >= 1 and processes >= 0")
        self.processes = processes
        self.threads = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self._children: ProcessPoolExecutor | None = None
        self._children_lock = threading.Lock()  # batches are prepared in two threads

    def describe(self) -> str:
        if self.processes:
            return f"{self.processes} decode process{'es' if self.processes > 1 else ''}"
        return f"{self.threads._max_workers} decode threads"

    def decode_many(
        self,
        blobs: Sequence[bytes],
        *,
        max_pixels: int,
        target_size: int | None,
        preprocessors: Preprocessors,
    ) -> list[DecodedImage | Exception]:
        """Each image decoded and preprocessed, or the exception that stopped it, in order.
        Blocking. Raises only for the machine's trouble (a decode process died)."""
        if not blobs:
            return []
        if self.processes:
            return self._in_processes(blobs, max_pixels, target_size, preprocessors)

        def one(data: bytes) -> DecodedImage | Exception:
            try:
                return decode_for_encoders(data, max_pixels, target_size, preprocessors)
            except Exception as exc:
                return exc

        return list(self.threads.map(one, blobs))

    def _in_processes(
        self,
        blobs: Sequence[bytes],
        max_pixels: int,
        target_size: int | None,
        preprocessors: Preprocessors,
    ) -> list[DecodedImage | Exception]:
        children = self._pool()
        n = len(blobs)
        # A few chunks per child: fewer round trips, and the children still finish together.
        chunksize = max(1, n // (self.processes * 4))
        try:
            outcomes = list(
                children.map(
                    _decode_in_child,
                    blobs,
                    [max_pixels] * n,
                    [target_size] * n,
                    [dict(preprocessors)] * n,
                    chunksize=chunksize,
                )
            )
        except BrokenProcessPool:
            self._discard_pool(children)
            raise ServiceUnavailable(
                "a decode process died (out of memory, or killed); the batch is retried on "
                "fresh processes (LOOKALIKE_DECODE_PROCESSES sets how many)"
            ) from None
        return [_from_child(outcome) for outcome in outcomes]

    def _pool(self) -> Executor:
        with self._children_lock:
            if self._children is None:
                self._children = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_child_start,
                )
            return self._children

    def _discard_pool(self, broken: Executor) -> None:
        """Drop ``broken``; a pool another thread already started in its place is kept."""
        with self._children_lock:
            if self._children is broken:
                self._children = None
        broken.shutdown(wait=False, cancel_futures=True)

    def warm_up(self) -> None:
        """Start the children now (spawning imports torch: seconds), not on the first batch."""
        if self.processes:
            pool = self._pool()
            list(pool.map(int, range(self.processes)))

    def close(self) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)
        if self._children is not None:
            self._children.shutdown(wait=True, cancel_futures=True)
            self._children = None


__all__ = ["DecodePool", "DecodedImage", "decode_for_encoders"]
