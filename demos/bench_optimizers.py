"""``ibc-gym bench optimizers``: the three inference methods on an N-D task with a known answer.

The task is coordinate regression with ``N / 2`` blocks: each image shows ``N / 2`` 5x5 blocks
of distinct colours on white, and the target is every block's centre ``(x, y)`` in a fixed colour
order, scaled to [-1, 1], so the action has ``N`` dimensions and one right answer. For each N
and method (DFO: uniform InfoNCE + DFO; Langevin: chain counter-examples + gradient penalty +
Langevin inference; autoregressive DFO: per-prefix InfoNCE + autoregressive DFO) one implicit
policy is trained on the same images and evaluated on held-out ones: the error, the success rate
at a stated tolerance (every coordinate within ``--tolerance`` pixels), training time and
inference latency for one image. The paper's claim to compare with: plain DFO fails beyond about
5 dimensions, Langevin and autoregressive DFO keep working up to 16.

Runs go side by side in worker processes (one torch thread each, ``--jobs``); results land in
``--out`` (``results.jsonl``, one row per run, reused on a re-run; ``summary.md``).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from demos.args import help_field, one_of
from ebm_policy import ImplicitPolicy, ImplicitPolicyConfig, TrainConfig, train
from ebm_policy.config import config_to_dict
from ebm_policy.fileio import write_text_atomic

METHODS = ("dfo", "langevin", "autoregressive_dfo")
# Eight distinct saturated colours; block i always has colour i.
COLORS = np.array(
    [
        [230, 25, 25],
        [25, 160, 25],
        [25, 25, 230],
        [230, 160, 0],
        [160, 0, 200],
        [0, 190, 190],
        [120, 70, 20],
        [240, 0, 140],
    ],
    dtype=np.uint8,
)
BLOCK = 5


@dataclass(frozen=True)
class BenchOptimizersConfig:
    """Options of ``ibc-gym bench optimizers``."""

    out: Path = help_field(Path("bench_optimizers"), "results folder (results.jsonl, summary.md)")
    dims: tuple[int, ...] = help_field(
        (2, 4, 8, 16), "action dimensions (even: two per block)", min=2, max=16
    )
    methods: tuple[str, ...] = help_field(
        METHODS, f"methods ({', '.join(METHODS)})", check=one_of(*METHODS)
    )
    image_size: int = help_field(64, "image size in pixels", min=24, max=128)
    train_images: int = help_field(200, "training images", min=1)
    test_images: int = help_field(100, "held-out test images", min=1)
    tolerance: float = help_field(2.0, "success: every coordinate within this many pixels", above=0)
    latency_repeats: int = help_field(15, "timed one-image inferences (median reported)", min=3)
    seed: int = help_field(0, "seed of the images, weights and counter-examples", min=0)
    jobs: int = help_field(2, "runs side by side (one process and torch thread each)", min=1)
    fresh: bool = help_field(False, "delete earlier results and runs in --out first")
    implicit: ImplicitPolicyConfig = help_field(
        factory=ImplicitPolicyConfig,
        help="the policy's settings; each method replaces its loss and optimizer with the method's pair",
    )
    train: TrainConfig = help_field(
        factory=lambda: TrainConfig(
            steps=1000, progress=False, energy_snapshots=0, tensorboard=False
        ),
        help="training of each run",
    )

    def __post_init__(self) -> None:
        odd = [n for n in self.dims if n % 2]
        if odd:
            raise ValueError(f"--dims must be even (two coordinates per block), got {odd}")
        if len(set(self.dims)) != len(self.dims) or len(set(self.methods)) != len(self.methods):
            raise ValueError("--dims and --methods must not repeat a value")

    def policy_config(self, method: str, dim: int) -> ImplicitPolicyConfig:
        """``--implicit`` with ``method``'s loss and optimizer and an action of ``dim`` dims."""
        pair = ImplicitPolicyConfig.for_method(method)  # type: ignore[arg-type]
        model = replace(self.implicit.model, action_dim=dim)
        return replace(self.implicit, model=model, loss=pair.loss, optimizer=pair.optimizer)


# --------------------------------------------------------------------------- data
def make_blocks(
    n: int, blocks: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``-> images (n, size, size, 3) uint8, targets (n, 2 * blocks) float32`` in [-1, 1].

    Blocks do not overlap (centres at least ``BLOCK + 1`` pixels apart on one axis); target
    ``2 i, 2 i + 1`` is block ``i``'s centre ``(x = column, y = row)``."""
    half, lo, hi = BLOCK // 2, BLOCK // 2, size - 1 - BLOCK // 2
    images = np.full((n, size, size, 3), 255, np.uint8)
    targets = np.zeros((n, 2 * blocks), np.float32)
    for k in range(n):
        centres: list[tuple[int, int]] = []
        while len(centres) < blocks:
            x, y = (int(v) for v in rng.integers(lo, hi + 1, 2))
            if all(abs(x - cx) > BLOCK or abs(y - cy) > BLOCK for cx, cy in centres):
                centres.append((x, y))
        for i, (x, y) in enumerate(centres):
            images[k, y - half : y + half + 1, x - half : x + half + 1] = COLORS[i]
            targets[k, 2 * i : 2 * i + 2] = (np.array([x, y]) - lo) / (hi - lo) * 2 - 1
    return images, targets


class BlockDataset(Dataset):
    """``{"image": (H, W, 3) uint8, "action": (N,) float32}`` samples."""

    def __init__(self, images: np.ndarray, targets: np.ndarray) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"image": self.images[i], "action": self.targets[i]}


