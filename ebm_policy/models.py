"""The energy model ``EBMConvMLP`` and the explicit regression baseline ``ExplicitConvMLP``.

Energy convention (everywhere in ``ebm_policy``): LOWER energy = better action. The policy's action
is ``argmin_a E(image, a)``; InfoNCE uses ``-E`` as the logits; the DFO resamples by
``softmax(-E)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ebm_policy.config import EBMConfig, ExplicitConfig
from ebm_policy.modules import CNN, MLP, SpatialSoftArgmax


class EnergyHead(nn.Module):
    """MLP over ``[features, action]`` giving one energy per action.

    The first layer is one ``Linear(D + A, H)`` (the concatenation layout), but ``forward`` applies
    it split: ``features @ W_f`` once per image, ``actions @ W_a`` per candidate, which is
    mathematically identical to concatenating and saves ``N`` copies of the features.
    """

    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        if not hidden_dims:
            raise ValueError("the energy MLP needs at least one hidden layer")
        self.feature_dim = feature_dim
        self.action_dim = action_dim
        self.first = nn.Linear(feature_dim + action_dim, hidden_dims[0])
        self.rest = MLP(hidden_dims[0], tuple(hidden_dims[1:]), 1)

    def forward(self, features: Tensor, actions: Tensor) -> Tensor:
        """``features (B, D), actions (B, N, A) -> energies (B, N)`` (split first layer)."""
        d = self.feature_dim
        w_f = self.first.weight[:, :d]  # (H, D)
        w_a = self.first.weight[:, d:]  # (H, A)
        proj = torch.addmm(self.first.bias, features, w_f.t())  # (B, H)
        b = actions.shape[0]
        hidden = torch.baddbmm(proj.unsqueeze(1), actions, w_a.t().expand(b, -1, -1))  # (B, N, H)
        return self.rest(torch.relu_(hidden)).squeeze(-1)

    def forward_chunked(self, features: Tensor, actions: Tensor, max_rows: int) -> Tensor:
        """Inference-only ``forward``: ``(B, D), (B, M, A) -> (B, M)`` without autograd, scoring at
        most ``max_rows`` actions at a time so memory stays bounded (and, on a CPU, cache-resident)
        for any ``B * M``.

        When one image's ``M`` actions fit, whole images are scored together (one batched matmul
        per group, few kernel launches on a GPU); otherwise each image's actions are split into
        chunks of ``max_rows`` scored in a reused workspace.
        """
        b, m, _ = actions.shape
        if b == 0 or m == 0:
            return actions.new_empty(b, m)
        if m <= max_rows:  # whole images per group: plain ``forward`` on slices of the batch
            per = max(1, max_rows // m)
            return torch.cat([self(features[i : i + per], actions[i : i + per]) for i in range(0, b, per)])
        d = self.feature_dim
        w_a_t = self.first.weight[:, d:].t()  # (A, H)
        proj = torch.addmm(self.first.bias, features, self.first.weight[:, :d].t())  # (B, H)
        workspace = proj.new_empty(max_rows, proj.shape[1])
        out = proj.new_empty(b, m)
        last = self.rest[-1]
        linear_out = len(self.rest) == 1 and isinstance(last, nn.Linear)
        for i in range(b):
            for j in range(0, m, max_rows):
                chunk = actions[i, j : j + max_rows]
                hidden = workspace[: chunk.shape[0]]
                torch.addmm(proj[i], chunk, w_a_t, out=hidden).relu_()
                if linear_out:
                    torch.mv(hidden, last.weight[0], out=out[i, j : j + max_rows])
                else:
                    out[i, j : j + max_rows] = self.rest(hidden).squeeze(-1)
        return out.add_(last.bias) if linear_out else out

    def forward_concat(self, features: Tensor, actions: Tensor) -> Tensor:
        """``(B, D), (B, N, A) -> (B, N)`` the reference way: concatenate, then the MLP."""
        n = actions.shape[1]
        fused = torch.cat((features.unsqueeze(1).expand(-1, n, -1), actions), dim=-1)  # (B, N, D+A)
        return self.rest(torch.relu(self.first(fused))).squeeze(-1)


class EBMConvMLP(nn.Module):
    """Energy model: CNN -> spatial soft-argmax -> MLP over ``[features, action]`` -> energy.

    ``forward(images (B, C, H, W), actions (B, N, A)) -> energies (B, N)``, lower = better.
    Inference encodes each image once with ``encode`` and scores many actions with ``energy``.
    """

    def __init__(self, cfg: EBMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cnn = CNN(cfg.cnn)
        self.softargmax = SpatialSoftArgmax(cfg.softargmax)
        self.feature_dim = 2 * cfg.cnn.out_channels
        self.head = EnergyHead(self.feature_dim, cfg.action_dim, cfg.hidden_dims)

    def encode(self, images: Tensor) -> Tensor:
        """``images (B, C, H, W) float -> features (B, D)``, D = 2 * cnn.out_channels."""
        return self.softargmax(self.cnn(images))

    def energy(self, features: Tensor, actions: Tensor) -> Tensor:
        """``features (B, D), actions (B, N, A) -> energies (B, N)``."""
        return self.head(features, actions)

    def energy_chunked(self, features: Tensor, actions: Tensor, max_rows: int) -> Tensor:
        """Inference-only ``energy`` in bounded memory: ``(B, D), (B, M, A) -> (B, M)``."""
        return self.head.forward_chunked(features, actions, max_rows)

    def forward(self, images: Tensor, actions: Tensor) -> Tensor:
        """``images (B, C, H, W), actions (B, N, A) -> energies (B, N)``."""
        return self.energy(self.encode(images), actions)

    def forward_naive(self, images: Tensor, actions: Tensor) -> Tensor:
        """Same energies as ``forward`` computed like the reference (concatenated MLP input).

        ``(B, C, H, W), (B, N, A) -> (B, N)``; kept for benchmarks and equivalence tests.
        """
        return self.head.forward_concat(self.encode(images), actions)


class ExplicitConvMLP(nn.Module):
    """Regression baseline: same CNN + soft-argmax backbone, MLP -> action.

    ``forward(images (B, C, H, W)) -> actions (B, A)`` in normalized units.
    """

    def __init__(self, cfg: ExplicitConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cnn = CNN(cfg.cnn)
        self.softargmax = SpatialSoftArgmax(cfg.softargmax)
        self.feature_dim = 2 * cfg.cnn.out_channels
        self.mlp = MLP(self.feature_dim, cfg.hidden_dims, cfg.action_dim, dropout=cfg.dropout)

    def encode(self, images: Tensor) -> Tensor:
        """``images (B, C, H, W) float -> features (B, D)``."""
        return self.softargmax(self.cnn(images))

    def forward(self, images: Tensor) -> Tensor:
        """``images (B, C, H, W) -> actions (B, A)``."""
        return self.mlp(self.encode(images))
