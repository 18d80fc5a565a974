"""Training windows for action chunks: the expert's next ``horizon`` actions of each step.

A chunk never crosses an episode's end: the window of a step ``t`` of an episode that ends at
step ``T`` holds actions ``t .. min(t + H, T) - 1`` followed by the episode's last action repeated
(the expert holding its last command), so every step of every episode is a training example.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset


def window_indices(episode_ends: np.ndarray, horizon: int) -> np.ndarray:
    """``episode_ends (E,)`` (cumulative step counts) -> ``(N, horizon)`` step indices: row ``i``
    is steps ``i, i + 1, ...`` cut at the end of ``i``'s episode and padded with its last step."""
    ends = np.asarray(episode_ends, dtype=np.int64).reshape(-1)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if ends.size and (np.any(np.diff(ends) <= 0) or ends[0] <= 0):
        raise ValueError(f"episode_ends must be increasing positive step counts, got {ends}")
    n = int(ends[-1]) if ends.size else 0
    steps = np.arange(n, dtype=np.int64)
    last = ends[np.searchsorted(ends, steps, side="right")] - 1  # (N,) last step of each episode
    return np.minimum(steps[:, None] + np.arange(horizon, dtype=np.int64), last[:, None])


class ChunkedDataset(Dataset):
    """``dataset``'s items with ``"action"`` replaced by the chunk of the next ``horizon`` actions
    ``(horizon, A)`` (``window_indices``; padded with the episode's last action).

    ``dataset`` needs ``actions (N, A)`` and ``episode_ends (E,)`` arrays (``episode_ends`` may be
    given instead); its other attributes (``inputs``, ``state_dim``, ``states``, ...) show
    through, and ``actions`` stays the per-step array, so action bounds are those of one step.
    """

    def __init__(self, dataset: Any, horizon: int, episode_ends: np.ndarray | None = None) -> None:
        ends = episode_ends if episode_ends is not None else getattr(dataset, "episode_ends", None)
        actions = getattr(dataset, "actions", None)
        if ends is None or actions is None:
            raise ValueError(
                "action chunks need the dataset's episode boundaries and actions: give it "
                "episode_ends and actions arrays (or pass episode_ends=)"
            )
        self.dataset, self.horizon = dataset, int(horizon)
        self.windows = window_indices(np.asarray(ends), self.horizon)
        if len(self.windows) != len(dataset):
            raise ValueError(
                f"episode_ends cover {len(self.windows)} steps, the dataset has {len(dataset)}"
            )
        self.actions = np.asarray(actions, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        item["action"] = self.actions[self.windows[i]]  # (horizon, A)
        return item

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