# --------------------------------------------------------------------------- one run
def run_one(cfg: BenchOptimizersConfig, method: str, dim: int) -> dict[str, Any]:
    """Train and evaluate one (method, N): the row of ``results.jsonl``."""
    torch.set_num_threads(1)
    rng = np.random.default_rng([cfg.seed, dim])  # the same images for every method
    train_x, train_y = make_blocks(cfg.train_images, dim // 2, cfg.image_size, rng)
    test_x, test_y = make_blocks(cfg.test_images, dim // 2, cfg.image_size, rng)
    policy = ImplicitPolicy(
        cfg.policy_config(method, dim), -np.ones(dim), np.ones(dim), seed=cfg.seed
    )
    run_dir = cfg.out / "runs" / f"{method}_n{dim}"
    t0, cpu0 = time.perf_counter(), time.process_time()
    train(
        policy,
        BlockDataset(train_x, train_y),
        replace(cfg.train, seed=cfg.seed),
        run_dir,
        resume=True,
    )
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    policy.eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    preds = np.concatenate(
        [policy.select_action(test_x[i : i + 25], generator) for i in range(0, len(test_x), 25)]
    )
    half_range_px = (cfg.image_size - 1 - 2 * (BLOCK // 2)) / 2
    err_px = np.abs(preds - test_y) * half_range_px  # (n, N) per-coordinate errors in pixels
    block_err = np.linalg.norm(err_px.reshape(len(test_x), -1, 2), axis=-1)  # (n, blocks)
    latencies = []
    for i in range(cfg.latency_repeats + 2):
        t = time.perf_counter()
        policy.select_action(test_x[i % len(test_x)][None], generator)
        latencies.append(time.perf_counter() - t)
    steps = cfg.train.steps or 0
    return {
        "method": method,
        "dim": dim,
        "loss": policy.config.loss.kind,
        "optimizer": config_to_dict(policy.config.optimizer),
        "mean_block_error_px": float(block_err.mean()),
        "median_block_error_px": float(np.median(block_err)),
        "max_coord_error_px": float(err_px.max()),
        "success_rate": float((err_px.max(axis=1) <= cfg.tolerance).mean()),
        "tolerance_px": cfg.tolerance,
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "train_samples_per_s": round(steps * cfg.train.batch_size / train_s, 1)
        if train_s > 0
        else None,
        "infer_ms_median": round(1000 * statistics.median(latencies[2:]), 2),
        "steps": steps,
        "train_images": cfg.train_images,
        "test_images": cfg.test_images,
        "image_size": cfg.image_size,
        "seed": cfg.seed,
    }


def _run_one(args: tuple[BenchOptimizersConfig, str, int]) -> dict[str, Any]:
    return run_one(*args)


# --------------------------------------------------------------------------- the grid
def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_table(rows: list[dict[str, Any]]) -> str:
    """The N x method table in markdown."""
    lines = [
        "| N | method | mean block error px | max coord error px | success | train s | samples/s | infer ms (1 image) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["dim"], METHODS.index(r["method"]))):
        lines.append(
            f"| {r['dim']} | {r['method']} | {r['mean_block_error_px']:.2f} | {r['max_coord_error_px']:.1f} "
            f"| {r['success_rate']:.0%} | {r['train_seconds']:.0f} | {r['train_samples_per_s']:.0f} "
            f"| {r['infer_ms_median']:.1f} |"
        )
    return "\n".join(lines)


def _map(fn: Any, jobs: list[Any], workers: int) -> Iterator[Any]:
    """``fn`` over ``jobs``: in this process for one worker, else in spawned processes."""
    if workers == 1 or len(jobs) < 2:
        yield from map(fn, jobs)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch state
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        yield from pool.map(fn, jobs)


def run_bench_optimizers(cfg: BenchOptimizersConfig) -> list[dict[str, Any]]:
    """Run every (N, method) not in ``results.jsonl`` yet; print and write the table."""
    results = cfg.out / "results.jsonl"
    if cfg.fresh:
        results.unlink(missing_ok=True)
        shutil.rmtree(cfg.out / "runs", ignore_errors=True)
    cfg.out.mkdir(parents=True, exist_ok=True)
    rows = read_rows(results)
    done = {(r["method"], r["dim"]) for r in rows}
    todo = [(cfg, m, n) for n in cfg.dims for m in cfg.methods if (m, n) not in done]
    todo.sort(key=lambda job: -job[2])  # the largest N (slowest) first
    print(f"bench optimizers: {len(todo)} runs to go ({len(done)} done) -> {cfg.out}")
    for row in _map(_run_one, todo, cfg.jobs):
        rows.append(row)
        write_text_atomic(results, "".join(json.dumps(r) + "\n" for r in rows))
        print(
            f"  N={row['dim']:2d} {row['method']:<19} error {row['mean_block_error_px']:.2f} px, "
            f"success {row['success_rate']:.0%}, {row['infer_ms_median']:.1f} ms/image"
        )
    rows = [r for r in rows if r["dim"] in cfg.dims and r["method"] in cfg.methods]
    table = format_table(rows)
    header = (
        f"N-D coordinate regression: {cfg.train_images} training / {cfg.test_images} test images of "
        f"{cfg.image_size} px, {cfg.train.steps} steps of batch {cfg.train.batch_size}, seed {cfg.seed}; "
        f"success = every coordinate within {cfg.tolerance:g} px.\n\n"
    )
    write_text_atomic(cfg.out / "summary.md", header + table + "\n")
    print(header + table)
    return rows
