"""One ``rollout()`` for demo collection and evaluation, over Gymnasium vector envs.

Episodes are run on the sub-envs of a vector env whose autoreset is disabled, each one reset
with its own seed as soon as a sub-env is free, so ``seeds[i]`` always gives the same episode
however many sub-envs run in parallel and in whatever order they finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode


class Policy(Protocol):
    """What ``rollout()`` drives: experts and learned agents alike.

    ``obs`` and ``info`` are batched over the ``n`` sub-envs of a vector env.
    """

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Start new episodes in the given sub-envs (``None``: all)."""

    def select_action(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        """``(n, ...) observations -> (n, A)`` actions."""


@dataclass
class Episode:
    """One finished episode. ``T`` is its number of control steps."""

    seed: int
    observations: dict[str, np.ndarray] | np.ndarray | None  # (T, ...) obs before each action
    actions: np.ndarray  # (T, A) float32
    rewards: np.ndarray  # (T,) float32
    success: bool
    final_distance: float
    truncated: bool
    frames: list[np.ndarray] | None = None  # (T + 1) render() frames when recorded
    infos: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])


@dataclass
class RolloutStats:
    """Timing of the policy calls of one ``rollout()``."""

    policy_calls: int = 0
    policy_seconds: float = 0.0
    env_steps: int = 0
    wall_seconds: float = 0.0

    @property
    def ms_per_policy_call(self) -> float:
        return 1000.0 * self.policy_seconds / max(self.policy_calls, 1)

    @property
    def steps_per_second(self) -> float:
        return self.env_steps / max(self.wall_seconds, 1e-9)


VectorEnv = gym.vector.SyncVectorEnv | gym.vector.AsyncVectorEnv
"""The vector envs ``rollout`` steps (both have ``call`` and per-sub-env reset seeds)."""


def make_vector_env(
    env_id: str, num_envs: int = 1, *, asynchronous: bool = False, **env_kwargs: Any
) -> VectorEnv:
    """A vector env with autoreset disabled, as ``rollout()`` needs."""
    return gym.make_vec(  # type: ignore[return-value]
        env_id,
        num_envs=num_envs,
        vectorization_mode="async" if asynchronous else "sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
        **env_kwargs,
    )


def check_action_type(env: VectorEnv, policy: Any) -> None:
    """Refuse a policy whose ``action_type`` differs from the env's (a policy without one, or an
    env without one, passes): a position policy's actions mean nothing as displacements."""
    wanted = getattr(policy, "action_type", None)
    if wanted is None:
        return
    try:
        got = set(env.get_attr("action_type"))
    except AttributeError:
        return
    if got != {wanted}:
        raise ValueError(
            f"{type(policy).__name__} acts with action_type={wanted!r} but the env was made with "
            f"action_type={sorted(got)}; make the env with the policy's action_type "
            f"(agent.env_kwargs)"
        )


def _index(tree: Any, i: int) -> Any:
    if isinstance(tree, dict):
        return {k: _index(v, i) for k, v in tree.items()}
    return tree[i]


def _stack(items: list[Any]) -> Any:
    if isinstance(items[0], dict):
        return {k: _stack([it[k] for it in items]) for k in items[0]}
    return np.stack(items)


