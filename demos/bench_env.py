"""``ibc-gym bench env``: control steps per second of every env, with and without rendering.

For each env id it times ``step()`` with ``obs_type="state"`` (physics only) and with
``obs_type="pixels"`` (physics plus rendering the observation image), with uniformly random
set-points, and ``reset()`` separately. Every number is the median of ``repeats`` runs in a
fresh env. Nothing is parallelized: one env, one process, and pybullet's TinyRenderer is
single-threaded, so the numbers are per CPU core. Imports no torch.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

import envs
from demos.args import help_field, registered_env
from envs.base import SIZE_RANGE


@dataclass(frozen=True)
class BenchEnvConfig:
    steps: int = help_field(1000, "control steps per run", min=1)
    repeats: int = help_field(5, "runs per env and observation type; medians are reported", min=1)
    image_size: int = help_field(
        96, "observation image size in pixels", min=SIZE_RANGE[0], max=SIZE_RANGE[1]
    )
    envs: tuple[str, ...] = help_field(envs.ENV_IDS, "env ids to benchmark", check=registered_env)


@dataclass(frozen=True)
class _Run:
    make_ms: float
    steps_per_s: float
    reset_ms: float


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _time_run(env_id: str, obs_type: str, steps: int, image_size: int, seed: int) -> _Run:
    """One run in a fresh env: ``steps`` timed steps; resets are timed apart from them."""
    t0 = time.perf_counter()
    env = gym.make(env_id, obs_type=obs_type, image_size=image_size)
    make_s = time.perf_counter() - t0
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, 2)).astype(np.float32)
    reset_times: list[float] = []
    step_time = 0.0
    try:
        t0 = time.perf_counter()
        env.reset(seed=seed)
        reset_times.append(time.perf_counter() - t0)
        for action in actions:
            t0 = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            step_time += time.perf_counter() - t0
            if terminated or truncated:
                t0 = time.perf_counter()
                env.reset()
                reset_times.append(time.perf_counter() - t0)
    finally:
        env.close()
    return _Run(1e3 * make_s, steps / step_time, 1e3 * statistics.median(reset_times))


def run_bench_env(cfg: BenchEnvConfig) -> None:
    """Print a markdown table of medians over ``cfg.repeats`` runs per env and observation type."""
    if cfg.steps <= 0 or cfg.repeats <= 0:
        raise ValueError("--steps and --repeats must be positive")
    unknown = [e for e in cfg.envs if e not in envs.ENV_IDS]
    if unknown:
        raise ValueError(f"unknown env id(s) {unknown}; choose from {envs.ENV_IDS}")
    import pybullet  # noqa: PLC0415  (version only)

    print(
        f"machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()}; "
        f"python {platform.python_version()}, pybullet API {pybullet.getAPIVersion()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; one env in one process "
        f"(TinyRenderer is single-threaded)"
    )
    print(
        f"{cfg.steps} random-action steps per run, median of {cfg.repeats} runs, images {cfg.image_size}x{cfg.image_size}\n"
    )
    print("| env | steps/s state | steps/s pixels | reset ms state | reset ms pixels | make ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for env_id in cfg.envs:
        runs = {
            obs_type: [
                _time_run(env_id, obs_type, cfg.steps, cfg.image_size, seed)
                for seed in range(cfg.repeats)
            ]
            for obs_type in ("state", "pixels")
        }

        def med(obs_type: str, field: str) -> float:
            return statistics.median(getattr(r, field) for r in runs[obs_type])  # noqa: B023

        print(
            f"| {env_id} | {med('state', 'steps_per_s'):.0f} | {med('pixels', 'steps_per_s'):.0f} "
            f"| {med('state', 'reset_ms'):.2f} | {med('pixels', 'reset_ms'):.2f} | {med('pixels', 'make_ms'):.0f} |"
        )
