"""Image encoders: preprocessing + embedding models, named by a model version id."""

from .base import Encoder, Preprocessing, model_version_id
from .device import resolve_device
from .process import EncoderProcess, EncoderProcessError
from .registry import (
    EncoderStatus,
    available_encoders,
    configure_threads,
    encoder_from_settings,
    encoder_status,
    list_encoders,
    load_encoder,
)

__all__ = [
    "Encoder",
    "EncoderProcess",
    "EncoderProcessError",
    "EncoderStatus",
    "Preprocessing",
    "available_encoders",
    "configure_threads",
    "encoder_from_settings",
    "encoder_status",
    "list_encoders",
    "load_encoder",
    "model_version_id",
    "resolve_device",
]
