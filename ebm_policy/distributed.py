"""Several training processes (torchrun / DistributedDataParallel): who is who, and collectives
that fail with one clear error instead of hanging.

A run is distributed when ``torch.distributed`` is initialized (by the caller), or when the
process was started by ``torchrun`` with ``WORLD_SIZE > 1`` (``join_from_env`` then initializes
the group: gloo on the CPU, NCCL on CUDA, with ``timeout_s`` on every collective). ``Rank``
says which process this is; rank 0 is the *master*: it alone writes files.

Every collective here goes through ``collective``, which turns a failure (a peer that died: gloo
"Connection closed by peer"; a peer that stopped answering: a timeout) into ``DistributedError``
naming what was being exchanged, so the surviving processes stop within ``timeout_s``.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")

_LOST_PEER = (
    "connection closed",
    "connection reset",
    "timed out",
    "timeout",
    "broken pipe",
    "nccl",
    "gloo",
)


class DistributedError(RuntimeError):
    """Another training process failed, died or stopped answering; this one stops too.

    ``shared`` marks errors every rank raises alike (the command line prints them once per
    machine)."""

    shared = False


@dataclass(frozen=True)
class Rank:
    """This process's place in the run: ``rank`` of ``world_size`` (``local_rank`` on its
    machine). ``Rank()`` is a single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def master(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and holds the folder lock."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def env_rank() -> Rank | None:
    """The ``Rank`` torchrun gave this process (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), if any."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return Rank(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def current_rank() -> Rank:
    """The initialized process group's ``Rank``, else torchrun's, else a single process."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        return Rank(rank, world, int(os.environ.get("LOCAL_RANK", rank)))
    return env_rank() or Rank()


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def join_from_env(device: torch.device, timeout_s: float) -> bool:
    """Initialize the process group of a torchrun-started process (``WORLD_SIZE > 1``) unless
    one exists; ``-> True`` when this call created it (the caller then calls ``leave()``)."""
    if not dist.is_available() or dist.is_initialized():
        return False
    rank = env_rank()
    if rank is None or not rank.enabled:
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), timeout=datetime.timedelta(seconds=timeout_s))
    return True


def leave() -> None:
    """Destroy the process group (after ``join_from_env`` returned True)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(base: int, rank: int, step: int = 0) -> int:
    """The seed of ``rank``'s random draws: ``base`` itself for rank 0 at step 0 (a single-process
    run draws as it always did), else a 63-bit hash of ``(base, rank, step)``."""
    if rank == 0 and step == 0:
        return base
    state = np.random.SeedSequence([base, rank, step]).generate_state(1, np.uint64)[0]
    return int(state) >> 1


def is_lost_peer(error: BaseException) -> bool:
    """Whether ``error`` looks like a collective failing because a peer died or timed out."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(k in text for k in _LOST_PEER)


def lost_peer_error(rank: Rank, what: str, error: BaseException) -> DistributedError:
    """The ``DistributedError`` of a failed collective during ``what``."""
    first = next(
        (line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__
    )
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]  # less gloo's "[.../pair.cc:537] "
    return DistributedError(
        f"{rank}: another process stopped or stopped answering during {what} ({first[:160]}); "
        f"this one stops too"
    )


def collective(rank: Rank, what: str, fn: Callable[[], T]) -> T:
    """``fn()`` (a collective), its lost-peer failures raised as ``DistributedError``."""
    try:
        return fn()
    except RuntimeError as e:
        if is_lost_peer(e):
            raise lost_peer_error(rank, what, e) from e
        raise


def all_reduce(rank: Rank, tensor: torch.Tensor, what: str, op: str = "sum") -> torch.Tensor:
    """In-place ``all_reduce`` (``op``: sum or max) of ``tensor``; a no-op for one process."""
    if rank.enabled:
        red = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
        collective(rank, what, lambda: dist.all_reduce(tensor, op=red))
    return tensor


def broadcast_object(rank: Rank, obj: Any, what: str, device: torch.device | None = None) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; tensors inside come back on the CPU)."""
    if not rank.enabled:
        return obj
    box = [obj if rank.master else None]
    collective(
        rank, what, lambda: dist.broadcast_object_list(box, src=0, device=_object_device(device))
    )
    return box[0]


def gather_objects(
    rank: Rank, obj: Any, what: str, device: torch.device | None = None
) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0 (``None`` on the others)."""
    if not rank.enabled:
        return [obj]
    out: list[Any] | None = [None] * rank.world_size if rank.master else None
    collective(rank, what, lambda: dist.gather_object(obj, out, dst=0))
    return out


def _object_device(device: torch.device | None) -> torch.device | None:
    """NCCL exchanges pickled objects through the current CUDA device; gloo through the CPU."""
    return device if device is not None and device.type == "cuda" else None


def ordered_mean_hook(state, bucket):  # type: ignore[no-untyped-def]
    """DistributedDataParallel comm hook ``(state, bucket: GradBucket) -> Future[Tensor]``: the
    mean of the ranks' gradients, summed in rank order (all-gather, then ``((g_0 + g_1) + g_2)
    ...``), so each element's result depends only on the ranks' values, not on where in DDP's
    buckets it sits. (An all-reduce sums in an order that follows the bucket layout, which DDP
    rebuilds after a run's first step; a resumed run, whose first step uses the initial layout,
    would then differ from the straight run in the last bits with 3 or more ranks.) Costs an
    all-gather: each rank receives every rank's gradients, fine for these small policies.

    (Not annotated: DDP compares the annotations with its own types, which the postponed
    string annotations of this module would fail.)
    """
    group = state if isinstance(state, dist.ProcessGroup) else None
    world = dist.get_world_size(group)
    tensor = bucket.buffer()
    parts = [torch.empty_like(tensor) for _ in range(world)]
    future = dist.all_gather(parts, tensor, group=group, async_op=True).get_future()  # type: ignore[union-attr]

    def mean(_: torch.futures.Future[Any]) -> torch.Tensor:
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        return total.div_(world)

    return future.then(mean)
