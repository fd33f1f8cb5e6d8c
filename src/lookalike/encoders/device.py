"""Pick the torch device: CUDA when present (or asked for), else the CPU."""

from __future__ import annotations

import logging

import torch

from ..errors import ConfigurationError

#: Logged by torch's cpp_extension whenever torch.compile builds its C++ kernels on a machine
#: that has a CUDA toolkit (nvcc) but no CUDA device: it says nothing about the CPU build the
#: compile makes, and reads like a failure on every CPU-only start.
CUDA_HOME_NOTICE = "No CUDA runtime is found"


class _WithoutCudaHomeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(CUDA_HOME_NOTICE)


def quiet_cuda_home_notice() -> None:
    """Drop torch's misleading CUDA_HOME notice on machines without a CUDA device."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    if torch.cuda.is_available() or any(
        isinstance(f, _WithoutCudaHomeNotice) for f in logger.filters
    ):
        return
    logger.addFilter(_WithoutCudaHomeNotice())


def resolve_device(requested: str = "auto") -> torch.device:
    quiet_cuda_home_notice()  # every encoder resolves its device before it compiles
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigurationError(
            f"LOOKALIKE_DEVICE={requested!r} is not a torch device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(
            f"LOOKALIKE_DEVICE={requested!r} but no CUDA device is visible; use 'auto' or 'cpu'."
        )
    return device
