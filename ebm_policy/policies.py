"""Policies with a narrow, lerobot-style surface: ``forward`` (the training loss) and
``select_action``.

``policy(batch, generator=g)`` (``nn.Module.__call__`` -> ``forward``) returns ``(loss,
metrics)``, so a ``DistributedDataParallel``-wrapped policy synchronizes the gradients of that
loss; ``compute_loss`` is the same call under its older name.

Batches are ``{"image": uint8 (B, H, W, C) channels-last, "action": float32 (B, A)}`` in the
dataset's original action units; policies convert images to float CHW in [0, 1] and actions to the
padded [-1, 1] box themselves, and ``select_action`` answers in original units.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebm_policy.config import ExplicitPolicyConfig, ImplicitPolicyConfig, check_optimizer_fits
from ebm_policy.energy import ModelEnergy
from ebm_policy.losses import split_energies
from ebm_policy.models import EBMConvMLP, ExplicitConvMLP
from ebm_policy.normalize import ActionBounds, ArrayLike
from ebm_policy.objectives import energy_metrics, implicit_loss
from ebm_policy.optimizers import (
    InferenceOptimizer,
    OptimizerConfig,
    SearchHistory,
    build_optimizer,
)
from ebm_policy.runtime import retain_freed_memory_by_default
from ebm_policy.workspace import Workspace

Batch = Mapping[str, Any]


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's global CPU RNG seeded, restoring the caller's state after."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def images_to_tensor(images: Tensor | np.ndarray, device: torch.device, channels: int) -> Tensor:
    """``(B, H, W, C)`` uint8 (or float in [0, 1]) -> float32 ``(B, C, H, W)`` in [0, 1] on
    ``device`` (channels-last memory, which the CPU convolutions run fastest on)."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[-1] != channels:
        raise ValueError(
            f"expected images of shape (B, H, W, {channels}) (channels last), got {tuple(x.shape)}"
        )
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2)  # async from pinned memory
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return x.contiguous(memory_format=torch.channels_last)


class _Policy(nn.Module):
    """Shared parts: config, action bounds buffers, image/action conversion."""

    kind: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any, action_low: ArrayLike, action_high: ArrayLike) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        self.config = config
        self.bounds = ActionBounds(action_low, action_high, config.bounds_padding)
        if self.bounds.action_dim != config.model.action_dim:
            raise ValueError(
                f"action bounds have {self.bounds.action_dim} dims, model.action_dim is "
                f"{config.model.action_dim}"
            )

    @property
    def device(self) -> torch.device:
        return self.bounds.low.device

    def _images(self, images: Tensor | np.ndarray) -> Tensor:
        return images_to_tensor(images, self.device, self.config.model.backbone.cnn.in_channels)

    def _actions(self, actions: Tensor | np.ndarray) -> Tensor:
        """Original units ``(B, A)`` -> normalized float32 on the policy's device."""
        return self.bounds.normalize(
            torch.as_tensor(actions).to(self.device, torch.float32, non_blocking=True)
        )

    def _unit_box(self) -> tuple[Tensor, Tensor]:
        ones = torch.ones(self.bounds.action_dim, device=self.device)
        return -ones, ones

    def compute_loss(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """``self(batch, generator=generator)``: the training loss (see ``forward``)."""
        return self(batch, generator=generator)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], map_location: str = "cpu") -> Any:
        """Rebuild a policy of this class from a checkpoint (``CheckpointError`` on another kind)."""
        from ebm_policy.checkpoint import load_policy

        return load_policy(path, kind=cls.kind, map_location=map_location)


