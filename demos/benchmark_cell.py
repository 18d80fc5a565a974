"""The work of ``ibc-gym benchmark``: its datasets, and one cell (train, then evaluate every
evaluated kept checkpoint on the same held-out seeds through ``rollout()``).

A cell's folder ``<out>/cells/<name>/`` holds its training run (``run/``: ``ckpt_step<N>.pt``
every ``--keep-every`` steps) and, once the cell is finished, ``rows.json`` (written atomically):
its results rows, the marker that a re-run skips the cell by. An interrupted training resumes
from its last checkpoint. Rows record wall and CPU seconds of the cell's process (one torch
thread): on a busy machine the CPU seconds are the closer estimate of an idle core's time.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import h5py
import torch

from agents.dataset import DemoDataset
from agents.learned import load_agent
from agents.rollout import RolloutStats, make_vector_env, rollout
from demos.benchmark_config import BenchmarkConfig, Cell, action_type_kwargs
from demos.collect import CollectConfig, collect
from demos.evaluate import summarize
from demos.train import TrainJobConfig, run_train
from ebm_policy import TrainConfig
from ebm_policy.fileio import atomic_path, write_text_atomic


def cell_dir(cfg: BenchmarkConfig, cell: Cell) -> Path:
    return cfg.out / "cells" / cell.name


def marker_path(cfg: BenchmarkConfig, cell: Cell) -> Path:
    return cell_dir(cfg, cell) / "rows.json"


def read_rows(cfg: BenchmarkConfig, cell: Cell) -> list[dict[str, Any]] | None:
    """The rows of a finished cell, ``None`` if it has not finished."""
    path = marker_path(cfg, cell)
    return json.loads(path.read_text())["rows"] if path.exists() else None


# ------------------------------------------------------------------------------------ datasets
def prepare_datasets(
    cfg: BenchmarkConfig, env: str, action_type: str, obs_type: str = "pixels"
) -> list[Path]:
    """Collect ``max(cfg.demos)`` expert episodes once and write the first N of them for every
    other N; returns the dataset paths in the order of ``cfg.demos``. Existing files are kept."""
    largest = max(cfg.demos)
    full = cfg.dataset_path(env, action_type, largest, obs_type)
    if not full.exists():
        with contextlib.redirect_stdout(io.StringIO()):
            collect(
                CollectConfig(
                    env=env,
                    episodes=largest,
                    out=full,
                    seed=cfg.data_seed,
                    image_size=cfg.image_size,
                    obs_type=obs_type,  # type: ignore[arg-type]
                    progress=False,
                    **action_type_kwargs(action_type),
                )
            )
    paths = []
    for n in cfg.demos:
        path = cfg.dataset_path(env, action_type, n, obs_type)
        if not path.exists():
            write_subset(full, path, n)
        paths.append(path)
    eval_seeds = set(
        range(cfg.eval_seed, cfg.eval_seed + max(cfg.eval_episodes, cfg.early_eval_episodes))
    )
    overlap = eval_seeds & {int(s) for s in DemoDataset(full).episode_seeds}
    if overlap:
        raise ValueError(f"demo seeds of {full} overlap the evaluation seeds (e.g. {min(overlap)})")
    return paths


def write_subset(src: Path, dst: Path, n: int) -> Path:
    """Write the first ``n`` episodes of the demo file ``src`` to ``dst`` atomically: every
    attribute and array is copied (per-step arrays up to the end of episode ``n``, the
    ``episode_*`` arrays up to ``n``); ``source`` records the subset."""
    with h5py.File(src, "r") as f:
        if n > len(f["episode_ends"]):
            raise ValueError(f"{src} holds {len(f['episode_ends'])} episodes, fewer than {n}")
        end = int(f["episode_ends"][n - 1])
        with atomic_path(dst) as tmp, h5py.File(tmp, "w") as g:
            g.attrs.update(dict(f.attrs))
            source = json.loads(f.attrs.get("source", "{}"))
            source.update(subset_of=src.name, first_episodes=n)
            g.attrs["source"] = json.dumps(source, sort_keys=True)

            def copy(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group):
                    g.require_group(name).attrs.update(dict(obj.attrs))
                    return
                stop = n if name.startswith("episode_") else end
                layout = (
                    {"chunks": obj.chunks, "compression": obj.compression} if obj.ndim >= 3 else {}
                )
                g.create_dataset(name, data=obj[:stop], **layout).attrs.update(dict(obj.attrs))

            f.visititems(copy)
    DemoDataset(dst)  # validates the written file
    return dst


# ---------------------------------------------------------------------------------------- cell
def run_cell(cfg: BenchmarkConfig, cell: Cell) -> list[dict[str, Any]]:
    """Train ``cell`` (resuming an interrupted run), evaluate its checkpoints, write the rows
    atomically to its marker and return them. A finished cell is read back, not re-run."""
    done = read_rows(cfg, cell)
    if done is not None:
        return done
    torch.set_num_threads(1)
    run_dir = cell_dir(cfg, cell) / "run"
    t0, cpu0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        policy, configs = cfg.policy_configs(cell.policy, cell.horizon)
        run_train(
            TrainJobConfig(
                data=cfg.dataset_path(cell.env, cell.action_type, cell.n_demos, cell.obs_type),
                policy=policy,  # type: ignore[arg-type]
                out=run_dir,
                env=cell.env,
                resume=True,
                policies=configs,
                train=TrainConfig(
                    steps=cfg.steps,
                    batch_size=cfg.batch_size,
                    seed=cell.seed,
                    num_threads=1,
                    ckpt_interval=cfg.keep_every,
                    keep_every=cfg.keep_every,
                    progress=False,
                ),
            )
        )
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rows = evaluate_checkpoints(cfg, cell, run_dir)
    for row in rows:
        row["train_seconds"] = round(train_seconds, 2)
        row["train_cpu_seconds"] = round(train_cpu, 2)
    write_text_atomic(marker_path(cfg, cell), json.dumps({"cell": cell.name, "rows": rows}) + "\n")
    return rows


def evaluate_checkpoints(cfg: BenchmarkConfig, cell: Cell, run_dir: Path) -> list[dict[str, Any]]:
    """One row per evaluated checkpoint (``cfg.eval_plan()``), all on the seeds
    ``eval_seed, eval_seed + 1, ...`` (the earlier checkpoints on the first of them)."""
    rows: list[dict[str, Any]] = []
    env = None
    try:
        for step, episodes in cfg.eval_plan().items():
            ckpt = run_dir / f"ckpt_step{step}.pt"
            agent = load_agent(ckpt, env_id=cell.env)
            seeds = list(range(cfg.eval_seed, cfg.eval_seed + episodes))
            overlap = set(seeds) & set(agent.train_seeds)
            if overlap:
                raise ValueError(
                    f"evaluation seeds overlap the demo seeds of {ckpt} (e.g. {min(overlap)})"
                )
            if env is None:
                kwargs = dict(agent.env_kwargs, **action_type_kwargs(cell.action_type))
                env = make_vector_env(cell.env, cfg.eval_envs, **kwargs)
            stats = RolloutStats()
            t0, cpu0 = time.perf_counter(), time.process_time()
            eps = rollout(env, agent, seeds, keep_observations=False, stats=stats)
            metrics = summarize(eps, stats, cfg.eval_envs)
            rows.append(
                {
                    **cfg.row_settings(),
                    **cell.settings(),
                    "cell": cell.name,
                    "step": step,
                    "checkpoint": str(ckpt.relative_to(cfg.out)),
                    "episodes": len(eps),
                    "successes": sum(ep.success for ep in eps),
                    "success_rate": metrics["eval/success_rate"],
                    "ci95": metrics["eval/success_ci95"],
                    "mean_episode_length": metrics["eval/mean_episode_length"],
                    "mean_final_distance": metrics["eval/mean_final_distance"],
                    "policy_ms_per_step": metrics["eval/policy_ms_per_step"],
                    "mean_action_change": metrics["eval/mean_action_change"],
                    "execute": getattr(agent, "execute", 1),
                    "eval_seconds": round(time.perf_counter() - t0, 2),
                    "eval_cpu_seconds": round(time.process_time() - cpu0, 2),
                }
            )
    finally:
        if env is not None:
            env.close()
    return rows
