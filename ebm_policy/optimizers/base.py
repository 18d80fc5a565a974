"""The inference-optimizer seam: what an optimizer may ask of an energy, and what it answers.

An inference optimizer finds ``argmin_a E(o, a)`` for a batch of problems within box bounds. It
sees the energy only through ``ActionEnergy``: energies of actions, their gradients with respect
to the actions, and (for models trained with prefix energies) energies of action prefixes. It
never reads a model's internals; ``ebm_policy.energy.ModelEnergy`` adapts a model and
``AnalyticEnergy`` adapts any differentiable function (tests, toy problems).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor


class ActionEnergy(Protocol):
    """Energies of ``batch_size`` observations over candidate actions; lower is better."""

    batch_size: int
    action_dim: int
    has_prefix_energies: bool

    def __call__(self, actions: Tensor) -> Tensor:
        """``actions (B, M, A) -> energies (B, M)``, without autograd."""
        ...

    def with_grad(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``actions (B, M, A) -> energies (B, M), dE/da (B, M, A)``, both detached."""
        ...

    def prefix(self, actions: Tensor) -> Tensor:
        """``prefixes (B, M, j) -> E_j (B, M)``: the energy of the first ``j`` action dimensions
        (``j = A`` is the full energy). ``ValueError`` without prefix energies."""
        ...


@dataclass
class SearchHistory:
    """Populations an optimizer evaluated: ``samples[i] (B, M, A)`` and ``energies[i] (B, M)``.

    Entry 0 is the initial (uniform) population and the last entry the final one.
    """

    samples: list[Tensor]
    energies: list[Tensor]

    def record(self, samples: Tensor, energies: Tensor) -> None:
        self.samples.append(samples.detach())
        self.energies.append(energies.detach())


class InferenceOptimizer(Protocol):
    """``infer(energy, low, high) -> actions (B, A)``; built from a config with a ``kind``."""

    kind: ClassVar[str]
    cfg: Any
    needs_prefix_energies: ClassVar[bool]
    needs_proposal: ClassVar[bool]  # starts from the energy's learned proposal (``propose``)

    def infer(
        self,
        energy: ActionEnergy,
        low: Tensor,
        high: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, SearchHistory]:
        """The lowest-energy action found per problem within ``[low, high]`` (both ``(A,)``)."""
        ...


def check_energies(energies: Tensor, who: str = "the optimizer") -> None:
    """Raise a ``ValueError`` unless ``energies (B, M)`` can be compared: no NaN, no ``-inf``,
    and at least one finite energy per problem (``+inf`` marks a sample as impossible).

    One reduction: a row's minimum is finite exactly then (``amin`` propagates NaN).
    """
    if not bool(torch.isfinite(energies.amin(dim=-1)).all()):
        raise ValueError(
            f"{who}: the energy function returned NaN or -inf, or +inf for every sample of a "
            f"problem (energies of shape {tuple(energies.shape)}); check the model and its inputs"
        )


def lowest(samples: Tensor, energies: Tensor) -> Tensor:
    """``samples (B, M, A), energies (B, M) -> the lowest-energy sample per row (B, A)``."""
    rows = torch.arange(samples.shape[0], device=samples.device)
    return samples[rows, energies.argmin(dim=-1)]


EnergyFn = Callable[[Tensor], Tensor]
"""``actions (B, M, A) -> energies (B, M)``, differentiable with respect to the actions."""


class AnalyticEnergy:
    """An ``ActionEnergy`` from plain functions (analytic test energies, toy problems).

    ``fn (B, M, A) -> (B, M)`` must be differentiable in the actions for gradient-based
    optimizers; ``prefix_fn(prefixes (B, M, j)) -> (B, M)`` enables autoregressive DFO.
    """

    def __init__(
        self, fn: EnergyFn, batch_size: int, action_dim: int, prefix_fn: EnergyFn | None = None
    ) -> None:
        self.fn = fn
        self.prefix_fn = prefix_fn
        self.batch_size = batch_size
        self.action_dim = action_dim
        self.has_prefix_energies = prefix_fn is not None

    def __call__(self, actions: Tensor) -> Tensor:
        with torch.no_grad():
            return self.fn(actions)

    def with_grad(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            a = actions.detach().requires_grad_(True)
            energies = self.fn(a)
            (grad,) = torch.autograd.grad(energies.sum(), a)
        return energies.detach(), grad

    def prefix(self, actions: Tensor) -> Tensor:
        if self.prefix_fn is None:
            raise ValueError("this energy has no prefix energies")
        with torch.no_grad():
            return self.prefix_fn(actions)
