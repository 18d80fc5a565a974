"""InfoNCE over counter-examples (lower energy = better) and the gradient penalty.

For each example the candidates are the expert action plus ``N`` counter-examples (drawn uniformly
within the bounds, or refined by a Langevin chain); the positive sits at a random index ``k`` and
the loss is ``cross_entropy(-energies, k) = -log softmax(-E)[k]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_uniform(
    shape: tuple[int, ...],
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None = None,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """Uniform samples within ``[low, high]`` (both ``(A,)``): ``shape = (..., A) -> (..., A)``,
    written into ``out`` when given (the same values either way)."""
    if out is None:
        u = torch.rand(shape, generator=generator, device=low.device, dtype=low.dtype)
        return low + (high - low) * u
    torch.rand(shape, generator=generator, device=low.device, dtype=low.dtype, out=out)
    return out.mul_(high - low).add_(low)


def make_candidates(
    positives: Tensor,
    num_counter_examples: int,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Expert actions plus uniform counter-examples, the expert at a random index per row.

    ``positives (B, A) -> candidates (B, N + 1, A), labels (B,)`` with
    ``candidates[i, labels[i]] == positives[i]``.
    """
    b, a = positives.shape
    negatives = sample_uniform((b, num_counter_examples, a), low, high, generator)
    return mix_in_positives(positives, negatives, generator)


def perturbed_negatives(
    positives: Tensor,
    num_counter_examples: int,
    scales: tuple[float, ...],
    uniform_fraction: float,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Counter-examples near the expert: ``positives (B, A) -> (B, N, A)``.

    The first ``round(uniform_fraction * N)`` are uniform within ``[low, high]``; counter-example
    ``i`` of the rest is the positive plus Gaussian noise of std ``scales[i % len(scales)]``,
    clamped to the bounds."""
    b, a = positives.shape
    n_uniform = round(uniform_fraction * num_counter_examples)
    n_near = num_counter_examples - n_uniform
    uniform = sample_uniform((b, n_uniform, a), low, high, generator)
    std = torch.tensor(scales, device=positives.device, dtype=positives.dtype)
    std = std[torch.arange(n_near, device=positives.device) % len(scales)]  # (n_near,)
    noise = torch.randn(
        (b, n_near, a), generator=generator, device=positives.device, dtype=positives.dtype
    )
    near = positives.unsqueeze(1) + noise * std[:, None]
    near = torch.maximum(torch.minimum(near, high), low)
    return torch.cat((uniform, near), dim=1)


def mix_in_positives(
    positives: Tensor, negatives: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``positives (B, A), negatives (B, N, A) -> candidates (B, N + 1, A), labels (B,)``, each
    positive at a uniformly drawn index ``labels[i]``."""
    b, num_counter_examples, a = negatives.shape
    candidates = torch.cat((positives.unsqueeze(1), negatives), dim=1)  # positive at index 0
    order = torch.rand(
        (b, num_counter_examples + 1), generator=generator, device=positives.device
    ).argsort(dim=1)
    candidates = candidates.gather(1, order.unsqueeze(-1).expand(-1, -1, a))
    labels = (order == 0).to(torch.int64).argmax(dim=1)
    return candidates, labels


def info_nce_loss(energies: Tensor, labels: Tensor) -> Tensor:
    """``energies (B, N + 1), labels (B,) -> scalar``: mean of ``-log softmax(-E)[label]``."""
    return F.cross_entropy(-energies, labels)


def ranking_nce_loss(energies: Tensor, log_q: Tensor, labels: Tensor) -> Tensor:
    """Ranking NCE: ``energies (B, N + 1), log q (B, N + 1), labels (B,) -> scalar``, the mean
    of ``-log softmax(-E - log q)[label]``: with the counter-examples drawn from ``q``, the
    correction makes the optimum ``-E = log p(a | o) + const``."""
    return F.cross_entropy(-energies - log_q, labels)


def split_energies(energies: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, N + 1), (B,) -> positive (B,), negatives (B, N)``."""
    b, n1 = energies.shape
    mask = F.one_hot(labels, n1).bool()
    return energies[mask], energies[~mask].reshape(b, n1 - 1)


def gradient_penalty(grads: Tensor, margin: float) -> Tensor:
    """``dE/da (B, N, A) -> mean(max(0, ||dE/da||_inf - margin)^2)``, a scalar: zero while every
    gradient's largest component stays within ``margin``."""
    excess = torch.relu(grads.abs().amax(dim=-1) - margin)
    return excess.square().mean()
