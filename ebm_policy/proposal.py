"""A learned proposal ``q(a | o)`` over normalized actions: a mixture of diagonal Gaussians on
``z``, squashed into the box by ``a = tanh(z)``.

``log q(a) = logsumexp_k [log pi_k + sum_d log N(z_d; mu_kd, sigma_kd)] - sum_d log(1 - a_d^2)``
with ``z = atanh(a)`` (change of variables), so the density of any action inside ``(-1, 1)^A``
is exact and every sample lies inside the box. Ranking NCE (``objectives.ranking_nce``) fits it
to the expert actions by maximum likelihood and corrects the energies' logits by its
log-density.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_STD_RANGE = (-5.0, 1.0)  # sigma in [0.007, 2.7] in z units
EDGE = 1e-6  # actions are kept this far inside (-1, 1) before atanh


class MixtureProposal(nn.Module):
    """``features (B, D) ->`` a ``components``-Gaussian mixture over ``action_dim`` tanh-squashed
    dimensions: ``log_prob(features, actions (B, N, A)) -> (B, N)``, ``sample(features, n) -> (B,
    n, A)`` in ``(-1, 1)``."""

    def __init__(
        self, feature_dim: int, action_dim: int, components: int, hidden_dims: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.action_dim, self.components = action_dim, components
        layers: list[nn.Module] = []
        width = feature_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Linear(width, components * (1 + 2 * action_dim))

    def mixture(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``features (B, D) -> log weights (B, K), means (B, K, A), log stds (B, K, A)``."""
        b, k, a = features.shape[0], self.components, self.action_dim
        out = self.out(self.trunk(features))
        logits, mean, log_std = out.split((k, k * a, k * a), dim=-1)
        log_std = log_std.clamp(*LOG_STD_RANGE)
        return F.log_softmax(logits, dim=-1), mean.view(b, k, a), log_std.view(b, k, a)

    def log_prob(self, features: Tensor, actions: Tensor) -> Tensor:
        """``features (B, D), actions (B, N, A) in (-1, 1) -> log q (B, N)``."""
        log_w, mean, log_std = self.mixture(features)
        a = actions.clamp(-1 + EDGE, 1 - EDGE)
        z = torch.atanh(a)  # (B, N, A)
        diff = (z.unsqueeze(2) - mean.unsqueeze(1)) / log_std.exp().unsqueeze(1)  # (B, N, K, A)
        log_n = -0.5 * diff.square() - log_std.unsqueeze(1) - 0.5 * math.log(2 * math.pi)
        log_z = torch.logsumexp(log_w.unsqueeze(1) + log_n.sum(-1), dim=-1)  # (B, N)
        return log_z - torch.log1p(-a.square()).sum(-1)

    @torch.no_grad()
    def sample(self, features: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``features (B, D) -> n samples (B, n, A)`` in ``(-1, 1)``, drawn with ``generator``."""
        log_w, mean, log_std = self.mixture(features)
        b, k, a = mean.shape
        comp = torch.multinomial(log_w.exp(), n, replacement=True, generator=generator)  # (B, n)
        idx = comp.unsqueeze(-1).expand(b, n, a)
        mu, std = mean.gather(1, idx), log_std.exp().gather(1, idx)
        eps = torch.randn((b, n, a), generator=generator, device=mean.device, dtype=mean.dtype)
        return torch.tanh(mu + std * eps)
