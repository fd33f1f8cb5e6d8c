"""Device-aware defaults: what an unset throughput setting becomes on a CPU and beside a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.settings import Settings
from lookalike.tuning import GPU_RESERVED_CORES, Tuning, usable_cores


@pytest.fixture
def unset(settings_env: Path) -> Settings:
    return Settings()


def test_cpu_keeps_the_defaults_measured_best_on_two_cores(unset: Settings) -> None:
    tuning = Tuning.choose(unset, "cpu", cores=2)
    assert tuning.inference_batch == 8
    assert tuning.batch_size == 64
    assert tuning.batches_in_flight == 3
    assert tuning.decode_threads == 4
    assert tuning.decode_processes == 1  # off the worker's GIL
    assert tuning.encoder_process  # the model gets a GIL of its own
    # The encoder takes the other cores on a CPU device; on a single core a process only adds
    # the transfers.
    assert Tuning.choose(unset, "cpu", cores=64).decode_processes == 1
    assert Tuning.choose(unset, "cpu", cores=1).decode_processes == 0


@pytest.mark.parametrize("cores", [1, 2, 16, 96])
def test_gpu_decodes_in_processes_on_all_but_the_reserved_cores(
    unset: Settings, cores: int
) -> None:
    tuning = Tuning.choose(unset, "cuda", cores=cores)
    assert tuning.decode_processes == max(1, cores - GPU_RESERVED_CORES)
    assert tuning.inference_batch == 128
    assert tuning.batch_size == 256
    assert tuning.batches_in_flight == 3
    assert not tuning.encoder_process  # not measured beside a GPU yet


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_settings_override_the_chosen_values(settings_env: Path, device: str) -> None:
    settings = Settings(
        inference_batch=16, batch_size=48, batches_in_flight=5, decode_threads=3, decode_processes=2
    )
    tuning = Tuning.choose(settings, device, cores=16)
    assert (
        tuning.inference_batch,
        tuning.batch_size,
        tuning.batches_in_flight,
        tuning.decode_threads,
        tuning.decode_processes,
    ) == (16, 48, 5, 3, 2)
    assert not Tuning.choose(Settings(encoder_process=False), device, cores=16).encoder_process
    assert Tuning.choose(Settings(encoder_process=True), device, cores=16).encoder_process
    # Zero processes is a choice, not "unset": decode stays in threads even beside a GPU.
    assert Tuning.choose(Settings(decode_processes=0), "cuda", cores=16).decode_processes == 0


def test_environment_variables_reach_the_tuning(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKALIKE_INFERENCE_BATCH", "64")
    monkeypatch.setenv("LOOKALIKE_DECODE_PROCESSES", "6")
    tuning = Tuning.choose(Settings(), "cpu", cores=2)
    assert tuning.inference_batch == 64 and tuning.decode_processes == 6


def test_cores_default_to_what_this_process_may_use(unset: Settings) -> None:
    assert Tuning.choose(unset, "cpu").cores == usable_cores() >= 1
    assert "8" in Tuning.choose(unset, "cpu", cores=2).describe()
