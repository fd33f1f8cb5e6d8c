"""A fixed-cost stand-in for the encoder, and `lookalike` run with it.

The stand-in costs a fixed time per image, spent asleep (the GIL released, as while a GPU
computes), and turns each image into a 1,280-dim vector from its pixels (a fixed projection of
8x8 mean colours), so the index holds real, distinct vectors. Its input is small (32 px: JPEGs
decode at 1/8 scale), so decoding costs little too: what is left is the streaming path itself
(Kafka, Faust, fetch, the batches in flight, the index writes and the category validator's
searches), whose ceiling then shows on any machine.

    python benchmarks/_stand_in.py worker --data-dir D --port P
runs `lookalike` with the stand-in in place of LOOKALIKE_ENCODER; the cost per image is
LOOKALIKE_BENCH_STAND_IN_MS (milliseconds, default 0.25: 4,000 images/s).

With LOOKALIKE_BENCH_STAND_IN_VECTORS naming an .npz of ``digests`` (sha256 of an image's
uint8 pixels at the stand-in's input size, :func:`pixel_digest`) and ``vectors`` (its real
embedding), a known image gets its real vector plus a little noise instead: the category
validator then sees real neighbourhoods and real categories, so its cost in the pipeline is the
one a real encoder would cause.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from lookalike.encoders.base import Encoder, Preprocessing, model_version_id

STAND_IN_PREPROCESSING = Preprocessing(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)
COST_VARIABLE = "LOOKALIKE_BENCH_STAND_IN_MS"
VECTORS_VARIABLE = "LOOKALIKE_BENCH_STAND_IN_VECTORS"
#: Per-dimension noise on a looked-up vector, relative to 1/sqrt(dim) (as search_scale.py).
NOISE = 0.35


def pixel_digest(pixels: torch.Tensor) -> str:
    return hashlib.sha256(pixels.contiguous().numpy().tobytes()).hexdigest()


class StandInEncoder(Encoder):
    def __init__(
        self,
        ms_per_image: float,
        dim: int = 1280,
        vectors: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        #: pixel digest -> real embedding (see the module's docstring).
        self.vectors = dict(vectors or {})
        self.name = "stand-in"
        self.dim = dim
        self.preprocessing = STAND_IN_PREPROCESSING
        self.device = torch.device("cpu")
        self.seconds_per_image = ms_per_image / 1000
        generator = torch.Generator().manual_seed(0)
        self.projection = torch.randn(3 * 8 * 8, dim, generator=generator)
        self.version = model_version_id(
            self.name, f"{round(ms_per_image * 1000):08d}", self.preprocessing
        )

    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds_per_image * batch.shape[0])
        # Contiguous first: pooling a channels-last batch is several times slower.
        colours = torch.nn.functional.adaptive_avg_pool2d(batch.float().contiguous(), 8)
        colours = colours.flatten(1)
        return colours @ self.projection

    def embed_tensors(self, tensors: Sequence[torch.Tensor] | torch.Tensor) -> np.ndarray:
        """Every image pays the fixed cost (asleep); a known one gets its real vector plus noise
        without computing the projection, so the stand-in's own CPU stays small beside the
        streaming path it stands in for."""
        known = [
            self.vectors.get(pixel_digest(pixels)) if pixels.dtype == torch.uint8 else None
            for pixels in tensors
        ]
        unknown = [n for n, vector in enumerate(known) if vector is None]
        if len(unknown) == len(known):
            return super().embed_tensors(tensors)  # the projection, asleep in forward_features
        time.sleep(self.seconds_per_image * (len(known) - len(unknown)))
        embedded = np.empty((len(known), self.dim), dtype=np.float32)
        if unknown:
            embedded[unknown] = super().embed_tensors([tensors[n] for n in unknown])
        rows = [n for n, vector in enumerate(known) if vector is not None]
        noisy = np.stack([known[n] for n in rows]) + np.random.default_rng().normal(
            0.0, NOISE / np.sqrt(self.dim), (len(rows), self.dim)
        )
        embedded[rows] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
        return embedded


def load_vectors(path: str) -> dict[str, np.ndarray]:
    table = np.load(path)
    return dict(zip(table["digests"].tolist(), table["vectors"].astype(np.float32), strict=True))


def stand_in_from_env() -> StandInEncoder:
    vectors = os.environ.get(VECTORS_VARIABLE)
    return StandInEncoder(
        float(os.environ.get(COST_VARIABLE, "0.25")),
        vectors=load_vectors(vectors) if vectors else None,
    )


def run_lookalike_with_stand_in() -> None:
    from lookalike.cli import main
    from lookalike.streams.runtime import Runtime

    original = Runtime.__init__

    def with_stand_in(self, settings, encoder=None, encoder_loader=None, **options):  # noqa: ANN001, ANN003
        original(self, settings, encoder or stand_in_from_env(), encoder_loader, **options)

    Runtime.__init__ = with_stand_in  # type: ignore[method-assign]
    sys.argv[0] = "lookalike"
    main()


if __name__ == "__main__":
    run_lookalike_with_stand_in()
