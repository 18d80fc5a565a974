"""rollout(): seeds give the same episodes whatever the number of sub-envs, in seed order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.rollout import Episode, RolloutStats, rollout


class CountdownEnv(gym.Env):
    """Episode length is drawn from the seed (1..6 steps); obs is the remaining count."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = "rgb_array") -> None:
        self.observation_space = gym.spaces.Box(0, 10, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.render_mode = render_mode
        self.left = 0

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.left = int(self.np_random.integers(1, 7))
        return np.array([self.left], np.float32), {
            "is_success": False,
            "distance": float(self.left),
        }

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.left -= 1
        done = self.left == 0
        info = {"is_success": done, "distance": float(self.left)}
        return np.array([self.left], np.float32), float(action[0]), done, False, info

    def render(self) -> np.ndarray:
        return np.full((4, 4, 3), self.left, np.uint8)


class EchoPolicy:
    """Action = (remaining count, env index); counts resets per sub-env."""

    def __init__(self) -> None:
        self.resets: list[int] = []

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        self.resets.extend(env_ids or [])

    def select_action(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        assert "distance" in info and len(info["distance"]) == len(obs)
        return np.stack([obs[:, 0], np.zeros(len(obs))], axis=1).astype(np.float32)


def vec(n: int) -> SyncVectorEnv:
    return SyncVectorEnv([CountdownEnv] * n, autoreset_mode=AutoresetMode.DISABLED)


def summary(episodes: list[Episode]) -> list[tuple[int, int, float]]:
    return [(ep.seed, ep.length, float(ep.rewards.sum())) for ep in episodes]


@pytest.mark.parametrize("num_envs", [1, 2, 3, 5])
def test_same_episodes_for_any_number_of_envs(num_envs: int) -> None:
    seeds = list(range(10, 17))
    reference = summary(rollout(vec(1), EchoPolicy(), seeds))
    got = rollout(vec(num_envs), EchoPolicy(), seeds)
    assert summary(got) == reference
    assert [ep.seed for ep in got] == seeds


def test_episode_contents() -> None:
    (ep,) = rollout(vec(2), EchoPolicy(), [7], record_frames=1)
    length = ep.length
    assert ep.observations is not None and ep.observations.shape == (length, 1)
    np.testing.assert_array_equal(ep.observations[:, 0], np.arange(length, 0, -1))
    np.testing.assert_array_equal(
        ep.actions[:, 0], ep.observations[:, 0]
    )  # obs paired with its action
    assert ep.success and not ep.truncated and ep.final_distance == 0.0
    assert ep.frames is not None and len(ep.frames) == length + 1  # reset frame + one per step


def test_frames_only_for_requested_episodes_and_reset_per_episode() -> None:
    policy, stats = EchoPolicy(), RolloutStats()
    episodes = rollout(
        vec(2), policy, [1, 2, 3, 4], record_frames=2, keep_observations=False, stats=stats
    )
    assert [ep.frames is not None for ep in episodes] == [True, True, False, False]
    assert all(ep.observations is None for ep in episodes)
    assert len(policy.resets) >= 4  # one reset per started episode (plus idle slots)
    assert stats.env_steps == sum(ep.length for ep in episodes)
    assert stats.policy_calls > 0


def test_needs_autoreset_disabled() -> None:
    env = SyncVectorEnv([CountdownEnv])
    with pytest.raises(ValueError, match="autoreset disabled"):
        rollout(env, EchoPolicy(), [0])
