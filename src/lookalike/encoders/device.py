"""Pick the torch device: CUDA when present (or asked for), else the CPU."""

from __future__ import annotations

import torch

from ..errors import ConfigurationError


def resolve_device(requested: str = "auto") -> torch.device:
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
