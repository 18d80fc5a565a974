"""Proposal DFO: DFO whose first population is drawn from the model's learned proposal ``q(a | o)``
instead of uniformly (the inference of ranking NCE: sample from ``q``, score, refine).

``q`` puts its samples where the expert's actions are likely, so in many action dimensions (a
chunk of actions) the first population already lies near the modes that a uniform one would
almost never hit; the DFO rounds then resample by ``softmax(-E)`` and perturb with a smaller
noise than plain DFO's (the samples are already close).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ebm_policy.optimizers.base import ActionEnergy
from ebm_policy.optimizers.dfo import DerivativeFreeOptimizer, DFOConfig, Resampling
from ebm_policy.params import check_params, one_of, param


@dataclass(frozen=True)
class ProposalDFOConfig:
    """Proposal DFO (``ProposalDFO``): ``num_samples`` draws from the proposal, then DFO rounds."""

    kind: ClassVar[str] = "proposal_dfo"

    num_samples: int = param(1024, "proposal samples per problem", min=1)
    iterations: int = param(2, "resample-and-perturb rounds", min=0)
    noise_scale: float = param(0.05, "initial noise std, relative to the bounds' half-width", min=0)
    noise_shrink: float = param(0.5, "noise std factor per iteration", above=0, max=1)
    resampling: Resampling = param(
        "stratified",
        "how indices are drawn from softmax(-E)",
        check=one_of("stratified", "multinomial"),
    )

    def __post_init__(self) -> None:
        check_params(self)


class ProposalDFO(DerivativeFreeOptimizer):
    """DFO started from the energy's proposal (``ActionEnergy.propose``)."""

    kind: ClassVar[str] = "proposal_dfo"
    needs_proposal: ClassVar[bool] = True

    def __init__(self, cfg: ProposalDFOConfig | None = None) -> None:
        cfg = cfg or ProposalDFOConfig()
        super().__init__(
            DFOConfig(
                num_samples=cfg.num_samples,
                iterations=cfg.iterations,
                noise_scale=cfg.noise_scale,
                noise_shrink=cfg.noise_shrink,
                resampling=cfg.resampling,
            )
        )

    def initial(
        self,
        energy: ActionEnergy,
        low: Tensor,
        high: Tensor,
        generator: torch.Generator | None,
        out: Tensor,
    ) -> Tensor:
        """``out (B, M, A)`` filled with the proposal's samples, clamped to the bounds."""
        propose = getattr(energy, "propose", None)
        if propose is None or not getattr(energy, "has_proposal", False):
            raise ValueError(
                "proposal DFO needs an energy model with a learned proposal (loss 'ranking')"
            )
        samples = propose(out.shape[1], generator)
        return torch.clamp(samples, low, high, out=out)
