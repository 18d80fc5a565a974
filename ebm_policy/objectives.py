"""Training objectives of the implicit policy, one per loss config ``kind``.

An objective maps a batch to ``(loss, energies, labels, metrics)``: ``energies (B, N + 1)`` are
the full-action energies of the expert action (at index ``labels (B,)``) and its counter-examples,
which the energy-separation snapshots plot.

- ``infonce``: uniform counter-examples (the reference's training; pairs with DFO).
- ``langevin``: counter-examples are the final samples of Langevin chains started uniform on the
  current model (the chain is not differentiated), plus the gradient penalty on the expert action
  and the counter-examples (google-research/ibc; pairs with Langevin inference).
- ``autoregressive``: one InfoNCE term per action prefix ``a_1..a_j``, averaged over ``j``. Each
  term scores the expert's prefix against the same uniform counter-examples cut to ``j``
  dimensions, so ``E_j`` learns the marginal energy of the first ``j`` dimensions, which is what
  autoregressive DFO resamples by before the later dimensions are drawn.
- ``perturbed``: counter-examples are the expert action plus Gaussian noise at several scales
  (and a fraction uniform); plain InfoNCE over them (pairs with DFO).
- ``ranking``: ranking NCE with the model's learned proposal ``q``: counter-examples are samples
  of ``q`` and the logits ``-E - log q``; plus ``q``'s negative log-likelihood of the expert action
  (pairs with proposal DFO). The model's energy is residual, ``E = E_head - log q``
  (``EBMConvMLP.proposal_energy``), so the head learns only the correction to ``q``: a sharp ``q``
  (near-deterministic experts) would otherwise ask the head to reproduce ``-log q``'s peaks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ebm_policy.config import (
    AutoregressiveInfoNCEConfig,
    InfoNCEConfig,
    LangevinInfoNCEConfig,
    PerturbedInfoNCEConfig,
    RankingNCEConfig,
)
from ebm_policy.energy import ModelEnergy
from ebm_policy.losses import (
    gradient_penalty,
    info_nce_loss,
    make_candidates,
    mix_in_positives,
    perturbed_negatives,
    ranking_nce_loss,
    sample_uniform,
    split_energies,
)
from ebm_policy.models import EBMConvMLP, ModelInput
from ebm_policy.optimizers import run_chain

Objective = Callable[..., tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]]


def uniform_infonce(
    cfg: InfoNCEConfig,
    model: EBMConvMLP,
    obs: ModelInput,
    positives: Tensor,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """InfoNCE over ``num_counter_examples`` uniform counter-examples."""
    candidates, labels = make_candidates(positives, cfg.num_counter_examples, low, high, generator)
    energies = model(obs, candidates)
    return info_nce_loss(energies, labels), energies, labels, {}


def langevin_infonce(
    cfg: LangevinInfoNCEConfig,
    model: EBMConvMLP,
    obs: ModelInput,
    positives: Tensor,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """InfoNCE over chain-refined counter-examples + ``penalty_weight`` x gradient penalty."""
    features = model.encode(obs)
    b, a = positives.shape
    start = sample_uniform((b, cfg.num_counter_examples, a), low, high, generator)
    chain_energy = ModelEnergy(model, features, max_rows=1 << 30)  # features detached inside
    negatives = run_chain(chain_energy, start, low, high, cfg.chain, generator)
    candidates, labels = mix_in_positives(positives, negatives, generator)
    candidates = candidates.detach().requires_grad_(cfg.penalty_weight > 0)
    energies = model.energy(features, candidates)
    nce = info_nce_loss(energies, labels)
    if cfg.penalty_weight == 0:
        return nce, energies, labels, {"train/infonce": nce.detach()}
    (grads,) = torch.autograd.grad(energies.sum(), candidates, create_graph=True)
    penalty = gradient_penalty(grads, cfg.penalty_margin)
    metrics = {
        "train/infonce": nce.detach(),
        "train/grad_penalty": penalty.detach(),
        "train/grad_inf_norm": grads.detach().abs().amax(dim=-1).mean(),
    }
    return nce + cfg.penalty_weight * penalty, energies, labels, metrics


def prefix_infonce(
    cfg: AutoregressiveInfoNCEConfig,
    model: EBMConvMLP,
    obs: ModelInput,
    positives: Tensor,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Mean over ``j`` of InfoNCE on prefixes of length ``j``: ``K`` counter-examples per term,
    the first ``K - n_c`` uniform prefixes (shared by the terms), the last ``n_c =
    round(conditional_fraction * K)`` the expert's ``a_1..a_{j-1}`` with a uniform ``a_j``."""
    features = model.encode(obs)
    b, a = positives.shape
    k = cfg.num_counter_examples
    n_cond = round(cfg.conditional_fraction * k)
    negatives = sample_uniform((b, k, a), low, high, generator)
    terms = []
    energies = negatives.new_empty(0)
    order = torch.rand((b, k + 1), generator=generator, device=positives.device).argsort(dim=1)
    labels = (order == 0).to(torch.int64).argmax(dim=1)
    for j in range(1, a + 1):
        neg_j = negatives[..., :j].clone()
        if n_cond:
            neg_j[:, k - n_cond :, : j - 1] = positives[:, None, : j - 1]
        candidates_j = torch.cat((positives[:, None, :j], neg_j), dim=1)  # positive at index 0
        candidates_j = candidates_j.gather(1, order.unsqueeze(-1).expand(-1, -1, j))
        energies = model.energy(features, candidates_j)
        terms.append(info_nce_loss(energies, labels))
    loss = torch.stack(terms).mean()
    metrics = {"train/infonce_first": terms[0].detach(), "train/infonce_full": terms[-1].detach()}
    return loss, energies, labels, metrics  # energies of the last (full) prefix


