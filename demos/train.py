"""``ibc-gym train``: train an implicit (EBM + InfoNCE) or explicit (MSE) policy on a demo dataset.

The run folder gets ``ckpt_last.pt`` (self-describing: weights, configs, action bounds, the env
and demo seeds it was trained on), ``metrics.jsonl`` and ``energy_snapshots.npz``.
``--resume`` continues an interrupted run exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from agents.dataset import DemoDataset
from demos.args import check_options, help_field, registered_env
from ebm_policy import (
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicy,
    ExplicitPolicyConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    InfoNCEConfig,
    OptimConfig,
    SoftArgmaxConfig,
    TrainConfig,
    action_bounds_from_dataset,
    train,
)


@dataclass(frozen=True)
class TrainJobConfig:
    """Options of ``ibc-gym train``. The CNN defaults are the library's (no CoordConv, soft-argmax
    temperature 0.1, median-centred input, bias-free 3x3 convolutions); the earlier env settings
    are ``--coord-conv --temperature 1.0 --no-center-input --conv-bias``."""

    data: Path = help_field(Path("data/demos.h5"), "demo dataset (HDF5) from `ibc-gym collect`")
    policy: Literal["implicit", "explicit"] = help_field("implicit", "policy class")
    out: Path = help_field(Path("runs/implicit"), "run folder (checkpoints, logs)")
    env: str | None = help_field(None, "expected env id of the dataset (checked when given)", check=registered_env)
    steps: int = help_field(2000, "gradient steps", min=1)
    batch_size: int = help_field(32, "examples per step", min=1)
    lr: float = help_field(1e-3, "Adam learning rate", above=0)
    lr_schedule: Literal["step", "cosine", "constant"] = help_field("cosine", "learning-rate schedule")
    grad_clip: float | None = help_field(None, "clip the gradient norm to this (None: no clipping)", above=0)
    counter_examples: int = help_field(128, "InfoNCE counter-examples per example (implicit)", min=1)
    dfo_samples: int = help_field(2048, "DFO samples at inference (implicit)", min=1)
    dfo_iterations: int = help_field(3, "DFO iterations at inference (implicit)", min=0)
    channels: tuple[int, ...] = help_field((16, 32, 32), "CNN channels per stage", min=1)
    strides: tuple[int, ...] = help_field((2, 2, 1), "CNN stride per stage (2 halves the resolution)", min=1)
    hidden: tuple[int, ...] = help_field((256,), "MLP hidden layer widths", min=1)
    keypoints: int = help_field(16, "soft-argmax keypoints (channels of the 1x1 conv)", min=1)
    coord_conv: bool = help_field(False, "append x/y coordinate channels to the image (CoordConv)")
    temperature: float = help_field(0.1, "soft-argmax temperature (lower: sharper keypoints)", above=0)
    center_input: bool = help_field(True, "subtract each image's per-channel median (its background)")
    conv_bias: bool = help_field(False, "biases in the 3x3 convolutions")
    dfo_resampling: Literal["stratified", "multinomial"] = help_field("stratified", "DFO resampling scheme (implicit)")
    seed: int = help_field(0, "seed of the weights, data order and counter-examples", min=0)
    resume: bool = help_field(False, "continue the interrupted run in --out")
    in_memory: bool = help_field(True, "read the whole dataset into memory (off: lazy reads)")
    num_workers: int = help_field(0, "DataLoader worker processes", min=0)
    threads: int | None = help_field(1, "torch threads (small convs run fastest on 1; None: one per core)", min=1)
    ckpt_interval: int = help_field(500, "steps between checkpoints", min=1)
    keep_every: int | None = help_field(
        None, "also keep ckpt_step<N>.pt every this many steps (a multiple of --ckpt-interval)", min=1
    )
    progress: bool = help_field(True, "show a progress bar")

    def __post_init__(self) -> None:
        check_options(self)
        if len(self.channels) != len(self.strides):
            raise ValueError(
                f"--channels and --strides need one value per CNN stage, got {len(self.channels)} "
                f"and {len(self.strides)}"
            )


def build_policy(cfg: TrainJobConfig, low: Any, high: Any, action_dim: int) -> ImplicitPolicy | ExplicitPolicy:
    """The policy ``cfg`` describes, with action bounds ``low``/``high``."""
    cnn = CNNConfig(
        channels=tuple(cfg.channels),
        strides=tuple(cfg.strides),
        pools=(1,) * len(cfg.channels),
        out_channels=cfg.keypoints,
        coord_conv=cfg.coord_conv,
        center_input=cfg.center_input,
        conv_bias=cfg.conv_bias,
    )
    softargmax = SoftArgmaxConfig(temperature=cfg.temperature)
    optim = OptimConfig(lr=cfg.lr, scheduler=cfg.lr_schedule, grad_clip_norm=cfg.grad_clip)
    if cfg.policy == "implicit":
        config = ImplicitPolicyConfig(
            model=EBMConfig(action_dim=action_dim, cnn=cnn, softargmax=softargmax, hidden_dims=tuple(cfg.hidden)),
            infonce=InfoNCEConfig(num_counter_examples=cfg.counter_examples),
            dfo=DFOConfig(
                num_samples=cfg.dfo_samples, iterations=cfg.dfo_iterations, resampling=cfg.dfo_resampling
            ),
            optim=optim,
        )
        return ImplicitPolicy(config, low, high, seed=cfg.seed)
    config_e = ExplicitPolicyConfig(
        model=ExplicitConfig(
            action_dim=action_dim, cnn=cnn, softargmax=softargmax, hidden_dims=tuple(cfg.hidden), dropout=0.0
        ),
        optim=replace(optim, weight_decay=1e-4),
    )
    return ExplicitPolicy(config_e, low, high, seed=cfg.seed)


def run_train(cfg: TrainJobConfig) -> Path:
    """Train and return the path of the last checkpoint."""
    dataset = DemoDataset(cfg.data, env_id=cfg.env, in_memory=cfg.in_memory)
    low, high = action_bounds_from_dataset(dataset)
    policy = build_policy(cfg, low, high, dataset.action_dim)
    metadata = {
        "env_id": dataset.env_id,
        "env_kwargs": dataset.env_kwargs,
        "image_shape": list(dataset.image_shape),
        "dataset": str(cfg.data),
        "num_episodes": dataset.num_episodes,
        "num_samples": len(dataset),
        "train_seeds": [int(s) for s in dataset.episode_seeds],
    }
    train_cfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        ckpt_interval=cfg.ckpt_interval,
        keep_every=cfg.keep_every,
        num_workers=cfg.num_workers,
        num_threads=cfg.threads,
        progress=cfg.progress,
    )
    print(
        f"training {cfg.policy} on {dataset.num_episodes} episodes / {len(dataset)} samples of "
        f"{dataset.env_id} ({'x'.join(map(str, dataset.image_shape))} images) -> {cfg.out}"
    )
    train(policy, dataset, train_cfg, cfg.out, resume=cfg.resume, metadata=metadata)
    return cfg.out / "ckpt_last.pt"


COMMANDS = [("train", "Train an implicit or explicit BC policy on a demo dataset.", TrainJobConfig, run_train)]