class ImplicitPolicy(_Policy):
    """Energy-based policy: ``argmin_a E(image, a)`` by an inference optimizer.

    Energies are LOWER for better actions. ``config.loss`` says how the energy is trained,
    ``config.optimizer`` how ``select_action`` searches it; another optimizer can be passed per
    call (``select_action(images, optimizer=LangevinConfig())``) or when loading
    (``load_policy(path, optimizer=...)``). The policy itself is never changed.
    """

    kind: ClassVar[str] = "implicit"
    config_class: ClassVar[type] = ImplicitPolicyConfig
    config: ImplicitPolicyConfig

    def __init__(
        self,
        config: ImplicitPolicyConfig,
        action_low: ArrayLike,
        action_high: ArrayLike,
        *,
        seed: int | None = None,
    ) -> None:
        """``seed`` makes the weight initialization reproducible without touching global RNG."""
        super().__init__(config, action_low, action_high)
        with seeded(seed):
            self.model = EBMConvMLP(config.model, prefix_energies=config.prefix_energies)
        self.optimizer = build_optimizer(config.optimizer)
        self._optimizers: dict[OptimizerConfig, InferenceOptimizer] = {}  # built per call config
        self.workspace = Workspace()  # the energy head's scratch activations, reused

    def _loss_terms(
        self, batch: Batch, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        low, high = self._unit_box()
        return implicit_loss(
            self.config.loss,
            self.model,
            self._images(batch["image"]),
            self._actions(batch["action"]),
            low,
            high,
            generator,
        )

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """The configured objective (``objectives``): ``batch {"image": (B, H, W, C),
        "action": (B, A)} -> (loss (), metrics)``.

        ``generator`` draws the counter-examples, chains and the positive's index (global RNG
        if None).
        """
        loss, energies, labels, extra = self._loss_terms(batch, generator)
        metrics = {"train/loss": loss.item(), **energy_metrics(energies, labels)}
        metrics.update({k: float(v) for k, v in extra.items()})
        return loss, metrics

    def energy_samples(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> dict[str, np.ndarray]:
        """Energies of the expert actions ``"positive" (B,)`` and of fresh counter-examples
        ``"negative" (B, N)``, as the loss sees them (for energy-separation plots)."""
        _, energies, labels, _ = self._loss_terms(batch, generator)
        pos, neg = split_energies(energies.detach(), labels)
        return {"positive": pos.cpu().numpy(), "negative": neg.cpu().numpy()}

    @torch.no_grad()
    def energy(self, images: Tensor | np.ndarray, actions: Tensor | np.ndarray) -> Tensor:
        """Energies of given actions: ``images (B, H, W, C), actions (B, N, A) -> (B, N)``.

        Actions are in original units (e.g. a grid for an energy landscape plot).
        """
        return self.model(self._images(images), self._actions(actions))

    def action_energy(self, images: Tensor | np.ndarray) -> ModelEnergy:
        """The energy over normalized actions of ``images (B, H, W, C)``, encoded once, as
        inference optimizers see it (``optimizers.ActionEnergy``)."""
        x = self._images(images)
        return ModelEnergy.of_images(
            self.model,
            x,
            self.config.chunk_elements(x.device.type),
            self.workspace,
            self.config.encode_group_size(x.device.type),
        )

    def resolve_optimizer(self, optimizer: OptimizerConfig | None = None) -> InferenceOptimizer:
        """The policy's optimizer, or the one ``optimizer`` describes if this model can use it."""
        if optimizer is None:
            return self.optimizer
        built = self._optimizers.get(optimizer)
        if built is None:
            check_optimizer_fits(optimizer, self.config.loss)
            built = self._optimizers[optimizer] = build_optimizer(optimizer)
        return built

    @torch.no_grad()
    def select_action(
        self,
        images: Tensor | np.ndarray,
        generator: torch.Generator | None = None,
        *,
        optimizer: OptimizerConfig | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, SearchHistory]:
        """``images (B, H, W, C) uint8 -> actions (B, A)`` in original units.

        ``optimizer`` (a config) replaces the policy's inference optimizer for this call.
        ``return_history`` also returns the searched populations (samples in original units).
        """
        low, high = self._unit_box()
        if low.device.type == "cpu":
            retain_freed_memory_by_default()  # steady latency: see ``ebm_policy.runtime``
        out = self.resolve_optimizer(optimizer).infer(
            self.action_energy(images),
            low,
            high,
            generator=generator,
            return_history=return_history,
        )
        if isinstance(out, tuple):
            best, hist = out
            samples = [self.bounds.unnormalize(s) for s in hist.samples]
            return self.bounds.unnormalize(best), SearchHistory(samples, hist.energies)
        return self.bounds.unnormalize(out)


class ExplicitPolicy(_Policy):
    """Regression baseline: the same backbone predicts the action directly, trained with MSE."""

    kind: ClassVar[str] = "explicit"
    config_class: ClassVar[type] = ExplicitPolicyConfig
    config: ExplicitPolicyConfig

    def __init__(
        self,
        config: ExplicitPolicyConfig,
        action_low: ArrayLike,
        action_high: ArrayLike,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__(config, action_low, action_high)
        with seeded(seed):
            self.model = ExplicitConvMLP(config.model)

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """MSE in normalized units: ``batch {"image": (B, H, W, C), "action": (B, A)} -> (loss
        (), metrics)``. ``generator`` is unused (dropout draws from torch's global RNG, which the
        trainer seeds per rank and checkpoints)."""
        pred = self.model(self._images(batch["image"]))
        loss = F.mse_loss(pred, self._actions(batch["action"]))
        return loss, {"train/loss": loss.item()}

    @torch.inference_mode()
    def select_action(
        self, images: Tensor | np.ndarray, generator: torch.Generator | None = None
    ) -> Tensor:
        """``images (B, H, W, C) uint8 -> actions (B, A)`` in original units (dropout off),
        clamped to the padded bounds."""
        was_training = self.training
        self.eval()
        try:
            pred = self.model(self._images(images)).clamp(-1.0, 1.0)
        finally:
            self.train(was_training)
        return self.bounds.unnormalize(pred)


POLICY_CLASSES: dict[str, type[_Policy]] = {"implicit": ImplicitPolicy, "explicit": ExplicitPolicy}
Policy = ImplicitPolicy | ExplicitPolicy
