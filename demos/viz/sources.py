"""Where the model-based figures get their ``ImplicitPolicy`` and observations.

``load_source(cfg)`` either loads ``--ckpt`` or trains a small policy here (cached in
``<out>/models/<slug>/``, a normal ``ebm_policy`` run folder: ``ckpt_last.pt``, ``metrics.jsonl``,
``energy_snapshots.npz``). Observations come from an env (a reset with ``--env-seed``, with the
scripted expert's action) or from the coordinate-regression generator (``--env blocks``).

Quick training data for an env: the first frame of many expert episodes (reset seeds from
``TRAIN_SEED_BASE`` on, so the shown observation, seed 0.., is not a training image) with the
expert's action for it. The reset frame holds the whole task (agent and targets) and the expert's
action is constant within an episode, so first frames give the most target layouts per render.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils.data import Dataset

import envs  # noqa: F401  (registers the ibc/ ids)
from agents.experts import make_expert
from demos.viz.base import BLOCKS, DEFAULT_ENV, ModelFigureConfig
from demos.viz.plotting import ActionFrame
from ebm_policy import (
    BackboneConfig,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    InfoNCEConfig,
    OptimConfig,
    TrainConfig,
    action_bounds_from_dataset,
    load_checkpoint,
    train,
)
from ebm_policy.checkpoint import policy_from_checkpoint
from envs.physics import VIEW_HALF_EXTENT

TRAIN_SEED_BASE = 1_000_000
QUICK_VERSION = "v2"  # bump when the quick model's recipe changes (invalidates the cache)
DEFAULT_STEPS, BLOCKS_STEPS, QUICK_STEPS = 900, 300, 15
BATCH_SIZE = 32
QUICK_IMAGE_SIZE = 48


@dataclass
class Observation:
    """One observation image and what is known about it, positions in action units."""

    image: np.ndarray  # (H, W, 3) uint8
    frame: ActionFrame
    goals: np.ndarray  # (k, 2) where the good actions are (env targets / the block centre)
    expert: np.ndarray | None  # (2,) the demonstrated action, if any
    agent: np.ndarray | None  # (2,) the agent's position (envs)
    label: str


@dataclass
class ModelSource:
    """A trained implicit policy and the observations it was trained on."""

    policy: ImplicitPolicy
    env: str  # an env id or BLOCKS
    image_size: int
    run_dir: Path | None  # training run folder (metrics, energy snapshots) when known
    description: str

    def observation(self, seed: int) -> Observation:
        """The observation shown for ``seed`` (an env reset, or a seeded block image)."""
        if self.env == BLOCKS:
            return block_observation(seed, self.image_size)
        return env_observation(self.env, seed, self.image_size)

    def action_box(self) -> tuple[np.ndarray, np.ndarray]:
        """The policy's padded action box ``(low (A,), high (A,))`` in original units: where its
        counter-examples and DFO samples live."""
        ones = torch.ones(self.policy.bounds.action_dim)
        low = self.policy.bounds.unnormalize(-ones).numpy()
        high = self.policy.bounds.unnormalize(ones).numpy()
        return low, high


# ---------------------------------------------------------------------------- observations
def env_observation(env_id: str, seed: int, image_size: int) -> Observation:
    """Reset ``env_id`` with ``seed``: the image, targets, agent and the expert's action."""
    env = gym.make(env_id, image_size=image_size)
    try:
        obs, info = env.reset(seed=seed)
        expert = make_expert(env_id, seed=seed).select_action(obs, info)
    finally:
        env.close()
    image = obs["pixels"] if isinstance(obs, dict) else obs
    return Observation(
        image=np.asarray(image),
        frame=ActionFrame.env(VIEW_HALF_EXTENT),
        goals=np.asarray(info["targets"], dtype=np.float32).reshape(-1, 2),
        expert=np.asarray(expert, dtype=np.float32),
        agent=np.asarray(info["agent_pos"], dtype=np.float32),
        label=f"{env_id}, reset seed {seed}",
    )


