"""Scripted experts for the ibc/ envs, acting from the privileged state in ``info``.

Every expert picks a goal position each step and commands it: the target itself (ReachTarget,
ArmReach), the target it chose for the episode (ReachAnyTarget), the target of the current phase
(ReachSequence), a target it chose among those left (ReachAllTargets), or the waypoint beside
the end of the wall it chose and then the target (ReachAroundObstacle). With
``action_type="position"`` the goal is the action (an absolute set-point, constant within a
leg); with ``"delta"`` the action is the displacement to the goal in units of the env's
``DELTA_SCALE``, scaled down along its direction when a component would exceed 1.

Experts follow the ``Policy`` protocol of ``agents.rollout``: ``info`` is batched over the ``n``
sub-envs of a Gymnasium vector env (``info["targets"]`` of shape ``(n, K, 2)``) and
``select_action`` returns ``(n, 2)`` float32 actions. An unbatched single-env ``info``
(``info["targets"]`` of shape ``(K, 2)``) gives a ``(2,)`` action. Randomness (action noise and
the random choices) comes from the expert's own ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from envs import ACTION_TYPES, DELTA_SCALE, ENV_IDS


class Expert(Protocol):
    action_type: str

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Start new episodes in the given sub-envs (``None``: all)."""

    def select_action(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        """Batched ``info`` -> ``(n, 2)`` float32 actions (``(2,)`` for an unbatched ``info``)."""


def goal_to_action(goals: np.ndarray, agent_pos: np.ndarray, action_type: str) -> np.ndarray:
    """``(n, 2)`` goal positions -> ``(n, 2)`` actions that command them under ``action_type``."""
    if action_type == "position":
        return goals
    delta = (goals - agent_pos) / DELTA_SCALE
    scale = np.maximum(np.abs(delta).max(axis=1, keepdims=True), 1.0)
    return delta / scale


class TargetExpert:
    """Commands one target of each sub-env as the goal, plus optional Gaussian noise.

    Which target: ``targets[phase]`` for sequential tasks (clipped to the last target once all
    are reached), otherwise ``targets[0]``. Subclasses override ``_goals`` or ``_choose``.

    Args:
        seed: seed of the expert's own random generator.
        noise: standard deviation of Gaussian noise added to the actions (action units); noisy
            actions are clipped to ``[-1, 1]``.
        sequential: follow ``info["phase"]``.
        action_type: ``"position"`` or ``"delta"``, as the env was made with.

    Attributes:
        legs: the most goals one episode commands (with ``"position"`` actions and no noise, the
            action changes at most ``legs - 1`` times).
    """

    legs: ClassVar[int] = 1

    def __init__(
        self,
        seed: int | None = None,
        noise: float = 0.0,
        *,
        sequential: bool = False,
        action_type: str = "position",
    ) -> None:
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if action_type not in ACTION_TYPES:
            raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {action_type!r}")
        self.rng = np.random.default_rng(seed)
        self.noise = float(noise)
        self.sequential = sequential
        self.action_type = action_type

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Nothing to forget: the action depends only on the current ``info``."""

    def select_action(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        single = np.ndim(info["targets"]) == 2
        batched = {k: (np.asarray(v)[None] if single else np.asarray(v)) for k, v in info.items()}
        goals = self._goals(batched, batched["targets"].astype(np.float64))
        action = goals
        if self.action_type == "delta":
            if "agent_pos" not in batched:
                raise ValueError("delta actions need info['agent_pos']")
            agent = batched["agent_pos"].astype(np.float64).reshape(-1, 2)
            action = goal_to_action(goals, agent, self.action_type)
        if self.noise > 0:
            action = np.clip(action + self.rng.normal(0.0, self.noise, action.shape), -1.0, 1.0)
        action = action.astype(np.float32)
        return action[0] if single else action

    def _goals(self, info: dict[str, Any], targets: np.ndarray) -> np.ndarray:
        """``(n, 2)`` goal of each sub-env; ``targets`` is ``(n, K, 2)``."""
        return targets[np.arange(targets.shape[0]), self._choose(info, targets)]

    def _choose(self, info: dict[str, Any], targets: np.ndarray) -> np.ndarray:
        """Index of the target to command in each sub-env; ``targets`` is ``(n, K, 2)``."""
        n, k = targets.shape[:2]
        if not self.sequential:
            return np.zeros(n, dtype=np.int64)
        phase = np.asarray(info["phase"], dtype=np.int64).reshape(n)
        return np.minimum(phase, k - 1)


class SequenceExpert(TargetExpert):
    """Commands the target of the current phase: the first, then the second."""

    legs: ClassVar[int] = 2

    def __init__(self, seed: int | None = None, noise: float = 0.0, **kwargs: Any) -> None:
        super().__init__(seed, noise, sequential=True, **kwargs)


class _EpisodeChoices:
    """One random choice per sub-env and episode, drawn from the expert's generator.

    The choice for a sub-env is drawn when ``reset`` names that sub-env. A sub-env without a
    current choice draws one lazily on first use, in sub-env order: one never named by ``reset``
    (e.g. after ``reset(None)``, before the number of sub-envs is known), or one that started a
    new episode without a ``reset`` (its targets changed).
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.choice: list[int | None] = []  # per sub-env; None: not chosen yet
        self._chosen_for: list[np.ndarray | None] = []  # the targets the choice was made with

    def reset(self, env_ids: Sequence[int] | None, n_choices: int) -> None:
        if env_ids is None:
            self.choice, self._chosen_for = [], []
            return
        for i in env_ids:
            self._grow(i + 1)
            self.choice[i] = int(self.rng.integers(n_choices))
            self._chosen_for[i] = None

    def get(self, i: int, targets: np.ndarray, options: Sequence[int]) -> int:
        """Sub-env ``i``'s choice among ``options``, redrawn when it is unset, stale or not one
        of them (the chosen target was reached)."""
        self._grow(i + 1)
        seen = self._chosen_for[i]
        stale = seen is not None and not np.array_equal(seen, targets)
        if self.choice[i] is None or stale or self.choice[i] not in options:
            self.choice[i] = int(options[int(self.rng.integers(len(options)))])
        self._chosen_for[i] = targets.copy()
        return int(self.choice[i])  # type: ignore[arg-type]

    def _grow(self, n: int) -> None:
        while len(self.choice) < n:
            self.choice.append(None)
            self._chosen_for.append(None)


class AnyTargetExpert(TargetExpert):
    """Picks one of the targets uniformly at random per episode and sub-env, and sticks to it."""

    def __init__(
        self, seed: int | None = None, noise: float = 0.0, n_targets: int = 2, **kwargs: Any
    ) -> None:
        super().__init__(seed, noise, **kwargs)
        self.n_targets = n_targets
        self.choices = _EpisodeChoices(self.rng)

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        self.choices.reset(env_ids, self.n_targets)

    def _choose(self, info: dict[str, Any], targets: np.ndarray) -> np.ndarray:
        n, k = targets.shape[:2]
        options = range(min(self.n_targets, k))
        return np.array([self.choices.get(i, targets[i], options) for i in range(n)], np.int64)


class AllTargetsExpert(AnyTargetExpert):
    """Visits every target, heading each time for one picked at random among those left."""

    legs: ClassVar[int] = 3

    def __init__(self, seed: int | None = None, noise: float = 0.0, **kwargs: Any) -> None:
        super().__init__(seed, noise, n_targets=3, **kwargs)

    def _choose(self, info: dict[str, Any], targets: np.ndarray) -> np.ndarray:
        n, k = targets.shape[:2]
        reached = np.asarray(info["reached"], dtype=bool).reshape(n, k)
        picks = []
        for i in range(n):
            left = [int(j) for j in np.flatnonzero(~reached[i])] or [k - 1]
            picks.append(self.choices.get(i, targets[i], left))
        return np.array(picks, np.int64)


class ObstacleExpert(AnyTargetExpert):
    """Goes around the wall by the end it picks at random per episode, then to the target.

    It commands the waypoint beside the chosen end (``info["waypoints"]``) until the disc is
    within ``switch_radius`` of it or past the wall (on the target's side of the wall's centre
    line), then the target: a memoryless rule of the disc position, given the choice.
    """

    legs: ClassVar[int] = 2
    switch_radius: ClassVar[float] = 0.05

    def __init__(self, seed: int | None = None, noise: float = 0.0, **kwargs: Any) -> None:
        super().__init__(seed, noise, n_targets=2, **kwargs)

    def _goals(self, info: dict[str, Any], targets: np.ndarray) -> np.ndarray:
        n = targets.shape[0]
        waypoints = np.asarray(info["waypoints"], dtype=np.float64).reshape(n, 2, 2)
        obstacle = np.asarray(info["obstacle"], dtype=np.float64).reshape(n, -1)
        agent = np.asarray(info["agent_pos"], dtype=np.float64).reshape(n, 2)
        side = np.array([self.choices.get(i, targets[i], (0, 1)) for i in range(n)])
        waypoint = waypoints[np.arange(n), side]
        past = np.einsum("ij,ij->i", agent - obstacle[:, 0:2], obstacle[:, 2:4]) > 0
        near = np.linalg.norm(agent - waypoint, axis=1) <= self.switch_radius
        return np.where((past | near)[:, None], targets[:, 0], waypoint)


_EXPERTS: dict[str, tuple[type[TargetExpert], dict[str, Any]]] = {
    "ibc/ReachTarget-v0": (TargetExpert, {}),
    "ibc/ArmReach-v0": (TargetExpert, {}),
    "ibc/ReachAnyTarget-v0": (AnyTargetExpert, {}),
    "ibc/ReachSequence-v0": (SequenceExpert, {}),
    "ibc/ReachAllTargets-v0": (AllTargetsExpert, {}),
    "ibc/ReachAroundObstacle-v0": (ObstacleExpert, {}),
}
assert set(_EXPERTS) == set(ENV_IDS), "every registered env needs an expert"


def make_expert(
    env_id: str, seed: int | None = None, noise: float = 0.0, action_type: str = "position"
) -> TargetExpert:
    """The scripted expert of ``env_id`` (an ``ibc/`` id), with its own seeded generator.

    ``action_type`` must be the one the env was made with.
    """
    if env_id not in _EXPERTS:
        raise ValueError(f"no expert for {env_id!r}; experts exist for {tuple(_EXPERTS)}")
    cls, kwargs = _EXPERTS[env_id]
    return cls(seed, noise, action_type=action_type, **kwargs)
