"""``ibc-gym bench latency``: action-selection latency in fresh processes, against its floor.

Each row times ``ImplicitPolicy.select_action`` (the path users call: encode once, the inference
optimizer, chunked energy head, workspaces) on 96 px images with the full-resolution backbone
(``CNNConfig.preset("full")``, the PyTorch reference's), for one inference optimizer setting and
a number of images. Every row runs in ``processes`` fresh Python processes, one after another;
each process warms up, times ``calls`` calls and reports the median and the 95th percentile of
its per-call latency. The table gives the median over processes of both, the worst ratio of a
process's p95 to its median (the goal is at most 1.3: no slow mode), and how far the median is
from the compute floor.

The floor is what the arithmetic costs at the machine's convolution speed: the model's FLOPs
per call (the encoder's convolutions, counted from their shapes, plus the energy head's matmuls
for every action scored, counted by wrapping the energy the optimizer sees) divided by the
throughput of a 3x3, 32-channel convolution on 96 px images measured in the same process (the
encoder's main layer, oneDNN; the best of 1, 4 and 16 images per call). The policies are untrained (weights from a seed): what a call
costs does not depend on what the weights say, and page faults per call are reported too.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from demos.args import help_field, one_of
from ebm_policy import (
    AutoregressiveDFOConfig,
    AutoregressiveInfoNCEConfig,
    BackboneConfig,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    LangevinConfig,
)
from ebm_policy.models import EBMConvMLP

ROWS: dict[str, Any] = {  # name -> the optimizer config of the row
    "dfo-16384x3": DFOConfig(num_samples=16384, iterations=3),  # the reference's setting
    "dfo": DFOConfig(),  # the library default
    "langevin": LangevinConfig(),
    "autoregressive_dfo": AutoregressiveDFOConfig(),
}


@dataclass(frozen=True)
class BenchLatencyConfig:
    rows: tuple[str, ...] = help_field(
        tuple(ROWS), "optimizer settings to time", check=one_of(*ROWS)
    )
    images: tuple[int, ...] = help_field((1, 64), "images per call, one row each", min=1)
    processes: int = help_field(10, "fresh processes per row", min=1)
    calls: int = help_field(100, "timed calls per process with one image", min=2)
    batch_calls: int = help_field(10, "timed calls per process with several images", min=2)
    warmup: int = help_field(3, "untimed calls first in each process", min=0)
    threads: int = help_field(1, "torch threads per process", min=1)
    size: int = help_field(96, "image side, pixels", min=16)
    action_dim: int = help_field(2, "action dimensions", min=1)
    seed: int = help_field(0, "seed of the weights, images and draws", min=0)
    max_chunk_elements: int | None = help_field(
        None, "hidden activations scored at once (None: the library's default)", min=1
    )


def policy_for(
    row: str, action_dim: int, seed: int, max_chunk_elements: int | None = None
) -> ImplicitPolicy:
    """An untrained full-backbone policy that runs ``ROWS[row]`` (with prefix energies for
    autoregressive DFO)."""
    optimizer = ROWS[row]
    loss = AutoregressiveInfoNCEConfig() if isinstance(optimizer, AutoregressiveDFOConfig) else None
    model = EBMConfig(action_dim=action_dim, backbone=BackboneConfig(cnn=CNNConfig.preset("full")))
    cfg = ImplicitPolicyConfig(
        model=model,
        optimizer=optimizer,
        max_chunk_elements=max_chunk_elements,
        **({"loss": loss} if loss else {}),
    )
    return ImplicitPolicy(cfg, -np.ones(action_dim), np.ones(action_dim), seed=seed).eval()


def encoder_flops(model: EBMConvMLP, images: Tensor) -> float:
    """Multiply-adds x 2 of the convolutions in one ``model.encode(images)``."""
    total = 0.0

    def count(module: nn.Module, _inputs: Any, output: Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2.0 * output.numel() * k

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.encode(images)
    finally:
        for h in hooks:
            h.remove()
    return total


class CountingEnergy:
    """Wraps an ``ActionEnergy`` and counts the energy-head FLOPs its callers ask for."""

    def __init__(self, energy: Any, model: EBMConvMLP) -> None:
        self.energy = energy
        self.batch_size = energy.batch_size
        self.action_dim = energy.action_dim
        self.has_prefix_energies = energy.has_prefix_energies
        widths = [model.head.first.in_features - model.feature_dim, *model.cfg.hidden_dims, 1]
        # first layer (the image's projection folded in as one more input), then the rest
        self.forward_flops = 2.0 * (widths[0] + 1) * widths[1] + sum(
            2.0 * a * b for a, b in zip(widths[1:-1], widths[2:], strict=True)
        )
        self.backward_flops = 2.0 * widths[0] * widths[1] + sum(
            2.0 * a * b for a, b in zip(widths[1:-1], widths[2:], strict=True)
        )
        self.flops = 0.0
        self.rows = 0

    def _add(self, actions: Tensor, grad: bool = False) -> None:
        n = actions.shape[0] * actions.shape[1]
        self.rows += n
        self.flops += n * (self.forward_flops + (self.backward_flops if grad else 0.0))

    def __call__(self, actions: Tensor) -> Tensor:
        self._add(actions)
        return self.energy(actions)

    def with_grad(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        self._add(actions, grad=True)
        return self.energy.with_grad(actions)

    def prefix(self, actions: Tensor) -> Tensor:
        self._add(actions)
        return self.energy.prefix(actions)


def conv_gflops(size: int, batches: tuple[int, ...] = (1, 4, 16), repeats: int = 10) -> float:
    """Throughput (GFLOP/s) of a 3x3, 32 -> 32 channel convolution on ``size`` px images: the
    median over ``repeats`` calls, for the best of ``batches`` images per call."""
    conv = nn.Conv2d(32, 32, 3, padding=1, bias=False).eval()
    best = 0.0
    with torch.no_grad():
        for batch in batches:
            x = torch.rand(batch, 32, size, size)
            flops = 2.0 * 32 * 32 * 9 * size * size * batch
            for _ in range(3):
                conv(x)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                conv(x)
                times.append(time.perf_counter() - t0)
            best = max(best, flops / statistics.median(times) / 1e9)
    return best


def measure(row: str, batch: int, calls: int, cfg: BenchLatencyConfig) -> dict[str, Any]:
    """One process's figures for one row (runs in the worker)."""
    torch.set_num_threads(cfg.threads)
    policy = policy_for(row, cfg.action_dim, cfg.seed, cfg.max_chunk_elements)
    g = torch.Generator().manual_seed(cfg.seed)
    images = torch.randint(0, 256, (batch, cfg.size, cfg.size, 3), dtype=torch.uint8, generator=g)
    gflops = conv_gflops(cfg.size)
    # FLOPs of one call: the encoder once per image, the head for every action scored
    energy = CountingEnergy(policy.action_energy(images), policy.model)
    low, high = -torch.ones(cfg.action_dim), torch.ones(cfg.action_dim)
    with torch.no_grad():
        policy.resolve_optimizer().infer(energy, low, high, generator=g)
        x = images[:1].permute(0, 3, 1, 2).float()
    flops = batch * encoder_flops(policy.model, x) + energy.flops
    for _ in range(cfg.warmup):
        policy.select_action(images, torch.Generator().manual_seed(cfg.seed))
    times, faults = [], []
    for i in range(calls):
        gen = torch.Generator().manual_seed(cfg.seed + i)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        policy.select_action(images, gen)
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {
        "median_s": statistics.median(times),
        "p95_s": float(np.percentile(times, 95)),
        "faults": statistics.median(faults),
        "floor_s": flops / (gflops * 1e9),
        "gflop": flops / 1e9,
        "head_rows": energy.rows,
        "conv_gflops": gflops,
    }