def block_observation(seed: int, resolution: int) -> Observation:
    """A coordinate-regression image (one green block) drawn with ``seed``."""
    from demos.coord_regression import centers_to_targets, render_blocks, sample_centers

    centers = sample_centers(1, np.random.default_rng([seed, 7]), resolution=resolution)
    target = centers_to_targets(centers, resolution)
    return Observation(
        image=render_blocks(centers, resolution=resolution)[0],
        frame=ActionFrame.pixels(resolution),
        goals=target,
        expert=target[0],
        agent=None,
        label=f"marker image, seed {seed}",
    )


# ---------------------------------------------------------------------------- quick training
class ArrayDataset(Dataset):
    """``{"image", "action"}`` items from in-memory arrays (``actions`` for the bounds)."""

    def __init__(self, images: np.ndarray, actions: np.ndarray) -> None:
        self.images = images
        self.actions = actions.astype(np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"image": self.images[i], "action": self.actions[i]}


def collect_first_frames(env_id: str, n: int, seed: int, image_size: int) -> ArrayDataset:
    """First frames of ``n`` expert episodes (reset seeds ``TRAIN_SEED_BASE + seed * n + i``)
    with the expert's action for each."""
    env = gym.make(env_id, image_size=image_size)
    expert = make_expert(env_id, seed=seed)
    images, actions = [], []
    try:
        for i in range(n):
            obs, info = env.reset(seed=TRAIN_SEED_BASE + seed * n + i)
            expert.reset([0])
            images.append(obs["pixels"] if isinstance(obs, dict) else obs)
            actions.append(expert.select_action(obs, info))
    finally:
        env.close()
    return ArrayDataset(np.stack(images), np.stack(actions))


def block_dataset(n: int, seed: int, resolution: int) -> Dataset:
    """``n`` coordinate-regression training images (the ``standard`` split)."""
    from demos.coord_regression import make_split

    train_set, _ = make_split("standard", n, 1, seed, resolution=resolution)
    return train_set


def quick_policy_config() -> ImplicitPolicyConfig:
    """The small EBM trained for the reach tasks (``DEFAULT_STEPS`` CPU steps of ``BATCH_SIZE``
    48 px images): a stride-2 stem, narrow channels, 64 counter-examples, DFO 1,024 x 3 and a
    constant lr of 3e-3."""
    return ImplicitPolicyConfig(
        model=EBMConfig(
            backbone=BackboneConfig(cnn=CNNConfig(channels=(8, 16, 16), strides=(2, 1, 1))),
            hidden_dims=(256,),
        ),
        loss=InfoNCEConfig(num_counter_examples=64),
        optimizer=DFOConfig(num_samples=1024, iterations=3),
        optim=OptimConfig(lr=3e-3, scheduler="constant"),
    )


def small_coord_implicit() -> ImplicitPolicyConfig:
    """The coordinate-regression experiment's implicit policy with 64 counter-examples and 1,024
    DFO samples (for the figures' models trained on a few images)."""
    from demos.coord_regression import COORD_REGRESSION_IMPLICIT as base

    return replace(
        base,
        loss=replace(base.loss, num_counter_examples=64),
        optimizer=replace(base.optimizer, num_samples=1024),
    )


def quick_run_dir(cfg: ModelFigureConfig, env: str, steps: int, image_size: int) -> Path:
    """The cache folder of the quick model for these settings."""
    name = env.split("/")[-1].lower()
    return (
        Path(cfg.out)
        / "models"
        / f"quick-{QUICK_VERSION}-{name}-{image_size}px-seed{cfg.seed}-{steps}steps{'-tiny' if cfg.quick else ''}"
    )


