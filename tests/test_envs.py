"""The ibc/ envs: API checkers, spaces, validation, seeding, task logic, rendering, vector envs."""

from __future__ import annotations

import math
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from agents.experts import make_expert
from envs.physics import RED, TARGET_RADIUS, VIEW_HALF_EXTENT, PlanarScene

OBS_TYPES = ("pixels", "pixels_agent_pos", "state")
INFO_KEYS = {"is_success", "distance", "agent_pos", "targets", "reached", "phase"}


def make(env_id: str, **kwargs: Any) -> gym.Env:
    kwargs.setdefault("image_size", 64)
    return gym.make(env_id, **kwargs)


def pixel_of(xy: np.ndarray, size: int) -> tuple[float, float]:
    """(row, col) of the normalized point ``xy`` in a ``size`` image (the documented mapping)."""
    col = (xy[0] / VIEW_HALF_EXTENT + 1) / 2 * size - 0.5
    row = (1 - xy[1] / VIEW_HALF_EXTENT) / 2 * size - 0.5
    return row, col


def centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    assert len(rows) > 0, "colour not found in the image"
    return float(rows.mean()), float(cols.mean())


def is_red(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (r > 150) & (g < 90) & (b < 90)


def is_blue(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (b > 150) & (r < 90) & (g < 130)


# ---- registration and API checkers -----------------------------------------------------------


def test_registered() -> None:
    for env_id, steps in envs.MAX_EPISODE_STEPS.items():
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == steps
    assert envs.MAX_EPISODE_STEPS["ibc/ReachTarget-v0"] == 50


@pytest.mark.parametrize("obs_type", OBS_TYPES)
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_env_checkers(env_id: str, obs_type: str) -> None:
    env = make(env_id, obs_type=obs_type)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checkers' warnings count as failures
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_spaces_and_info(env_id: str) -> None:
    for obs_type in OBS_TYPES:
        env = make(env_id, obs_type=obs_type, image_size=48)
        k, extra = env.unwrapped.task.n_targets, env.unwrapped.extra_state_dim
        assert env.metadata["render_fps"] == 10 and env.metadata["render_modes"] == ["rgb_array"]
        assert env.action_space == gym.spaces.Box(-1, 1, (2,), np.float32)
        obs, info = env.reset(seed=1)
        assert obs in env.observation_space
        for _ in range(2):
            assert INFO_KEYS <= set(info)
            assert isinstance(info["is_success"], bool) and isinstance(info["distance"], float)
            assert isinstance(info["phase"], int)
            assert info["agent_pos"].dtype == np.float32 and info["agent_pos"].shape == (2,)
            assert info["targets"].dtype == np.float32 and info["targets"].shape == (k, 2)
            assert info["reached"].dtype == bool and info["reached"].shape == (k,)
            obs, _, _, _, info = env.step(env.action_space.sample())
            assert obs in env.observation_space
        if obs_type == "pixels":
            assert obs.shape == (48, 48, 3) and obs.dtype == np.uint8
        elif obs_type == "pixels_agent_pos":
            np.testing.assert_array_equal(obs["agent_pos"], info["agent_pos"])
        else:
            assert obs.shape == (2 + 3 * k + extra,)
            np.testing.assert_array_equal(obs[:2], info["agent_pos"])
            np.testing.assert_array_equal(obs[2 : 2 + 2 * k], info["targets"].ravel())
            np.testing.assert_array_equal(obs[2 + 2 * k : 2 + 3 * k], info["reached"])
        env.close()


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.array([np.nan, 0.0], np.float32), "finite"),
        (np.array([0.0, np.inf]), "finite"),
        (np.zeros(3, np.float32), "shape"),
        (np.zeros((1, 2), np.float32), "shape"),
        (np.array([True, False]), "dtype"),
        ([True, False], "dtype"),
        (np.array(["a", "b"]), "dtype"),
        (["a", "b"], "dtype"),
        ([0.1, 0.2, 0.3], "shape"),
        (None, "action"),
    ],
)
def test_bad_actions_raise(action: Any, message: str) -> None:
    env = make("ibc/ReachTarget-v0", obs_type="state")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)
    env.close()


