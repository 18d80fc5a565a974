"""``ibc-gym eval``: run a trained agent in simulation on fresh seeds, write metrics and videos."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

import envs  # noqa: F401  (registers the ibc/ ids)
from agents.learned import load_agent
from agents.rollout import Episode, RolloutStats, make_vector_env, rollout
from demos.args import check_options, help_field, registered_env, registered_env_ids
from demos.media import video_name, write_video
from ebm_policy import fileio
from ebm_policy.checkpoint import CheckpointError
from ebm_policy.config import config_to_dict
from ebm_policy.optimizers import OptimizerConfig
from ebm_policy.runlock import FolderLock
from envs.base import SIZE_RANGE


@dataclass(frozen=True)
class EvalConfig:
    ckpt: Path = help_field(
        Path("runs/implicit/ckpt_last.pt"), "checkpoint (.pt) or PPO model (.zip)"
    )
    episodes: int = help_field(100, "number of evaluation episodes", min=1)
    seed: int = help_field(
        100_000, "episode i is reset with seed + i (must not overlap the demo seeds)", min=0
    )
    num_envs: int = help_field(4, "sub-envs run in parallel", min=1)
    asynchronous: bool = help_field(True, "step sub-envs in worker processes (AsyncVectorEnv)")
    videos: int = help_field(3, "record the first k episodes as mp4", min=0)
    render_size: int = help_field(
        256, "video frame size in pixels", min=SIZE_RANGE[0], max=SIZE_RANGE[1]
    )
    env: str | None = help_field(
        None, "env id (default: the one the checkpoint was trained on)", check=registered_env
    )
    action_type: Literal["position", "delta"] | None = help_field(
        None, "the env's action type (default: the checkpoint's; another one is refused)"
    )
    out: Path | None = help_field(
        None,
        "output folder (default: <ckpt folder>/eval, or eval_<optimizer> with --optimizer, e.g. eval_dfo-16384x3-stratified)",
    )
    threads: int = help_field(
        1, "torch threads for the policy (small models run fastest on 1)", min=1
    )
    optimizer: OptimizerConfig | None = help_field(
        None,
        "implicit: the inference optimizer (none: the checkpoint's; a kind starts from its defaults)",
    )
    execute: int | None = help_field(
        None,
        "actions of each predicted chunk executed before the next prediction (default: the checkpoint's)",
        min=1,
    )
    temporal_ensemble: float | None = help_field(
        None,
        "chunk policies: predict every step and run the exp(-m i)-weighted mean of the last chunks' plans for it (ACT's temporal ensembling with m = this; none: off)",
        min=0,
    )
    progress: bool = help_field(True, "show a progress bar")

    def __post_init__(self) -> None:
        check_options(self)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sensible at 0% and 100%)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)  # exact at the ends (no rounding)
    return (low, high)


def summarize(episodes: list[Episode], stats: RolloutStats, num_envs: int) -> dict[str, Any]:
    """Scalar metrics of an evaluation, named as logged (``eval/...``); ``None`` where undefined
    (no episodes: no rate, no means)."""
    n = len(episodes)
    successes = sum(ep.success for ep in episodes)
    low, high = wilson_interval(successes, n)
    return {
        "eval/success_rate": successes / n if n else None,
        "eval/success_ci95": [low, high],
        "eval/episodes": n,
        "eval/mean_episode_length": _mean([ep.length for ep in episodes]),
        "eval/mean_final_distance": _mean([ep.final_distance for ep in episodes]),
        "eval/mean_action_change": _mean([action_change(ep.actions) for ep in episodes]),
        "eval/policy_ms_per_call": stats.ms_per_policy_call,
        "eval/policy_ms_per_step": stats.ms_per_policy_call / num_envs,
        "eval/env_steps_per_s": stats.steps_per_second,
    }


def action_change(actions: np.ndarray) -> float:
    """Smoothness of an episode's commands: the mean absolute change of the commanded action
    between consecutive steps, over steps and dimensions (``(T, A) -> scalar``; 0 for ``T < 2``)."""
    a = np.asarray(actions, dtype=np.float64)
    return float(np.abs(np.diff(a, axis=0)).mean()) if len(a) > 1 else 0.0


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as strict JSON (non-finite numbers as ``null``) to ``path`` through a temp
    file, so no half-written file is left."""
    fileio.write_json_atomic(path, data)


def optimizer_slug(optimizer: dict[str, Any]) -> str:
    """A folder-name summary of an optimizer config dict: ``dfo-16384x3-stratified``,
    ``langevin-512x50``, ``autoregressive_dfo-1024x3``."""
    kind = optimizer["kind"]
    if kind == "dfo":
        return f"dfo-{optimizer['num_samples']}x{optimizer['iterations']}-{optimizer['resampling']}"
    if kind == "langevin":
        return f"langevin-{optimizer['num_samples']}x{optimizer['chain']['steps']}"
    steps = optimizer.get("iterations", optimizer.get("steps", ""))
    return f"{kind}-{optimizer.get('num_samples', '')}x{steps}"


