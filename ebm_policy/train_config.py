"""``TrainConfig``: how long and how to train, and on which device."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ebm_policy.distributed import Rank
from ebm_policy.params import check_params, one_of, param


def _torch_device(value: str) -> None:
    if value != "auto":
        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError(
                f"must be auto or a torch device (cpu, cuda, cuda:1, ...), got {value!r}"
            ) from None


@dataclass(frozen=True)
class TrainConfig:
    """How long and how to train (the policy's own config holds the optimizer settings).

    With several processes (torchrun), ``batch_size`` is the global batch: each of the ``W``
    processes trains on ``batch_size / W`` examples per step (it must divide), so the run's
    hyper-parameters mean the same whatever the number of processes.
    """

    steps: int | None = param(2000, "gradient steps (None: use epochs)", min=1)
    epochs: float | None = param(None, "passes over the dataset, when steps is None", above=0)
    batch_size: int = param(32, "examples per step (all processes together)", min=1)
    seed: int = param(0, "seed of the weights, data order and counter-examples", min=0)
    log_interval: int = param(50, "steps between logged metrics", min=1)
    ckpt_interval: int = param(500, "steps between checkpoints", min=1)
    keep_every: int | None = param(
        None, "also keep ckpt_step<N>.pt every this many steps (a multiple of ckpt_interval)", min=1
    )
    energy_snapshots: int = param(
        5, "snapshots of positive vs counter-example energies (0: off)", min=0
    )
    snapshot_batch_size: int = param(32, "examples per energy snapshot", min=1)
    device: str = param(
        "cpu",
        "cpu, cuda, cuda:1, ... or auto (with several processes per machine, cuda: each takes cuda:LOCAL_RANK)",
        check=_torch_device,
    )
    precision: str = param(
        "fp32",
        "fp32, or bf16: forward passes under bfloat16 autocast (weights and optimizer stay fp32)",
        check=one_of("fp32", "bf16"),
    )
    num_workers: int = param(0, "DataLoader worker processes (per training process)", min=0)
    num_threads: int | None = param(
        1, "torch threads (small convolutions run fastest on 1; None: torch's default)", min=1
    )
    dist_timeout: float = param(
        300.0,
        "seconds a training process waits for the others (several processes) before it stops with an error",
        above=0,
    )
    progress: bool = param(True, "show a progress bar")
    tensorboard: bool = param(True, "also log to TensorBoard (when installed)")

    def __post_init__(self) -> None:
        check_params(self)
        if self.steps is None and self.epochs is None:
            raise ValueError("TrainConfig needs steps or epochs")
        if self.keep_every is not None and self.keep_every % self.ckpt_interval:
            raise ValueError(
                f"keep_every ({self.keep_every}) must be a multiple of ckpt_interval "
                f"({self.ckpt_interval}): checkpoints are kept only when they are written"
            )

    def total_steps(self, dataset_len: int) -> int:
        """Steps of the run: ``steps``, or ``ceil(epochs * len / batch_size)``."""
        if self.steps is not None:
            return int(self.steps)
        if self.epochs is None:
            raise ValueError("TrainConfig needs steps or epochs")
        return math.ceil(self.epochs * dataset_len / self.batch_size)


def resolve_device(name: str, rank: Rank | None = None) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as given. With several
    processes on a machine (``rank.world_size > 1``), ``cuda``/``auto`` become
    ``cuda:<local rank>``; naming one GPU for all of them is refused."""
    rank = rank or Rank()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda" or not rank.enabled:
        return device
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", rank.world_size))
    if device.index is None:
        return torch.device("cuda", rank.local_rank)
    if local_world > 1:
        raise ValueError(
            f"device {name} names one GPU for the {local_world} processes on this machine; "
            f"use cuda (each process takes cuda:LOCAL_RANK)"
        )
    return device
