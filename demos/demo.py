"""``ibc-gym demo``: the main job on a small default, end to end.

For each env: collect expert demos, train the implicit and the explicit policy on them, evaluate
both on fresh seeds (videos + metrics), write a ``report.html`` per run, then print one table. Everything lands under ``--out``;
finished stages are reused on a re-run (delete the folder, or pass ``--fresh``, to start over).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from demos.args import help_field, one_of, registered_env
from demos.collect import CollectConfig, collect
from demos.evaluate import EvalConfig, evaluate, write_json_atomic
from demos.report import ReportConfig, write_report
from demos.train import PolicyConfigs, TrainJobConfig, run_train
from demos.video import VideoConfig, record_videos
from ebm_policy import TrainConfig
from ebm_policy.config import config_to_dict
from envs.base import SIZE_RANGE


@dataclass(frozen=True)
class DemoConfig:
    out: Path = help_field(Path("out"), "output folder")
    envs: tuple[str, ...] = help_field(
        ("ibc/ReachTarget-v0", "ibc/ReachAroundObstacle-v0"), "env ids", check=registered_env
    )
    policies: tuple[str, ...] = help_field(
        ("implicit", "explicit"), "policies to train", check=one_of("implicit", "explicit")
    )
    episodes: int = help_field(500, "expert demo episodes per env", min=1)
    image_size: int = help_field(64, "observation image size", min=SIZE_RANGE[0], max=SIZE_RANGE[1])
    action_type: Literal["position", "delta"] = help_field(
        "position", "actions: absolute set-points, or displacements of the set-point per step"
    )
    eval_episodes: int = help_field(50, "evaluation episodes per policy", min=1)
    num_envs: int = help_field(2, "parallel sub-envs during evaluation", min=1)
    videos: int = help_field(2, "videos per evaluation", min=0)
    parallel: bool = help_field(
        True, "train the policies of an env side by side, one process and thread each"
    )
    fresh: bool = help_field(False, "delete --out first instead of reusing finished stages")
    models: PolicyConfigs = help_field(
        factory=PolicyConfigs, flatten=True, help="the policies (as `ibc-gym train`)"
    )
    train: TrainConfig = help_field(
        factory=TrainConfig,
        flatten=True,
        help="training (as `ibc-gym train`; --seed also seeds the demos, --progress every stage)",
    )


def _slug(env_id: str, action_type: str = "position") -> str:
    """Folder name of an env's data and runs (``-delta`` marks delta actions)."""
    name = env_id.split("/")[-1]
    return name if action_type == "position" else f"{name}-{action_type}"


def run_demo(cfg: DemoConfig) -> list[dict[str, Any]]:
    """Run the whole loop; returns the table rows (also in ``<out>/summary.json``)."""
    if cfg.fresh and cfg.out.exists():
        shutil.rmtree(cfg.out)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for env_id in cfg.envs:
        data = cfg.out / "data" / f"{_slug(env_id, cfg.action_type)}.h5"
        if not data.exists():
            collect(
                CollectConfig(
                    env=env_id,
                    episodes=cfg.episodes,
                    out=data,
                    seed=cfg.train.seed,
                    image_size=cfg.image_size,
                    action_type=cfg.action_type,
                    progress=cfg.train.progress,
                )
            )
        record_videos(
            VideoConfig(
                env=env_id,
                agent="expert",
                episodes=1,
                seed=100_000,
                out=cfg.out / "videos" / "expert",
                image_size=cfg.image_size,
                action_type=cfg.action_type,
            )
        )
        train_jobs = [
            TrainJobConfig(
                data=data,
                policy=policy,
                out=cfg.out / "runs" / _slug(env_id, cfg.action_type) / policy,  # type: ignore[arg-type]
                env=env_id,
                resume=True,
                policies=cfg.models,
                train=replace(cfg.train, progress=cfg.train.progress and not cfg.parallel),
            )
            for policy in cfg.policies
        ]
        t0 = time.perf_counter()
        ckpts = _train_all(train_jobs, parallel=cfg.parallel)
        train_s = time.perf_counter() - t0
        for policy, ckpt in zip(cfg.policies, ckpts, strict=True):
            run_dir = ckpt.parent
            metrics_path = run_dir / "eval" / "metrics.json"
            if metrics_path.exists():
                metrics = json.loads(metrics_path.read_text())
            else:
                metrics = evaluate(
                    EvalConfig(
                        ckpt=ckpt,
                        episodes=cfg.eval_episodes,
                        num_envs=cfg.num_envs,
                        videos=cfg.videos,
                        progress=cfg.train.progress,
                    )
                )
            report = write_report(ReportConfig(run_dir=run_dir))
            lo, hi = metrics["eval/success_ci95"]
            rows.append(
                {
                    "env": env_id,
                    "policy": policy,
                    "success_rate": metrics["eval/success_rate"],
                    "ci95": [lo, hi],
                    "episodes": metrics["eval/episodes"],
                    "ms_per_step": metrics["eval/policy_ms_per_step"],
                    "train_seconds": round(train_s, 1),  # wall time of this env's training stage
                    "run": str(run_dir),
                    "report": str(report),
                }
            )
    write_json_atomic(
        cfg.out / "summary.json",
        {"rows": rows, "config": json.loads(json.dumps(config_to_dict(cfg), default=str))},
    )
    table = format_table(rows)
    (cfg.out / "summary.md").write_text(table + "\n")
    print()
    print(table)
    print(
        f"\nall done in {time.perf_counter() - t_start:.0f} s; runs, videos and metrics under {cfg.out}/"
    )
    return rows


def _train_all(jobs: list[TrainJobConfig], *, parallel: bool) -> list[Path]:
    """Train every job; side by side in worker processes (one torch thread each) if ``parallel``."""
    if not parallel or len(jobs) < 2:
        return [run_train(job) for job in jobs]
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch/pybullet state
    with ProcessPoolExecutor(
        max_workers=min(len(jobs), os.cpu_count() or 1), mp_context=ctx
    ) as pool:
        return list(pool.map(run_train, jobs))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The env x policy table in markdown."""
    lines = [
        "| env | policy | success | 95% CI | episodes | policy ms/step |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(
            f"| {r['env']} | {r['policy']} | {r['success_rate']:.0%} | {lo:.0%}-{hi:.0%} | "
            f"{r['episodes']} | {r['ms_per_step']:.1f} |"
        )
    return "\n".join(lines)


COMMANDS = [
    (
        "demo",
        "The main job: collect, train, evaluate, record videos; print the table.",
        DemoConfig,
        run_demo,
    )
]