def test_good_actions_and_clipping() -> None:
    env = make("ibc/ReachTarget-v0", obs_type="state").unwrapped
    env.reset(seed=0)
    env.step([0.1, 0.2])
    env.step((0, 1))
    env.step(np.array([1, 0]))  # integer arrays are accepted like integer lists
    env.step(np.array([0, -1], np.int8))
    env.step(np.array([0.1, 0.2], np.float64))
    env._scene.reset(np.zeros(2), np.array([[-0.8, 0.8]]), env.task.target_colors)  # target away
    for _ in range(25):  # far outside the workspace: the set-point is clipped to the corner
        *_, info = env.step(np.array([5.0, -5.0], np.float32))
    np.testing.assert_allclose(info["agent_pos"], [1.0, -1.0], atol=1e-4)
    env.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"obs_type": "rgb"},
        {"reward_type": "shaped"},
        {"action_type": "velocity"},
        {"render_mode": "human"},
        {"image_size": 0},
        {"image_size": 64.0},
        {"render_size": 5000},
        {"colour": "red"},
    ],
)
def test_bad_kwargs_raise(kwargs: dict[str, Any]) -> None:
    for cls in (envs.ReachTargetEnv, envs.ArmReachEnv):
        with pytest.raises(ValueError, match=r"must be|valid"):
            cls(**kwargs)
    with pytest.raises(
        ValueError, match=r"must be one of \('pixels', 'pixels_agent_pos', 'state'\)"
    ):
        gym.make("ibc/ReachSequence-v0", obs_type="rgb")


# ---- seeding ----------------------------------------------------------------------------------


def _trace(env: gym.Env, seed: int) -> list[Any]:
    """A seeded reset, then unseeded resets, with seeded random actions in between."""
    actions = np.random.default_rng(seed).uniform(-1, 1, (12, 2)).astype(np.float32)
    trace: list[Any] = [env.reset(seed=seed)]
    for i, action in enumerate(actions):
        trace.append(env.step(action))
        if i % 4 == 3:
            trace.append(env.reset())
    return trace


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b and type(a) is type(b)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_seeded_reset_is_reproducible_across_instances(env_id: str) -> None:
    fresh = make(env_id, obs_type="pixels_agent_pos", image_size=32)
    used = make(env_id, obs_type="pixels_agent_pos", image_size=32)
    _trace(used, 99)  # a different history must not matter
    _assert_same(_trace(fresh, 5), _trace(used, 5))
    other = _trace(fresh, 6)
    assert not np.array_equal(other[0][1]["targets"], _trace(used, 5)[0][1]["targets"])
    fresh.close()
    used.close()


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_start_state_separation(env_id: str) -> None:
    env = make(env_id, obs_type="state")
    task = env.unwrapped.task
    for seed in range(100):
        _, info = env.reset(seed=seed)
        targets, agent = info["targets"].astype(np.float64), info["agent_pos"].astype(np.float64)
        assert np.all(np.abs(targets) <= task.target_limit + 1e-6)
        assert np.all(np.abs(agent) <= task.agent_limit + 0.01)  # the arm's IK is within 1 mm
        assert np.linalg.norm(targets - agent, axis=1).min() >= task.min_agent_separation - 0.01
        if len(targets) > 1:
            assert np.linalg.norm(targets[0] - targets[1]) >= task.min_target_separation - 1e-6
        assert not info["is_success"] and info["phase"] == 0
    env.close()


# ---- task logic -------------------------------------------------------------------------------