def quick_setup(
    cfg: ModelFigureConfig, env: str, image_size: int
) -> tuple[Dataset, ImplicitPolicy, int, dict[str, Any]]:
    """Data, fresh policy, batch size and checkpoint metadata of the quick model for ``env``."""
    meta: dict[str, Any] = {
        "trained_by": "ibc-gym viz (quick model)",
        "image_shape": [image_size, image_size, 3],
    }
    if env == BLOCKS:  # the coordinate-regression experiment's own recipe
        from demos.coord_regression import make_policy

        dataset = block_dataset(6 if cfg.quick else 30, cfg.seed, image_size)
        policy = make_policy(small_coord_implicit(), image_size, cfg.seed)
        assert isinstance(policy, ImplicitPolicy)
        meta |= {"experiment": "coord-regression", "resolution": image_size}
        return dataset, policy, 8, meta
    data = collect_first_frames(env, 64 if cfg.quick else 2000, cfg.seed, image_size)
    low, high = action_bounds_from_dataset(data)
    policy = ImplicitPolicy(quick_policy_config(), low, high, seed=cfg.seed)
    meta |= {"env_id": env, "env_kwargs": {"obs_type": "pixels", "image_size": image_size}}
    return data, policy, 8 if cfg.quick else BATCH_SIZE, meta


def train_quick(
    cfg: ModelFigureConfig, env: str, steps: int, image_size: int
) -> tuple[ImplicitPolicy, Path]:
    """Train (or reuse from the cache) the quick policy for ``env``: ``-> (policy, run folder)``."""
    run_dir = quick_run_dir(cfg, env, steps, image_size)
    last = run_dir / "ckpt_last.pt"
    if cfg.cache and last.is_file():
        ckpt = load_checkpoint(last)
        if int(ckpt["step"]) >= steps:
            return _implicit(ckpt, str(last)), run_dir
    elif not cfg.cache and run_dir.exists():
        shutil.rmtree(run_dir)
    dataset, policy, batch_size, meta = quick_setup(cfg, env, image_size)
    n = len(dataset)  # type: ignore[arg-type]
    print(f"training a small implicit policy on {n} {env} images for {steps} steps -> {run_dir}")
    train_cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        seed=cfg.seed,
        log_interval=max(1, steps // 30),
        ckpt_interval=max(steps, 1),
        energy_snapshots=5,
        snapshot_batch_size=64,
        num_threads=None,  # the figure's --threads
        progress=False,
        tensorboard=False,
    )
    train(policy, dataset, train_cfg, run_dir, resume=True, metadata=meta)
    return policy.eval(), run_dir


# ---------------------------------------------------------------------------- entry point
def _implicit(ckpt: dict[str, Any], source: str) -> ImplicitPolicy:
    if ckpt["kind"] != "implicit":
        raise ValueError(
            f"{source}: holds an {ckpt['kind']} policy; these figures need an implicit (EBM) one"
        )
    policy = policy_from_checkpoint(ckpt, source=source)
    assert isinstance(policy, ImplicitPolicy)
    return policy


def _image_size(meta: dict[str, Any], default: int) -> int:
    kwargs = meta.get("env_kwargs") or {}
    if "image_size" in kwargs:
        return int(kwargs["image_size"])
    shape = meta.get("image_shape") or meta.get("resolution")
    if isinstance(shape, (list, tuple)) and shape:
        return int(shape[0])
    return int(shape) if isinstance(shape, int) else default


def load_source(cfg: ModelFigureConfig) -> ModelSource:
    """The policy and observations of a model-based figure (see the module docstring)."""
    if cfg.ckpt is not None:
        ckpt = load_checkpoint(cfg.ckpt)
        policy = _implicit(ckpt, str(cfg.ckpt))
        meta = ckpt.get("metadata") or {}
        env = cfg.env or meta.get("env_id") or BLOCKS
        size = _image_size(meta, 96)
        path = Path(cfg.ckpt)
        desc = f"checkpoint {path.parent.name}/{path.name} (step {ckpt['step']})"
        return ModelSource(policy, env, size, Path(cfg.ckpt).parent, desc)
    env = cfg.env or DEFAULT_ENV
    size = QUICK_IMAGE_SIZE
    default = BLOCKS_STEPS if env == BLOCKS else DEFAULT_STEPS
    steps = (
        cfg.train_steps if cfg.train_steps is not None else (QUICK_STEPS if cfg.quick else default)
    )
    policy, run_dir = train_quick(cfg, env, steps, size)
    return ModelSource(policy, env, size, run_dir, f"small model trained here ({steps} steps)")
