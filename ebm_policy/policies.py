"""Policies with a narrow, lerobot-style surface: ``forward`` (the training loss) and
``select_action``.

``policy(batch, generator=g)`` (``nn.Module.__call__`` -> ``forward``) returns ``(loss,
metrics)``, so a ``DistributedDataParallel``-wrapped policy synchronizes the gradients of that
loss; ``compute_loss`` is the same call under its older name.

Batches are ``{"image": uint8 (B, H, W, C) channels-last, "state": float32 (B, S), "action":
float32 (B, A)}`` in the dataset's original units, with the observation keys the model's
``inputs`` uses (``"image"``, ``"state"`` or both; ``config.model.inputs``); policies convert
images to float CHW in [0, 1], states to zero mean and unit variance (the dataset's statistics,
kept in the weights like the action bounds) and actions to the padded [-1, 1] box themselves, and
``select_action`` answers in original units.

Observations at inference (``select_action``, ``energy``, ``action_energy``) are the same:
positionally an array of images (or of states, for a state-only policy) or a mapping with the
batch's keys; ``select_action`` also takes ``images=`` / ``states=`` keywords.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, NamedTuple, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebm_policy.config import ExplicitPolicyConfig, ImplicitPolicyConfig, check_optimizer_fits
from ebm_policy.datasets import observed_inputs
from ebm_policy.energy import ModelEnergy
from ebm_policy.losses import split_energies
from ebm_policy.models import EBMConvMLP, ExplicitConvMLP, ModelInput
from ebm_policy.normalize import (
    ActionBounds,
    ArrayLike,
    StateNormalizer,
    action_bounds_from_dataset,
    state_stats_from_dataset,
)
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
Array = Tensor | np.ndarray
Observation = Array | Mapping[str, Array]
"""Images ``(B, H, W, C)`` (or states ``(B, S)`` for a state-only policy), or a mapping with the
keys ``"image"`` and/or ``"state"``."""
Actions = Tensor | np.ndarray
"""What ``select_action`` answers: the kind of array it was given (numpy in, numpy out)."""


class Given(NamedTuple):
    """How an observation was given: as numpy arrays (else torch tensors), and unbatched."""

    numpy: bool
    single: bool

    def answer(self, actions: Tensor) -> Actions:
        """``actions (B, A)`` -> the same kind of array as the observation: ``(A,)`` for one."""
        out = actions[0] if self.single else actions
        return out.cpu().numpy() if self.numpy else out


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


P = TypeVar("P", bound="_Policy")


class _Policy(nn.Module):
    """Shared parts: config, action bounds and state statistics buffers, observation/action
    conversion."""

    kind: ClassVar[str]
    config_class: ClassVar[type[Any]]

    def __init__(
        self,
        config: Any,
        action_low: ArrayLike,
        action_high: ArrayLike,
        *,
        state_mean: ArrayLike | None = None,
        state_std: ArrayLike | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        self.bounds = ActionBounds(action_low, action_high, config.bounds_padding)
        self.horizon = int(config.chunk.horizon)
        flat_dim = self.bounds.action_dim * self.horizon
        if flat_dim != config.model.action_dim:
            # the bounds say how many dimensions an action has and the model sees a chunk of
            # ``horizon`` of them (``action_dim`` is not a setting users choose: ``ibc-gym
            # train`` takes it from the dataset the same way)
            model = dataclasses.replace(config.model, action_dim=flat_dim)
            config = dataclasses.replace(config, model=model)
        self.config = config
        self.source: str | None = None  # the checkpoint it was loaded from (for error messages)
        d = config.model.state_dim
        self.state_norm: StateNormalizer | None = None
        if d:
            self.state_norm = StateNormalizer(
                np.zeros(d) if state_mean is None else state_mean,
                np.ones(d) if state_std is None else state_std,
            )
            if self.state_norm.state_dim != d:
                raise ValueError(
                    f"state statistics have {self.state_norm.state_dim} dims, model.state_dim is {d}"
                )
        elif state_mean is not None or state_std is not None:
            raise ValueError(f"model inputs {config.model.inputs!r} take no state statistics")

    @property
    def device(self) -> torch.device:
        return self.bounds.low.device

    @property
    def inputs(self) -> str:
        """What the policy observes: ``"image"``, ``"state"`` or ``"image_state"``."""
        return str(self.config.model.inputs)

    @property
    def state_dim(self) -> int:
        """Dimensions of the state input (0: none)."""
        return int(self.config.model.state_dim)

    def _images(self, images: Tensor | np.ndarray) -> Tensor:
        return images_to_tensor(images, self.device, self.config.model.backbone.cnn.in_channels)

    def _states(self, states: Array) -> Tensor:
        """Original units ``(B, S)`` -> normalized float32 on the policy's device."""
        x = torch.as_tensor(states)
        assert self.state_norm is not None
        if x.ndim != 2 or x.shape[-1] != self.state_dim:
            where = f"{self.source}: " if self.source else ""
            raise ValueError(
                f"{where}this policy was trained on {self.state_dim}-dim states, got states of "
                f"shape {tuple(x.shape)} (expected (B, {self.state_dim}))"
            )
        return self.state_norm.normalize(x.to(self.device, torch.float32, non_blocking=True))

    def _model_input(self, images: Array | None, states: Array | None) -> ModelInput:
        """Raw observation parts -> the model's input (``ValueError`` for a missing part)."""
        out: dict[str, Tensor] = {}
        for key, value, convert in (
            ("image", images, self._images),
            ("state", states, self._states),
        ):
            if self.inputs in (key, "image_state"):
                if value is None:
                    raise ValueError(
                        f"this policy observes {self.inputs!r}, but no {key} was given"
                    )
                out[key] = convert(value)  # type: ignore[operator]
        return out

    def _batch_input(self, batch: Batch) -> ModelInput:
        return self._model_input(batch.get("image"), batch.get("state"))

    def _observation_input(
        self, observation: Observation | None, images: Array | None, states: Array | None
    ) -> tuple[ModelInput, Given]:
        """``select_action``'s observation arguments -> (the model's input, how they were given).

        One observation (an image ``(H, W, C)``, a state ``(S,)``) becomes a batch of one."""
        if observation is not None:
            if images is not None:
                raise TypeError("pass the images once: positionally or as images=")
            if isinstance(observation, Mapping):
                if states is not None and "state" in observation:
                    raise TypeError("pass the states once: in the observation or as states=")
                images, states = observation.get("image"), observation.get("state", states)
            elif self.inputs == "state":
                if states is not None:
                    raise TypeError("pass the states once: positionally or as states=")
                states = observation
            else:
                images = observation
        parts = [x for x in (images, states) if x is not None]
        as_numpy = bool(parts) and not any(isinstance(x, Tensor) for x in parts)
        single = [np.ndim(x) == n for x, n in ((images, 3), (states, 1)) if x is not None]
        if len(set(single)) > 1:
            raise ValueError(
                "give one image with one state, or a batch of each: got image shape "
                f"{tuple(np.shape(images))} and state shape {tuple(np.shape(states))}"  # type: ignore[arg-type]
            )
        one = bool(single) and single[0]
        if one:
            images = None if images is None else images[None]
            states = None if states is None else states[None]
        return self._model_input(images, states), Given(as_numpy, one)

    @property
    def action_dim(self) -> int:
        """Dimensions of one action (a chunk has ``horizon`` of them)."""
        return self.bounds.action_dim

    def _actions(self, actions: Tensor | np.ndarray) -> Tensor:
        """Original units ``(..., A)``, or chunks ``(..., H, A)`` -> normalized float32
        ``(..., H * A)`` on the policy's device (a single action per row when ``H = 1``)."""
        x = torch.as_tensor(actions).to(self.device, torch.float32, non_blocking=True)
        a, h = self.action_dim, self.horizon
        if h > 1:
            if x.ndim < 2 or tuple(x.shape[-2:]) != (h, a):
                raise ValueError(
                    f"this policy predicts chunks of {h} actions of {a} dims: expected actions of "
                    f"shape (..., {h}, {a}), got {tuple(x.shape)}"
                )
            x = x.flatten(-2)
        elif x.shape[-1] != a:
            raise ValueError(f"expected actions of {a} dims, got shape {tuple(x.shape)}")
        return self.bounds.normalize(x.view(*x.shape[:-1], h, a)).flatten(-2)

    def _chunks(self, normalized: Tensor) -> Tensor:
        """Normalized ``(..., H * A)`` -> chunks in original units ``(..., H, A)``."""
        x = normalized.view(*normalized.shape[:-1], self.horizon, self.action_dim)
        return self.bounds.unnormalize(x)

    def _unit_box(self) -> tuple[Tensor, Tensor]:
        ones = torch.ones(self.action_dim * self.horizon, device=self.device)
        return -ones, ones

    def compute_loss(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """``self(batch, generator=generator)``: the training loss (see ``forward``)."""
        return self(batch, generator=generator)

    @classmethod
    def for_dataset(
        cls: type[P], dataset: Any, config: Any = None, *, seed: int | None = None
    ) -> P:
        """A new policy of this class for ``dataset`` (see ``ebm_policy.datasets``): ``config``
        (default: this class's default config) with the dataset's action bounds, observed inputs
        (``model.inputs``, ``model.state_dim``, the image channels) and state statistics."""
        config = cls.config_class() if config is None else config
        if not isinstance(config, cls.config_class):
            raise TypeError(f"{cls.__name__} needs a {cls.config_class.__name__}")
        low, high = action_bounds_from_dataset(dataset)
        observed = observed_inputs(dataset)
        model = dataclasses.replace(
            config.model, inputs=observed.inputs, state_dim=observed.state_dim
        )
        channels = observed.image_channels
        if channels is not None and channels != model.backbone.cnn.in_channels:
            cnn = dataclasses.replace(model.backbone.cnn, in_channels=channels)
            backbone = dataclasses.replace(model.backbone, cnn=cnn)
            model = dataclasses.replace(model, backbone=backbone)
        mean, std = state_stats_from_dataset(dataset) if observed.state_dim else (None, None)
        config = dataclasses.replace(config, model=model)
        make = cast(Any, cls)  # the subclasses' __init__ take the seed
        policy: P = make(config, low, high, state_mean=mean, state_std=std, seed=seed)
        return policy

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], map_location: str = "cpu") -> Any:
        """Rebuild a policy of this class from a checkpoint (``CheckpointError`` on another kind)."""
        from ebm_policy.checkpoint import load_policy

        return load_policy(path, kind=cls.kind, map_location=map_location)


