"""``ibc-gym bench dfo``: DFO inference latency (fast vs naive path) and training throughput.

For each CNN preset (``full``: full resolution like the PyTorch reference; ``fast``: stride-2
stem; ``faster``: two stride-2 stages) it briefly trains an implicit policy on coordinate-regression
images (the experiment's preset, ``COORD_REGRESSION_IMPLICIT``, with the preset's strides),
measuring training samples/s at 64 and 96 px. With those policies it times DFO on one image and on
a batch, at the reference setting (16,384 samples, 3 iterations) and at the policy's own (the
preset's 2,048 x 5), for the fast path (``ModelEnergy.of_images``: image encoded once, split
first layer, chunked) and the naive path (``NaiveModelEnergy``: re-encodes every iteration,
concatenated MLP), side by side with the same generator seed, and checks both give the same
answer.

Latency as a policy acting online feels it (fresh processes, percentiles, page faults, the
compute floor, every inference optimizer) is ``ibc-gym bench latency`` (``demos.bench_latency``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from demos.args import help_field, one_of, torch_device
from demos.coord_regression import (
    COORD_REGRESSION_IMPLICIT,
    COORD_REGRESSION_TRAIN,
    make_policy,
    make_split,
)
from ebm_policy import (
    CNNConfig,
    DFOConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    build_optimizer,
    train,
)
from ebm_policy.energy import ModelEnergy, NaiveModelEnergy
from ebm_policy.policies import images_to_tensor


@dataclass(frozen=True)
class BenchDfoConfig:
    backbones: tuple[str, ...] = help_field(
        ("full", "fast"),
        "CNN presets (full, fast, faster) to time DFO with",
        check=one_of("full", "fast", "faster"),
    )
    train_backbones: tuple[str, ...] = help_field(
        ("full", "fast", "faster"),
        "CNN presets to time training with",
        check=one_of("full", "fast", "faster"),
    )
    train_sizes: tuple[int, ...] = help_field(
        (64, 96), "image sizes of the training-throughput table", min=16
    )
    ref_samples: int = help_field(16384, "DFO samples of the reference setting", min=1)
    ref_iterations: int = help_field(3, "DFO iterations of the reference setting", min=0)
    repeats: int = help_field(20, "timed calls for one image (median reported)", min=1)
    batch_size: int = help_field(64, "images in the batched measurement", min=1)
    batch_repeats: int = help_field(3, "timed calls for the batch (the naive path gets 1)", min=1)
    # fast and naive calls alternate, so both see the same machine load
    train_steps: int = help_field(30, "training steps timed (batch 8, 128 counter-examples)", min=1)
    train_repeats: int = help_field(3, "timed training runs per cell (median reported)", min=1)
    dfo_train_steps: int = help_field(
        300, "training steps of the policies the DFO is timed with", min=1
    )
    threads: int | None = help_field(
        None, "torch threads (default: torch's choice, the core count)", min=1
    )
    device: str = help_field(
        "cpu", "device to train and time on: cpu, cuda, cuda:1, ...", check=torch_device
    )
    seed: int = help_field(0, "seed", min=0)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall times cover it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of one ``fn()`` call in seconds (queued GPU work included)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def interleaved_medians(
    fns: Sequence[Callable[[], Any]],
    repeats: Sequence[int],
    warmups: Sequence[int],
    device: torch.device | None = None,
) -> list[float]:
    """Median wall times (s) of several functions timed in alternation, so that a change in the
    machine's load during the run affects all of them alike. ``fns[k]`` is called ``warmups[k]``
    times untimed, then ``repeats[k]`` times, round-robin with the others."""
    dev = device or torch.device("cpu")
    for fn, warmup in zip(fns, warmups, strict=True):
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for i in range(max(repeats)):
        for k, fn in enumerate(fns):
            if i < repeats[k]:
                times[k].append(timed(fn, dev))
    return [statistics.median(t) for t in times]


def trained_policy(
    backbone: str, size: int, steps: int, seed: int, device: str = "cpu"
) -> tuple[ImplicitPolicy, float]:
    """A briefly trained implicit policy on ``size`` px images and its training samples/s."""
    config = with_cnn_preset(COORD_REGRESSION_IMPLICIT, backbone)
    train_set, _ = make_split("standard", 64, 1, seed, resolution=size)
    tcfg = replace(
        COORD_REGRESSION_TRAIN,
        steps=steps,
        seed=seed,
        log_interval=steps,
        ckpt_interval=10**9,
        energy_snapshots=0,
        progress=False,
        device=device,
    )  # batch 8, the bench's threads
    with tempfile.TemporaryDirectory() as tmp:
        train(make_policy(config, size, seed), train_set, replace(tcfg, steps=3), f"{tmp}/warmup")
        policy = make_policy(config, size, seed)
        t0 = time.perf_counter()
        train(policy, train_set, tcfg, f"{tmp}/run")
        synchronize(torch.device(device))
        dt = time.perf_counter() - t0
    assert isinstance(policy, ImplicitPolicy)
    return policy, steps * tcfg.batch_size / dt


def with_cnn_preset(config: ImplicitPolicyConfig, preset: str) -> ImplicitPolicyConfig:
    """``config`` with the strides of ``CNNConfig.preset(preset)`` (its other CNN settings kept)."""
    backbone = config.model.backbone
    cnn = replace(backbone.cnn, strides=CNNConfig.preset(preset).strides)  # type: ignore[arg-type]
    return replace(config, model=replace(config.model, backbone=replace(backbone, cnn=cnn)))


def time_dfo(
    policy: ImplicitPolicy, images: torch.Tensor, cfg: BenchDfoConfig, dfo_cfg: DFOConfig
) -> dict[str, Any]:
    """Fast vs naive DFO on ``images`` (float CHW): medians and whether the answers agree. Each
    timed call includes building its energy (the fast path encodes the images there)."""
    dfo = build_optimizer(dfo_cfg)
    model = policy.model
    device = images.device
    low, high = -torch.ones(2, device=device), torch.ones(2, device=device)
    max_elements = policy.config.chunk_elements(device.type)

    def run(naive: bool, seed: int = cfg.seed) -> torch.Tensor:
        g = torch.Generator(device).manual_seed(seed)
        energy = (
            NaiveModelEnergy(model, images)
            if naive
            else ModelEnergy.of_images(model, images, max_elements)
        )
        return dfo.infer(energy, low, high, generator=g)  # type: ignore[return-value]

    batch = images.shape[0] > 1
    repeats = (cfg.batch_repeats, 1) if batch else (cfg.repeats, max(3, cfg.repeats // 2))
    warmups = (1, 0) if batch else (1, 1)  # the batched naive call takes seconds: no warm-up
    fast_s, naive_s = interleaved_medians(
        [lambda: run(False), lambda: run(True)], repeats, warmups, device
    )
    fast, naive, other_seed = run(False), run(True), run(False, cfg.seed + 1)
    return {
        "batch": images.shape[0],
        "fast_s": fast_s,
        "naive_s": naive_s,
        "speedup": naive_s / fast_s,
        "identical": int((fast == naive).all(-1).sum()),
        "max_diff": float((fast - naive).abs().max()),
        "seed_spread": float((fast - other_seed).abs().max()),
    }


def run_bench_dfo(cfg: BenchDfoConfig) -> None:
    """Print training-throughput and DFO-latency tables (see the module docstring)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__}, {cfg.device} ({where})\n")
    batch, negatives = (
        COORD_REGRESSION_TRAIN.batch_size,
        COORD_REGRESSION_IMPLICIT.loss.num_counter_examples,
    )
    print(f"Training (batch {batch}, {negatives} counter-examples, InfoNCE), samples/s:\n")
    print("| CNN preset | " + " | ".join(f"{s} px" for s in cfg.train_sizes) + " |")
    print("|---|" + "---:|" * len(cfg.train_sizes))
    for backbone in cfg.train_backbones:
        cells = []
        for size in cfg.train_sizes:
            rates = [
                trained_policy(backbone, size, cfg.train_steps, cfg.seed, cfg.device)[1]
                for _ in range(cfg.train_repeats)
            ]
            cells.append(f"{statistics.median(rates):.0f}")
        print(f"| {backbone} | " + " | ".join(cells) + " |", flush=True)
    _, test_set = make_split("standard", 1, cfg.batch_size, cfg.seed + 7)
    images = images_to_tensor(test_set.images, device, 3)
    print(
        f"\nDFO inference, 96 px images, policies trained {cfg.dfo_train_steps} steps (fast: image encoded"
    )
    print(
        "once, split first layer, chunked; naive: re-encodes every iteration, concatenated MLP, the"
    )
    print("reference's way; medians):\n")
    print(
        "| CNN preset | DFO samples x iters | images | fast | naive | speed-up | same answers | max diff | other seed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backbone in cfg.backbones:
        policy = trained_policy(backbone, 96, cfg.dfo_train_steps, cfg.seed, cfg.device)[0].eval()
        own = policy.config.optimizer
        assert isinstance(own, DFOConfig)
        for dfo_cfg in (
            replace(own, num_samples=cfg.ref_samples, iterations=cfg.ref_iterations),
            own,
        ):
            for imgs in (images[:1], images):
                r = time_dfo(policy, imgs, cfg, dfo_cfg)
                print(
                    f"| {backbone} | {dfo_cfg.num_samples} x {dfo_cfg.iterations} | {r['batch']} | "
                    f"{_fmt(r['fast_s'])} | {_fmt(r['naive_s'])} | {r['speedup']:.1f}x | "
                    f"{r['identical']}/{r['batch']} | {r['max_diff']:.1e} | {r['seed_spread']:.1e} |",
                    flush=True,
                )
    print(
        "\nsame answers: fast and naive paths with the same generator seed (they differ only by float"
        "\nrounding of the split vs concatenated first layer, which can flip a resampling draw);"
        "\nmax diff: largest answer difference, in normalized action units ([-1, 1]);"
        "\nother seed: largest difference between two seeds of the fast path, for scale."
    )


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
