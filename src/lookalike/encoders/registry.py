"""Encoders by name. The encoders issue adds torchvision families and fine-tuned checkpoints;
this is the seam they plug into."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigurationError
from .base import Encoder
from .device import resolve_device

EncoderFactory = Callable[[torch.device], Encoder]


def _efficientnet_lite0(device: torch.device) -> Encoder:
    from .efficientnet_lite import EfficientNetLiteEncoder

    return EfficientNetLiteEncoder("efficientnet-lite0", device=device)


ENCODERS: dict[str, EncoderFactory] = {
    "efficientnet-lite0": _efficientnet_lite0,
}


def available_encoders() -> list[str]:
    return sorted(ENCODERS)


def load_encoder(name: str, device: str = "auto") -> Encoder:
    try:
        factory = ENCODERS[name]
    except KeyError:
        raise ConfigurationError(
            f"Unknown encoder {name!r}; LOOKALIKE_ENCODER must be one of {available_encoders()}"
        ) from None
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return factory(resolve_device(device))
