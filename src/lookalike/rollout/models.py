"""The encoders of a worker's written model versions (serving, candidate, previous).

One encoder per written version, loaded at start from the version registry (which decides;
``LOOKALIKE_ENCODER`` only names the first serving version of an empty index). The dict is
shared in place with search and the indexing pipeline, so a rollout step that adds or drops a
version is seen by both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..encoders import Encoder, EncoderProcess, encoder_from_settings
from ..errors import ConfigurationError
from ..index import VectorIndex
from ..settings import Settings
from .versions import VersionRecord, VersionRegistry

log = logging.getLogger(__name__)


class WorkerModels:
    def __init__(
        self,
        settings: Settings,
        index: VectorIndex,
        registry: VersionRegistry,
        *,
        injected: Encoder | None = None,
        loader: Callable[[str], Encoder] | None = None,
        separate_processes: bool = False,
    ) -> None:
        """``separate_processes``: each version's encoder runs in a child process of its own
        (:class:`~lookalike.encoders.EncoderProcess`), for indexing and searches alike."""
        self.settings = settings
        self.separate_processes = separate_processes
        self.index = index
        self.registry = registry
        self._injected = {injected.version: injected} if injected is not None else {}
        self._loader = loader
        #: One encoder per written model version.
        self.encoders: dict[str, Encoder] = {}

    def open(self) -> None:
        """Blocking: register the first serving version of an empty index, then load the
        encoder of every written version (not warmed up yet: see :meth:`warm_up`)."""
        if self.registry.serving() is None:
            self._bootstrap()
        for record in self.registry.written():
            self.index.ensure_collection(record.version, record.dim)
            if record.version not in self.encoders:
                self.encoders[record.version] = self.encoder_for(record)
        serving = self.registry.serving()
        assert serving is not None
        if self.settings.encoder not in {r.encoder for r in self.registry.written()}:
            log.warning(
                "LOOKALIKE_ENCODER=%s is not a written model version; the version registry "
                "decides (serving: %s from %s). To move to it: lookalike rollout start %s",
                self.settings.encoder,
                serving.version,
                serving.encoder,
                self.settings.encoder,
            )

    def load(self, spec: str, warm: bool = True) -> Encoder:
        """Blocking: build (and warm up) the encoder ``spec`` (a name or a .pt path)."""
        loaded = (
            self._loader(spec)
            if self._loader is not None
            else encoder_from_settings(self.settings, spec)
        )
        model = self._separate(loaded)
        if warm and self._loader is None:
            self._warm(model)
        return model

    def _separate(self, model: Encoder) -> Encoder:
        if not self.separate_processes or isinstance(model, EncoderProcess):
            return model
        return EncoderProcess(model)  # type: ignore[return-value]  # stands in for the encoder

    def warm_up(self) -> None:
        """Blocking: compile and warm every loaded encoder. The worker runs this on the model
        thread while it joins its consumer group: batches queue behind it on that thread, and a
        search that needs an encoder waits on the encoder's own lock, so nothing runs cold."""
        for model in list(self.encoders.values()):
            self._warm(model)

    @staticmethod
    def _warm(model: Encoder) -> None:
        started = time.perf_counter()
        model.warm_up()
        log.info("encoder %s warmed up in %.1fs", model.version, time.perf_counter() - started)

    def encoder_for(self, record: VersionRecord) -> Encoder:
        injected = self._injected.get(record.version)
        model = self._separate(injected) if injected else self.load(record.encoder, warm=False)
        if model.version != record.version:
            raise ConfigurationError(
                f"model version {record.version} was built with encoder {record.encoder!r}, "
                f"which now loads as {model.version} (its weights changed): restore them, or "
                "abort/retire that version"
            )
        return model

    def keep_only(self, versions: set[str]) -> None:
        """Drop the encoders of versions no longer written (in place: the dict is shared)."""
        for stale in set(self.encoders) - versions:
            dropped = self.encoders.pop(stale)
            if isinstance(dropped, EncoderProcess):
                dropped.close()

    def close(self) -> None:
        """Stop the encoders' child processes, if they run in their own."""
        for model in self.encoders.values():
            if isinstance(model, EncoderProcess):
                model.close()

    def _bootstrap(self) -> None:
        """An index without a registry: the configured encoder becomes the serving version."""
        injected = next(iter(self._injected.values()), None)
        first = (
            self._separate(injected) if injected else self.load(self.settings.encoder, warm=False)
        )
        alias = self.index.serving_version()
        if alias is not None and alias != first.version:
            raise ConfigurationError(
                f"the serving alias points at {alias}, but LOOKALIKE_ENCODER="
                f"{self.settings.encoder} is {first.version}: start the worker with the "
                "serving encoder, then `lookalike rollout start` the new one"
            )
        self.index.ensure_collection(first.version, first.dim)
        if alias is None:
            self.index.set_serving(first.version)
        self.registry.bootstrap(first.version, self.settings.encoder, first.dim)
        self.encoders[first.version] = first
        log.info("version registry: %s is the serving version", first.version)
