"""The encoder seam: what every image encoder provides to the pipeline.

An encoder owns its preprocessing (so a version id can pin it), turns decoded RGB images into
L2-normalised float32 vectors, and names itself with a *model version id* derived from
model name + weights digest + preprocessing. That id is stored with every indexed point and
names the Qdrant collection, so vectors of different models never mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ..errors import EncoderUnavailable

log = logging.getLogger(__name__)


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

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> uint8 CHW tensor of the centre crop, resized.

        The central square is cropped and resized in one resampling pass (the same region as
        "resize the short side, then centre-crop"), so a 20000x1 image cannot blow up into a
        huge intermediate. Normalisation happens later, batched, inside the (compiled) model.
        """
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        resized = image.resize(
            (self.resize, self.resize),
            _PIL_FILTERS[self.interpolation],
            box=(left, top, left + side, top + side),
        )
        if self.crop != self.resize:
            offset = (self.resize - self.crop) // 2
            resized = resized.crop((offset, offset, offset + self.crop, offset + self.crop))
        array = np.asarray(resized.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> normalised float NCHW, on the batch's device."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return (batch.float() / 255.0 - mean) / std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalised CHW float tensor."""
        return self.normalize(self.pixels(image)[None])[0]


_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


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


@dataclass
class TrainableTail:
    """An encoder split for fine-tuning: a frozen trunk and a trainable tail."""

    #: Normalised NCHW batch -> the trunk's feature maps.
    trunk: Callable[[torch.Tensor], torch.Tensor]
    #: Feature maps -> pooled features. Shares the encoder's parameters: loading a state dict
    #: into it changes the encoder.
    tail: torch.nn.Module
    description: str
    #: How many blocks before the last stage the tail holds (0: the last stage only).
    blocks: int = 0


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
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self._features
        self.precision = "fp32"
        self.compiled = False
        self.chunk = 8

    def configure_inference(
        self, precision: Precision = "auto", compile: bool = False, chunk: int = 8
    ) -> None:
        """``chunk``: images per forward pass. On CPUs small chunks win (activations stay in
        cache: measured 2x faster at 8 than at 32 for EfficientNet-Lite0); on a GPU, raise it."""
        self.chunk = max(1, chunk)
        self._dtype = autocast_dtype(self.device, precision)
        self.precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self._dtype]
        self.compiled = compile
        if compile:
            # Inference only: let Inductor fold the weights in as constants and pre-pack them for
            # oneDNN (measured 1.5x on EfficientNet-Lite0 over compile without it).
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
        # Static shapes (chunk x 3 x crop x crop, and 1 x ...; short chunks are padded): compiled
        # once each at warm-up, never recompiled for a partial batch.
        self._forward = torch.compile(self._features, dynamic=False) if compile else self._features

    def warm_up(self) -> None:
        """Run each compiled shape once (a whole chunk, and a single image) so compilation and
        allocator warm-up happen now, not on the first upload. If torch.compile cannot work
        here (no C++ compiler, say), fall back to eager."""
        size = self.preprocessing.crop
        try:
            for n in sorted({1, self.chunk}):
                self.embed_tensors(torch.zeros(n, 3, size, size, dtype=torch.uint8))
        except Exception as exc:
            if not self.compiled:
                raise
            log.warning(
                "torch.compile failed (%s: %s); running the encoder eagerly (LOOKALIKE_COMPILE=0 "
                "skips the attempt)",
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
            )
            self._forward = self._features
            self.compiled = False
            self.embed_tensors(torch.zeros(self.chunk, 3, size, size, dtype=torch.uint8))

    @abstractmethod
    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        """NCHW normalised batch on self.device -> N x dim features (not yet normalised)."""

    def trainable_tail(self, blocks: int = 0) -> TrainableTail | None:
        """The last stage and the ``blocks`` blocks before it, split off for fine-tuning; None:
        only a head can be trained."""
        return None

    def trunk_maps(self, tensors: Sequence[torch.Tensor], blocks: int = 0) -> torch.Tensor:
        """Preprocessed tensors -> what :meth:`trainable_tail`'s tail takes (float32, CPU),
        computed once so training runs only the tail. Blocking."""
        split = self.trainable_tail(blocks)
        if split is None:
            raise EncoderUnavailable(f"{self.name} has no trainable tail: train a head only")
        batch = torch.stack(list(tensors)).to(self.device)
        with self._lock, torch.no_grad():  # no_grad, not inference_mode: the maps feed autograd
            with torch.autocast(
                self.device.type,
                dtype=self._dtype or torch.float32,
                enabled=self._dtype is not None,
            ):
                pixels = (
                    self.preprocessing.normalize(batch) if batch.dtype == torch.uint8 else batch
                )
                maps = split.trunk(pixels.contiguous(memory_format=torch.channels_last))
        return maps.float().cpu()

    def __getstate__(self) -> dict[str, object]:
        """What a child process gets (encoders/process.py): the model and its settings; not the
        lock, nor the compiled function (the child configures and compiles its own)."""
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state.pop("_forward", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._forward = self._features

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        # uint8 pixels (from preprocess) are normalised here, where compilation fuses it into
        # the first layer; float input is taken as already normalised.
        if batch.dtype == torch.uint8:
            batch = self.preprocessing.normalize(batch)
        return self.forward_features(batch)

    def _forward_chunk(self, part: torch.Tensor) -> torch.Tensor:
        n = part.shape[0]
        # Two compiled shapes: a single image (an upload on an idle worker, a search query) runs
        # alone, at a fraction of a whole chunk's cost on a CPU; anything else is padded to the
        # chunk. Never recompiled for a partial batch.
        if self.compiled and 1 < n < self.chunk:
            padding = part[-1:].expand(self.chunk - n, *part.shape[1:])
            part = torch.cat([part, padding]).contiguous(memory_format=torch.channels_last)
        return self._forward(part)[:n].float()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Decoded image -> what :meth:`embed_tensors` takes: uint8 CHW pixels (4x smaller than
        floats to hold, batch and move to a GPU)."""
        return self.preprocessing.pixels(image)

    def embed_tensors(self, tensors: Sequence[torch.Tensor] | torch.Tensor) -> np.ndarray:
        """Preprocessed CHW tensors (uint8 pixels, or normalised floats) -> (N, dim) float32,
        L2-normalised. Blocking: run off-loop."""
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
                features = torch.cat(
                    [self._forward_chunk(part) for part in batch.split(self.chunk)]
                )
            features = torch.nn.functional.normalize(features, dim=1)
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
            "chunk": self.chunk,
            "preprocessing": asdict(self.preprocessing),
        }