class ImplicitPolicy(_Policy):
    """Energy-based policy: ``argmin_a E(observation, a)`` by an inference optimizer.

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
        state_mean: ArrayLike | None = None,
        state_std: ArrayLike | None = None,
        seed: int | None = None,
    ) -> None:
        """``seed`` makes the weight initialization reproducible without touching global RNG;
        ``state_mean``/``state_std`` ``(S,)`` (the dataset's) normalize a state input."""
        super().__init__(
            config, action_low, action_high, state_mean=state_mean, state_std=state_std
        )
        config = self.config  # with the bounds' action dimension
        with seeded(seed):
            self.model = EBMConvMLP(
                config.model, prefix_energies=config.prefix_energies, proposal=config.proposal
            )
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
            self._batch_input(batch),
            self._actions(batch["action"]).flatten(1),  # (B, A), chunks (B, H, A) too
            low,
            high,
            generator,
        )

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """The configured objective (``objectives``): ``batch {"image": (B, H, W, C) and/or
        "state": (B, S), "action": (B, A)} -> (loss (), metrics)``.

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
    def energy(self, observation: Observation, actions: Tensor | np.ndarray) -> Tensor:
        """Energies of given actions: ``observation (images (B, H, W, C) ...), actions (B, N, A)
        -> (B, N)``.

        Actions are in original units (e.g. a grid for an energy landscape plot).
        """
        x, _ = self._observation_input(observation, None, None)
        return self.model(x, self._actions(actions))

    def action_energy(
        self,
        observation: Observation | None = None,
        *,
        images: Array | None = None,
        states: Array | None = None,
    ) -> ModelEnergy:
        """The energy over normalized actions of an observation (images ``(B, H, W, C)`` ...),
        encoded once, as inference optimizers see it (``optimizers.ActionEnergy``)."""
        x, _ = self._observation_input(observation, images, states)
        return self._energy_of(x)

    def _energy_of(self, x: ModelInput) -> ModelEnergy:
        device = self.device.type
        return ModelEnergy.of_observations(
            self.model,
            x,
            self.config.chunk_elements(device),
            self.workspace,
            self.config.encode_group_size(device),
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
    def predict_action_chunk(
        self,
        observation: Observation | None = None,
        generator: torch.Generator | None = None,
        *,
        images: Array | None = None,
        states: Array | None = None,
        optimizer: OptimizerConfig | None = None,
        return_history: bool = False,
    ) -> Actions | tuple[Actions, SearchHistory]:
        """``observation -> chunks (B, H, A)`` of the next ``H = config.chunk.horizon`` actions in
        original units, as the kind of array given (one observation: ``(H, A)``); the
        observation and the options as ``select_action`` takes them. ``return_history`` also
        returns the searched populations (torch tensors ``(B, M, H * A)`` in original units)."""
        low, high = self._unit_box()
        if low.device.type == "cpu":
            retain_freed_memory_by_default()  # steady latency: see ``ebm_policy.runtime``
        x, given = self._observation_input(observation, images, states)
        out = self.resolve_optimizer(optimizer).infer(
            self._energy_of(x), low, high, generator=generator, return_history=return_history
        )
        if isinstance(out, tuple):
            best, hist = out
            samples = [self._chunks(s).flatten(-2) for s in hist.samples]
            return given.answer(self._chunks(best)), SearchHistory(samples, hist.energies)
        return given.answer(self._chunks(out))

    def select_action(
        self,
        observation: Observation | None = None,
        generator: torch.Generator | None = None,
        *,
        images: Array | None = None,
        states: Array | None = None,
        optimizer: OptimizerConfig | None = None,
        return_history: bool = False,
    ) -> Actions | tuple[Actions, SearchHistory]:
        """``observation -> actions (B, A)`` in original units, as the kind of array given: the
        first action of each predicted chunk (the only one when ``horizon = 1``).

        The observation is images ``(B, H, W, C)`` uint8 (positionally or ``images=``), states
        ``(B, S)`` for a state-only policy (positionally or ``states=``), or a mapping
        ``{"image": ..., "state": ...}``; an image + state policy takes both parts. One
        observation (``(H, W, C)``, ``(S,)``) gives one action ``(A,)``; numpy arrays give a numpy
        array, torch tensors a tensor on the policy's device.
        ``optimizer`` (a config) replaces the policy's inference optimizer for this call.
        ``return_history`` also returns the searched populations (torch tensors ``(B, M, H * A)``,
        samples in original units).
        """
        out = self.predict_action_chunk(
            observation,
            generator,
            images=images,
            states=states,
            optimizer=optimizer,
            return_history=return_history,
        )
        if isinstance(out, tuple):
            return out[0][..., 0, :], out[1]
        return out[..., 0, :]


class ExplicitPolicy(_Policy):
    """Regression baseline: the same observation encoder predicts the action directly, trained
    with MSE."""

    kind: ClassVar[str] = "explicit"
    config_class: ClassVar[type] = ExplicitPolicyConfig
    config: ExplicitPolicyConfig

    def __init__(
        self,
        config: ExplicitPolicyConfig,
        action_low: ArrayLike,
        action_high: ArrayLike,
        *,
        state_mean: ArrayLike | None = None,
        state_std: ArrayLike | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            config, action_low, action_high, state_mean=state_mean, state_std=state_std
        )
        with seeded(seed):
            self.model = ExplicitConvMLP(self.config.model)  # with the bounds' action dimension

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """MSE in normalized units: ``batch {"image": (B, H, W, C) and/or "state": (B, S),
        "action": (B, A) or chunks (B, H, A)} -> (loss (), metrics)``. ``generator`` is unused
        (dropout draws from torch's global RNG, which the trainer seeds per rank and
        checkpoints)."""
        pred = self.model(self._batch_input(batch))
        loss = F.mse_loss(pred, self._actions(batch["action"]).flatten(1))
        return loss, {"train/loss": loss.item()}

    @torch.inference_mode()
    def predict_action_chunk(
        self,
        observation: Observation | None = None,
        generator: torch.Generator | None = None,
        *,
        images: Array | None = None,
        states: Array | None = None,
    ) -> Actions:
        """``observation -> chunks (B, H, A)`` in original units (dropout off), clamped to the
        padded bounds; the observation (and the answer's kind) as ``ImplicitPolicy.select_action``
        takes it."""
        x, given = self._observation_input(observation, images, states)
        was_training = self.training
        self.eval()
        try:
            pred = self.model(x).clamp(-1.0, 1.0)
        finally:
            self.train(was_training)
        return given.answer(self._chunks(pred))

    def select_action(
        self,
        observation: Observation | None = None,
        generator: torch.Generator | None = None,
        *,
        images: Array | None = None,
        states: Array | None = None,
    ) -> Actions:
        """``observation -> actions (B, A)``: the first action of each predicted chunk (see
        ``predict_action_chunk``)."""
        chunks = self.predict_action_chunk(observation, generator, images=images, states=states)
        return chunks[..., 0, :]


POLICY_CLASSES: dict[str, type[_Policy]] = {"implicit": ImplicitPolicy, "explicit": ExplicitPolicy}
Policy = ImplicitPolicy | ExplicitPolicy
