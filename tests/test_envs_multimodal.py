"""The multimodal envs (a wall to go around, three targets in any order) and ``action_type``."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from agents.experts import ObstacleExpert, make_expert
from agents.rollout import make_vector_env, rollout
from envs.obstacle import WALL_HALF_LENGTH, WALL_HALF_WIDTH, distance_to_wall
from envs.physics import AGENT_RADIUS, TARGET_RADIUS, VIEW_HALF_EXTENT

OBSTACLE = "ibc/ReachAroundObstacle-v0"
ALL_TARGETS = "ibc/ReachAllTargets-v0"


def pixel_of(xy: np.ndarray, size: int) -> tuple[int, int]:
    col = (xy[0] / VIEW_HALF_EXTENT + 1) / 2 * size - 0.5
    row = (1 - xy[1] / VIEW_HALF_EXTENT) / 2 * size - 0.5
    return round(row), round(col)


# ---- action_type ------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_delta_env_checker(env_id: str) -> None:
    env = gym.make(env_id, image_size=32, action_type="delta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_delta_action_moves_the_setpoint_from_the_agent() -> None:
    env = gym.make("ibc/ReachTarget-v0", obs_type="state", action_type="delta").unwrapped
    env.reset(seed=0)
    env._scene.reset(np.array([-0.5, 0.0]), np.array([[0.8, 0.8]]), env.task.target_colors)
    env._update_progress()
    np.testing.assert_allclose(env.setpoint(np.array([1.0, 0.0])), [-0.5 + envs.DELTA_SCALE, 0])
    _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    moved = info["agent_pos"] - np.array([-0.5, 0.0])
    assert 0.1 < moved[0] <= envs.DELTA_SCALE and abs(moved[1]) < 1e-4
    for _ in range(5):  # a zero displacement holds the disc where it is
        before = env.step(np.zeros(2, np.float32))[4]["agent_pos"]
    np.testing.assert_allclose(env.step(np.zeros(2, np.float32))[4]["agent_pos"], before, atol=2e-3)
    env._scene.reset(np.array([0.95, 0.0]), np.array([[0.8, 0.8]]), env.task.target_colors)
    env._update_progress()
    np.testing.assert_allclose(env.setpoint(np.array([1.0, 0.0])), [1.0, 0.0])  # clipped
    env.close()


def test_rollout_refuses_a_policy_of_the_other_action_type() -> None:
    venv = make_vector_env("ibc/ReachTarget-v0", 1, obs_type="state", action_type="delta")
    with pytest.raises(ValueError, match=r"action_type='position'.*\['delta'\]"):
        rollout(venv, make_expert("ibc/ReachTarget-v0", action_type="position"), [0])
    venv.close()


def test_expert_rejects_an_unknown_action_type() -> None:
    with pytest.raises(ValueError, match="action_type must be one of"):
        make_expert("ibc/ReachTarget-v0", action_type="velocity")


# ---- ReachAroundObstacle ----------------------------------------------------------------------


def test_wall_blocks_the_straight_path() -> None:
    """Driving straight at the target stops the disc against the wall, never reaching it."""
    env = gym.make(OBSTACLE, obs_type="state")
    for seed in range(10):
        _, info = env.reset(seed=seed)
        target = info["targets"][0]
        for _ in range(env.spec.max_episode_steps):
            _, _, terminated, truncated, info = env.step(target)
            if terminated or truncated:
                break
        assert not info["is_success"]
        center, u = info["obstacle"][:2], info["obstacle"][2:4]
        gap = distance_to_wall(info["agent_pos"][None].astype(np.float64), center, u)[0]
        assert gap == pytest.approx(AGENT_RADIUS, abs=0.01)  # resting against the wall
    env.close()


def test_mean_of_the_two_ways_points_into_the_wall() -> None:
    env = gym.make(OBSTACLE, obs_type="state")
    for seed in range(20):
        _, info = env.reset(seed=seed)
        center, u = info["obstacle"][:2], info["obstacle"][2:4].astype(np.float64)
        mean = info["waypoints"].mean(axis=0)
        np.testing.assert_allclose(mean, center + 0.1 * u, atol=1e-6)  # just behind the wall
        # start and target lie on opposite sides of the wall, the start close to it
        assert -0.2 <= np.dot(info["agent_pos"] - center, u) <= -0.14
        assert np.dot(info["targets"][0] - center, u) > 0.5
    for delta in (0.0, 0.1, 0.2):  # the mean, even pulled sideways, holds the disc at the wall
        _, info = env.reset(seed=round(delta * 10))
        center, u = info["obstacle"][:2], info["obstacle"][2:4].astype(np.float64)
        setpoint = info["waypoints"].mean(axis=0) + delta * np.array([-u[1], u[0]])
        for _ in range(env.spec.max_episode_steps):
            _, _, terminated, truncated, info = env.step(setpoint)
        assert not terminated
        gap = distance_to_wall(info["agent_pos"][None].astype(np.float64), center, u)[0]
        assert gap == pytest.approx(AGENT_RADIUS, abs=0.01)
    env.close()


def test_both_ways_succeed_and_the_expert_picks_both() -> None:
    env = make_vector_env(OBSTACLE, 2, obs_type="state")
    for side in (0, 1):
        expert = ObstacleExpert(seed=0)
        expert.choices.get = lambda i, targets, options, side=side: side  # type: ignore[method-assign]
        episodes = rollout(env, expert, list(range(40)), keep_observations=False, keep_infos=True)
        assert all(ep.success for ep in episodes)
        for ep in episodes:  # the disc slides along the wall and rounds the chosen end
            info = ep.infos[0]
            path = np.stack([i["agent_pos"] for i in ep.infos]).astype(np.float64)
            u = info["obstacle"][2:4].astype(np.float64)
            lateral = path @ np.array([-u[1], u[0]])
            end = lateral[np.argmax(np.abs(lateral))]
            assert abs(end) > WALL_HALF_LENGTH + AGENT_RADIUS and (end > 0) == (side == 0)
            gaps = distance_to_wall(path, info["obstacle"][:2], u)
            assert gaps.min() > AGENT_RADIUS - 0.005  # touching at most, never into it
    venv_expert = make_expert(OBSTACLE, seed=1)
    episodes = rollout(env, venv_expert, list(range(100)), keep_observations=False, keep_infos=True)
    env.close()
    sides = [
        int(np.argmin(np.linalg.norm(ep.infos[0]["waypoints"] - ep.actions[0], axis=1)))
        for ep in episodes
    ]
    assert 30 <= sum(sides) <= 70
    # one switch from the waypoint to the target: a discontinuous expert
    changes = [np.any(np.diff(ep.actions, axis=0) != 0, axis=1).sum() for ep in episodes]
    assert set(changes) == {1}


def test_layout_turns() -> None:
    env = gym.make(OBSTACLE, obs_type="state")
    angles = []
    for seed in range(200):
        _, info = env.reset(seed=seed)
        u = info["obstacle"][2:4].astype(np.float64)
        angles.append(math.atan2(u[1], u[0]))
        assert np.all(np.abs(info["waypoints"]) <= 0.9)
    hist, _ = np.histogram(angles, bins=4, range=(-math.pi, math.pi))
    assert hist.min() >= 30  # every direction
    env.close()


def test_wall_is_drawn_where_it_lies() -> None:
    size = 96
    env = gym.make(OBSTACLE, obs_type="pixels", image_size=size)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        center, u = info["obstacle"][:2], info["obstacle"][2:4]
        dark = obs.astype(int).max(axis=-1) < 60
        r, c = pixel_of(center, size)
        assert dark[r, c] and dark[r - 1 : r + 2, c - 1 : c + 2].sum() >= 6  # 4 px thick
        area = dark.sum() / (size / (2 * VIEW_HALF_EXTENT)) ** 2  # normalized units^2
        assert area == pytest.approx(4 * WALL_HALF_LENGTH * WALL_HALF_WIDTH, rel=0.35)
        w = np.array([-u[1], u[0]])
        for end in (center + 0.25 * w, center - 0.25 * w):  # it spans across the start-target line
            r, c = pixel_of(end, size)
            assert dark[r - 1 : r + 2, c - 1 : c + 2].any()
    env.close()


# ---- ReachAllTargets --------------------------------------------------------------------------


def _drive(env: gym.Env, setpoint: np.ndarray, steps: int = 30) -> dict[str, Any]:
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(setpoint)
        if terminated or truncated or np.linalg.norm(info["agent_pos"] - setpoint) < 1e-3:
            break
    info["reward"], info["terminated"] = reward, terminated
    return info


def test_all_targets_any_order_and_grey_when_reached() -> None:
    env = gym.make(ALL_TARGETS, obs_type="pixels_agent_pos", image_size=96)
    for order in ((2, 0, 1), (1, 2, 0)):
        obs, info = env.reset(seed=5)
        targets = info["targets"]
        for n, k in enumerate(order, start=1):
            info = _drive(env, targets[k])
            assert info["reached"][k] and info["phase"] == n
            assert info["terminated"] == (n == 3) == info["is_success"]
        obs = env.unwrapped._observation()
        img = obs["pixels"].astype(int)
        assert not ((img[..., 0] > 150) & (img[..., 1] < 90)).any()  # no red left
        for t in targets[list(order[:-1])]:  # grey (the disc covers the last one)
            r, c = pixel_of(t, 96)
            patch = obs["pixels"][r - 1 : r + 2, c - 1 : c + 2].astype(int)
            assert (np.ptp(patch, axis=-1) < 20).all() and patch.max() < 150
    env.close()


def test_all_targets_dense_reward_is_the_shortest_path_left() -> None:
    env = gym.make(ALL_TARGETS, obs_type="state")
    _, info = env.reset(seed=2)
    _, reward, *_, info = env.step(info["agent_pos"])
    agent, targets = info["agent_pos"].astype(np.float64), info["targets"].astype(np.float64)
    best = min(
        sum(math.dist(a, b) for a, b in zip([agent, *order], order, strict=False))
        for order in itertools.permutations(targets)
    )
    assert reward == pytest.approx(-best)
    info = _drive(env, targets[0])
    assert info["reached"][0] and info["reward"] < -TARGET_RADIUS
    env.close()


def test_all_targets_expert_visits_in_random_orders() -> None:
    venv = make_vector_env(ALL_TARGETS, 2, obs_type="state")
    episodes = rollout(
        venv,
        make_expert(ALL_TARGETS, seed=0),
        list(range(60)),
        keep_observations=False,
        keep_infos=True,
    )
    venv.close()
    orders = []
    for ep in episodes:
        assert ep.success
        targets = ep.infos[0]["targets"]
        picked = [int(np.argmin(np.linalg.norm(targets - a, axis=1))) for a in ep.actions]
        orders.append(tuple(dict.fromkeys(picked)))  # the targets in the order commanded
    assert all(sorted(order) == [0, 1, 2] for order in orders)
    assert len(set(orders)) == 6  # every order of the three targets
    first = np.bincount([order[0] for order in orders], minlength=3)
    assert first.min() >= 10  # each target first about a third of the time
