"""torchvision families (ResNet-50, ConvNeXt-Tiny, ViT-B/16) as encoders.

Weights are read from torchvision's standard cache (``$TORCH_HOME/hub/checkpoints/<file>``,
where torchvision itself would download them) or from an explicit file path. They are only
downloaded when LOOKALIKE_DOWNLOAD_WEIGHTS is set; a missing file is an error that says which
file to put where. Nothing ever falls back to random weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import EncoderUnavailable
from .base import Encoder, Preprocessing, file_digest, model_version_id

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TorchvisionSpec:
    name: str
    builder: str  # torchvision.models function name
    weights_enum: str  # e.g. "ResNet50_Weights.IMAGENET1K_V2"
    dim: int
    preprocessing: Preprocessing

    def weights_url(self) -> str:
        import torchvision.models as tvm

        enum_name, member = self.weights_enum.split(".")
        return str(getattr(getattr(tvm, enum_name), member).url)

    def weights_filename(self) -> str:
        return self.weights_url().rsplit("/", 1)[-1]

    def cache_path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / self.weights_filename()


TORCHVISION_SPECS = {
    spec.name: spec
    for spec in (
        TorchvisionSpec(
            "resnet50",
            "resnet50",
            "ResNet50_Weights.IMAGENET1K_V2",
            2048,
            Preprocessing(232, 224, IMAGENET_MEAN, IMAGENET_STD),
        ),
        TorchvisionSpec(
            "convnext-tiny",
            "convnext_tiny",
            "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
            768,
            Preprocessing(236, 224, IMAGENET_MEAN, IMAGENET_STD),
        ),
        TorchvisionSpec(
            "vit-b16",
            "vit_b_16",
            "ViT_B_16_Weights.IMAGENET1K_V1",
            768,
            Preprocessing(256, 224, IMAGENET_MEAN, IMAGENET_STD),
        ),
    )
}


def locate_weights(spec: TorchvisionSpec, explicit: Path | None, download: bool) -> Path:
    if explicit is not None:
        if not explicit.is_file():
            raise EncoderUnavailable(f"{spec.name} weights file {explicit} does not exist")
        return explicit
    cached = spec.cache_path()
    if cached.is_file():
        return cached
    if download:
        try:
            log.info("downloading %s weights from %s", spec.name, spec.weights_url())
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(spec.weights_url(), str(cached), progress=True)
            return cached
        except Exception as exc:  # no network, proxy, disk: say what to do instead
            reason = f"downloading it failed ({type(exc).__name__}: {exc})"
    else:
        reason = "downloads are off (LOOKALIKE_DOWNLOAD_WEIGHTS)"
    raise EncoderUnavailable(
        f"{spec.name} needs the ImageNet weights file {spec.weights_filename()}, and {reason}. "
        f"Put the file at {cached} (torchvision's cache; TORCH_HOME moves it), or set "
        f"LOOKALIKE_ENCODER_WEIGHTS=/path/to/{spec.weights_filename()}. It is published at "
        f"{spec.weights_url()}."
    )


def _feature_extractor(
    spec: TorchvisionSpec, model: nn.Module
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Penultimate-layer features: the classifier's input."""
    if spec.builder == "resnet50":
        model.fc = nn.Identity()
    elif spec.builder == "convnext_tiny":
        model.classifier[-1] = nn.Identity()  # keep LayerNorm2d + Flatten
    elif spec.builder == "vit_b_16":
        model.heads = nn.Identity()  # class token after the encoder's final LayerNorm
    return model


class TorchvisionEncoder(Encoder):
    def __init__(
        self,
        spec: TorchvisionSpec,
        weights: Path | None = None,
        device: torch.device | None = None,
        download: bool = False,
    ) -> None:
        super().__init__()
        import torchvision.models as tvm

        path = locate_weights(spec, weights, download)
        model = getattr(tvm, spec.builder)(weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:
            raise EncoderUnavailable(
                f"{path} is not a {spec.name} state dict ({type(exc).__name__}: {exc})"
            ) from None
        self.name = spec.name
        self.dim = spec.dim
        self.preprocessing = spec.preprocessing
        self.device = device or torch.device("cpu")
        self.model = (
            _feature_extractor(spec, model)
            .eval()
            .to(self.device, memory_format=torch.channels_last)
        )
        self.version = model_version_id(spec.name, file_digest(path), spec.preprocessing)

    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)