def _merge_info(current: dict[str, Any], new: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """Overwrite the entries of the sub-envs in ``mask`` with those of ``new``."""
    if not current:
        return {k: np.array(v, copy=True) for k, v in new.items()}
    out = dict(current)
    for k, v in new.items():
        v = np.asarray(v)
        if k not in out or np.asarray(out[k]).shape[1:] != v.shape[1:]:
            out[k] = np.array(v, copy=True)
        else:
            arr = np.array(out[k], copy=True)
            arr[mask] = v[mask]
            out[k] = arr
    return out


def _single_info(info: dict[str, Any], i: int) -> dict[str, Any]:
    return {k: np.asarray(v)[i] for k, v in info.items() if not k.startswith("_")}


class _Running:
    """Buffers of the episode a sub-env is running."""

    def __init__(self, index: int, seed: int, record_frames: bool) -> None:
        self.index, self.seed = index, seed
        self.obs: list[Any] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.infos: list[dict[str, Any]] = []
        self.frames: list[np.ndarray] | None = [] if record_frames else None


def rollout(
    env: VectorEnv,
    policy: Policy,
    seeds: Sequence[int],
    *,
    keep_observations: bool = True,
    record_frames: int | Callable[[int], bool] = 0,
    keep_infos: bool = False,
    on_episode: Callable[[int, Episode], None] | None = None,
    stats: RolloutStats | None = None,
) -> list[Episode]:
    """Run one episode per seed with ``policy`` and return them in the order of ``seeds``.

    Args:
        env: a vector env made with ``make_vector_env`` (autoreset disabled).
        policy: ``reset(env_ids)`` and batched ``select_action(obs, info) -> (n, A)``.
        seeds: one reset seed per episode.
        keep_observations: keep the ``(T, ...)`` observations (demo collection needs them;
            evaluation does not).
        record_frames: record ``render()`` frames for the first ``k`` episodes (an int) or for the
            episode indices where the callable is true.
        keep_infos: keep the per-step info dicts of each episode.
        on_episode: called with ``(episode_index, episode)`` as each episode finishes (progress
            bars, streaming to disk); the episode is still returned.
        stats: filled with the timing of the policy calls.
    """
    if env.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
        raise ValueError(
            "rollout() needs a vector env with autoreset disabled: use make_vector_env()"
        )
    check_action_type(env, policy)
    wants_frames = record_frames if callable(record_frames) else (lambda i: i < int(record_frames))
    n = env.num_envs
    stats = stats if stats is not None else RolloutStats()
    t_start = time.perf_counter()
    results: list[Episode | None] = [None] * len(seeds)
    queue = list(enumerate(seeds))[::-1]  # pop() from the end = next episode
    slots: list[_Running | None] = [None] * n
    obs: Any = None
    info: dict[str, Any] = {}
    need_reset = np.ones(n, dtype=bool)

    while True:
        # Start the next episodes in free sub-envs; park idle ones with unseeded resets.
        if need_reset.any():
            reset_seeds: list[int | None] = [None] * n
            for i in map(int, np.flatnonzero(need_reset)):
                if queue:
                    ep_index, seed = queue.pop()
                    slots[i] = _Running(ep_index, int(seed), wants_frames(ep_index))
                    reset_seeds[i] = int(seed)
                else:
                    slots[i] = None
            new_obs, new_info = env.reset(
                seed=reset_seeds, options={"reset_mask": need_reset.copy()}
            )
            obs = new_obs if obs is None else _merge_obs(obs, new_obs, need_reset)
            info = _merge_info(info, new_info, need_reset)
            policy.reset([int(i) for i in np.flatnonzero(need_reset)])
            if any(s is not None and s.frames is not None for s in slots):
                rendered = env.call("render")
                for i in map(int, np.flatnonzero(need_reset)):
                    s = slots[i]
                    if s is not None and s.frames is not None:
                        s.frames.append(np.asarray(rendered[i]))
            need_reset[:] = False
        if all(s is None for s in slots):
            break

        t0 = time.perf_counter()
        actions = np.asarray(policy.select_action(obs, info), dtype=np.float32)
        stats.policy_seconds += time.perf_counter() - t0
        stats.policy_calls += 1
        for i, s in enumerate(slots):
            if s is not None:
                if keep_observations:
                    s.obs.append(_index(obs, i))
                s.actions.append(actions[i].copy())
        obs, rewards, terminated, truncated, step_info = env.step(actions)
        info = _merge_info(info, step_info, np.ones(n, dtype=bool))
        frames = (
            env.call("render")
            if any(s is not None and s.frames is not None for s in slots)
            else None
        )
        for i, s in enumerate(slots):
            if s is None:
                need_reset[i] = terminated[i] or truncated[i]
                continue
            stats.env_steps += 1
            s.rewards.append(float(rewards[i]))
            single = _single_info(info, i)
            if keep_infos:
                s.infos.append(single)
            if s.frames is not None and frames is not None:
                s.frames.append(np.asarray(frames[i]))
            if terminated[i] or truncated[i]:
                ep = Episode(
                    seed=s.seed,
                    observations=_stack(s.obs) if keep_observations and s.obs else None,
                    actions=np.stack(s.actions).astype(np.float32),
                    rewards=np.asarray(s.rewards, dtype=np.float32),
                    success=bool(single.get("is_success", False)),
                    final_distance=float(single.get("distance", np.nan)),
                    truncated=bool(truncated[i] and not terminated[i]),
                    frames=s.frames,
                    infos=s.infos,
                )
                results[s.index] = ep
                if on_episode is not None:
                    on_episode(s.index, ep)
                need_reset[i] = True
    stats.wall_seconds += time.perf_counter() - t_start
    return [ep for ep in results if ep is not None]


def _merge_obs(current: Any, new: Any, mask: np.ndarray) -> Any:
    if isinstance(current, dict):
        return {k: _merge_obs(current[k], new[k], mask) for k in current}
    out = np.array(current, copy=True)
    out[mask] = np.asarray(new)[mask]
    return out
