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
    reads every item's ``"action"``; items holding chunks ``(H, A)`` give the bounds of one
    action.
    """
    actions = getattr(dataset, "actions", None)
    if actions is not None:
        arr = np.asarray(actions, dtype=np.float32)
    else:
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("cannot compute action bounds of an empty dataset")
        arr = np.stack([np.asarray(dataset[i]["action"], dtype=np.float32) for i in range(n)])
    arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 2 else arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0:
        raise ValueError("cannot compute action bounds of an empty dataset")
    return arr.min(axis=0), arr.max(axis=0)


MIN_STD = 1e-3  # a constant state entry gets this std so normalizing it stays finite


class StateNormalizer(nn.Module):
    """Buffers ``mean``/``std`` ``(S,)`` of the dataset's state vectors; ``normalize`` maps states
    to zero mean and unit variance (``(..., S) -> (..., S)``). Saved with the weights."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: ArrayLike, std: ArrayLike) -> None:
        super().__init__()
        mu = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)
        sd = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(-1)
        if mu.shape != sd.shape or mu.numel() == 0:
            raise ValueError(
                f"state mean and std need equal non-empty shapes, got {mu.shape}, {sd.shape}"
            )
        if not (torch.isfinite(mu).all() and torch.isfinite(sd).all()) or (sd <= 0).any():
            raise ValueError(f"invalid state statistics mean={mu.tolist()} std={sd.tolist()}")
        self.register_buffer("mean", mu)
        self.register_buffer("std", sd)

    @property
    def state_dim(self) -> int:
        return int(self.mean.numel())

    def normalize(self, states: Tensor) -> Tensor:
        """``(..., S) -> (..., S)``: ``(states - mean) / std``."""
        return (states - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"state_dim={self.state_dim}"


def state_stats_from_dataset(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of the dataset's states: ``-> mean (S,), std (S,)`` (std at
    least ``MIN_STD``). Uses a ``states`` array attribute when the dataset has one, otherwise
    reads every item's ``"state"``."""
    states = getattr(dataset, "states", None)
    if states is not None:
        arr = np.asarray(states, dtype=np.float64)
    else:
        n = len(dataset)  # type: ignore[arg-type]
        arr = np.stack([np.asarray(dataset[i]["state"], dtype=np.float64) for i in range(n)])
    arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0:
        raise ValueError("cannot compute state statistics of an empty dataset")
    std = np.maximum(arr.std(axis=0), MIN_STD)
    return arr.mean(axis=0).astype(np.float32), std.astype(np.float32)
