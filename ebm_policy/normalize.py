"""Action bounds and the affine map between original action units and [-1, 1].

The dataset's per-dimension ``[low, high]`` is widened by ``padding * (high - low)`` on each side
(0.05 like the reference); the padded box maps to [-1, 1]. Counter-examples and DFO samples live
in that normalized box, so the model never sees original units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

MIN_WIDTH = 1e-3  # a constant action dimension gets this range so the map stays invertible

ArrayLike = Tensor | np.ndarray | Sequence[float]


class ActionBounds(nn.Module):
    """Buffers ``low``/``high`` (the dataset's bounds, ``(A,)``) and the padded normalization."""

    low: Tensor
    high: Tensor

    def __init__(self, low: ArrayLike, high: ArrayLike, padding: float = 0.05) -> None:
        super().__init__()
        lo = torch.as_tensor(np.asarray(low, dtype=np.float32)).reshape(-1)
        hi = torch.as_tensor(np.asarray(high, dtype=np.float32)).reshape(-1)
        if lo.shape != hi.shape or lo.numel() == 0:
            raise ValueError(
                f"action bounds need equal non-empty shapes, got {lo.shape} and {hi.shape}"
            )
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or (hi < lo).any():
            raise ValueError(f"invalid action bounds low={lo.tolist()} high={hi.tolist()}")
        if padding < 0:
            raise ValueError(f"bounds padding must be >= 0, got {padding}")
        self.padding = float(padding)
        self.register_buffer("low", lo)
        self.register_buffer("high", hi)

    @property
    def action_dim(self) -> int:
        return int(self.low.numel())

    def _center_halfwidth(self) -> tuple[Tensor, Tensor]:
        width = torch.clamp(self.high - self.low, min=MIN_WIDTH)
        return (self.low + self.high) / 2, width * (0.5 + self.padding)

    def normalize(self, actions: Tensor) -> Tensor:
        """Original units -> normalized: ``(..., A) -> (..., A)``, the padded box -> [-1, 1]."""
        center, half = self._center_halfwidth()
        return (actions - center) / half

    def unnormalize(self, actions: Tensor) -> Tensor:
        """Normalized -> original units: ``(..., A) -> (..., A)``."""
        center, half = self._center_halfwidth()
        return actions * half + center

    def extra_repr(self) -> str:
        return f"low={self.low.tolist()}, high={self.high.tolist()}, padding={self.padding}"


def action_bounds_from_dataset(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension min and max of the dataset's actions: ``-> low (A,), high (A,)``.

    Uses an ``actions`` array attribute when the dataset has one (no image is read), otherwise
    reads every item's ``"action"``.
    """
    actions = getattr(dataset, "actions", None)
    if actions is not None:
        arr = np.asarray(actions, dtype=np.float32)
    else:
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("cannot compute action bounds of an empty dataset")
        arr = np.stack([np.asarray(dataset[i]["action"], dtype=np.float32) for i in range(n)])
    arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0:
        raise ValueError("cannot compute action bounds of an empty dataset")
    return arr.min(axis=0), arr.max(axis=0)
