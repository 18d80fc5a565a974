"""``ibc-gym bench dfo``: DFO inference latency (fast vs naive path) and training throughput.

For each backbone (``reference``: full-resolution CNN like the PyTorch reference; ``fast``: the
stride-2 stem used by default) it briefly trains an implicit policy on coordinate-regression images
(measuring training samples/s), then times DFO on one image and on a batch, at the reference
setting (16,384 samples, 3 iterations) and at the default setting, for the fast path (image encoded
once, split first layer, chunked) and the naive path (re-encodes every iteration, concatenated MLP),
side by side with the same generator seed, and checks both give the same answer.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from demos.args import help_field
from demos.coord_regression import CoordRegressionConfig, make_policy, make_split
from ebm_policy import DerivativeFreeOptimizer, DFOConfig, ImplicitPolicy, TrainConfig, train
from ebm_policy.policies import images_to_tensor


@dataclass(frozen=True)
class BenchDfoConfig:
    backbone: Literal["both", "reference", "fast"] = help_field("both", "which CNN backbone(s) to time")
    samples: tuple[int, ...] = help_field((16384, 2048), "DFO sample counts to time (reference, default)")
    iterations: int = help_field(3, "DFO iterations")
    repeats: int = help_field(20, "timed calls for one image (median reported)")
    batch_size: int = help_field(64, "images in the batched measurement")
    batch_repeats: int = help_field(3, "timed calls for the batch (the naive path gets 1 at most)")
    train_steps: int = help_field(40, "training steps timed (batch 8, 128 counter-examples)")
    threads: int | None = help_field(None, "torch threads (default: torch's choice, the core count)")
    seed: int = help_field(0, "seed")


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def trained_policy(backbone: str, steps: int, seed: int) -> tuple[ImplicitPolicy, float]:
    """A briefly trained implicit policy and its training throughput (samples/s)."""
    cfg = CoordRegressionConfig(backbone=backbone, seed=seed)  # type: ignore[arg-type]
    train_set, _ = make_split("standard", 64, 1, seed)
    policy = make_policy("implicit", cfg, seed)
    assert isinstance(policy, ImplicitPolicy)
    tcfg = TrainConfig(steps=steps, batch_size=8, seed=seed, log_interval=steps, ckpt_interval=10**9,
                       energy_snapshots=0, progress=False, tensorboard=False)
    warm = replace(tcfg, steps=3)
    with tempfile.TemporaryDirectory() as tmp:
        train(policy, train_set, warm, f"{tmp}/warmup")
        policy = make_policy("implicit", cfg, seed)  # type: ignore[assignment]
        t0 = time.perf_counter()
        train(policy, train_set, tcfg, f"{tmp}/run")
        dt = time.perf_counter() - t0
    return policy, steps * 8 / dt  # type: ignore[return-value]


def time_dfo(policy: ImplicitPolicy, images: torch.Tensor, cfg: BenchDfoConfig, samples: int) -> dict[str, Any]:
    """Fast vs naive DFO on ``images`` (float CHW): medians and whether the answers agree."""
    dfo = DerivativeFreeOptimizer(DFOConfig(num_samples=samples, iterations=cfg.iterations))
    model = policy.model
    low, high = -torch.ones(2), torch.ones(2)

    def run(naive: bool) -> torch.Tensor:
        g = torch.Generator().manual_seed(cfg.seed)
        if naive:
            return dfo.infer_naive(model, images, low, high, generator=g)
        return dfo.infer(model, images, low, high, generator=g)  # type: ignore[return-value]

    batch = images.shape[0] > 1
    fast_s = median_time(lambda: run(False), cfg.batch_repeats if batch else cfg.repeats)
    naive_s = median_time(lambda: run(True), 1 if batch else max(3, cfg.repeats // 4), warmup=0 if batch else 1)
    fast, naive = run(False), run(True)
    return {
        "samples": samples, "batch": images.shape[0], "fast_s": fast_s, "naive_s": naive_s,
        "speedup": naive_s / fast_s, "same": bool(torch.equal(fast, naive)),
        "max_diff": float((fast - naive).abs().max()),
    }


def run_bench_dfo(cfg: BenchDfoConfig) -> None:
    """Print DFO latency and training throughput tables (see the module docstring)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    backbones = ["reference", "fast"] if cfg.backbone == "both" else [cfg.backbone]
    _, test_set = make_split("standard", 1, cfg.batch_size, cfg.seed + 7)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 96x96 images\n")
    print("| backbone | train samples/s | DFO samples x iters | images | fast | naive | speed-up | same answer |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for backbone in backbones:
        policy, throughput = trained_policy(backbone, cfg.train_steps, cfg.seed)
        policy.eval()
        images = images_to_tensor(test_set.images, torch.device("cpu"), 3)
        for samples in cfg.samples:
            for imgs in (images[:1], images):
                r = time_dfo(policy, imgs, cfg, samples)
                same = "yes" if r["same"] else f"no (max diff {r['max_diff']:.1e})"
                print(
                    f"| {backbone} | {throughput:.0f} | {samples} x {cfg.iterations} | {r['batch']} | "
                    f"{_fmt(r['fast_s'])} | {_fmt(r['naive_s'])} | {r['speedup']:.1f}x | {same} |",
                    flush=True,
                )
    print("\nfast: image encoded once, split first layer, chunked; naive: re-encodes every "
          "iteration, concatenated MLP (the reference's way). Medians of repeated calls.")


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"

