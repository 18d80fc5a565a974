"""The grid of ``ibc-gym benchmark``: its options, their checks, and the cells and datasets they
expand to.

A *cell* is one training run (env x policy x number of demos x action type x observation type x
chunk horizon x training seed) plus the evaluation of its kept checkpoints. A *dataset* is shared by every cell
with the same env, action type, observation type and number of demos: the first N episodes of one
collection of ``max(--demos)``. The observation type (``--obs-types``, the env's ``obs_type``)
picks the policies' inputs: images, states or images + agent position. Names and settings of
``pixels`` cells and datasets are those of grids from before the option existed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import envs
from demos.args import help_field, one_of, registered_env
from demos.collect import CollectConfig
from demos.train import PolicyConfigs
from ebm_policy import ChunkConfig, DFOConfig, ImplicitPolicyConfig, InfoNCEConfig, TrainConfig
from ebm_policy.config import config_to_dict
from envs.base import SIZE_RANGE

DEFAULT_ENVS: tuple[str, ...] = ("ibc/ReachAroundObstacle-v0",)
# "implicit" is the --implicit config (DFO by default); "implicit-<method>" takes the paper's
# training objective and inference optimizer of <method> and the rest from --implicit.
POLICIES: tuple[str, ...] = (
    "implicit",
    "explicit",
    "implicit-langevin",
    "implicit-autoregressive_dfo",
    "implicit-perturbed",
    "implicit-ranking",
)
ACTION_TYPES: tuple[str, ...] = ("position", "delta")
OBS_TYPES: tuple[str, ...] = ("pixels", "state", "pixels_agent_pos")
DEFAULT_OBS_TYPES: tuple[str, ...] = ("pixels",)

# Whether ``CollectConfig`` (and so the envs) takes an action type yet; see action_type_kwargs.
COLLECT_HAS_ACTION_TYPE = "action_type" in {f.name for f in dataclasses.fields(CollectConfig)}

# What --quick replaces: a grid of seconds (tiny images, few demos, steps and episodes).
QUICK: dict[str, Any] = {
    "image_size": 32,
    "demos": (2, 4),
    "seeds": (0,),
    "steps": 20,
    "batch_size": 8,
    "keep_every": 10,
    "eval_episodes": 2,
    "eval_last": 2,
    "early_eval_episodes": 0,
    "eval_envs": 1,
    "models": PolicyConfigs(
        implicit=ImplicitPolicyConfig(
            loss=InfoNCEConfig(num_counter_examples=16), optimizer=DFOConfig(num_samples=128)
        )
    ),
}

# Options that do not change the results (left out of grid.json and of the rows).
RUN_OPTIONS = ("out", "jobs", "quick", "fresh", "progress")


def action_type_kwargs(action_type: str) -> dict[str, Any]:
    """The one place where the grid's action type meets collection and the envs: the extra
    ``CollectConfig`` fields and env kwargs for ``action_type``. Before the envs take an
    ``action_type`` kwarg only ``"position"`` (their only kind of action) is accepted."""
    if COLLECT_HAS_ACTION_TYPE:
        return {"action_type": action_type}
    if action_type != "position":
        raise ValueError(
            f"action type {action_type!r} needs envs with an action_type kwarg; "
            f"this build's envs take position set-points only"
        )
    return {}


def env_slug(env_id: str) -> str:
    return env_id.split("/")[-1]


def obs_suffix(obs_type: str) -> str:
    """``"_<obs_type>"`` in cell and dataset names, empty for pixels (the names before the
    option existed)."""
    return "" if obs_type == "pixels" else f"_{obs_type}"


@dataclass(frozen=True, order=True)
class Cell:
    """One training run of the grid and the evaluation of its checkpoints."""

    env: str
    n_demos: int
    action_type: str
    seed: int
    policy: str
    obs_type: str = "pixels"
    horizon: int = 1

    @property
    def name(self) -> str:
        chunk = "" if self.horizon == 1 else f"_h{self.horizon}"  # names from before chunks
        return (
            f"{env_slug(self.env)}_{self.policy}_n{self.n_demos}_{self.action_type}"
            f"{obs_suffix(self.obs_type)}{chunk}_s{self.seed}"
        )

    def settings(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "policy": self.policy,
            "n_demos": self.n_demos,
            "action_type": self.action_type,
            "obs_type": self.obs_type,
            "horizon": self.horizon,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class BenchmarkConfig:
    """Options of ``ibc-gym benchmark`` (``--quick`` replaces the sizes with those of ``QUICK``).

    The default grid (one env x 2 policies x 2 numbers of demos x 3 seeds = 12 cells of 2,000
    steps) is sized for about half an hour on two cores with ``--jobs 2``."""

    out: Path = help_field(
        Path("benchmark"), "results folder (grid.json, results.jsonl, summary.md, plots)"
    )
    envs: tuple[str, ...] = help_field(DEFAULT_ENVS, "env ids", check=registered_env)
    policies: tuple[str, ...] = help_field(
        POLICIES[:2], f"policies ({', '.join(POLICIES)})", check=one_of(*POLICIES)
    )
    seeds: tuple[int, ...] = help_field(
        (0, 1, 2), "training seeds (weights, data order, counter-examples)", min=0
    )
    demos: tuple[int, ...] = help_field(
        (30, 300), "numbers of demos (the first N episodes of one collection of the largest)", min=1
    )
    action_types: tuple[str, ...] = help_field(
        ("position",), f"env action types ({', '.join(ACTION_TYPES)})", check=one_of(*ACTION_TYPES)
    )
    obs_types: tuple[str, ...] = help_field(
        DEFAULT_OBS_TYPES,
        f"env observation types, the policies' inputs ({', '.join(OBS_TYPES)})",
        check=one_of(*OBS_TYPES),
    )
    horizons: tuple[int, ...] = help_field(
        (1,),
        "action chunk lengths H (each cell runs H // 2 actions of a chunk, at least 1, before the next prediction)",
        min=1,
    )
    data_seed: int = help_field(
        0, "demo episode i is reset with data-seed + i (the expert's seed too)", min=0
    )
    image_size: int = help_field(
        64, "observation image size in pixels", min=SIZE_RANGE[0], max=SIZE_RANGE[1]
    )
    steps: int = help_field(
        TrainConfig().steps, "training steps per cell (a multiple of --keep-every)", min=1
    )
    batch_size: int = help_field(TrainConfig().batch_size, "training batch size", min=1)
    keep_every: int = help_field(250, "keep and evaluate a checkpoint every this many steps", min=1)
    eval_episodes: int = help_field(
        50, "evaluation episodes of each of the last --eval-last checkpoints", min=1
    )
    eval_last: int = help_field(
        5, "checkpoints evaluated with --eval-episodes (and the stability spread)", min=1
    )
    early_eval_episodes: int = help_field(
        10, "evaluation episodes of each earlier checkpoint (0: skip them)", min=0
    )
    eval_seed: int = help_field(
        100_000, "evaluation episode i is reset with eval-seed + i (disjoint from the demos)", min=0
    )
    eval_envs: int = help_field(
        1, "sub-envs stepped together during evaluation (the policy's batch)", min=1
    )
    models: PolicyConfigs = help_field(
        factory=PolicyConfigs,
        flatten=True,
        hide=("chunk",),  # --horizons sets the chunks per cell, each executing H // 2
        help="the policies' configs",
    )
    jobs: int = help_field(2, "cells run side by side (one process and torch thread each)", min=1)
    quick: bool = help_field(False, f"a tiny grid of seconds (sets {', '.join(QUICK)})")
    fresh: bool = help_field(False, "delete the results folder's previous grid first")
    progress: bool = help_field(True, "show a progress bar over cells")

    def __post_init__(self) -> None:
        _check_grid(self)

    def effective(self) -> BenchmarkConfig:
        """The grid to run: this one, or its ``QUICK`` version with ``--quick``."""
        return replace(self, quick=False, **QUICK) if self.quick else self

    def grid_dict(self) -> dict[str, Any]:
        """Every setting that changes the results, JSON-ready (stored as ``grid.json``); the
        policies' configs as ``config_to_dict`` gives them."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in RUN_OPTIONS
        }
        d["models"] = config_to_dict(self.models)
        if self.obs_types == DEFAULT_OBS_TYPES:  # grids from before the option read the same
            del d["obs_types"]
        if self.horizons == (1,):
            del d["horizons"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def row_settings(self) -> dict[str, Any]:
        """The scalar settings every results row carries (the grid's lists and configs vary per
        cell or live in grid.json)."""
        return {k: v for k, v in self.grid_dict().items() if not isinstance(v, (list, dict))}

    def command_line(self) -> str:
        """An ``ibc-gym benchmark`` command that runs this grid (grid options off their
        defaults; changed policy configs are marked, their values are in grid.json)."""
        parts = ["ibc-gym benchmark", f"--out {self.out}"]
        defaults = BenchmarkConfig().grid_dict()
        for k, v in self.grid_dict().items():
            if k == "models":
                if v != defaults[k]:
                    parts.append("[--implicit.*/--explicit.* as in grid.json]")
            elif k not in defaults or v != defaults[k]:
                parts.append(
                    f"--{k.replace('_', '-')} "
                    + (" ".join(map(str, v)) if isinstance(v, list) else str(v))
                )
        return " ".join(parts)

    def policy_configs(self, policy: str, horizon: int = 1) -> tuple[str, PolicyConfigs]:
        """``(policy class, configs)`` that train the grid's ``policy`` (see ``POLICIES``) on
        chunks of ``horizon`` actions, each executing ``horizon // 2`` (at least 1)."""
        models = replace(self.models, chunk=ChunkConfig(horizon=horizon))
        if not policy.startswith("implicit-"):
            return policy, models
        method = policy.removeprefix("implicit-")
        pair = ImplicitPolicyConfig.for_method(method)  # type: ignore[arg-type]
        implicit = replace(models.implicit, loss=pair.loss, optimizer=pair.optimizer)
        return "implicit", replace(models, implicit=implicit)

    def kept_steps(self) -> list[int]:
        return list(range(self.keep_every, self.steps + 1, self.keep_every))

    def eval_plan(self) -> dict[int, int]:
        """``{step: episodes}`` of the kept checkpoints that are evaluated."""
        kept = self.kept_steps()
        plan = {s: self.early_eval_episodes for s in kept[: -self.eval_last]}
        plan.update({s: self.eval_episodes for s in kept[-self.eval_last :]})
        return {s: n for s, n in plan.items() if n > 0}

    def cells(self) -> list[Cell]:
        return [
            Cell(env, n, at, seed, policy, ot, h)
            for env in self.envs
            for n in self.demos
            for at in self.action_types
            for ot in self.obs_types
            for h in self.horizons
            for seed in self.seeds
            for policy in self.policies
        ]

    def dataset_path(
        self, env: str, action_type: str, n_demos: int, obs_type: str = "pixels"
    ) -> Path:
        name = (
            f"{env_slug(env)}_{action_type}{obs_suffix(obs_type)}_seed{self.data_seed}_n{n_demos}"
        )
        return self.out / "data" / f"{name}.h5"


def _check_names(option: str, given: tuple[Any, ...], known: tuple[Any, ...], what: str) -> None:
    if not given:
        raise ValueError(f"--{option} needs at least one value")
    for name in given:
        if name not in known:
            raise ValueError(
                f"unknown {what} {name!r} in --{option} (known: {', '.join(map(str, known))})"
            )
    if len(set(given)) != len(given):
        raise ValueError(f"--{option} lists a value twice: {' '.join(map(str, given))}")


def _check_grid(cfg: BenchmarkConfig) -> None:
    """Raise ``ValueError`` naming the first bad option."""
    _check_names("envs", cfg.envs, envs.ENV_IDS, "env")
    _check_names("policies", cfg.policies, POLICIES, "policy")
    _check_names("action-types", cfg.action_types, ACTION_TYPES, "action type")
    _check_names("obs-types", cfg.obs_types, OBS_TYPES, "observation type")
    for at in cfg.action_types:
        action_type_kwargs(at)
    for option in ("seeds", "demos", "horizons"):
        values = getattr(cfg, option)
        if not values:
            raise ValueError(f"--{option} needs at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"--{option} lists a value twice: {' '.join(map(str, values))}")
    for n in cfg.demos:
        if n <= 0:
            raise ValueError(f"--demos must be positive, got {n}")
    for s in cfg.seeds:
        if s < 0:
            raise ValueError(f"--seeds must be non-negative, got {s}")
    for h in cfg.horizons:
        if h < 1:
            raise ValueError(f"--horizons must be positive, got {h}")
    positive = (
        "image_size",
        "steps",
        "batch_size",
        "keep_every",
        "eval_episodes",
        "eval_last",
        "eval_envs",
        "jobs",
    )
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ValueError(
                f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}"
            )
    if cfg.early_eval_episodes < 0:
        raise ValueError(f"--early-eval-episodes must be >= 0, got {cfg.early_eval_episodes}")
    if cfg.steps % cfg.keep_every:
        raise ValueError(
            f"--steps ({cfg.steps}) must be a multiple of --keep-every ({cfg.keep_every})"
        )
    evaluated = [n for n in (cfg.eval_episodes, cfg.early_eval_episodes) if n > 0]
    if cfg.eval_envs > min(evaluated):
        raise ValueError(
            f"--eval-envs ({cfg.eval_envs}) exceeds the episodes of an evaluation ({min(evaluated)})"
        )
    # Collection drops the expert's failures and gives up after 10x as many: seeds stay below
    # data_seed + 11 * max(demos).
    demo_end = cfg.data_seed + 11 * max(cfg.demos)
    eval_end = cfg.eval_seed + max(cfg.eval_episodes, cfg.early_eval_episodes)
    if cfg.data_seed < eval_end and cfg.eval_seed < demo_end:
        raise ValueError(
            f"evaluation seeds {cfg.eval_seed}-{eval_end - 1} may overlap the demo seeds "
            f"{cfg.data_seed}-{demo_end - 1}; pick another --eval-seed or --data-seed"
        )
