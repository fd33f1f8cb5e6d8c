"""Throughput knobs chosen from the machine: the device the encoder runs on and the cores.

Each knob is a setting; an unset one is chosen here. On a CPU the encoder is the bottleneck by
an order of magnitude (benchmarks/pipeline_throughput.py); what was measured best on 2 cores:
forward chunks of 8 (activations stay in cache), and for the rest of the path micro-batches of
64, 3 in flight and decoding in one process of its own, which takes decoding off the GIL the
worker's event loop and writer share (with the stand-in encoder, run alternately: 1.19-1.34x
the events/s of decoding in threads with micro-batches of 32 and 2 in flight). Beside a GPU the
model wants large chunks and the rest of the path must keep up with it: decoding moves to
processes on all but two cores (Pillow in threads stays flat at about 1,400 images/s from 4 to
15 threads, measured on 16 cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .settings import Settings

#: Cores left to the event loop (Kafka, the API) and the model thread beside a GPU.
GPU_RESERVED_CORES = 2


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Tuning:
    inference_batch: int
    batch_size: int
    batches_in_flight: int
    decode_threads: int
    decode_processes: int
    encoder_process: bool
    device_type: str
    cores: int

    @classmethod
    def choose(cls, settings: Settings, device_type: str, cores: int | None = None) -> Tuning:
        """The settings' values, and for each unset one the default for ``device_type``
        ("cpu", "cuda", ...) on ``cores`` cores."""
        cores = cores or usable_cores()
        gpu = device_type != "cpu"

        def pick(value: int | None, on_cpu: int, on_gpu: int) -> int:
            return value if value is not None else (on_gpu if gpu else on_cpu)

        return cls(
            inference_batch=pick(settings.inference_batch, 8, 128),
            batch_size=pick(settings.batch_size, 64, 256),
            batches_in_flight=pick(settings.batches_in_flight, 3, 3),
            decode_threads=pick(settings.decode_threads, 4, 4),
            # On a CPU one process is enough (the encoder takes the other cores), and on one
            # core a process only adds the transfers.
            decode_processes=pick(
                settings.decode_processes,
                1 if cores > 1 else 0,
                max(1, cores - GPU_RESERVED_CORES),
            ),
            encoder_process=(
                settings.encoder_process if settings.encoder_process is not None else not gpu
            ),
            device_type=device_type,
            cores=cores,
        )

    def describe(self) -> str:
        decode = (
            f"{self.decode_processes} decode process{'es' if self.decode_processes > 1 else ''}"
            if self.decode_processes
            else f"{self.decode_threads} decode threads"
        )
        where = ", the encoder in its own process" if self.encoder_process else ""
        return (
            f"micro-batches of {self.batch_size} ({self.batches_in_flight} in flight), forward "
            f"chunks of {self.inference_batch}, {decode}{where} ({self.device_type}, "
            f"{self.cores} cores)"
        )
