"""Langevin MCMC as an annealed gradient optimizer (google-research/ibc's sampler).

Samples start uniform within the bounds. Step ``i`` of ``n`` moves every sample by
``delta = step_i * (0.5 * dE/da + noise_scale * N(0, 1))``, each dimension clipped to
``+-delta_clip * (high - low) / 2``, then ``a <- clamp(a - delta, low, high)``. The step size decays
polynomially, ``step_i = (init - final) * (1 - i / (n - 1))^power + final``. An optional second
pass repeats the chain from where the first stopped with a smaller initial step. The noise is not
scaled like textbook Langevin dynamics (``sqrt(2 * step)``): this is an annealed optimizer, as in
the reference, not a sampler of ``exp(-E)``.

Inference returns the lowest-energy final sample. Training (``LangevinInfoNCEConfig``) uses the
chain's final samples as counter-examples; the chain is never differentiated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ebm_policy.losses import sample_uniform
from ebm_policy.optimizers.base import ActionEnergy, SearchHistory, check_energies, lowest
from ebm_policy.params import check_params, param


@dataclass(frozen=True)
class LangevinChainConfig:
    """The dynamics of one Langevin chain (reference defaults, ``../shared/REFERENCES.md``)."""

    steps: int = param(50, "gradient steps of the chain (the reference uses 25 to 100)", min=1)
    step_size_init: float = param(0.1, "step size of the first step", above=0)
    step_size_final: float = param(1e-5, "step size of the last step", above=0)
    step_size_power: float = param(2.0, "power of the polynomial step-size decay", above=0)
    noise_scale: float = param(1.0, "std of the noise added to half the gradient", min=0)
    delta_clip: float = param(
        0.1, "largest move per step and dimension, relative to the half-range", above=0
    )
    second_pass_steps: int = param(0, "steps of an optional second pass (0: none)", min=0)
    second_pass_step_size: float = param(1e-3, "initial step size of the second pass", above=0)

    def __post_init__(self) -> None:
        check_params(self)
        if self.step_size_final > self.step_size_init:
            raise ValueError(
                f"LangevinChainConfig: step_size_final {self.step_size_final} exceeds "
                f"step_size_init {self.step_size_init}"
            )

    def schedule(self, steps: int, init: float) -> list[float]:
        """Polynomially decaying step sizes from ``init`` to ``step_size_final``."""
        final = min(self.step_size_final, init)
        if steps == 1:
            return [init]
        return [
            (init - final) * (1 - i / (steps - 1)) ** self.step_size_power + final
            for i in range(steps)
        ]


@dataclass(frozen=True)
class LangevinConfig:
    """Langevin MCMC inference (``LangevinOptimizer``): ``num_samples`` chains per problem."""

    kind: ClassVar[str] = "langevin"

    num_samples: int = param(
        512, "chains per problem (the reference's pixel configs use 2,048)", min=1
    )
    chain: LangevinChainConfig = param(
        factory=LangevinChainConfig, flatten=True, help="the chain's dynamics"
    )

    def __post_init__(self) -> None:
        check_params(self)


def run_chain(
    energy: ActionEnergy,
    samples: Tensor,
    low: Tensor,
    high: Tensor,
    cfg: LangevinChainConfig,
    generator: torch.Generator | None = None,
    history: SearchHistory | None = None,
) -> Tensor:
    """Move ``samples (B, M, A)`` down the energy: ``-> samples (B, M, A)`` (detached)."""
    clip = cfg.delta_clip * (high - low) / 2  # (A,)
    schedule = cfg.schedule(cfg.steps, cfg.step_size_init)
    if cfg.second_pass_steps:
        schedule += cfg.schedule(cfg.second_pass_steps, cfg.second_pass_step_size)
    samples = samples.detach()
    for step_size in schedule:
        energies, grad = energy.with_grad(samples)
        check_energies(energies, "Langevin")
        if history is not None:
            history.record(samples, energies)
        noise = torch.randn(
            samples.shape, generator=generator, device=samples.device, dtype=samples.dtype
        )
        delta = step_size * (0.5 * grad + cfg.noise_scale * noise)
        delta = torch.maximum(torch.minimum(delta, clip), -clip)
        samples = torch.clamp(samples - delta, low, high)
    return samples


class LangevinOptimizer:
    """``argmin_a E(a)`` by annealed Langevin chains from uniform starts (module docstring)."""

    kind: ClassVar[str] = "langevin"
    needs_prefix_energies: ClassVar[bool] = False
    needs_proposal: ClassVar[bool] = False

    def __init__(self, cfg: LangevinConfig | None = None) -> None:
        self.cfg = cfg or LangevinConfig()

    def infer(
        self,
        energy: ActionEnergy,
        low: Tensor,
        high: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, SearchHistory]:
        """``-> best (B, A)``: the lowest-energy final sample of ``num_samples`` chains."""
        start = sample_uniform(
            (energy.batch_size, self.cfg.num_samples, low.shape[-1]), low, high, generator
        )
        hist = SearchHistory([], []) if return_history else None
        samples = run_chain(energy, start, low, high, self.cfg.chain, generator, hist)
        energies = energy(samples)
        check_energies(energies, "Langevin")
        best = lowest(samples, energies)
        if hist is not None:
            hist.record(samples, energies)
            return best, hist
        return best
