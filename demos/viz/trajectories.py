"""``ibc-gym viz trajectories``: evaluation episodes of trained policies drawn over their scenes.

One block of small panels per checkpoint, side by side, one panel per episode: the env's rendered
frame at reset (the layout changes per seed) with the agent's path over it, from the reset
position through ``info["agent_pos"]`` after every control step (a dot per step, so stalls pile
up), and the end marked green (success) or red (failure). Every checkpoint runs the same held-out
reset seeds through ``agents.rollout.rollout``, so panel ``i`` of every block shows the same
layout. Frames map to the normalized workspace by ``envs.physics`` (column grows with x, row with
-y, half-extent ``VIEW_HALF_EXTENT``), so the paths lie where the frame shows the agent. Nothing
here knows the env: obstacles, targets and marked targets are whatever the frame shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

import envs  # noqa: F401  (registers the ibc/ ids)
from agents.learned import load_agent
from agents.rollout import make_vector_env, rollout
from demos.args import help_field, registered_env
from demos.viz.base import DEFAULT_ENV, FigureConfig, run_figure
from demos.viz.bc_pair import PairRecipe, train_pair
from demos.viz.plotting import ActionFrame, new_figure
from envs.base import SIZE_RANGE
from envs.physics import VIEW_HALF_EXTENT

DEFAULT_EPISODES, QUICK_EPISODES = 20, 4
PANEL_INCHES = 1.6
MIN_WIDTH_INCHES = 7.0
SUCCESS_COLOR, FAILURE_COLOR = "limegreen", "red"


@dataclass(frozen=True)
class TrajectoriesConfig(FigureConfig):
    """Options of ``ibc-gym viz trajectories``."""

    ckpt: tuple[Path, ...] = help_field(
        (),
        "checkpoints to compare, one block each (`ibc-gym train` .pt or a PPO model.zip, all of one "
        "env; --ckpt A B or --ckpt A --ckpt B); none: an implicit and an explicit policy are "
        "trained here (100 demos, 64 px) and cached in <out>/models",
    )
    episodes: int | None = help_field(
        None,
        f"evaluation episodes per checkpoint (None: {DEFAULT_EPISODES}, {QUICK_EPISODES} with --quick)",
        min=1,
    )
    eval_seed: int = help_field(
        100_000,
        "episode i is reset with eval-seed + i for every checkpoint (must miss their demo seeds)",
        min=0,
    )
    env: str | None = help_field(
        None,
        f"env of the pair trained without --ckpt (None: {DEFAULT_ENV}); with --ckpt, the env "
        "the checkpoints must come from",
        check=registered_env,
    )
    num_envs: int = help_field(4, "sub-envs run together per checkpoint", min=1)
    render_size: int = help_field(
        128, "pixels of each panel's rendered scene", min=SIZE_RANGE[0], max=SIZE_RANGE[1]
    )
    columns: int | None = help_field(
        None, "panels per row in each block (None: about square)", min=1
    )
    train_steps: int | None = help_field(
        None,
        "training steps of each policy trained without --ckpt (None: 300, 3 with --quick)",
        min=1,
    )
    cache: bool = help_field(True, "reuse the pair trained earlier with the same settings")

    def eval_seeds(self) -> list[int]:
        """The reset seeds of the episodes, checking the options that size the figure."""
        default = QUICK_EPISODES if self.quick else DEFAULT_EPISODES
        n = self.episodes if self.episodes is not None else default
        for name, value in (
            ("episodes", n),
            ("num-envs", self.num_envs),
            ("columns", 1 if self.columns is None else self.columns),
        ):
            if value < 1:
                raise ValueError(f"--{name} must be at least 1, got {value}")
        return list(range(self.eval_seed, self.eval_seed + n))


@dataclass
class PolicyTrajectories:
    """What one checkpoint did on the evaluation seeds; ``T_i`` is episode ``i``'s length."""

    ckpt: Path
    kind: str  # implicit, explicit, ppo
    env_id: str
    seeds: list[int]
    paths: list[np.ndarray]  # (T_i + 1, 2) agent positions: at reset, then after each step
    success: list[bool]
    frames: list[np.ndarray]  # (R, R, 3) uint8 rendered scene at reset

    @property
    def label(self) -> str:
        """``kind: k/n successes`` over the checkpoint's folder and file name."""
        ok = f"{sum(self.success)}/{len(self.success)} successes"
        return f"{self.kind}: {ok}\n{self.ckpt.parent.name}/{self.ckpt.name}"


def load_agents(cfg: TrajectoriesConfig) -> list[tuple[Path, Any]]:
    """``(path, agent)`` per checkpoint (trained here when none is given); all of one env."""
    paths = [Path(p) for p in cfg.ckpt]
    if not paths:
        paths = list(
            train_pair(
                PairRecipe.default(cfg.env or DEFAULT_ENV, cfg.seed, cfg.train_steps, cfg.quick),
                Path(cfg.out),
                threads=cfg.threads,
                cache=cfg.cache,
            )
        )
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such checkpoint file")
    agents = [(p, load_agent(p, env_id=cfg.env, seed=cfg.seed)) for p in paths]
    first_path, first = agents[0]
    for p, agent in agents[1:]:
        if agent.env_id != first.env_id:
            raise ValueError(
                f"checkpoints of different envs: {first_path} is from {first.env_id}, {p} from "
                f"{agent.env_id}; compare checkpoints of one env"
            )
    return agents


