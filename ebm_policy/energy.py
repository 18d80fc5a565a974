"""``ModelEnergy``: an energy model's view for inference optimizers (``optimizers.ActionEnergy``).

The observations (images, states or both) are encoded once; every call scores actions with the energy head only, in chunks of at
most ``max_rows`` actions so memory stays bounded for any number of samples. Optimizers see
energies, gradients and prefix energies, never the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from ebm_policy.models import EBMConvMLP, ModelInput
from ebm_policy.workspace import Workspace


def _chunks(b: int, m: int, max_rows: int) -> Iterator[tuple[slice, slice]]:
    """(image slice, sample slice) pieces of a ``(b, m)`` grid with at most ``max_rows`` each."""
    if m <= max_rows:
        per = max(1, max_rows // max(m, 1))
        for i in range(0, b, per):
            yield slice(i, i + per), slice(0, m)
    else:
        for i in range(b):
            for j in range(0, m, max_rows):
                yield slice(i, i + 1), slice(j, j + max_rows)


class ModelEnergy:
    """Energies of encoded observations ``features (B, D)`` under ``model``.

    ``features`` carry no gradient to the model here: optimizers and counter-example chains only
    move the actions.
    """

    def __init__(
        self,
        model: EBMConvMLP,
        features: Tensor,
        max_rows: int,
        workspace: Workspace | None = None,
    ) -> None:
        self.model = model
        self.features = features.detach()
        self.max_rows = max(1, int(max_rows))
        self.workspace = workspace if workspace is not None else Workspace()
        self.batch_size = int(features.shape[0])
        self.action_dim = model.cfg.action_dim
        self.has_prefix_energies = model.prefix_energies
        self.has_proposal = getattr(model, "proposal", None) is not None

    def propose(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples per observation from the model's learned proposal: ``-> (B, n, A)`` in
        ``(-1, 1)``; ``ValueError`` for a model without one."""
        if self.model.proposal is None:
            raise ValueError(
                "this energy model has no learned proposal (loss 'ranking' trains one)"
            )
        return self.model.proposal.sample(self.features, n, generator)

    @classmethod
    def of_observations(
        cls,
        model: EBMConvMLP,
        obs: ModelInput,
        max_elements: int,
        workspace: Workspace | None = None,
        encode_group: int | None = None,
    ) -> ModelEnergy:
        """Encode ``obs`` (the model's input: images ``(B, C, H, W)``, normalized states
        ``(B, S)`` or both) once, ``encode_group`` observations at a time (all at once when
        None); score ``max_elements`` hidden activations per chunk in ``workspace``."""
        parts = obs if isinstance(obs, Mapping) else {"": obs}
        b = int(next(iter(parts.values())).shape[0])
        group = b if encode_group is None else max(1, encode_group)

        def piece(i: int) -> ModelInput:
            if not isinstance(obs, Mapping):
                return obs[i : i + group]
            return {k: v[i : i + group] for k, v in obs.items()}

        with torch.no_grad():
            if b <= group:
                features = model.encode(obs)
            else:
                features = torch.cat([model.encode(piece(i)) for i in range(0, b, group)])
        return cls(model, features, max_elements // model.hidden_width, workspace)

    @classmethod
    def of_images(
        cls,
        model: EBMConvMLP,
        images: ModelInput,
        max_elements: int,
        workspace: Workspace | None = None,
        encode_group: int | None = None,
    ) -> ModelEnergy:
        """``of_observations`` under its first name."""
        return cls.of_observations(model, images, max_elements, workspace, encode_group)

    def __call__(self, actions: Tensor) -> Tensor:
        """``(B, M, A) -> (B, M)`` without autograd."""
        with torch.no_grad():
            return self.model.energy_chunked(self.features, actions, self.max_rows, self.workspace)

    def prefix(self, actions: Tensor) -> Tensor:
        """``(B, M, j) -> E_j (B, M)``; ``ValueError`` unless the model has prefix energies."""
        if not self.has_prefix_energies:
            raise ValueError("this energy model was trained without prefix energies")
        return self(actions)

    def with_grad(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, M, A) -> energies (B, M), dE/da (B, M, A)``, both detached."""
        b, m, _ = actions.shape
        energies = actions.new_empty(b, m)
        grads = torch.empty_like(actions)
        for rows, cols in _chunks(b, m, self.max_rows):
            e, g = self.model.energy_and_grad(self.features[rows], actions[rows, cols])
            energies[rows, cols] = e
            grads[rows, cols] = g
        return energies, grads


class NaiveModelEnergy:
    """The reference's way, for comparison: re-encodes the images at every evaluation and runs
    the concatenated MLP on all ``B * M`` rows at once (``ibc-gym bench dfo``)."""

    def __init__(self, model: EBMConvMLP, images: ModelInput) -> None:
        self.model = model
        self.images = images
        first = images if isinstance(images, Tensor) else next(iter(images.values()))
        self.batch_size = int(first.shape[0])
        self.action_dim = model.cfg.action_dim
        self.has_prefix_energies = False
        self.has_proposal = False

    def __call__(self, actions: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model.forward_naive(self.images, actions)

    def prefix(self, actions: Tensor) -> Tensor:
        raise ValueError("the naive energy has no prefix energies")

    def with_grad(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            a = actions.detach().requires_grad_(True)
            e = self.model.forward_naive(self.images, a)
            (g,) = torch.autograd.grad(e.sum(), a)
        return e.detach(), g
