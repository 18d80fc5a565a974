"""Data order for training: an endless, seeded, resumable stream of dataset indices.

Any ``torch.utils.data.Dataset`` of the protocol in ``ebm_policy.datasets`` works (items
``{"image": uint8 (H, W, C), "state": (S,), "action": (A,)}`` with the observation keys it has,
numpy arrays or tensors); items are fetched by a ``DataLoader`` (``num_workers`` configurable)
and collated into ``{"image": (B, H, W, C), "state": (B, S), "action": (B, A)}``.

With several processes (``world_size`` ranks), the batch size is the *global* batch ``B``: the
batch of step ``s`` is positions ``[s * B, (s + 1) * B)`` of the one seeded stream, a function of
``(seed, s)`` only, and rank ``r`` fetches (through its own ``DataLoader``, so its own file
handles) only its slice ``[r * B / W, (r + 1) * B / W)`` of it. The union of the ranks' batches is
the batch a single process would train on, whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate


class StreamSampler(Sampler[int]):
    """Epoch after epoch of seeded permutations of ``range(n)``, starting at position ``start``.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so the stream from position
    ``start = step * batch_size`` is exactly what an uninterrupted run would see next.
    Batches may span two epochs; every batch is full.
    """

    def __init__(self, n: int, seed: int, start: int = 0) -> None:
        if n <= 0:
            raise ValueError("cannot train on an empty dataset")
        self.n, self.seed, self.start = n, seed, start

    def permutation(self, epoch: int) -> np.ndarray:
        """The index order of ``epoch``: ``-> (n,)``."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.n)
        while True:
            for i in self.permutation(epoch)[offset:]:
                yield int(i)
            epoch, offset = epoch + 1, 0


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s share of the global batches of a ``StreamSampler``, from step ``step``.

    Global batch ``s`` is stream positions ``[s * batch_size, (s + 1) * batch_size)``; this rank
    yields its ``batch_size // world_size`` of them, ``[rank * b, (rank + 1) * b)``, batch after
    batch. ``world_size=1`` is the plain stream from ``step * batch_size``.
    """

    def __init__(
        self, n: int, seed: int, batch_size: int, step: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"the batch size ({batch_size}) must be a multiple of the number of processes "
                f"({world_size}): it is the global batch, split evenly between them"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.stream = StreamSampler(n, seed, step * batch_size)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.local_batch = batch_size // world_size

    def __iter__(self) -> Iterator[int]:
        if self.world_size == 1:
            yield from self.stream
            return
        lo, hi = self.rank * self.local_batch, (self.rank + 1) * self.local_batch
        stream = iter(self.stream)
        while True:
            batch = [next(stream) for _ in range(self.batch_size)]
            yield from batch[lo:hi]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    step: int = 0,
    num_workers: int = 0,
    *,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """An endless ``DataLoader`` of rank ``rank``'s ``(batch_size // world_size)``-item slices of
    the global batches from ``step`` on (``ShardSampler``).

    Its own ``torch.Generator`` keeps worker seeding off torch's global RNG. ``pin_memory``
    (for CUDA training) lets batches go to the GPU asynchronously.
    """
    sampler = ShardSampler(len(dataset), seed, batch_size, step, rank, world_size)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=sampler.local_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )


def fixed_batch(dataset: Dataset, size: int, seed: int) -> dict[str, Any]:
    """A reproducible batch of ``min(size, len)`` distinct items (for energy snapshots)."""
    n = len(dataset)  # type: ignore[arg-type]
    idx = np.random.default_rng(seed).choice(n, size=min(size, n), replace=False)
    return default_collate([dataset[int(i)] for i in idx])
