"""Scripted experts: success rates over vector-env rollouts, AnyTarget's choice, seeding, shapes."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from agents.experts import AnyTargetExpert, make_expert
from agents.rollout import Episode, make_vector_env, rollout


def run(
    env_id: str,
    seeds: list[int],
    expert_seed: int = 0,
    noise: float = 0.0,
    num_envs: int = 4,
    action_type: str = "position",
) -> list[Episode]:
    venv = make_vector_env(env_id, num_envs, obs_type="state", action_type=action_type)
    try:
        return rollout(
            venv,
            make_expert(env_id, seed=expert_seed, noise=noise, action_type=action_type),
            seeds,
            keep_observations=False,
            keep_infos=True,
        )
    finally:
        venv.close()


@pytest.mark.parametrize("action_type", envs.ACTION_TYPES)
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_expert_success_rate(env_id: str, action_type: str) -> None:
    episodes = run(env_id, list(range(10_000, 10_200)), action_type=action_type)
    rate = np.mean([ep.success for ep in episodes])
    assert len(episodes) == 200 and rate >= 0.99, f"{env_id}: {rate:.3f}"
    if action_type == "position":
        # Consistent demonstrations: the set-point is constant within a leg.
        legs = make_expert(env_id).legs
        for ep in episodes[:20]:
            changes = np.any(np.diff(ep.actions, axis=0) != 0, axis=1).sum()
            assert changes <= legs - 1
    else:  # displacements within the action bounds, shrinking toward the goal
        actions = np.concatenate([ep.actions for ep in episodes])
        assert np.abs(actions).max() <= 1.0 and np.abs(actions).max(axis=1).mean() > 0.5


def test_expert_with_noise_still_succeeds() -> None:
    episodes = run("ibc/ReachTarget-v0", list(range(50)), noise=0.05)
    assert np.mean([ep.success for ep in episodes]) >= 0.95
    assert np.all(np.abs(np.concatenate([ep.actions for ep in episodes])) <= 1.0)


def chosen_targets(episodes: list[Episode]) -> np.ndarray:
    """Index of the target each AnyTarget episode commanded."""
    return np.array(
        [
            int(np.argmin(np.linalg.norm(ep.infos[0]["targets"] - ep.actions[0], axis=1)))
            for ep in episodes
        ]
    )


def test_any_target_expert_picks_both_and_is_reproducible() -> None:
    seeds = list(range(200))
    choices = chosen_targets(run("ibc/ReachAnyTarget-v0", seeds, expert_seed=1))
    assert 0.4 <= choices.mean() <= 0.6
    np.testing.assert_array_equal(
        choices, chosen_targets(run("ibc/ReachAnyTarget-v0", seeds, expert_seed=1))
    )
    assert not np.array_equal(
        choices, chosen_targets(run("ibc/ReachAnyTarget-v0", seeds, expert_seed=2))
    )


def test_any_target_choice_sticks_and_is_lazy_without_reset() -> None:
    targets = np.array([[[0.5, 0.5], [-0.5, -0.5]]] * 3, np.float32)
    info = {"targets": targets, "phase": np.zeros(3, int)}
    expert = AnyTargetExpert(seed=3)
    first = expert.select_action(None, info)  # no reset(): chosen on first use
    for _ in range(5):
        np.testing.assert_array_equal(expert.select_action(None, info), first)
    picks = []
    for _ in range(50):  # reset([1]) redraws sub-env 1 only
        expert.reset([1])
        action = expert.select_action(None, info)
        picks.append(action[1, 0] > 0)
        np.testing.assert_array_equal(action[[0, 2]], first[[0, 2]])
    assert 10 < sum(picks) < 40
    picks = []
    # New episodes without reset(): the targets change, so the choice is redrawn.
    for step in range(50):
        moved = {"targets": targets + 0.01 * (step + 1), "phase": info["phase"]}
        picks.append(expert.select_action(None, moved)[0, 0] > 0.5)
    assert 10 < sum(picks) < 40


def test_batched_and_single_info() -> None:
    targets = np.array([[[0.1, 0.2], [0.3, 0.4]], [[-0.1, -0.2], [-0.3, -0.4]]], np.float32)
    batched = {
        "targets": targets,
        "phase": np.array([1, 2]),
        "agent_pos": np.zeros((2, 2), np.float32),
    }
    seq = make_expert("ibc/ReachSequence-v0", seed=0)
    actions = seq.select_action(None, batched)
    assert actions.shape == (2, 2) and actions.dtype == np.float32
    np.testing.assert_array_equal(actions, targets[:, 1])  # phase 1 -> target 1; done (2) -> last
    single = {"targets": targets[0], "phase": 0, "agent_pos": np.zeros(2, np.float32)}
    action = seq.select_action(None, single)
    assert action.shape == (2,) and action.dtype == np.float32
    np.testing.assert_array_equal(action, targets[0, 0])
    any_action = make_expert("ibc/ReachAnyTarget-v0", seed=0).select_action(None, single)
    assert any(np.array_equal(any_action, t) for t in targets[0])


def test_noise_is_seeded() -> None:
    info = {"targets": np.zeros((4, 1, 2), np.float32), "phase": np.zeros(4, int)}
    a = make_expert("ibc/ArmReach-v0", seed=7, noise=0.1).select_action(None, info)
    b = make_expert("ibc/ArmReach-v0", seed=7, noise=0.1).select_action(None, info)
    c = make_expert("ibc/ArmReach-v0", seed=8, noise=0.1).select_action(None, info)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and 0.02 < np.std(a) < 0.3


def test_make_expert_rejects_unknown_ids() -> None:
    with pytest.raises(ValueError, match="no expert"):
        make_expert("ibc/Unknown-v0")
    with pytest.raises(ValueError, match="noise"):
        make_expert("ibc/ReachTarget-v0", noise=-1.0)