def _worker(conn: Any, row: str, batch: int, calls: int, cfg: BenchLatencyConfig) -> None:
    try:
        conn.send(measure(row, batch, calls, cfg))
    except BaseException as e:  # report, never hang the parent
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def in_fresh_process(row: str, batch: int, calls: int, cfg: BenchLatencyConfig) -> dict[str, Any]:
    """``measure`` in a new interpreter (spawn), so no state carries over between processes."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(child, row, batch, calls, cfg))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        result = {"error": f"the worker died (exit code {proc.join() or proc.exitcode})"}
    proc.join()
    if "error" in result:
        raise RuntimeError(f"bench latency, row {row} with {batch} images: {result['error']}")
    return result


def run_bench_latency(cfg: BenchLatencyConfig) -> None:
    """Print the table (see the module docstring)."""
    print(
        f"torch {torch.__version__}, {cfg.threads} thread(s) per process, {cfg.size} px images, "
        f"full-resolution backbone, {cfg.processes} fresh processes per row\n"
    )
    print(
        "| optimizer | images | head rows/call | GFLOP/call | conv GFLOP/s | floor | median "
        "| p95 | worst p95/median | x floor | page faults/call |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    details = []
    for row in cfg.rows:
        for batch in cfg.images:
            calls = cfg.calls if batch == 1 else cfg.batch_calls
            runs = [in_fresh_process(row, batch, calls, cfg) for _ in range(cfg.processes)]
            med = statistics.median(r["median_s"] for r in runs)
            p95 = statistics.median(r["p95_s"] for r in runs)
            worst = max(r["p95_s"] / r["median_s"] for r in runs)
            floor = statistics.median(r["floor_s"] for r in runs)
            print(
                f"| {row} | {batch} | {runs[0]['head_rows']:,} | {runs[0]['gflop']:.2f} | "
                f"{statistics.median(r['conv_gflops'] for r in runs):.0f} | {_ms(floor)} | "
                f"{_ms(med)} | {_ms(p95)} | {worst:.2f} | {med / floor:.2f} | "
                f"{statistics.median(r['faults'] for r in runs):.0f} |",
                flush=True,
            )
            spread = ", ".join(f"{_ms(r['median_s'])}/{_ms(r['p95_s'])}" for r in runs)
            details.append(f"{row}, {batch} image(s): {spread}")
    print("\nper process, median/p95:\n" + "\n".join(details))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
