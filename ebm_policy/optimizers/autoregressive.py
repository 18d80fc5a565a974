"""Autoregressive DFO (the IBC paper, appendix B): one action dimension resampled at a time.

The model scores action prefixes: ``E_j(o, a_1..a_j)`` for ``j = 1..A`` (``E_A`` is the full
energy). A population of M samples starts uniform. Each iteration walks the dimensions in order:
for dimension ``j`` it evaluates ``E_j`` on every sample's prefix, resamples the population by
``softmax(-E_j)`` (whole samples, so each prefix stays consistent) and perturbs dimension ``j``
only, with Gaussian noise that shrinks every iteration. Early dimensions are chosen by their own
(marginal) energy before later ones are drawn, so the search never has to find a good point in
all ``A`` dimensions at once, which is where plain DFO fails as ``A`` grows. The lowest full
energy among the final samples is the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ebm_policy.losses import sample_uniform
from ebm_policy.optimizers.base import ActionEnergy, SearchHistory, check_energies, lowest
from ebm_policy.optimizers.dfo import Resampling, resample_indices
from ebm_policy.params import check_params, one_of, param


@dataclass(frozen=True)
class AutoregressiveDFOConfig:
    """Autoregressive DFO (``AutoregressiveDFO``); needs a model trained with prefix energies
    (``AutoregressiveInfoNCEConfig``). Costs ``iterations * A * num_samples`` prefix energies."""

    kind: ClassVar[str] = "autoregressive_dfo"

    num_samples: int = param(1024, "samples per problem", min=1)
    iterations: int = param(3, "passes over the action dimensions", min=1)
    noise_scale: float = param(0.33, "initial noise std, relative to the bounds' half-width", min=0)
    noise_shrink: float = param(0.5, "noise std factor per pass", above=0, max=1)
    resampling: Resampling = param(
        "stratified",
        "how indices are drawn from softmax(-E_j)",
        check=one_of("stratified", "multinomial"),
    )

    def __post_init__(self) -> None:
        check_params(self)


class AutoregressiveDFO:
    """``argmin_a E(a)`` one dimension at a time over prefix energies (module docstring)."""

    kind: ClassVar[str] = "autoregressive_dfo"
    needs_prefix_energies: ClassVar[bool] = True
    needs_proposal: ClassVar[bool] = False

    def __init__(self, cfg: AutoregressiveDFOConfig | None = None) -> None:
        self.cfg = cfg or AutoregressiveDFOConfig()

    def infer(
        self,
        energy: ActionEnergy,
        low: Tensor,
        high: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, SearchHistory]:
        """``-> best (B, A)``; the history holds the population after each full pass."""
        if not energy.has_prefix_energies:
            raise ValueError(
                "autoregressive_dfo needs an energy model trained with prefix energies "
                "(loss 'autoregressive'); choose optimizer dfo or langevin for this one"
            )
        cfg = self.cfg
        b, m, a = energy.batch_size, cfg.num_samples, low.shape[-1]
        samples = sample_uniform((b, m, a), low, high, generator)
        sigma = cfg.noise_scale * (high - low) / 2
        rows = torch.arange(b, device=low.device).unsqueeze(1)
        hist = SearchHistory([], [])
        for _ in range(cfg.iterations):
            if return_history:
                hist.record(samples, energy(samples))
            for j in range(a):
                energies = energy.prefix(samples[..., : j + 1])
                check_energies(energies, "autoregressive DFO")
                samples = samples[rows, resample_indices(energies, cfg.resampling, generator)]
                noise = torch.randn((b, m), generator=generator, device=low.device, dtype=low.dtype)
                samples[..., j] = torch.clamp(samples[..., j] + noise * sigma[j], low[j], high[j])
            sigma = sigma * cfg.noise_shrink
        energies = energy(samples)
        check_energies(energies, "autoregressive DFO")
        best = lowest(samples, energies)
        if return_history:
            hist.record(samples, energies)
            return best, hist
        return best