def eval_folder_name(chosen: bool, optimizer: dict[str, Any] | None) -> str:
    """``eval`` for the checkpoint's own settings; with ``--optimizer`` a folder named by it
    (``eval_dfo-16384x3-stratified``), so the default ``eval/metrics.json`` that ``demo`` and
    ``report`` read is never overwritten by a run with other inference settings."""
    if not chosen or optimizer is None:
        return "eval"
    return f"eval_{optimizer_slug(optimizer)}"


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt``; returns the metrics also written to ``<out>/metrics.json``.

    Holds the lock of the output folder throughout (a second ``eval`` into it fails at once);
    an evaluation that fails or is interrupted leaves the previous ``metrics.json`` as it was,
    and no folder behind when it created it.
    """
    torch.set_num_threads(cfg.threads)
    agent = load_agent(cfg.ckpt, env_id=cfg.env, optimizer=cfg.optimizer)
    if cfg.execute is not None or cfg.temporal_ensemble is not None:
        if not hasattr(agent, "with_execute"):
            raise ValueError(f"{cfg.ckpt}: --execute needs a BC policy (this agent has no chunks)")
        if cfg.execute is not None:
            agent.with_execute(cfg.execute)
        agent.with_temporal_ensemble(cfg.temporal_ensemble)
    policy_config = getattr(getattr(agent, "policy", None), "config", None)
    optimizer = getattr(policy_config, "optimizer", None)
    optimizer_dict = config_to_dict(optimizer) if optimizer is not None else None
    env_id = cfg.env or agent.env_id
    if env_id is None:
        raise CheckpointError(
            f"{cfg.ckpt}: its demos named no env (a LeRobot dataset recorded elsewhere); pass --env"
        )
    if env_id not in registered_env_ids():
        raise CheckpointError(
            f"{cfg.ckpt}: trained on {env_id!r}, which is not a registered env here "
            f"({', '.join(registered_env_ids())}); pass --env to evaluate it on another"
        )
    name = eval_folder_name(cfg.optimizer is not None, optimizer_dict)
    if cfg.execute is not None:  # another execution of the chunks: its own folder too
        name += f"_execute{cfg.execute}"
    if cfg.temporal_ensemble is not None:
        name += f"_ensemble{cfg.temporal_ensemble:g}"
    out = cfg.out or Path(cfg.ckpt).parent / name
    seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
    overlap = set(seeds) & set(agent.train_seeds)
    if overlap:
        raise ValueError(
            f"evaluation seeds overlap {len(overlap)} training-demo seeds (e.g. {min(overlap)}); "
            f"pick another --seed"
        )
    created = not out.exists()
    with FolderLock(out, "eval") as lock:
        try:
            for folder in (out, out / "videos"):
                for path in fileio.remove_stale_temporaries(folder):
                    print(f"removed {path}, left behind by an interrupted write", file=sys.stderr)
            metrics = _evaluate(cfg, agent, env_id, seeds, out, optimizer_dict)
        except BaseException:
            if created:
                lock.discard_folder()
            raise
    lo, hi = metrics["eval/success_ci95"]
    print(
        f"{env_id} {agent.kind}: success {metrics['eval/success_rate']:.1%} "
        f"(95% CI {lo:.1%}-{hi:.1%}) over {metrics['eval/episodes']} episodes, "
        f"{metrics['eval/policy_ms_per_step']:.1f} ms policy/step -> {out / 'metrics.json'}"
    )
    return metrics


def _evaluate(
    cfg: EvalConfig,
    agent: Any,
    env_id: str,
    seeds: list[int],
    out: Path,
    optimizer: dict[str, Any] | None,
) -> dict[str, Any]:
    """Roll out, write the videos and ``metrics.json``; returns the metrics."""
    num_envs = max(1, min(cfg.num_envs, cfg.episodes))
    env_kwargs = dict(agent.env_kwargs, render_mode="rgb_array", render_size=cfg.render_size)
    if cfg.action_type is not None:
        env_kwargs["action_type"] = cfg.action_type
    env = make_vector_env(
        env_id, num_envs, asynchronous=cfg.asynchronous and num_envs > 1, **env_kwargs
    )
    stats = RolloutStats()
    bar = tqdm(
        total=cfg.episodes,
        desc=f"eval {agent.kind} on {env_id}",
        unit="ep",
        disable=not cfg.progress,
    )
    try:
        episodes = rollout(
            env,
            agent,
            seeds,
            keep_observations=False,
            record_frames=cfg.videos,
            on_episode=lambda i, ep: bar.update(1),
            stats=stats,
        )
        fps = float(env.metadata.get("render_fps", 10))
    finally:
        bar.close()
        env.close()
    videos = []
    for i, ep in enumerate(episodes):
        if ep.frames:
            outcome = "success" if ep.success else "failure"
            name = video_name(env_id, f"{agent.kind}_{outcome}", i, ep.seed)
            videos.append(str(write_video(out / "videos" / name, ep.frames, fps)))
    metrics = summarize(episodes, stats, num_envs)
    metrics.update(
        {
            "env_id": env_id,
            "policy": agent.kind,
            "checkpoint": str(cfg.ckpt),
            "num_envs": num_envs,
            "optimizer": optimizer,
            "seeds": seeds,
            "episode_success": [bool(ep.success) for ep in episodes],
            "episode_lengths": [ep.length for ep in episodes],
            "videos": videos,
        }
    )
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


COMMANDS = [
    (
        "eval",
        "Evaluate a trained agent on fresh seeds; metrics.json and videos.",
        EvalConfig,
        evaluate,
    )
]
