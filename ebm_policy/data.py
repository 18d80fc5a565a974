"""Data order for training: an endless, seeded, resumable stream of dataset indices.

Any ``torch.utils.data.Dataset`` whose items are ``{"image": uint8 (H, W, C), "action": (A,)}``
(numpy arrays or tensors) works; items are fetched by a ``DataLoader`` (``num_workers``
configurable) and collated into ``{"image": (B, H, W, C), "action": (B, A)}``.
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


def make_loader(
    dataset: Dataset, batch_size: int, seed: int, start: int, num_workers: int = 0
) -> DataLoader:
    """An endless ``DataLoader`` over ``dataset`` following ``StreamSampler(len, seed, start)``.

    Its own ``torch.Generator`` keeps worker seeding off torch's global RNG.
    """
    sampler = StreamSampler(len(dataset), seed, start)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def fixed_batch(dataset: Dataset, size: int, seed: int) -> dict[str, Any]:
    """A reproducible batch of ``min(size, len)`` distinct items (for energy snapshots)."""
    n = len(dataset)  # type: ignore[arg-type]
    idx = np.random.default_rng(seed).choice(n, size=min(size, n), replace=False)
    return default_collate([dataset[int(i)] for i in idx])