@pytest.mark.parametrize("action_type", envs.ACTION_TYPES)
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_expert_succeeds_and_rewards(env_id: str, action_type: str) -> None:
    dense = make(env_id, obs_type="state", action_type=action_type)
    sparse = make(env_id, obs_type="state", reward_type="sparse", action_type=action_type)
    task = dense.unwrapped.task
    expert = make_expert(env_id, seed=0, action_type=action_type)
    _, info = dense.reset(seed=3)
    sparse.reset(seed=3)
    for _ in range(dense.spec.max_episode_steps):
        action = expert.select_action(None, info)
        _, reward, terminated, truncated, info = dense.step(action)
        _, sparse_reward, *_ = sparse.step(action)
        # The dense reward is minus the path left through the targets still to reach: the
        # distance to the nearest one when only one is left (or any one will do).
        one_left = not (task.sequential or task.visit_all) or info["phase"] >= task.n_targets - 1
        if one_left:
            assert reward == -info["distance"]
        assert reward <= -info["distance"] + 1e-9
        assert sparse_reward == (1.0 if info["is_success"] else 0.0)
        assert terminated == info["is_success"]
        if terminated or truncated:
            break
    assert info["is_success"] and info["distance"] <= TARGET_RADIUS
    dense.close()
    sparse.close()


def test_crossing_speed() -> None:
    """1.25 units/s: 1.6 s (16 steps) across the workspace, no overshoot."""
    env = make("ibc/ReachTarget-v0", obs_type="state").unwrapped
    env.reset(seed=0)
    env._scene.reset(np.array([-1.0, 0.0]), np.array([[0.0, 0.9]]), env.task.target_colors)
    xs = [env.step(np.array([1.0, 0.0], np.float32))[4]["agent_pos"][0] for _ in range(20)]
    steps = np.diff([-1.0, *xs])
    np.testing.assert_allclose(steps[:14], 0.125, atol=1e-4)
    assert 15 <= int(np.argmax(np.array(xs) > 0.99)) + 1 <= 18
    assert max(xs) <= 1.0
    env.close()


def test_arm_moves_in_the_horizontal_plane() -> None:
    """The flange stays at its height and moves at most 0.025 m (0.125 normalized) per step."""
    env = make("ibc/ArmReach-v0", obs_type="state").unwrapped
    _, info = env.reset(seed=0)
    for action in np.random.default_rng(0).uniform(-1, 1, (20, 2)).astype(np.float32):
        previous = info["agent_pos"]
        *_, info = env.step(action)
        assert abs(env._scene.ee_height - 0.15) < 0.005
        assert np.linalg.norm(info["agent_pos"] - previous) <= 0.125 + 1e-3
    env.close()


def test_any_target_either_one_succeeds() -> None:
    env = make("ibc/ReachAnyTarget-v0", obs_type="state")
    for k in (0, 1):
        _, info = env.reset(seed=11)
        for _ in range(40):
            _, _, terminated, _, info = env.step(info["targets"][k])
            if terminated:
                break
        assert info["is_success"]
        assert np.linalg.norm(info["agent_pos"] - info["targets"][k]) <= TARGET_RADIUS
    env.close()


def _drive(
    env: gym.Env, setpoint: np.ndarray, steps: int = 30
) -> tuple[Any, float, bool, dict[str, Any]]:
    """Step toward ``setpoint`` until the agent is on it (or the episode ends)."""
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(setpoint)
        if terminated or truncated or np.linalg.norm(info["agent_pos"] - setpoint) < 1e-3:
            break
    return obs, reward, terminated, info


def test_sequence_phases_and_image() -> None:
    env = make("ibc/ReachSequence-v0", obs_type="pixels_agent_pos", image_size=96)
    obs, info = env.reset(seed=4)
    first, second = info["targets"]
    r, c = (round(v) for v in pixel_of(first, 96))
    assert is_red(obs["pixels"][r - 1 : r + 2, c - 1 : c + 2]).all()
    obs, _, terminated, info = _drive(env, second)  # the second target first: nothing happens
    assert info["phase"] == 0 and not terminated
    obs, reward, terminated, info = _drive(env, first)
    assert info["phase"] == 1 and not info["is_success"] and not terminated
    assert reward == -info["distance"]  # phase 1: only the distance to the last target remains
    obs, *_ = env.step(second)  # move off target 0: it shows grey (reached), no longer red
    patch = obs["pixels"][r - 1 : r + 2, c - 1 : c + 2].astype(int)
    assert not is_red(patch).any() and (np.ptp(patch, axis=-1) < 20).all()
    obs, reward, terminated, info = _drive(env, second)
    assert terminated and info["is_success"] and info["phase"] == 2
    env.close()