def scenes_at_reset(
    env_id: str, env_kwargs: dict[str, Any], seeds: list[int], render_size: int
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """``(frame (R, R, 3) uint8, info)`` of a fresh reset with each seed."""
    env = gym.make(env_id, **env_kwargs, render_mode="rgb_array", render_size=render_size)
    try:
        scenes = []
        for seed in seeds:
            _, info = env.reset(seed=seed)
            scenes.append((np.asarray(env.render()), info))
        return scenes
    finally:
        env.close()


def policy_trajectories(
    path: Path, agent: Any, seeds: list[int], *, num_envs: int = 4, render_size: int = 128
) -> PolicyTrajectories:
    """Run ``agent`` with each reset seed; collect its paths and the scenes they cross."""
    overlap = set(seeds) & set(agent.train_seeds)
    if overlap:
        raise ValueError(
            f"evaluation seeds overlap {len(overlap)} training-demo seeds of {path} (e.g. "
            f"{min(overlap)}); pick another --eval-seed"
        )
    env = make_vector_env(agent.env_id, min(num_envs, len(seeds)), **agent.env_kwargs)
    try:
        episodes = rollout(env, agent, seeds, keep_observations=False, keep_infos=True)
    finally:
        env.close()
    scenes = scenes_at_reset(agent.env_id, agent.env_kwargs, seeds, render_size)
    paths = []
    for ep, (_, info) in zip(episodes, scenes, strict=True):
        first = ep.infos[0]
        if "targets" in info and not np.allclose(first["targets"], info["targets"]):
            raise RuntimeError(f"{agent.env_id}: the reset with seed {ep.seed} is not reproducible")
        steps = [np.asarray(i["agent_pos"], dtype=np.float64) for i in ep.infos]
        paths.append(np.stack([np.asarray(info["agent_pos"], dtype=np.float64), *steps]))
    return PolicyTrajectories(
        ckpt=path,
        kind=str(agent.kind),
        env_id=agent.env_id,
        seeds=seeds,
        paths=paths,
        success=[ep.success for ep in episodes],
        frames=[frame for frame, _ in scenes],
    )


def draw_episode(ax: Axes, frame: np.ndarray, path: np.ndarray, seed: int, success: bool) -> None:
    """One panel: the scene at reset, the path (a dot per step), start and end markers."""
    ActionFrame.env(VIEW_HALF_EXTENT).show_image(ax, frame, labels=False)
    ax.plot(path[:, 0], path[:, 1], "-", color="black", lw=0.9, marker=".", ms=2.5, gid="path")
    ax.plot(*path[0], "o", ms=5, mfc="white", mec="black", mew=0.8, gid="start")
    end_style = (
        {"marker": "o", "mfc": SUCCESS_COLOR} if success else {"marker": "X", "mfc": FAILURE_COLOR}
    )
    ax.plot(*path[-1], ls="none", ms=7, mec="black", mew=0.8, gid="end", **end_style)  # type: ignore[arg-type]
    ax.set_title(
        f"seed {seed}: {'success' if success else 'failure'}",
        fontsize=7,
        color="darkgreen" if success else "darkred",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def draw_block(sub: SubFigure, traj: PolicyTrajectories, columns: int) -> None:
    """A ``rows x columns`` grid of ``draw_episode`` panels under the policy's label."""
    rows = math.ceil(len(traj.seeds) / columns)
    axes = sub.subplots(rows, columns, squeeze=False)
    n = len(traj.seeds)
    for ax in axes.ravel()[n:]:
        ax.remove()
    episodes = zip(traj.frames, traj.paths, traj.seeds, traj.success, strict=True)
    for ax, (frame, path, seed, ok) in zip(axes.ravel()[:n], episodes, strict=True):
        draw_episode(ax, frame, path, seed, ok)
    sub.suptitle(traj.label, fontsize=10, fontweight="bold")


def trajectories_figure(runs: list[PolicyTrajectories], columns: int | None = None) -> Figure:
    """Blocks of ``draw_block`` side by side, one per checkpoint."""
    n = len(runs[0].seeds)
    cols = min(columns or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / cols)
    width = max(len(runs) * cols * PANEL_INCHES + 0.3, MIN_WIDTH_INCHES)
    fig = new_figure(width, rows * PANEL_INCHES + 1.3)
    subs = fig.subfigures(1, len(runs), squeeze=False, wspace=0.03)[0]
    for sub, traj in zip(subs, runs, strict=True):
        draw_block(sub, traj, cols)
    seeds = runs[0].seeds
    fig.suptitle(
        f"{runs[0].env_id}: {n} evaluation episodes per policy, reset seeds {seeds[0]}-{seeds[-1]} "
        "(no training demo)\nwhite dot: start; black dots: one per control step; "
        "end: green dot = success, red X = failure",
        fontsize=10,
    )
    return fig


def build(cfg: TrajectoriesConfig) -> Figure:
    seeds = cfg.eval_seeds()  # bad options fail before any training or rollout
    runs = [
        policy_trajectories(path, agent, seeds, num_envs=cfg.num_envs, render_size=cfg.render_size)
        for path, agent in load_agents(cfg)
    ]
    for r in runs:
        print(f"{r.env_id} {r.kind} ({r.ckpt}): {sum(r.success)}/{len(r.success)} successes")
    return trajectories_figure(runs, cfg.columns)


def run_trajectories(cfg: TrajectoriesConfig) -> Path:
    """Write ``<out>/trajectories.png``; returns its path."""
    return run_figure(cfg, "trajectories", build)
