"""``ibc-gym train``: train an implicit (EBM) or explicit (MSE) policy on a demo dataset.

The options nest the library's configs, so each setting has one default, in the library:
``--steps``/``--batch-size``/... are ``TrainConfig``'s, ``--cnn.*``/``--softargmax.*`` the
image encoder both policies share, ``--implicit.*`` the rest of the ``ImplicitPolicyConfig`` (``--implicit langevin`` starts from the paper's Langevin pairing:
chain counter-examples with the gradient penalty, Langevin inference; ``--implicit.optimizer
dfo`` then changes only the inference), ``--explicit.*`` the ``ExplicitPolicyConfig``.

``--data`` is an HDF5 file from ``ibc-gym collect`` or a LeRobotDataset v3.0 folder
(``agents.lerobot``; ``ibc-gym export`` writes one; ``--env`` names the env of a folder recorded
elsewhere, ``--camera`` its image feature).

The model follows the dataset's observation type: images (``obs_type="pixels"``: CNN keypoints),
states (``"state"``: an MLP over the state vector, normalized by the dataset's mean and std) or
both (``"pixels_agent_pos"``: keypoints concatenated with the agent position); both policies get
the same inputs, and the checkpoint records them.

The run folder gets ``ckpt_last.pt`` (self-describing: weights, configs, action bounds, the env
and demo seeds it was trained on), ``metrics.jsonl`` and ``energy_snapshots.npz``.
``--resume`` continues an interrupted run exactly where it stopped.

``--nproc-per-node N`` trains on N processes of this machine (torchrun, DistributedDataParallel:
gloo on the CPU, NCCL with ``--device cuda``, one GPU per process); ``--batch-size`` stays the
global batch. The same command runs unchanged under a torchrun of your own (several machines).
See ``ebm_policy.trainer`` for what rank 0 does and how resuming with another number of
processes behaves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from agents.dataset import DemoDataset
from agents.lerobot import LeRobotDemoDataset, open_demos
from demos.args import check_options, help_field, registered_env
from demos.launch import in_torchrun
from ebm_policy import (
    BackboneConfig,
    ChunkConfig,
    ChunkedDataset,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicy,
    ExplicitPolicyConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    InfoNCEConfig,
    TrainConfig,
    train,
)
from ebm_policy.checkpoint import load_checkpoint
from ebm_policy.config import METHODS
from ebm_policy.distributed import current_rank
from ebm_policy.trainer import CKPT_LAST

IMPLICIT_PRESETS = {m: (lambda m=m: ImplicitPolicyConfig.for_method(m)) for m in METHODS}  # type: ignore[misc]


@dataclass(frozen=True)
class PolicyConfigs:
    """Both policies' configs (a job's ``policy`` picks the one it trains) and the one image
    encoder they share, so implicit and explicit are always compared on the same backbone."""

    backbone: BackboneConfig = help_field(
        factory=BackboneConfig, flatten=True, help="the image encoder of both policies"
    )
    chunk: ChunkConfig = help_field(
        factory=ChunkConfig, flatten=True, help="action chunks of both policies"
    )
    implicit: ImplicitPolicyConfig = help_field(
        factory=ImplicitPolicyConfig,
        presets=IMPLICIT_PRESETS,
        hide=("model.backbone", "chunk"),
        help="the implicit policy (its encoder is --cnn.*/--softargmax.*; the action dimension comes from the dataset)",
    )
    explicit: ExplicitPolicyConfig = help_field(
        factory=ExplicitPolicyConfig,
        hide=("model.backbone", "chunk"),
        help="the explicit policy (its encoder is --cnn.*/--softargmax.*; the action dimension comes from the dataset)",
    )

    def __post_init__(self) -> None:
        for name in ("implicit", "explicit"):
            own = getattr(self, name).model.backbone
            if own not in (self.backbone, BackboneConfig()):
                raise ValueError(
                    f"PolicyConfigs: {name}.model.backbone differs from the shared backbone; set "
                    f"PolicyConfigs.backbone (both policies use it)"
                )
            if getattr(self, name).chunk not in (self.chunk, ChunkConfig()):
                raise ValueError(
                    f"PolicyConfigs: {name}.chunk differs from the shared one; set "
                    f"PolicyConfigs.chunk (both policies use it)"
                )

    def chosen(self, policy: str, action_dim: int) -> ImplicitPolicyConfig | ExplicitPolicyConfig:
        """The config of ``policy`` with the shared backbone and action chunks and the dataset's
        action dimension (``Policy.for_dataset`` sets the observed inputs)."""
        cfg = self.implicit if policy == "implicit" else self.explicit
        model = replace(cfg.model, action_dim=action_dim, backbone=self.backbone)
        return replace(cfg, model=model, chunk=self.chunk)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrainJobConfig:
    """Options of ``ibc-gym train``."""

    data: Path = help_field(
        Path("data/demos.h5"),
        "demos: an HDF5 file from `ibc-gym collect`, or a LeRobotDataset v3.0 folder",
    )
    camera: str | None = help_field(
        None,
        "LeRobot folder: the image feature to train on (default observation.image, or the only observation.images.*)",
    )
    policy: Literal["implicit", "explicit"] = help_field("implicit", "policy class")
    out: Path = help_field(Path("runs/implicit"), "run folder (checkpoints, logs)")
    env: str | None = help_field(
        None,
        "expected env id of the dataset (checked when given; a LeRobot folder recorded elsewhere, which names none, is trained for this env)",
        check=registered_env,
    )
    resume: bool = help_field(False, "continue the interrupted run in --out")
    in_memory: bool = help_field(
        True,
        "read the whole dataset into memory (off: lazy reads; each process holds its own copy)",
    )
    nproc_per_node: int = help_field(
        1,
        "training processes on this machine (more than 1: started through torchrun, DistributedDataParallel)",
        min=1,
    )
    policies: PolicyConfigs = help_field(factory=PolicyConfigs, flatten=True, help="the policies")
    train: TrainConfig = help_field(factory=TrainConfig, flatten=True, help="the training loop")

    def __post_init__(self) -> None:
        check_options(self)
        if self.train.batch_size % self.nproc_per_node:
            raise ValueError(
                f"--batch-size {self.train.batch_size} is the global batch: it must be a multiple "
                f"of --nproc-per-node ({self.nproc_per_node})"
            )


def tiny_policies(method: str = "dfo") -> PolicyConfigs:
    """A named small setting for smoke runs and tests (two 8-channel stages, 4 keypoints, one
    hidden layer of 32; 8 counter-examples and 64 DFO samples for ``method`` dfo)."""
    backbone = BackboneConfig(
        cnn=CNNConfig(channels=(8, 8), strides=(2, 1), pools=(1, 1), out_channels=4)
    )
    implicit = ImplicitPolicyConfig.for_method(method, model=EBMConfig(hidden_dims=(32,)))  # type: ignore[arg-type]
    if method == "dfo":
        implicit = replace(
            implicit,
            loss=InfoNCEConfig(num_counter_examples=8),
            optimizer=DFOConfig(num_samples=64),
        )
    explicit = ExplicitPolicyConfig(model=ExplicitConfig(hidden_dims=(32,)))
    return PolicyConfigs(backbone=backbone, implicit=implicit, explicit=explicit)


def build_policy(
    cfg: TrainJobConfig, dataset: DemoDataset | LeRobotDemoDataset
) -> ImplicitPolicy | ExplicitPolicy:
    """The policy ``cfg`` describes for ``dataset``: its action bounds, its observed inputs and
    (with a state input) its state statistics (``for_dataset``)."""
    config = cfg.policies.chosen(cfg.policy, dataset.action_dim)
    cls = ImplicitPolicy if isinstance(config, ImplicitPolicyConfig) else ExplicitPolicy
    return cls.for_dataset(dataset, config, seed=cfg.train.seed)


def check_fits_checkpoint(data: Path, dataset: Any, ckpt_path: Path) -> None:
    """Raise ``ValueError`` when ``dataset``'s action dimension or image shape differs from those
    of the policy in ``ckpt_path`` (nothing to check when it does not exist; a change of input
    kind, e.g. states for images, is the trainer's to report)."""
    if not ckpt_path.is_file():
        return
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    horizon = int(ckpt["config"].get("chunk", {}).get("horizon", 1))
    action_dim = int(ckpt["config"]["model"]["action_dim"]) // horizon  # of one action
    trained = ckpt["metadata"].get("image_shape", dataset.image_shape)
    shape = None if trained is None else tuple(int(v) for v in trained)
    given = None if dataset.image_shape is None else tuple(dataset.image_shape)
    if given is None or shape is None:  # other inputs: the trainer names both kinds
        given = shape = None
    if (dataset.action_dim, given) != (action_dim, shape):

        def images(s: tuple[int, ...] | None) -> str:
            return "no" if s is None else "x".join(map(str, s))

        raise ValueError(
            f"{data}: {dataset.action_dim}-D actions and {images(given)} images do not fit the "
            f"policy in {ckpt_path} ({action_dim}-D actions, {images(shape)} images); train it "
            f"into another --out"
        )


def run_train(cfg: TrainJobConfig) -> Path:
    """Train and return the path of the last checkpoint (as one rank under torchrun)."""
    rank = current_rank()
    if cfg.nproc_per_node > 1 and not in_torchrun():
        raise ValueError(
            f"nproc_per_node {cfg.nproc_per_node}: start the job with `ibc-gym train --nproc-per-node "
            f"{cfg.nproc_per_node}` or torchrun"
        )
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", rank.world_size))
    if in_torchrun() and cfg.nproc_per_node not in (1, local_world):
        raise ValueError(
            f"--nproc-per-node {cfg.nproc_per_node} differs from torchrun's {local_world} processes on "
            f"this machine; leave it out under torchrun"
        )
    dataset = open_demos(cfg.data, env_id=cfg.env, in_memory=cfg.in_memory, camera=cfg.camera)
    if cfg.resume:
        check_fits_checkpoint(cfg.data, dataset, cfg.out / CKPT_LAST)
    policy = build_policy(cfg, dataset)
    metadata = {
        "env_id": dataset.env_id,
        "env_kwargs": dataset.env_kwargs,
        "obs_type": dataset.obs_type,
        "image_shape": list(dataset.image_shape) if dataset.image_shape else None,
        "state_dim": dataset.state_dim,
        "dataset": str(cfg.data),
        "num_episodes": dataset.num_episodes,
        "num_samples": len(dataset),
        "train_seeds": [int(s) for s in dataset.episode_seeds],
    }
    method = (
        f" ({policy.config.loss.kind} loss, {policy.config.optimizer.kind})"
        if isinstance(policy, ImplicitPolicy)
        else ""
    )
    if policy.horizon > 1:
        method += (
            f" on chunks of {policy.horizon} actions (episode ends padded with their last action)"
        )
    where = f" on {rank.world_size} processes" if rank.enabled else ""
    observed = {
        "image": f"{'x'.join(map(str, dataset.image_shape or ()))} images",
        "state": f"{dataset.state_dim}-dim states",
    }
    inputs = " + ".join(observed[k] for k in ("image", "state") if k in dataset.obs_keys)
    if rank.master:
        print(
            f"training {cfg.policy}{method}{where} on {dataset.num_episodes} episodes / {len(dataset)} samples "
            f"of {dataset.env_id or 'an unnamed env (pass --env)'} ({inputs}) -> {cfg.out}"
        )
    if policy.horizon > 1:  # items hold the next H actions, cut at episode ends
        dataset = ChunkedDataset(dataset, policy.horizon)  # type: ignore[assignment]
    train(policy, dataset, cfg.train, cfg.out, resume=cfg.resume, metadata=metadata)
    return cfg.out / "ckpt_last.pt"


COMMANDS = [
    (
        "train",
        "Train an implicit or explicit BC policy on a demo dataset.",
        TrainJobConfig,
        run_train,
    )
]
