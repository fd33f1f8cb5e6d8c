"""Each encoder optimisation against plain eager fp32: images/s and retrieval quality.

    .venv/bin/python benchmarks/encoder_optimizations.py [--encoder efficientnet-lite0]
        [--dataset DIR] [--images N] [--batch-size 32]

All images are decoded and preprocessed once; every variant then embeds the same tensors in
batches (the ceiling the worker can reach), and its vectors are scored leave-one-out with
category as relevance (mAP, Recall@1), so a speed-up never hides a quality loss.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from _dataset import DEFAULT_DATASET, labelled_images
from tqdm import tqdm

from lookalike.encoders import configure_threads, load_encoder
from lookalike.encoders.base import Encoder
from lookalike.evaluation import retrieval_metrics
from lookalike.images import decode_image


@dataclass
class Variant:
    name: str
    precision: str = "fp32"
    compile: bool = False
    dynamic_int8: bool = False


VARIANTS = [
    Variant("eager fp32 (baseline)"),
    Variant("dynamic int8 (nn.Linear)", dynamic_int8=True),
    Variant("bf16 autocast", precision="bf16"),
    Variant("torch.compile fp32", compile=True),
    Variant("torch.compile + bf16", precision="bf16", compile=True),
]


def build(encoder_name: str, variant: Variant, chunk: int) -> tuple[Encoder, float]:
    started = time.perf_counter()
    encoder = load_encoder(
        encoder_name, "auto", precision=variant.precision, compile=variant.compile, chunk=chunk
    )
    if variant.dynamic_int8:
        # Only nn.Linear (and RNN) layers have dynamic int8 kernels; convolutions stay fp32.
        encoder.model = torch.ao.quantization.quantize_dynamic(
            encoder.model, {torch.nn.Linear}, dtype=torch.qint8
        )
    return encoder, time.perf_counter() - started


def embed_all(
    encoder: Encoder, tensors: list[torch.Tensor], batch: int, label: str
) -> tuple[np.ndarray, float, float]:
    warm = time.perf_counter()
    encoder.embed_tensors(tensors[:batch])  # first call: compilation, allocator warm-up
    warmup = time.perf_counter() - warm
    started = time.perf_counter()
    out = [
        encoder.embed_tensors(tensors[i : i + batch])
        for i in tqdm(range(0, len(tensors), batch), desc=label, leave=False)
    ]
    return np.concatenate(out), len(tensors) / (time.perf_counter() - started), warmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--dataset", type=os.path.abspath, default=str(DEFAULT_DATASET))
    parser.add_argument("--images", type=int, default=None, help="default: all")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    args = parser.parse_args()
    configure_threads()
    pairs = labelled_images(__import__("pathlib").Path(args.dataset), args.images)
    probe = load_encoder(args.encoder, "auto", precision="fp32")
    size = probe.preprocessing.resize
    tensors = [
        probe.preprocess(decode_image(path.read_bytes(), max_pixels=50_000_000, target_size=size))
        for path, _ in tqdm(pairs, desc="decoding", leave=False)
    ]
    labels = [label for _, label in pairs]
    print(
        f"{args.encoder} on {len(tensors)} images ({len(set(labels))} categories), "
        f"batch {args.batch_size}, {torch.get_num_threads()} threads, device {probe.device}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
        flush=True,
    )
    del probe

    rows = []
    for variant in VARIANTS:
        encoder, load_s = build(args.encoder, variant, args.batch_size)
        vectors, ips, warmup = embed_all(encoder, tensors, args.batch_size, variant.name)
        metrics = retrieval_metrics(vectors, labels)
        rows.append((variant, ips, metrics, load_s + warmup))
        print(f"  {variant.name}: {ips:.1f} images/s, mAP {metrics.map:.4f}", flush=True)
        del encoder

    base_ips, base = rows[0][1], rows[0][2]
    print(
        f"\n{'variant':<28} {'images/s':>9} {'x fp32':>7} {'mAP':>7} {'ΔmAP':>8} "
        f"{'R@1':>6} {'ΔR@1':>7} {'start s':>8}"
    )
    for variant, ips, m, start in rows:
        print(
            f"{variant.name:<28} {ips:>9.1f} {ips / base_ips:>7.2f} {m.map:>7.4f} "
            f"{m.map - base.map:>+8.4f} {m.recall_at_1:>6.3f} "
            f"{m.recall_at_1 - base.recall_at_1:>+7.3f} {start:>8.1f}"
        )
    print("\nstart s = model load + first batch (compilation happens there).")


if __name__ == "__main__":
    main()