def test_sequence_dense_reward_counts_the_remaining_leg() -> None:
    env = make("ibc/ReachSequence-v0", obs_type="state")
    _, info = env.reset(seed=8)
    leg = float(np.linalg.norm(info["targets"][1].astype(np.float64) - info["targets"][0]))
    _, reward, *_, info = env.step(info["agent_pos"])
    assert reward == pytest.approx(-(info["distance"] + leg))
    env.close()


# ---- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_image_orientation(env_id: str) -> None:
    """Blue agent and red targets are where the documented pixel mapping puts them."""
    size = 96
    env = make(env_id, obs_type="pixels", image_size=size)
    if not isinstance(env.unwrapped._scene, PlanarScene):
        pytest.skip("not a planar scene (see test_arm_image_shows_target_and_effector)")
    colors = env.unwrapped.task.target_colors
    radius_px = TARGET_RADIUS / (2 * VIEW_HALF_EXTENT) * size
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        assert np.allclose(centroid(is_blue(obs)), pixel_of(info["agent_pos"], size), atol=1.0)
        red_targets = np.array(
            [t for t, c in zip(info["targets"], colors, strict=True) if c == RED]
        )
        expected = np.mean([pixel_of(t, size) for t in red_targets], axis=0)
        assert np.allclose(centroid(is_red(obs)), expected, atol=1.0)
        assert is_red(obs).sum() >= 0.8 * len(red_targets) * math.pi * radius_px**2  # ~4 px radius
    env.close()


def test_arm_image_shows_target_and_effector() -> None:
    size = 96
    env = make("ibc/ArmReach-v0", obs_type="pixels", image_size=size)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        assert np.allclose(centroid(is_red(obs)), pixel_of(info["targets"][0], size), atol=1.5)
        assert is_blue(obs).sum() > 20  # the wrist and flange
    env.close()


def test_render() -> None:
    env = make("ibc/ReachTarget-v0", obs_type="state", render_mode="rgb_array", render_size=128)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env.close()
    quiet = make("ibc/ReachTarget-v0", obs_type="state").unwrapped
    quiet.reset(seed=0)
    with pytest.warns(UserWarning):
        assert quiet.render() is None
    quiet.close()


# ---- several envs, close, vector envs ---------------------------------------------------------


def test_envs_are_independent_and_close_is_idempotent() -> None:
    a, b = make("ibc/ReachTarget-v0", obs_type="pixels"), make("ibc/ArmReach-v0", obs_type="pixels")
    alone = make("ibc/ReachTarget-v0", obs_type="pixels")
    oa, _ = a.reset(seed=1)
    b.reset(seed=2)
    o_alone, _ = alone.reset(seed=1)
    np.testing.assert_array_equal(oa, o_alone)
    for action in np.random.default_rng(0).uniform(-1, 1, (5, 2)).astype(np.float32):
        oa = a.step(action)[0]
        b.step(-action)
        np.testing.assert_array_equal(oa, alone.step(action)[0])
    for env in (a, b, alone):
        env.close()
        env.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs(mode: str) -> None:
    n = 2
    venv = gym.make_vec(
        "ibc/ReachSequence-v0",
        num_envs=n,
        vectorization_mode=mode,
        obs_type="pixels",
        image_size=32,
    )
    obs, info = venv.reset(seed=[0, 1])
    assert obs.shape == (n, 32, 32, 3)
    assert info["targets"].shape == (n, 2, 2) and info["agent_pos"].shape == (n, 2)
    for _ in range(3):
        obs, rewards, terminated, truncated, info = venv.step(info["targets"][:, 0])
    assert (
        rewards.shape == (n,) and info["phase"].shape == (n,) and info["is_success"].dtype == bool
    )
    obs, _ = venv.reset(seed=[0, 1])
    venv.close()
    single = make("ibc/ReachSequence-v0", obs_type="pixels", image_size=32)
    np.testing.assert_array_equal(single.reset(seed=1)[0], obs[1])
    single.close()
