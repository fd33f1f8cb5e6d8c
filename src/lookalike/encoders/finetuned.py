"""Fine-tuned encoders: a registered base encoder plus a learned projection head (and, when
trained too, the base's last block).

lookalike saves them itself (the click-training job) as one ``.pt`` file and loads them by path
(``LOOKALIKE_ENCODER=/path/to/model.pt``). The file names its base by name and version id, so a
head is never applied to a base it was not trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import EncoderUnavailable
from .base import Encoder, file_digest, model_version_id

CHECKPOINT_FORMAT = "lookalike.finetuned/1"


class ProjectionHead(nn.Module):
    """Linear (or one-hidden-layer MLP) projection of L2-normalised base features."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.config = {"in_dim": in_dim, "out_dim": out_dim, "hidden_dim": hidden_dim}
        if hidden_dim:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(nn.functional.normalize(features, dim=1))


def save_checkpoint(
    path: Path,
    base: Encoder,
    head: ProjectionHead,
    metadata: dict[str, Any] | None = None,
    tail_state: dict[str, torch.Tensor] | None = None,
    tail_blocks: int = 0,
) -> Path:
    """``tail_state``: the fine-tuned last stage of the base and the ``tail_blocks`` blocks
    before it (its ``trainable_tail(tail_blocks)``), if those were trained too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "base_encoder": base.name,
            "base_version": base.version,
            "head_config": head.config,
            "head_state": {k: v.detach().cpu() for k, v in head.state_dict().items()},
            "metadata": metadata or {},
            "tail_state": (
                {k: v.detach().cpu().contiguous() for k, v in tail_state.items()}
                if tail_state
                else None
            ),
            "tail_blocks": tail_blocks,
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a crash never leaves a half-written model behind
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EncoderUnavailable(f"fine-tuned encoder file {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EncoderUnavailable(f"{path} is not a readable checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise EncoderUnavailable(
            f"{path} is not a lookalike fine-tuned encoder ({CHECKPOINT_FORMAT})"
        )
    return checkpoint


class FineTunedEncoder(Encoder):
    def __init__(self, path: Path, load_base: Callable[[str], Encoder]) -> None:
        super().__init__()
        checkpoint = read_checkpoint(path)
        base = load_base(checkpoint["base_encoder"])
        if base.version != checkpoint["base_version"]:
            raise EncoderUnavailable(
                f"{path} was trained on {checkpoint['base_version']} but the installed "
                f"{base.name} is {base.version}; install the matching weights"
            )
        if checkpoint.get("tail_state"):
            split = base.trainable_tail(int(checkpoint.get("tail_blocks", 0)))
            if split is None:
                raise EncoderUnavailable(f"{path} fine-tunes a tail that {base.name} does not have")
            split.tail.load_state_dict(checkpoint["tail_state"])
        head = ProjectionHead(**checkpoint["head_config"])
        head.load_state_dict(checkpoint["head_state"])
        self.base = base
        self.head = head.eval().to(base.device)
        self.name = f"finetuned-{base.name}"
        self.dim = int(checkpoint["head_config"]["out_dim"])
        self.device = base.device
        self.preprocessing = base.preprocessing
        self.metadata = checkpoint.get("metadata", {})
        self.path = path
        self.version = model_version_id(self.name, file_digest(path), self.preprocessing)

    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.head(self.base.forward_features(batch).float())
