"""The encoder seam: what every image encoder provides to the pipeline.

An encoder owns its preprocessing (so a version id can pin it), turns decoded RGB images into
L2-normalised float32 vectors, and names itself with a *model version id* derived from
model name + weights digest + preprocessing. That id is stored with every indexed point and
names the Qdrant collection, so vectors of different models never mix.
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side to ``resize``, centre-crop ``crop``, scale to [0,1], normalise."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalised CHW float tensor."""
        mode = TF.InterpolationMode(self.interpolation)
        # Crop the central square first: the same region as "resize the short side, then
        # centre-crop", but a 20000x1 image cannot blow up into a huge intermediate.
        side = min(image.size)
        image = TF.center_crop(image, [side, side])
        image = TF.resize(image, [self.resize, self.resize], interpolation=mode, antialias=True)
        image = TF.center_crop(image, [self.crop, self.crop])
        tensor = TF.pil_to_tensor(image).float().div_(255.0)
        return TF.normalize(tensor, list(self.mean), list(self.std))


def file_digest(path: Path, length: int = 8) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()[:length]


def model_version_id(name: str, weights_digest: str, preprocessing: Preprocessing) -> str:
    """E.g. ``efficientnet-lite0-w57934424-p1f2e3d4c``: safe as a Qdrant collection name."""
    return f"{name}-w{weights_digest}-p{preprocessing.digest()}"


Precision = Literal["auto", "fp32", "bf16", "fp16"]


def autocast_dtype(device: torch.device, precision: Precision) -> torch.dtype | None:
    """The reduced precision to run the model in on ``device``, or None for plain fp32.

    ``auto`` picks bf16 where the hardware does it natively (CUDA with bf16, or a CPU whose
    oneDNN has bf16 kernels: AVX512-BF16 / AMX) and fp32 elsewhere, where emulated bf16 would be
    slower. benchmarks/encoder_optimizations.py measures speed and retrieval quality of each.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


class Encoder(ABC):
    """Base class. Subclasses build their model and implement :meth:`forward_features`.

    Inference runs under ``torch.inference_mode``, channels-last, in the reduced precision
    chosen by :meth:`configure_inference` (autocast), optionally through ``torch.compile``.
    The model version id does not depend on these: they change vectors only within the
    tolerance the benchmark checks (mAP within 0.01 of fp32).
    """

    name: str
    dim: int
    version: str
    preprocessing: Preprocessing
    device: torch.device

    def __init__(self) -> None:
        # One model, many callers (agent batches, search queries): serialise forward passes.
        self._lock = threading.Lock()
        self._dtype: torch.dtype | None = None
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.forward_features
        self.precision = "fp32"
        self.compiled = False

    def configure_inference(self, precision: Precision = "auto", compile: bool = False) -> None:
        self._dtype = autocast_dtype(self.device, precision)
        self.precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self._dtype]
        self.compiled = compile
        # dynamic=True: batch sizes vary (full batches, partial ones, single search queries).
        self._forward = (
            torch.compile(self.forward_features, dynamic=True) if compile else self.forward_features
        )

    @abstractmethod
    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        """NCHW normalised batch on self.device -> N x dim features (not yet normalised)."""

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.preprocessing(image)

    def embed_tensors(self, tensors: Sequence[torch.Tensor] | torch.Tensor) -> np.ndarray:
        """Preprocessed CHW tensors -> (N, dim) float32, L2-normalised. Blocking: run off-loop."""
        if isinstance(tensors, torch.Tensor):
            batch = tensors
        else:
            if not tensors:
                return np.zeros((0, self.dim), dtype=np.float32)
            batch = torch.stack(list(tensors))
        with self._lock, torch.inference_mode():
            batch = batch.to(self.device, non_blocking=True).contiguous(
                memory_format=torch.channels_last
            )
            with torch.autocast(
                self.device.type,
                dtype=self._dtype or torch.float32,
                enabled=self._dtype is not None,
            ):
                features = self._forward(batch)
            features = torch.nn.functional.normalize(features.float(), dim=1)
            return features.cpu().numpy().astype(np.float32, copy=False)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_tensors([self.preprocess(image) for image in images])

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "dim": self.dim,
            "version": self.version,
            "device": str(self.device),
            "precision": self.precision,
            "compiled": self.compiled,
            "preprocessing": asdict(self.preprocessing),
        }