def perturbed_infonce(
    cfg: PerturbedInfoNCEConfig,
    model: EBMConvMLP,
    obs: ModelInput,
    positives: Tensor,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """InfoNCE over perturbations of the expert action (``losses.perturbed_negatives``)."""
    negatives = perturbed_negatives(
        positives, cfg.num_counter_examples, cfg.scales, cfg.uniform_fraction, low, high, generator
    )
    candidates, labels = mix_in_positives(positives, negatives, generator)
    energies = model(obs, candidates)
    return info_nce_loss(energies, labels), energies, labels, {}


def ranking_nce(
    cfg: RankingNCEConfig,
    model: EBMConvMLP,
    obs: ModelInput,
    positives: Tensor,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Ranking NCE over ``num_counter_examples`` samples of the learned proposal ``q`` +
    ``proposal_weight`` x ``q``'s negative log-likelihood of the expert actions.

    The proposal is trained only by its likelihood term (its log-densities in the logits are
    constants to the ranking loss); its gradient reaches the shared observation encoder too."""
    proposal = model.proposal
    if proposal is None:
        raise ValueError("loss 'ranking' needs a model built with a proposal")
    features = model.encode(obs)
    nll = -proposal.log_prob(features, positives.unsqueeze(1)).mean()
    negatives = proposal.sample(features, cfg.num_counter_examples, generator)  # in the box
    candidates, labels = mix_in_positives(positives, negatives, generator)
    residual = model.proposal_energy(features, candidates)  # -log q, no gradient
    assert residual is not None
    energies = model.head(features, model.head_input(candidates)) + residual  # = model.energy
    rank = ranking_nce_loss(energies, -residual, labels)
    metrics = {"train/ranking_nce": rank.detach(), "train/proposal_nll": nll.detach()}
    return rank + cfg.proposal_weight * nll, energies, labels, metrics


OBJECTIVES: dict[type, Objective] = {
    InfoNCEConfig: uniform_infonce,
    LangevinInfoNCEConfig: langevin_infonce,
    AutoregressiveInfoNCEConfig: prefix_infonce,
    PerturbedInfoNCEConfig: perturbed_infonce,
    RankingNCEConfig: ranking_nce,
}


def implicit_loss(
    cfg: Any,
    model: EBMConvMLP,
    obs: ModelInput,
    positives: Tensor,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """The objective ``cfg`` names: ``obs`` (the model's input, e.g. images ``(B, C, H, W)``),
    ``positives (B, A) -> (loss,
    energies (B, N + 1), labels (B,), metrics)``."""
    objective = OBJECTIVES.get(type(cfg))
    if objective is None:
        raise ValueError(f"unknown loss config {type(cfg).__name__}")
    return objective(cfg, model, obs, positives, low, high, generator)


def energy_metrics(energies: Tensor, labels: Tensor) -> dict[str, float]:
    """Positive vs counter-example energies as logged (``train/energy_pos`` ...)."""
    with torch.no_grad():
        pos, neg = split_energies(energies, labels)
        return {
            "train/energy_pos": pos.mean().item(),
            "train/energy_neg": neg.mean().item(),
            "train/pos_is_argmin": (energies.argmin(dim=1) == labels).float().mean().item(),
        }
