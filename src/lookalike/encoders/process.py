"""An encoder run in a child process, so its forward passes never wait for the worker's GIL.

PyTorch takes the GIL back between kernels, eager or compiled, and in the worker the write
step (qdrant-edge holds the GIL for a whole engine call), the URL fetch loop and Faust hold it
too: beside one busy Python thread the encoder runs at 0.12-0.6x its speed alone
(benchmarks/gil_contention.py). In its own process the model has a GIL of its own.

The child gets a copy of the encoder (its weights pickled once, at start), configured as the
parent's (precision, compile, forward chunk, torch threads), and warms it up. Each batch goes
over a pipe as uint8 pixels and comes back as vectors; the parent's thread waits with the GIL
released. :class:`EncoderProcess` stands in for the encoder everywhere in the worker (indexing,
searches, the rollout backfill, exemplars): every vector of a version comes from the same
child, so a query and the catalogue are embedded by the same compiled code (a model compiled
in two processes was measured to disagree with itself: cosine 0.98-0.999 for the same image).
The worker's own copy is never run: it answers for the version, preprocessing and dimensions.

A child that dies (killed, out of memory) raises :class:`~lookalike.errors.ServiceUnavailable`,
so the batch is retried, and the next call starts a new child; an error of the model itself
comes back as :class:`EncoderProcessError`, which the pipeline treats as any model error (it
retries the images one by one and dead-letters the one that breaks it).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ServiceUnavailable
from .base import Encoder

log = logging.getLogger(__name__)

#: Seconds a new child may take to load and warm up its encoder (compiling included).
START_TIMEOUT = 600.0


class EncoderProcessError(RuntimeError):
    """The model raised in the child; the message is the child's."""


def _serve(connection: Connection, encoder: Encoder, settings: dict[str, Any]) -> None:
    """The child: configure and warm the encoder, then embed every batch it is sent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the child stops
    torch.set_num_threads(settings["threads"])
    encoder.configure_inference(settings["precision"], settings["compile"], settings["chunk"])
    encoder.warm_up()
    connection.send(("ready", encoder.compiled))
    while True:
        try:
            pixels = connection.recv()
        except (EOFError, OSError):  # the parent closed the pipe, or died: stop
            return
        try:
            vectors = encoder.embed_tensors(torch.from_numpy(pixels))
        except MemoryError:
            connection.send(("memory", ""))
        except Exception as exc:
            connection.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            connection.send(("ok", vectors))


class EncoderProcess:
    """``encoder`` with its forward passes in a child process: :meth:`embed_tensors`,
    :meth:`embed_images` and :meth:`warm_up` (which starts the child) run there; everything else
    (version, dim, preprocessing, ...) is the encoder's. Thread-safe (one batch at a time, like
    the encoder's own lock)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self._lock = threading.Lock()
        self._child: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._compiled: bool | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "encoder":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.encoder, name)

    @property
    def compiled(self) -> bool:
        """Whether the child's copy is compiled (before it starts: as configured)."""
        return self.encoder.compiled if self._compiled is None else self._compiled

    def warm_up(self) -> None:
        """Start (and so warm up) the child now, not on the first batch. Blocking."""
        self.start()

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_tensors([self.encoder.preprocess(image) for image in images])

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.is_alive()

    def start(self) -> None:
        """Start the child now (loading and compiling take seconds), not on the first batch."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> Connection:
        if self._connection is not None and self.running:
            return self._connection
        if self._child is not None:
            log.warning(
                "the encoder process of %s had exited (exit code %s); starting a new one",
                self.encoder.version,
                self._child.exitcode,
            )
        self._discard()
        encoder = self.encoder
        settings = {
            "precision": encoder.precision,
            "compile": encoder.compiled,
            "chunk": encoder.chunk,
            "threads": torch.get_num_threads(),
        }
        context = multiprocessing.get_context("spawn")  # the worker holds threads: no fork
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_serve,
            args=(theirs, encoder, settings),
            name=f"encoder-{encoder.version}",
            daemon=True,
        )
        child.start()
        theirs.close()
        self._child, self._connection = child, ours
        if not ours.poll(START_TIMEOUT):
            self._discard()
            raise ServiceUnavailable(f"the encoder process did not start in {START_TIMEOUT:.0f}s")
        try:
            _, self._compiled = ours.recv()
        except (EOFError, OSError):
            code = child.exitcode
            self._discard()
            raise ServiceUnavailable(
                f"the encoder process exited while starting (exit code {code}); see its log"
            ) from None
        log.info(
            "encoder %s runs in process %d (%s)",
            encoder.version,
            child.pid,
            "compiled" if self._compiled else "eager",
        )
        return ours

    def embed_tensors(self, tensors: Sequence[torch.Tensor] | torch.Tensor) -> np.ndarray:
        """As :meth:`Encoder.embed_tensors`. Raises ServiceUnavailable when the child died
        (retry: the next call starts a new one), EncoderProcessError when the model raised,
        MemoryError when the child ran out of memory."""
        if len(tensors) == 0:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        batch = tensors if isinstance(tensors, torch.Tensor) else torch.stack(list(tensors))
        with self._lock:
            connection = self._ensure()
            try:
                connection.send(batch.numpy())
                kind, value = connection.recv()
            except (EOFError, OSError) as exc:
                code = self._child.exitcode if self._child is not None else None
                self._discard()
                raise ServiceUnavailable(
                    f"the encoder process died (exit code {code}: {exc or 'pipe closed'}); "
                    "the batch is retried in a new one"
                ) from None
        if kind == "ok":
            return value
        if kind == "memory":
            raise MemoryError("the encoder process ran out of memory")
        raise EncoderProcessError(value)

    def _discard(self) -> None:
        connection, child = self._connection, self._child
        self._connection = self._child = None
        if connection is not None:
            connection.close()
        if child is not None:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)

    def close(self) -> None:
        with self._lock:
            self._discard()
