"""Trained behavioral-cloning agents in the loop: ``IBCAgent`` (implicit) and ``ExplicitBCAgent``.

Both wrap an ``ebm_policy`` policy and the metadata its checkpoint carries (the env it was trained
on, its observation type, the image size, the demo seeds) behind the rollout ``Policy`` interface, plus
stable-baselines3's ``predict`` so ``evaluate_policy`` runs them unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the env ids make_env uses)
from ebm_policy import CheckpointError, ExplicitPolicy, ImplicitPolicy, load_checkpoint
from ebm_policy.checkpoint import policy_from_checkpoint


class BCAgent:
    """A trained BC policy acting on env observations. Use ``IBCAgent`` / ``ExplicitBCAgent``."""

    kind: ClassVar[str] = ""

    def __init__(
        self, policy: ImplicitPolicy | ExplicitPolicy, metadata: Mapping[str, Any], *, seed: int = 0
    ) -> None:
        if policy.kind != self.kind:
            raise TypeError(f"{type(self).__name__} needs an {self.kind} policy, got {policy.kind}")
        for key in ("env_id", "env_kwargs", "image_shape"):
            if key not in metadata:
                raise ValueError(
                    f"checkpoint metadata lacks {key!r}: was it trained with `ibc-gym train`?"
                )
        self.policy = policy.eval()
        self.metadata = dict(metadata)
        self.env_id: str | None = metadata["env_id"]
        trained_env = dict(metadata["env_kwargs"])
        shape = metadata["image_shape"]  # None for a state-only policy
        self.image_shape: tuple[int, ...] | None = (
            tuple(int(v) for v in shape) if shape is not None else None
        )
        # Checkpoints from before state inputs were trained on pixels.
        self.obs_type: str = str(metadata.get("obs_type", trained_env.get("obs_type", "pixels")))
        # Checkpoints from before action_type existed were trained on absolute set-points.
        self.action_type: str = str(trained_env.get("action_type", "position"))
        self.env_kwargs: dict[str, Any] = {
            "obs_type": self.obs_type,
            "image_size": self.image_shape[0]
            if self.image_shape
            else int(trained_env.get("image_size", 96)),
            "action_type": self.action_type,
        }
        self.source = policy.source or "this checkpoint"
        self.train_seeds: list[int] = [int(s) for s in metadata.get("train_seeds", [])]
        self._seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.horizon = int(policy.config.chunk.horizon)
        self.execute = int(policy.config.chunk.steps_executed)
        self._queues: dict[int, list[np.ndarray]] = {}  # per sub-env: chunk actions still to run
        self.ensemble: float | None = None  # temporal ensembling's weight decay (None: off)
        self._chunks: dict[int, list[np.ndarray]] = {}  # per sub-env: its last chunks, oldest first

    @property
    def image_size(self) -> int:
        """The observation image size (the env's ``image_size``, also for a state-only policy)."""
        return int(self.env_kwargs["image_size"])

    def make_env(self, **overrides: Any) -> gym.Env:
        """The env this agent was trained for (its id, observation type, image size and action
        type), with ``overrides`` on top: ``agent.make_env(render_mode="rgb_array")``."""
        if self.env_id is None:
            raise ValueError(
                f"{self.source}: trained on demos that named no env; load the agent with env_id="
            )
        return gym.make(self.env_id, **{**self.env_kwargs, **overrides})

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        env_id: str | None = None,
        seed: int = 0,
        optimizer: Any = None,
    ) -> BCAgent:
        """Rebuild the agent from a checkpoint alone; ``env_id`` must match the one trained on
        (a policy trained on demos that named no env, e.g. a foreign LeRobot dataset, needs it).
        ``optimizer`` (an inference optimizer config) replaces an implicit checkpoint's."""
        ckpt = load_checkpoint(path)
        if cls.kind and ckpt["kind"] != cls.kind:
            raise CheckpointError(
                f"{path}: holds an {ckpt['kind']} policy, {cls.__name__} needs {cls.kind}"
            )
        agent_cls = cls if cls.kind else AGENT_CLASSES[ckpt["kind"]]
        meta = ckpt.get("metadata") or {}
        if env_id is not None and meta.get("env_id") not in (None, env_id):
            raise ValueError(f"{path} was trained on {meta.get('env_id')!r}, not on {env_id!r}")
        if env_id is not None and meta.get("env_id") is None:  # demos that named no env
            meta = {**meta, "env_id": env_id}
        return agent_cls(
            policy_from_checkpoint(ckpt, source=str(path), optimizer=optimizer), meta, seed=seed
        )

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Forget the chunk actions still queued for ``env_ids`` (all sub-envs when None, which
        also restarts the inference generator)."""
        if env_ids is None:
            self.generator.manual_seed(self._seed)
            self._queues.clear()
            self._chunks.clear()
            return
        for i in env_ids:
            self._queues.pop(int(i), None)
            self._chunks.pop(int(i), None)

    def with_execute(self, execute: int) -> BCAgent:
        """Execute ``execute`` actions of each predicted chunk (``1..horizon``) before asking
        the policy again; returns the agent."""
        if not 1 <= execute <= self.horizon:
            raise ValueError(
                f"execute must be in 1..{self.horizon} (the policy's chunk length), got {execute}"
            )
        self.execute = int(execute)
        self._queues.clear()
        return self

    def with_temporal_ensemble(self, decay: float | None) -> BCAgent:
        """Temporal ensembling (ACT, Zhao et al. 2023): predict a chunk at every step and run
        the weighted mean of the actions the last ``horizon`` chunks planned for this step, with
        weight ``exp(-decay * i)`` for the ``i``-th oldest (``decay = 0``: a plain mean; None:
        off, the chunks run ``execute`` actions at a time). Returns the agent."""
        if decay is not None and not (decay >= 0 and np.isfinite(decay)):
            raise ValueError(f"temporal ensemble decay must be a number >= 0, got {decay}")
        if decay is not None and self.horizon == 1:
            raise ValueError(f"{self.source}: temporal ensembling needs a policy of chunks (H > 1)")
        self.ensemble = None if decay is None else float(decay)
        self._queues.clear()
        self._chunks.clear()
        return self

    def _images(self, obs: Any) -> np.ndarray:
        images = obs["pixels"] if isinstance(obs, Mapping) else obs
        images = np.asarray(images)
        if images.shape[-3:] != self.image_shape:
            raise ValueError(
                f"observation images of shape {images.shape[-3:]}, but this policy was trained on "
                f"{self.image_shape} images of {self.env_id}"
            )
        if images.dtype != np.uint8:
            raise ValueError(f"observation images must be uint8, got {images.dtype}")
        return images

    def _states(self, obs: Any) -> np.ndarray:
        key = "agent_pos" if self.obs_type == "pixels_agent_pos" else "state"
        states = np.asarray(obs[key] if isinstance(obs, Mapping) else obs)
        d = self.policy.state_dim
        if states.ndim not in (1, 2) or states.shape[-1] != d:
            raise ValueError(
                f"observation {key} of shape {states.shape}, but {self.source} was trained on "
                f"{d}-dim states ({key}) of {self.env_id}"
            )
        return states

    def _observation(self, obs: Any) -> tuple[dict[str, np.ndarray], bool]:
        """An env observation (one or a batch) -> the policy's ``{"image", "state"}`` batch and
        whether it was a single observation."""
        parts: dict[str, np.ndarray] = {}
        if self.policy.inputs != "state":
            parts["image"] = self._images(obs)
        if self.policy.inputs != "image":
            parts["state"] = self._states(obs)
        single = parts["image"].ndim == 3 if "image" in parts else parts["state"].ndim == 1
        if single:
            parts = {k: v[None] for k, v in parts.items()}
        sizes = {len(v) for v in parts.values()}
        if len(sizes) > 1:
            raise ValueError(f"observation parts of different batch sizes: {sorted(sizes)}")
        return parts, single

    def select_action(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        """A batch of observations -> ``(n, 2)`` actions; one observation -> ``(2,)``.

        Observations are the env's of ``obs_type``: ``(n, H, W, 3)`` uint8 images,
        ``(n, S)`` states or ``{"pixels", "agent_pos"}``."""
        batch, single = self._observation(obs)
        if self.horizon == 1:
            actions = self.policy.select_action(batch, generator=self.generator)
            out = np.asarray(actions, dtype=np.float32)  # numpy in, numpy out
            return out[0] if single else out
        return self._from_chunks(batch, single)

    def _from_chunks(self, batch: dict[str, np.ndarray], single: bool) -> np.ndarray:
        """Row ``i`` of the batch is sub-env ``i``: those without queued actions get a new chunk
        (predicted together), then every sub-env runs the next action of its queue."""
        n = len(next(iter(batch.values())))
        if self.ensemble is not None:
            return self._ensembled(batch, single, n)
        empty = [i for i in range(n) if not self._queues.get(i)]
        if empty:
            part = {k: v[empty] for k, v in batch.items()}
            chunks = np.asarray(
                self.policy.predict_action_chunk(part, generator=self.generator), np.float32
            )  # (len(empty), H, A)
            for i, chunk in zip(empty, chunks, strict=True):
                self._queues[i] = list(chunk[: self.execute])
        out = np.stack([self._queues[i].pop(0) for i in range(n)])
        return out[0] if single else out

    def _ensembled(self, batch: dict[str, np.ndarray], single: bool, n: int) -> np.ndarray:
        """A new chunk for every sub-env; each runs the weighted mean over its last ``horizon``
        chunks of what they planned for this step (chunk ``j`` steps old: its action ``j``)."""
        chunks = np.asarray(
            self.policy.predict_action_chunk(batch, generator=self.generator), np.float32
        )  # (n, H, A)
        assert self.ensemble is not None
        out = np.empty((n, chunks.shape[-1]), np.float32)
        for i in range(n):
            kept = [*self._chunks.get(i, []), chunks[i]][-self.horizon :]  # oldest first
            self._chunks[i] = kept
            planned = np.stack([c[len(kept) - 1 - j] for j, c in enumerate(kept)])  # (m, A)
            w = np.exp(-self.ensemble * np.arange(len(kept)))  # the oldest weighs most
            out[i] = (w[:, None] * planned).sum(0) / w.sum()
        return out[0] if single else out

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """stable-baselines3's policy interface (``evaluate_policy`` calls it); sub-envs flagged
        in ``episode_start`` start a new episode (their queued chunk actions are dropped)."""
        if episode_start is not None:
            started = np.flatnonzero(np.asarray(episode_start)).tolist()
            if started:
                self.reset(started)
        return self.select_action(observation), None


class IBCAgent(BCAgent):
    """Implicit BC: ``argmin_a E(observation, a)`` by the policy's inference optimizer."""

    kind: ClassVar[str] = "implicit"


class ExplicitBCAgent(BCAgent):
    """Explicit BC: the same observation encoder regressing the action under MSE."""

    kind: ClassVar[str] = "explicit"


AGENT_CLASSES: dict[str, type[BCAgent]] = {"implicit": IBCAgent, "explicit": ExplicitBCAgent}


def load_agent(
    path: str | os.PathLike[str], *, env_id: str | None = None, seed: int = 0, optimizer: Any = None
) -> Any:
    """An agent from a BC checkpoint (``.pt``) or a PPO run (``model.zip``). ``optimizer`` (an
    inference optimizer config, e.g. ``LangevinConfig()``) replaces an implicit policy's."""
    path = Path(path)
    if path.suffix == ".zip":
        if optimizer is not None:
            raise ValueError(f"{path}: a PPO agent has no inference optimizer to replace")
        from agents.rl import PPOAgent

        agent = PPOAgent.load(path)
        if env_id is not None and agent.env_id != env_id:
            raise ValueError(f"{path} was trained on {agent.env_id!r}, not on {env_id!r}")
        return agent
    return BCAgent.load(path, env_id=env_id, seed=seed, optimizer=optimizer)
