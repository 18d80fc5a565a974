"""The energy model ``EBMConvMLP`` and the explicit regression baseline ``ExplicitConvMLP``.

Energy convention (everywhere in ``ebm_policy``): LOWER energy = better action. The policy's action
is ``argmin_a E(observation, a)``; InfoNCE uses ``-E`` as the logits; the DFO resamples by
``softmax(-E)``.

Both models observe what their config's ``inputs`` says (``ObservationEncoder``): images (CNN ->
soft-argmax keypoints), a state vector (used as it is: the policy normalizes it), or both
(keypoints and the state concatenated). Model inputs (``ModelInput``) are a tensor, the one input
of an image-only or state-only model, or a mapping ``{"image": (B, C, H, W), "state": (B, S)}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ebm_policy.config import EBMConfig, ExplicitConfig, RankingNCEConfig
from ebm_policy.modules import CNN, MLP, SpatialSoftArgmax
from ebm_policy.proposal import MixtureProposal
from ebm_policy.workspace import Workspace

ModelInput = Tensor | Mapping[str, Tensor]
"""Images ``(B, C, H, W)`` float, states ``(B, S)`` float (normalized), or ``{"image", "state"}``."""


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

    @torch.no_grad()
    def forward_chunked(
        self,
        features: Tensor,
        actions: Tensor,
        max_rows: int,
        workspace: Workspace | None = None,
    ) -> Tensor:
        """Inference-only ``forward``: ``(B, D), (B, M, A) -> (B, M)`` without autograd, scoring at
        most ``max_rows`` actions at a time so memory stays bounded (and, on a CPU, cache-resident)
        for any ``B * M``.

        The first layer is one matmul per chunk with the image's projection folded in as a
        weight row: ``[a, 1] @ [W_a^T; W_f f + b]``, the same sums as adding the projection, without
        a pass that broadcasts it over the chunk. When one image's ``M`` actions fit, whole images
        are scored together (one batched matmul per group, few kernel launches on a GPU);
        otherwise each image's actions are split into chunks of ``max_rows``. Scratch arrays live
        in ``workspace``, so a caller that passes the same one every time allocates them once.
        """
        b, m, a = actions.shape
        out = actions.new_empty(b, m)
        if b == 0 or m == 0:
            return out
        ws = workspace if workspace is not None else Workspace()
        dev, dtype = actions.device, actions.dtype
        d = self.feature_dim
        proj = torch.addmm(self.first.bias, features, self.first.weight[:, :d].t())  # (B, H)
        h = proj.shape[1]
        weights = ws.get("head.weights", (b, a + 1, h), dtype, dev)  # [W_a^T; proj_i] per image
        weights[:, :a] = self.first.weight[:, d:].t()
        weights[:, a] = proj
        inputs = ws.get("head.inputs", (b, m, a + 1), dtype, dev)  # [a, 1]
        inputs[..., :a] = actions
        inputs[..., a] = 1.0
        last = self.rest[-1]
        assert isinstance(last, nn.Linear)  # an MLP ends with its linear output layer
        linear_out = len(self.rest) == 1
        if m <= max_rows:  # whole images per group
            per = max(1, max_rows // m)
            for i in range(0, b, per):
                g = min(per, b - i)
                hidden = ws.get("head.hidden", (g, m, h), dtype, dev)
                torch.bmm(inputs[i : i + g], weights[i : i + g], out=hidden).relu_()
                if linear_out:
                    torch.matmul(hidden, last.weight[0], out=out[i : i + g])
                else:
                    out[i : i + g] = self.rest(hidden).squeeze(-1)
        else:
            rows = ws.get("head.hidden", (max_rows, h), dtype, dev)
            for i in range(b):
                for j in range(0, m, max_rows):
                    chunk = inputs[i, j : j + max_rows]
                    hidden = rows[: chunk.shape[0]]
                    torch.mm(chunk, weights[i], out=hidden).relu_()
                    if linear_out:
                        torch.mv(hidden, last.weight[0], out=out[i, j : j + max_rows])
                    else:
                        out[i, j : j + max_rows] = self.rest(hidden).squeeze(-1)
        return out.add_(last.bias) if linear_out else out

    @torch.no_grad()
    def forward_with_action_grad(self, features: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, D), (B, N, A) -> energies (B, N), dE/d(actions) (B, N, A)`` without autograd.

        With one hidden layer (the default head) the gradient is written out,
        ``W_a^T (w_out * 1[h > 0])``: two matmuls, far cheaper than an autograd pass for the
        small matrices of a Langevin chain. Deeper heads use autograd.
        """
        last = self.rest[-1]
        if not (len(self.rest) == 1 and isinstance(last, nn.Linear)):
            with torch.enable_grad():
                a = actions.detach().requires_grad_(True)
                e = self(features.detach(), a)
                (g,) = torch.autograd.grad(e.sum(), a)
            return e.detach(), g
        d = self.feature_dim
        w_a = self.first.weight[:, d:]  # (H, A)
        proj = torch.addmm(self.first.bias, features, self.first.weight[:, :d].t())  # (B, H)
        hidden = torch.baddbmm(proj.unsqueeze(1), actions, w_a.t().expand(actions.shape[0], -1, -1))
        active = hidden > 0
        w_out = last.weight[0]  # (H,)
        energies = torch.relu_(hidden) @ w_out + last.bias  # (B, N)
        grad = (active * w_out) @ w_a  # (B, N, A)
        return energies, grad

    def forward_concat(self, features: Tensor, actions: Tensor) -> Tensor:
        """``(B, D), (B, N, A) -> (B, N)`` the reference way: concatenate, then the MLP."""
        n = actions.shape[1]
        fused = torch.cat((features.unsqueeze(1).expand(-1, n, -1), actions), dim=-1)  # (B, N, D+A)
        return self.rest(torch.relu(self.first(fused))).squeeze(-1)


