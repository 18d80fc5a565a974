"""Scripted experts for the ibc/ envs, acting from the privileged state in ``info``.

Every expert commands a goal position as the absolute set-point action: the target itself
(ReachTarget, ArmReach), the target it chose for the episode (ReachAnyTarget) or the target of
the current phase (ReachSequence). The env's controller then moves there in a straight line at
its capped speed, so the demonstrated action is constant within a phase and a clear function of
the image (where the goal marker is).

Experts follow the ``Policy`` protocol of ``agents.rollout``: ``info`` is batched over the ``n``
sub-envs of a Gymnasium vector env (``info["targets"]`` of shape ``(n, K, 2)``) and
``select_action`` returns ``(n, 2)`` float32 actions. An unbatched single-env ``info``
(``info["agent_pos"]`` of shape ``(2,)``) gives a ``(2,)`` action. Randomness (action noise and
ReachAnyTarget's choice of target) comes from the expert's own ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Expert(Protocol):
    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Start new episodes in the given sub-envs (``None``: all)."""

    def select_action(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        """Batched ``info`` -> ``(n, 2)`` float32 actions (``(2,)`` for an unbatched ``info``)."""


class TargetExpert:
    """Commands one target of each sub-env as the set-point, plus optional Gaussian noise.

    Which target: ``targets[phase]`` for sequential tasks (clipped to the last target once all
    are reached), otherwise ``targets[0]``. Subclasses override ``_choose``.

    Args:
        seed: seed of the expert's own random generator.
        noise: standard deviation of Gaussian noise added to the actions (normalized units);
            noisy actions are clipped to ``[-1, 1]``.
        sequential: follow ``info["phase"]``.
    """

    def __init__(
        self, seed: int | None = None, noise: float = 0.0, *, sequential: bool = False
    ) -> None:
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.rng = np.random.default_rng(seed)
        self.noise = float(noise)
        self.sequential = sequential

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Nothing to forget: the action depends only on the current ``info``."""

    def select_action(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        targets = np.asarray(info["targets"], dtype=np.float64)
        single = targets.ndim == 2
        if single:
            targets = targets[None]
        index = self._choose(info, targets)
        action = targets[np.arange(targets.shape[0]), index]
        if self.noise > 0:
            action = np.clip(action + self.rng.normal(0.0, self.noise, action.shape), -1.0, 1.0)
        action = action.astype(np.float32)
        return action[0] if single else action

    def _choose(self, info: dict[str, Any], targets: np.ndarray) -> np.ndarray:
        """Index of the target to command in each sub-env; ``targets`` is ``(n, K, 2)``."""
        n, k = targets.shape[:2]
        if not self.sequential:
            return np.zeros(n, dtype=np.int64)
        phase = np.asarray(info["phase"], dtype=np.int64).reshape(n)
        return np.minimum(phase, k - 1)


class AnyTargetExpert(TargetExpert):
    """Picks one of the targets uniformly at random per episode and sub-env, and sticks to it.

    The choice for a sub-env is drawn from the expert's generator when ``reset`` names that
    sub-env. A sub-env without a current choice draws one lazily on first use, in sub-env order:
    one never named by ``reset`` (e.g. after ``reset(None)``, before the number of sub-envs is
    known), or one that started a new episode without a ``reset`` (its targets changed).
    """

    def __init__(self, seed: int | None = None, noise: float = 0.0, n_targets: int = 2) -> None:
        super().__init__(seed, noise)
        self.n_targets = n_targets
        self.choice: list[int | None] = []  # per sub-env; None: not chosen yet
        self._chosen_for: list[np.ndarray | None] = []  # the targets the choice was used with

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        if env_ids is None:
            self.choice, self._chosen_for = [], []
            return
        for i in env_ids:
            self._grow(i + 1)
            self.choice[i] = int(self.rng.integers(self.n_targets))
            self._chosen_for[i] = None

    def _choose(self, info: dict[str, Any], targets: np.ndarray) -> np.ndarray:
        n, k = targets.shape[:2]
        self._grow(n)
        for i in range(n):
            seen = self._chosen_for[i]
            if self.choice[i] is None or (
                seen is not None and not np.array_equal(seen, targets[i])
            ):
                self.choice[i] = int(self.rng.integers(self.n_targets))
            self._chosen_for[i] = targets[i].copy()
        return np.minimum(np.array(self.choice[:n], dtype=np.int64), k - 1)

    def _grow(self, n: int) -> None:
        while len(self.choice) < n:
            self.choice.append(None)
            self._chosen_for.append(None)


def make_expert(env_id: str, seed: int | None = None, noise: float = 0.0) -> Expert:
    """The scripted expert of ``env_id`` (an ``ibc/`` id), with its own seeded generator."""
    name = env_id.split("/")[-1]
    if name in ("ReachTarget-v0", "ArmReach-v0"):
        return TargetExpert(seed, noise)
    if name == "ReachAnyTarget-v0":
        return AnyTargetExpert(seed, noise)
    if name == "ReachSequence-v0":
        return TargetExpert(seed, noise, sequential=True)
    known = (
        "ibc/ReachTarget-v0",
        "ibc/ReachAnyTarget-v0",
        "ibc/ReachSequence-v0",
        "ibc/ArmReach-v0",
    )
    raise ValueError(f"no expert for {env_id!r}; experts exist for {known}")
