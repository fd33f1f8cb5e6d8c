"""Image encoders: preprocessing + embedding models, named by a model version id."""

from .base import Encoder, Preprocessing, model_version_id
from .registry import available_encoders, load_encoder

__all__ = ["Encoder", "Preprocessing", "available_encoders", "load_encoder", "model_version_id"]
