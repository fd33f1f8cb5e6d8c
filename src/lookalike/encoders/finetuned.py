"""Fine-tuned encoders: a registered base encoder plus a learned projection head (and, when
trained too, the base's last block).

A checkpoint may also *keep the base* with weight ``w`` (``lookalike train --keep-base``): its
vector is then ``normalize(w * base + (1 - w) * tuned)`` (each part L2-normalised first), as
wide as the base's. Fine-tuning on clicks raises mAP but loses a little Recall@10 (an image the
tuned model files under the wrong group loses all its true neighbours); the base's share keeps
them. (Concatenating the two, so that a search scores ``w * cos_base + (1 - w) * cos_tuned``,
was measured too: the same mAP where Recall@10 reaches the base's, at twice the width.)

lookalike saves them itself (the click-training job) as one ``.pt`` file and loads them by path
(``LOOKALIKE_ENCODER=/path/to/model.pt``). The file names its base by name and version id, so a
head is never applied to a base it was not trained on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
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

    @classmethod
    def identity(cls, dim: int) -> ProjectionHead:
        """A linear head that leaves the base's ranking as it is: where training starts when
        the head is as wide as the base, and where ``blend_states`` pulls a tuned one back to."""
        head = cls(dim, dim)
        with torch.no_grad():
            head.net.weight.copy_(torch.eye(dim))
            head.net.bias.zero_()
        return head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(nn.functional.normalize(features, dim=1))


def blend_states(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """``sum(w * state)`` weight by weight, for states of one layout (the same names and
    shapes): several fine-tuned runs averaged (a "model soup"), or a tuned model pulled back
    towards the base it started from (weight-space ensembling, WiSE-FT). Integer buffers
    (BatchNorm's step counters) are kept from the first state."""
    first = states[0]
    return {
        name: (
            sum(w * state[name].double() for state, w in zip(states, weights, strict=True)).to(
                tensor.dtype
            )
            if tensor.is_floating_point()
            else tensor
        )
        for name, tensor in first.items()
    }


def save_checkpoint(
    path: Path,
    base: Encoder,
    head: ProjectionHead,
    metadata: dict[str, Any] | None = None,
    tail_state: dict[str, torch.Tensor] | None = None,
    tail_blocks: int = 0,
    keep_base: float = 0.0,
) -> Path:
    """``tail_state``: the fine-tuned last stage of the base and the ``tail_blocks`` blocks
    before it (its ``trainable_tail(tail_blocks)``), if those were trained too. ``keep_base``:
    the base's weight in the served vector (0: the tuned vector alone; see the module)."""
    check_keep_base(keep_base)
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
            "keep_base": keep_base,
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a crash never leaves a half-written model behind
    return path


def towards_base(
    head_state: Mapping[str, torch.Tensor],
    tail_state: Mapping[str, torch.Tensor] | None,
    base: Encoder,
    tail_blocks: int,
    share: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """A fine-tuned head and tail (as wide as the base, the head linear) with ``share`` of every
    weight taken back from where training started on the base: the identity head and the base's
    own blocks (weight-space ensembling with the base, WiSE-FT). ``base``'s modules must be
    untouched (not a loaded checkpoint's)."""
    weight = head_state.get("net.weight")
    if weight is None or weight.shape[0] != weight.shape[1]:
        raise ValueError("only a linear head as wide as the base starts as the identity")
    weights = (1 - share, share)
    identity = ProjectionHead.identity(int(weight.shape[1]))
    head = blend_states([head_state, identity.state_dict()], weights)
    if tail_state is None:
        return head, None
    split = base.trainable_tail(tail_blocks)
    if split is None:
        raise EncoderUnavailable(f"{base.name} has no trainable tail to interpolate")
    return head, blend_states([tail_state, split.tail.state_dict()], weights)


def check_keep_base(weight: float) -> None:
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"keep_base must be in [0, 1) (0: the tuned vector alone), not {weight}")


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
        #: The base's weight in the served vector (0: none; see the module).
        self.keep_base = float(checkpoint.get("keep_base", 0.0))
        if not 0.0 <= self.keep_base < 1.0:
            raise EncoderUnavailable(f"{path} keeps the base at {self.keep_base}, not in [0, 1)")
        self.tail_blocks = int(checkpoint.get("tail_blocks", 0))
        #: The base's own tail, when a fine-tuned tail serves beside it.
        self._base_tail: nn.Module | None = None
        if checkpoint.get("tail_state"):
            split = base.trainable_tail(self.tail_blocks)
            if split is None:
                raise EncoderUnavailable(f"{path} fine-tunes a tail that {base.name} does not have")
            if self.keep_base:
                # A copy before the fine-tuned state lands in the base's own modules.
                self._base_tail = copy.deepcopy(split.tail)
            split.tail.load_state_dict(checkpoint["tail_state"])
        head = ProjectionHead(**checkpoint["head_config"])
        head.load_state_dict(checkpoint["head_state"])
        self.base = base
        self.head = head.eval().to(base.device)
        self.name = f"finetuned-{base.name}"
        self.dim = int(checkpoint["head_config"]["out_dim"])
        if self.keep_base and self.dim != base.dim:
            raise EncoderUnavailable(f"{path} keeps the base but is not as wide as {base.name}")
        self.device = base.device
        self.preprocessing = base.preprocessing
        self.metadata = checkpoint.get("metadata", {})
        self.path = path
        self.version = model_version_id(self.name, file_digest(path), self.preprocessing)

    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.keep_base:
            return self.head(self.base.forward_features(batch).float())
        if self._base_tail is None:  # a head on the frozen base: its features are at hand
            kept = self.base.forward_features(batch).float()
            tuned = self.head(kept)
        else:  # the trunk once, then the base's tail and the fine-tuned one
            # Split per call: the split's trunk is a closure, which an encoder process's
            # pickled copy could not carry.
            split = self.base.trainable_tail(self.tail_blocks)
            assert split is not None
            maps = split.trunk(batch)
            kept = self._base_tail(maps).float()
            tuned = self.head(split.tail(maps).float())
        w = self.keep_base
        return w * nn.functional.normalize(kept, dim=1) + (1 - w) * nn.functional.normalize(
            tuned, dim=1
        )