class ObservationEncoder(nn.Module):
    """The observation part shared by both models: ``encode(obs) -> features (B, D)``.

    ``D`` is ``2 * cnn.out_channels`` keypoint coordinates for images, ``state_dim`` for states,
    their sum for both (keypoints first). The CNN and soft-argmax are the model's own ``cnn`` and
    ``softargmax`` submodules (absent for a state-only model), so image-only weights keep their
    names in checkpoints.
    """

    def _build_encoder(self, cfg: EBMConfig | ExplicitConfig) -> None:
        self.inputs = cfg.inputs
        self.state_dim = cfg.state_dim
        image_dim = 0
        if cfg.inputs != "state":
            self.cnn = CNN(cfg.backbone.cnn)
            self.softargmax = SpatialSoftArgmax(cfg.backbone.softargmax)
            image_dim = 2 * cfg.backbone.cnn.out_channels
        self.feature_dim = image_dim + cfg.state_dim

    def split_input(self, obs: ModelInput) -> tuple[Tensor | None, Tensor | None]:
        """``obs -> (images or None, states or None)`` as this model's inputs need them;
        ``ValueError`` for a missing part or a state of the wrong size."""
        uses_image, uses_state = self.inputs != "state", self.inputs != "image"
        if isinstance(obs, Mapping):
            missing = [k for k, used in (("image", uses_image), ("state", uses_state)) if used]
            missing = [k for k in missing if k not in obs]
            if missing:
                raise ValueError(
                    f"this model observes {self.inputs!r}; the input lacks {missing} "
                    f"(it has {sorted(obs)})"
                )
            images = obs["image"] if uses_image else None
            states = obs["state"] if uses_state else None
        elif self.inputs == "image_state":
            raise ValueError(
                "this model observes images and states: pass {'image': ..., 'state': ...}"
            )
        else:
            images, states = (obs, None) if uses_image else (None, obs)
        if states is not None and (states.ndim != 2 or states.shape[-1] != self.state_dim):
            raise ValueError(
                f"expected states of shape (B, {self.state_dim}), got {tuple(states.shape)}"
            )
        return images, states

    def encode(self, obs: ModelInput) -> Tensor:
        """``obs -> features (B, D)``: keypoints of the images, the states, or both concatenated."""
        images, states = self.split_input(obs)
        parts = [] if images is None else [self.softargmax(self.cnn(images))]
        if states is not None:
            parts.append(states.to(parts[0].dtype) if parts else states.float())
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class EBMConvMLP(ObservationEncoder):
    """Energy model: CNN -> spatial soft-argmax -> MLP over ``[features, action]`` -> energy.

    ``forward(obs, actions (B, N, A)) -> energies (B, N)``, lower = better; ``obs`` is images
    ``(B, C, H, W)`` by default (``ObservationEncoder``: with ``inputs="state"`` the features are
    the state itself, so the model is an MLP over ``[state, action]``, the paper's state-based
    EBM). Inference encodes each observation once with ``encode`` and scores many actions with
    ``energy``.

    With ``prefix_energies`` the model also scores action prefixes, ``E_j(o, a_1..a_j)``: the
    head's action input is ``[a * m_j, m_j]`` with ``m_j`` the mask of the first ``j``
    dimensions (the full energy is ``j = A``). One network serves every prefix: the encoder and
    the whole MLP are shared and the mask tells the head which prefix it scores, so the model
    has ``A * H`` more weights than a plain one instead of ``A`` separate heads (``A`` times the
    parameters and ``A`` times the weight updates to learn the same encoder-to-action mapping).
    """

    def __init__(
        self,
        cfg: EBMConfig,
        *,
        prefix_energies: bool = False,
        proposal: RankingNCEConfig | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.prefix_energies = prefix_energies
        self._build_encoder(cfg)
        action_in = 2 * cfg.action_dim if prefix_energies else cfg.action_dim
        self.head = EnergyHead(self.feature_dim, action_in, cfg.hidden_dims)
        # ranking NCE's learned proposal q(a | o) over the same features (``proposal.py``)
        self.proposal: MixtureProposal | None = None
        if proposal is not None:
            self.proposal = MixtureProposal(
                self.feature_dim,
                cfg.action_dim,
                proposal.components,
                proposal.proposal_hidden_dims,
            )

    @property
    def hidden_width(self) -> int:
        """Width of the head's first hidden layer (what one scored action costs in memory)."""
        return self.cfg.hidden_dims[0]

    def head_input(self, actions: Tensor) -> Tensor:
        """``prefixes (B, N, j) -> head input (B, N, A or 2A)``: the prefix zero-padded to ``A``
        and its mask, for a prefix model (``j = A`` gives the full energy's input); the
        actions themselves for a plain one."""
        if not self.prefix_energies:
            if actions.shape[-1] != self.cfg.action_dim:
                raise ValueError(
                    f"this energy model scores whole actions of {self.cfg.action_dim} dims, got "
                    f"{actions.shape[-1]} (prefix energies need a model trained with them)"
                )
            return actions
        a, j = self.cfg.action_dim, actions.shape[-1]
        if not 1 <= j <= a:
            raise ValueError(f"prefix of {j} dims for a {a}-dim action")
        pad = actions.new_zeros(*actions.shape[:-1], 2 * a - j)  # a - j zeros, then the mask
        pad[..., a - j : a] = 1.0  # the mask's first j entries
        return torch.cat((actions, pad), dim=-1)

    def proposal_energy(
        self, features: Tensor, actions: Tensor, max_rows: int | None = None
    ) -> Tensor | None:
        """``-log q(a | o)`` of the learned proposal, ``(B, D), (B, N, A) -> (B, N)``, without
        gradient (None for a model without a proposal); with ``max_rows``, in pieces of at most
        that many (action, mixture component) pairs.

        A model with a proposal is a residual energy model: its energy is the head's ``E_head``
        plus ``-log q``, so ``exp(-E) = q exp(-E_head)`` and the head only learns how the
        action density differs from the proposal's (ranking NCE's logits ``-E - log q`` are then
        ``-E_head``)."""
        if self.proposal is None:
            return None
        with torch.no_grad():
            if max_rows is None:
                return -self.proposal.log_prob(features, actions)
            b, n = actions.shape[:2]
            step = max(1, max_rows // max(1, b * self.proposal.components))
            pieces = [
                self.proposal.log_prob(features, actions[:, j : j + step])
                for j in range(0, n, step)
            ]
            return -torch.cat(pieces, dim=1)

    def energy(self, features: Tensor, actions: Tensor) -> Tensor:
        """``features (B, D), actions (B, N, j) -> energies (B, N)`` (``j < A``: prefixes)."""
        energies = self.head(features, self.head_input(actions))
        residual = self.proposal_energy(features, actions)
        return energies if residual is None else energies + residual

    def energy_chunked(
        self, features: Tensor, actions: Tensor, max_rows: int, workspace: Workspace | None = None
    ) -> Tensor:
        """Inference-only ``energy`` in bounded memory: ``(B, D), (B, M, j) -> (B, M)``; the
        hidden activations live in ``workspace`` (see ``EnergyHead.forward_chunked``)."""
        energies = self.head.forward_chunked(
            features, self.head_input(actions), max_rows, workspace
        )
        residual = self.proposal_energy(features, actions, max_rows)
        return energies if residual is None else energies + residual

    def energy_and_grad(self, features: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``features (B, D), actions (B, N, j) -> energies (B, N), dE/da (B, N, j)``, no
        autograd graph (for Langevin chains; the model's weights get no gradient)."""
        energies, grad = self.head.forward_with_action_grad(features, self.head_input(actions))
        grad = grad[..., : actions.shape[-1]]
        if self.proposal is not None:
            with torch.enable_grad():
                a = actions.detach().requires_grad_(True)
                nlq = -self.proposal.log_prob(features.detach(), a)
                (g,) = torch.autograd.grad(nlq.sum(), a)
            energies, grad = energies + nlq.detach(), grad + g
        return energies, grad

    def forward(self, obs: ModelInput, actions: Tensor) -> Tensor:
        """``obs (images (B, C, H, W) ...), actions (B, N, A) -> energies (B, N)``."""
        return self.energy(self.encode(obs), actions)

    def forward_naive(self, obs: ModelInput, actions: Tensor) -> Tensor:
        """Same energies as ``forward`` computed like the reference (concatenated MLP input).

        ``(B, C, H, W), (B, N, A) -> (B, N)``; kept for benchmarks and equivalence tests.
        """
        features = self.encode(obs)
        energies = self.head.forward_concat(features, self.head_input(actions))
        residual = self.proposal_energy(features, actions)
        return energies if residual is None else energies + residual


class ExplicitConvMLP(ObservationEncoder):
    """Regression baseline: the EBM's observation encoder (same inputs), MLP -> action.

    ``forward(obs (images (B, C, H, W) ...)) -> actions (B, A)`` in normalized units.
    """

    def __init__(self, cfg: ExplicitConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._build_encoder(cfg)
        self.mlp = MLP(self.feature_dim, cfg.hidden_dims, cfg.action_dim, dropout=cfg.dropout)

    def forward(self, obs: ModelInput) -> Tensor:
        """``obs (images (B, C, H, W) ...) -> actions (B, A)``."""
        return self.mlp(self.encode(obs))
