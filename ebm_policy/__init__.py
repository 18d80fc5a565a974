"""Implicit behavioral cloning: energy-based policies over images, trained with InfoNCE and
driven by a derivative-free optimizer, plus the explicit (MSE) baseline.

An independent library: it knows nothing of ``envs``, ``agents`` or ``demos``. Energy convention:
LOWER energy = better action, everywhere.

Typical use::

    low, high = action_bounds_from_dataset(dataset)
    policy = ImplicitPolicy(ImplicitPolicyConfig(), low, high, seed=0)
    train(policy, dataset, TrainConfig(steps=2000), "runs/ibc")
    policy = load_policy("runs/ibc/ckpt_last.pt")
    actions = policy.select_action(images_uint8_bhwc)  # (B, A), original units
"""

from ebm_policy.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)
from ebm_policy.config import (
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicyConfig,
    ImplicitPolicyConfig,
    InfoNCEConfig,
    OptimConfig,
    SoftArgmaxConfig,
    config_from_dict,
    config_to_dict,
)
from ebm_policy.dfo import DerivativeFreeOptimizer, DFOHistory
from ebm_policy.losses import info_nce_loss, make_candidates
from ebm_policy.metrics_log import read_metrics
from ebm_policy.models import EBMConvMLP, ExplicitConvMLP
from ebm_policy.modules import CNN, CoordConv, ResidualBlock, SpatialSoftArgmax
from ebm_policy.normalize import ActionBounds, action_bounds_from_dataset
from ebm_policy.policies import POLICY_CLASSES, ExplicitPolicy, ImplicitPolicy, Policy
from ebm_policy.trainer import TrainConfig, Trainer, train

__all__ = [
    "CNN",
    "POLICY_CLASSES",
    "ActionBounds",
    "CNNConfig",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CoordConv",
    "DFOConfig",
    "DFOHistory",
    "DerivativeFreeOptimizer",
    "EBMConfig",
    "EBMConvMLP",
    "ExplicitConfig",
    "ExplicitConvMLP",
    "ExplicitPolicy",
    "ExplicitPolicyConfig",
    "ImplicitPolicy",
    "ImplicitPolicyConfig",
    "InfoNCEConfig",
    "OptimConfig",
    "Policy",
    "ResidualBlock",
    "SoftArgmaxConfig",
    "SpatialSoftArgmax",
    "TrainConfig",
    "Trainer",
    "action_bounds_from_dataset",
    "config_from_dict",
    "config_to_dict",
    "info_nce_loss",
    "load_checkpoint",
    "load_policy",
    "make_candidates",
    "read_metrics",
    "save_checkpoint",
    "train",
]
