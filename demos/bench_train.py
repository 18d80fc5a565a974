"""``ibc-gym bench train``: training samples/s on 1 and on several processes, side by side.

Two settings of the implicit policy (InfoNCE + DFO):

- ``env``: the env job's (``ibc-gym train``'s defaults: 64 px images, batch 32, the default
  CNN strides and counter-examples);
- ``reference``: the PyTorch reference's (96 px images, batch 8, 128 counter-examples, the full
  resolution backbone ``CNNConfig.preset("full")``).

Each cell trains for real through ``ibc-gym train`` (``--nproc-per-node P``: torchrun and
DistributedDataParallel for P > 1, gloo on the CPU) on a synthetic demo file of random frames, and
reads ``train/samples_per_s`` (all processes together) from ``metrics.jsonl``, leaving the first
log interval out (warm-up); the cell is the median of ``repeats`` runs. ``--batch-size`` is the
global batch, so every process count trains the same run. Each process uses ``num_threads``
torch threads: P processes use P x ``num_threads`` cores.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agents.dataset import DemoWriter
from agents.rollout import Episode
from demos.args import help_field, one_of, torch_device
from ebm_policy import CNNConfig, InfoNCEConfig, TrainConfig, read_metrics

ENV_ID = "ibc/ReachTarget-v0"


@dataclass(frozen=True)
class Setting:
    """One row of the table: the image size and the ``ibc-gym train`` options that differ."""

    label: str
    size: int
    batch_size: int
    counter_examples: int
    strides: tuple[int, ...]


SETTINGS = {
    "env": Setting(
        "env job",
        64,
        TrainConfig().batch_size,
        InfoNCEConfig().num_counter_examples,
        CNNConfig().strides,
    ),
    "reference": Setting("reference", 96, 8, 128, CNNConfig.preset("full").strides),
}
QUICK_MODEL = (  # the tiny model of --quick (demos.train.tiny_policies's sizes)
    "--cnn.channels",
    "8",
    "8",
    "--cnn.strides",
    "2",
    "1",
    "--cnn.pools",
    "1",
    "1",
    "--cnn.out-channels",
    "4",
    "--implicit.model.hidden-dims",
    "32",
    "--implicit.loss.num-counter-examples",
    "8",
)


@dataclass(frozen=True)
class BenchTrainConfig:
    settings: tuple[str, ...] = help_field(
        ("env", "reference"), "settings (rows): env, reference", check=one_of(*SETTINGS)
    )
    processes: tuple[int, ...] = help_field((1, 2), "process counts (columns)", min=1)
    steps: int = help_field(60, "training steps per run", min=2)
    log_interval: int = help_field(
        10, "steps per measured interval (the first one is warm-up)", min=1
    )
    repeats: int = help_field(3, "runs per cell (median reported)", min=1)
    frames: int = help_field(512, "frames of the synthetic demo dataset", min=8)
    num_threads: int = help_field(1, "torch threads per process", min=1)
    device: str = help_field("cpu", "cpu, or cuda (one GPU per process)", check=torch_device)
    quick: bool = help_field(
        False, "smoke test: a tiny model on 16 px images, 4 steps, 1 run per cell"
    )
    seed: int = help_field(0, "seed", min=0)


def write_frames(path: Path, frames: int, size: int, seed: int) -> Path:
    """A demo file of ``frames`` random ``size`` px frames (episodes of 64) and random actions."""
    rng = np.random.default_rng(seed)
    with DemoWriter(path, env_id=ENV_ID, env_kwargs={"image_size": size}, overwrite=True) as w:
        for e, start in enumerate(range(0, frames, 64)):
            n = min(64, frames - start)
            w.add(
                Episode(
                    seed=e,
                    observations=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                    actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                    rewards=np.zeros(n, np.float32),
                    success=True,
                    final_distance=0.0,
                    truncated=False,
                )
            )
    return path


def train_argv(
    cfg: BenchTrainConfig, setting: Setting, data: Path, out: Path, processes: int
) -> list[str]:
    """The ``ibc-gym train`` command of one measured run."""
    steps, interval = (4, 2) if cfg.quick else (cfg.steps, min(cfg.log_interval, cfg.steps // 2))
    model = (
        list(QUICK_MODEL)
        if cfg.quick
        else [
            "--cnn.strides",
            *map(str, setting.strides),
            "--implicit.loss.num-counter-examples",
            str(setting.counter_examples),
        ]
    )
    return [
        sys.executable,
        "-m",
        "demos.cli",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--nproc-per-node",
        str(processes),
        "--batch-size",
        str(setting.batch_size),
        "--steps",
        str(steps),
        "--log-interval",
        str(interval),
        "--ckpt-interval",
        str(steps),
        "--energy-snapshots",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--num-threads",
        str(cfg.num_threads),
        "--device",
        cfg.device,
        "--seed",
        str(cfg.seed),
        *model,
    ]


def measure(argv: list[str], out: Path) -> float:
    """Run one training command; its samples/s after the first logged interval."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"training run failed (exit code {done.returncode}): {last}")
    rates = [r["train/samples_per_s"] for r in read_metrics(out)]
    return statistics.mean(rates[1:] or rates)


def run_bench_train(cfg: BenchTrainConfig) -> dict[str, dict[int, float]]:
    """Print the samples/s table (see the module docstring); ``-> {setting: {processes: rate}}``."""
    where = (
        torch.cuda.get_device_name(0)
        if cfg.device.startswith("cuda")
        else f"{cfg.num_threads} thread(s) per process"
    )
    print(
        f"torch {torch.__version__}, {cfg.device} ({where}); training samples/s, median of "
        f"{1 if cfg.quick else cfg.repeats} run(s){' (quick: tiny model, 16 px)' if cfg.quick else ''}\n"
    )
    procs = sorted(set(cfg.processes))
    head = " | ".join(f"{p} process{'es' if p > 1 else ''}" for p in procs)
    speedup = f" | {procs[-1]} vs {procs[0]} |" if len(procs) > 1 else " |"
    print(f"| setting | image | batch | counter-examples | CNN strides | {head}{speedup}")
    print("|---|---:|---:|---:|---|" + "---:|" * (len(procs) + (len(procs) > 1)))
    results: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for name in cfg.settings:
            setting = SETTINGS[name]
            size = 16 if cfg.quick else setting.size
            data = write_frames(
                Path(tmp) / f"demos{size}.h5", 64 if cfg.quick else cfg.frames, size, cfg.seed
            )
            cells: dict[int, float] = {}
            for p in procs:
                rates = []
                for r in range(1 if cfg.quick else cfg.repeats):
                    out = Path(tmp) / f"{name}-{p}-{r}"
                    rates.append(measure(train_argv(cfg, setting, data, out, p), out))
                cells[p] = statistics.median(rates)
            results[name] = cells
            ratio = f" | {cells[procs[-1]] / cells[procs[0]]:.2f}x |" if len(procs) > 1 else " |"
            print(
                f"| {setting.label} | {size} px | {setting.batch_size} | {setting.counter_examples} | "
                f"{setting.strides} | " + " | ".join(f"{cells[p]:.0f}" for p in procs) + ratio,
                flush=True,
            )
    return results
