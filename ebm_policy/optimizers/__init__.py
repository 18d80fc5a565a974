"""Inference optimizers behind one seam (``base.InferenceOptimizer``), chosen by a tagged config.

Each optimizer module holds its config (with a ``kind``) and its class; ``OPTIMIZERS`` maps the
kind to both. Adding an optimizer means one new module and one line here.
"""

from __future__ import annotations

from typing import Any

from ebm_policy.optimizers.autoregressive import AutoregressiveDFO, AutoregressiveDFOConfig
from ebm_policy.optimizers.base import (
    ActionEnergy,
    AnalyticEnergy,
    InferenceOptimizer,
    SearchHistory,
    check_energies,
)
from ebm_policy.optimizers.dfo import DerivativeFreeOptimizer, DFOConfig, resample_indices
from ebm_policy.optimizers.langevin import (
    LangevinChainConfig,
    LangevinConfig,
    LangevinOptimizer,
    run_chain,
)
from ebm_policy.optimizers.proposal_dfo import ProposalDFO, ProposalDFOConfig

OptimizerConfig = DFOConfig | LangevinConfig | AutoregressiveDFOConfig | ProposalDFOConfig
"""Any inference optimizer's config; its ``kind`` names the optimizer."""

OPTIMIZERS: dict[str, tuple[type, Any]] = {  # kind -> (config class, optimizer class)
    "dfo": (DFOConfig, DerivativeFreeOptimizer),
    "langevin": (LangevinConfig, LangevinOptimizer),
    "autoregressive_dfo": (AutoregressiveDFOConfig, AutoregressiveDFO),
    "proposal_dfo": (ProposalDFOConfig, ProposalDFO),
}


def build_optimizer(cfg: Any) -> InferenceOptimizer:
    """The optimizer a config describes (``ValueError`` naming the valid kinds otherwise)."""
    for config_cls, optimizer_cls in OPTIMIZERS.values():
        if type(cfg) is config_cls:
            return optimizer_cls(cfg)
    raise ValueError(
        f"unknown inference optimizer config {type(cfg).__name__}; choose one of "
        f"{', '.join(OPTIMIZERS)} ({', '.join(c.__name__ for c, _ in OPTIMIZERS.values())})"
    )


def optimizer_config(kind: str, **options: Any) -> Any:
    """``optimizer_config("langevin", num_samples=256)``: a config by kind, with options."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer kind {kind!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[kind][0](**options)


__all__ = [
    "OPTIMIZERS",
    "ActionEnergy",
    "AnalyticEnergy",
    "AutoregressiveDFO",
    "AutoregressiveDFOConfig",
    "DFOConfig",
    "DerivativeFreeOptimizer",
    "InferenceOptimizer",
    "LangevinChainConfig",
    "LangevinConfig",
    "LangevinOptimizer",
    "OptimizerConfig",
    "ProposalDFO",
    "ProposalDFOConfig",
    "SearchHistory",
    "build_optimizer",
    "check_energies",
    "optimizer_config",
    "resample_indices",
    "run_chain",
]
