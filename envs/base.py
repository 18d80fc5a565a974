"""``ReachEnv``: the Gym side shared by every ibc/ env, configured by a small ``ReachTask``.

The env holds the task logic (start state, progress through the targets, reward, observation,
info); the physics and rendering live in a scene object (``envs.physics.PlanarScene``,
``envs.arm.ArmScene``) that knows nothing about Gym.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, get_args

import gymnasium as gym
import numpy as np

from envs.physics import CONTROL_HZ, RGBA, TARGET_RADIUS, PlanarScene

ObsType = Literal["pixels", "pixels_agent_pos", "state"]
RewardType = Literal["dense", "sparse"]
ActionType = Literal["position", "delta"]
OBS_TYPES: tuple[str, ...] = get_args(ObsType)
REWARD_TYPES: tuple[str, ...] = get_args(RewardType)
ACTION_TYPES: tuple[str, ...] = get_args(ActionType)
DELTA_SCALE = 0.2  # action_type="delta": a unit action moves the set-point this far (normalized)
RENDER_MODES: tuple[str, ...] = ("rgb_array",)
SIZE_RANGE = (16, 1024)  # allowed image_size / render_size


class Scene(Protocol):
    """What ``ReachEnv`` needs from the physics: a controllable point and K target markers."""

    @property
    def agent_pos(self) -> np.ndarray:
        """Normalized ``(x, y)`` of the agent / end effector."""
        ...

    def reset(
        self, agent_pos: np.ndarray, targets: np.ndarray, target_colors: tuple[RGBA, ...]
    ) -> None: ...

    def step(self, setpoint: np.ndarray) -> None: ...

    def set_target_color(self, k: int, color: RGBA) -> None: ...

    def render(self, size: int) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ReachTask:
    """What differs between the reach tasks.

    Attributes:
        n_targets: number of target markers ``K``.
        sequential: reach the targets in order (success after the last one); otherwise reaching
            any one target is success (or every target, with ``visit_all``).
        visit_all: reach every target, in any order (success after the last one).
        target_colors: drawn colour of each target.
        reached_color: sequential tasks: the colour a target turns once reached, so that the
            image shows the phase.
        target_limit: targets are drawn uniformly in ``[-target_limit, target_limit]^2``.
        agent_limit: the agent starts uniformly in ``[-agent_limit, agent_limit]^2``.
        min_target_separation: minimum distance between target centres.
        min_agent_separation: minimum distance from the agent's start to every target centre.
    """

    n_targets: int
    sequential: bool
    target_colors: tuple[RGBA, ...]
    reached_color: RGBA | None = None
    visit_all: bool = False
    target_limit: float = 0.8
    agent_limit: float = 0.9
    min_target_separation: float = 0.5
    min_agent_separation: float = 0.4


def validate_action(action: Any) -> np.ndarray:
    """``action`` as a float64 ``(2,)`` array clipped to ``[-1, 1]``, or a clear ``ValueError``.

    One rule for arrays and sequences alike: two real numbers of any float or integer dtype
    (``np.array([1, 0])`` is accepted like ``[1, 0]``); booleans, strings and objects are refused.
    """
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError) as exc:  # ragged sequences and the like
        raise ValueError(f"action must be a float array of shape (2,), got {action!r}") from exc
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"action must hold real numbers (float or integer), got dtype {arr.dtype}")
    if arr.shape != (2,):
        raise ValueError(f"action must have shape (2,), got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"action must be finite, got {arr.tolist()}")
    return np.clip(arr, -1.0, 1.0)


def _check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_size(name: str, value: object) -> int:
    lo, hi = SIZE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return int(value)


class ReachEnv(gym.Env[Any, np.ndarray]):
    """Shared implementation of the ibc/ reach envs; see the subclasses for the specs.

    Subclasses set ``task`` and may override ``_make_scene``.
    """

    metadata: dict[str, Any] = {  # an instance attribute in gymnasium.Env
        "render_modes": list(RENDER_MODES),
        "render_fps": CONTROL_HZ,
    }
    task: ClassVar[ReachTask]
    extra_state_dim: ClassVar[int] = 0  # state entries after the targets' (see _extra_state)

    def __init__(
        self,
        *,
        obs_type: ObsType = "pixels",
        image_size: int = 96,
        reward_type: RewardType = "dense",
        action_type: ActionType = "position",
        render_mode: str | None = None,
        render_size: int = 256,
        **unknown: Any,
    ) -> None:
        if unknown:
            valid = (
                "obs_type",
                "image_size",
                "reward_type",
                "action_type",
                "render_mode",
                "render_size",
            )
            raise ValueError(f"unknown argument(s) {sorted(unknown)}; valid arguments are {valid}")
        _check_choice("obs_type", obs_type, OBS_TYPES)
        _check_choice("reward_type", reward_type, REWARD_TYPES)
        _check_choice("action_type", action_type, ACTION_TYPES)
        _check_choice("render_mode", render_mode, (None, *RENDER_MODES))
        self.obs_type: ObsType = obs_type
        self.reward_type: RewardType = reward_type
        self.action_type: ActionType = action_type
        self.render_mode = render_mode
        self.image_size = _check_size("image_size", image_size)
        self.render_size = _check_size("render_size", render_size)

        k = self.task.n_targets
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        pixels = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        agent_pos = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space: gym.Space[Any] = {
            "pixels": pixels,
            "pixels_agent_pos": gym.spaces.Dict({"pixels": pixels, "agent_pos": agent_pos}),
            "state": gym.spaces.Box(-1.0, 1.0, (2 + 3 * k + self.extra_state_dim,), np.float32),
        }[obs_type]

        self._scene: Scene = self._make_scene()
        self._targets = np.zeros((k, 2), np.float32)
        self._reached = np.zeros(k, bool)
        self._phase = 0
        self._agent_pos = np.zeros(2, np.float32)
        self._distance = 0.0
        self._success = False
        self._path_left = 0.0

    def _make_scene(self) -> Scene:
        return PlanarScene(self.task.n_targets, self.task.target_colors)

    # ---- Gym API ------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        agent, targets = self._sample_start()
        self._targets = targets.astype(np.float32)
        self._reached[:] = False
        self._phase = 0
        self._scene.reset(agent, targets, self.task.target_colors)
        self._update_progress()
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self._scene.step(self.setpoint(validate_action(action)))
        self._update_progress()
        if self.reward_type == "sparse":
            reward = 1.0 if self._success else 0.0
        else:  # negative remaining path length: to the next goal, then through the later ones
            reward = -self._path_left
        return self._observation(), reward, self._success, False, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            gym.logger.warn(
                "render() needs render_mode='rgb_array' at construction; returning None"
            )
            return None
        return self._scene.render(self.render_size)

    def close(self) -> None:
        self._scene.close()

    def setpoint(self, action: np.ndarray) -> np.ndarray:
        """The position set-point a valid action commands, in the normalized workspace.

        ``"position"``: the action itself. ``"delta"``: the agent position plus ``DELTA_SCALE``
        times the action, clipped to the workspace.
        """
        if self.action_type == "position":
            return action
        return np.clip(self._agent_pos.astype(np.float64) + DELTA_SCALE * action, -1.0, 1.0)

    # ---- task logic ---------------------------------------------------------------------------

    def _sample_start(self) -> tuple[np.ndarray, np.ndarray]:
        """Targets apart from each other, the agent apart from every target (rejection sampling)."""
        t, rng = self.task, self.np_random
        targets: list[np.ndarray] = []
        while len(targets) < t.n_targets:
            cand = rng.uniform(-t.target_limit, t.target_limit, 2)
            if all(math.dist(cand, o) >= t.min_target_separation for o in targets):
                targets.append(cand)
        while True:
            agent = rng.uniform(-t.agent_limit, t.agent_limit, 2)
            if all(math.dist(agent, o) >= t.min_agent_separation for o in targets):
                return agent, np.stack(targets)

    def _update_progress(self) -> None:
        """Read the agent position and update reached targets, phase, distance and success."""
        self._agent_pos = np.clip(self._scene.agent_pos, -1.0, 1.0).astype(np.float32)
        dists = np.linalg.norm(
            self._targets.astype(np.float64) - self._agent_pos.astype(np.float64), axis=1
        )
        k = self.task.n_targets
        if self.task.sequential:
            while self._phase < k and dists[self._phase] <= TARGET_RADIUS:
                self._reached[self._phase] = True
                if self.task.reached_color is not None:
                    self._scene.set_target_color(self._phase, self.task.reached_color)
                self._phase += 1
            self._success = self._phase == k
            self._distance = float(dists[min(self._phase, k - 1)])
        elif self.task.visit_all:
            newly = (dists <= TARGET_RADIUS) & ~self._reached
            for j in np.flatnonzero(newly):
                self._reached[j] = True
                if self.task.reached_color is not None:
                    self._scene.set_target_color(int(j), self.task.reached_color)
            self._phase = int(self._reached.sum())
            self._success = self._phase == k
            self._distance = float(
                dists[~self._reached].min() if not self._success else dists.min()
            )
        else:
            self._reached |= dists <= TARGET_RADIUS
            self._success = bool(self._reached.any())
            self._distance = float(dists.min())
        self._path_left = self._remaining_path()

    def _remaining_path(self) -> float:
        """Length of the shortest path from the agent through the targets still to be reached."""
        if self._success:
            return self._distance
        agent = self._agent_pos.astype(np.float64)
        targets = self._targets.astype(np.float64)
        if self.task.sequential:
            return self._distance + float(
                np.linalg.norm(np.diff(targets[self._phase :], axis=0), axis=1).sum()
            )
        if not self.task.visit_all:
            return self._distance
        first = np.linalg.norm(targets - agent, axis=1)
        return min(  # K is small: try every order
            float(first[order[0]])
            + sum(math.dist(targets[a], targets[b]) for a, b in itertools.pairwise(order))
            for order in itertools.permutations(np.flatnonzero(~self._reached).tolist())
        )

    def _observation(self) -> Any:
        if self.obs_type == "state":
            flags = self._reached.astype(np.float32)
            return np.concatenate(
                [self._agent_pos, self._targets.ravel(), flags, self._extra_state()]
            ).astype(np.float32)
        pixels = self._scene.render(self.image_size)
        if self.obs_type == "pixels":
            return pixels
        return {"pixels": pixels, "agent_pos": self._agent_pos.copy()}

    def _extra_state(self) -> np.ndarray:
        """``(extra_state_dim,)`` float32 state entries of a subclass (an obstacle's pose)."""
        return np.zeros(0, np.float32)

    def _info(self) -> dict[str, Any]:
        return {
            "is_success": self._success,
            "distance": self._distance,
            "agent_pos": self._agent_pos.copy(),
            "targets": self._targets.copy(),
            "reached": self._reached.copy(),
            "phase": self._phase,
        }
