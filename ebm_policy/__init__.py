"""Implicit behavioral cloning: energy-based policies over images, states or both, trained with
InfoNCE (uniform, Langevin-refined or perturbed counter-examples) or ranking NCE with a learned
proposal, driven by an inference optimizer (DFO, Langevin MCMC, autoregressive DFO or proposal
DFO), predicting one action or a chunk of them, plus the explicit (MSE) baseline.

An independent library: it knows nothing of ``envs``, ``agents`` or ``demos``. Energy convention:
LOWER energy = better action, everywhere.

Typical use (any dataset of the protocol in ``ebm_policy.datasets``, e.g. an ``ArrayDataset``)::

    dataset = ArrayDataset(actions_na, images=images_uint8_nhwc)  # and/or states=states_ns
    policy = ImplicitPolicy.for_dataset(dataset, seed=0)  # bounds, inputs, state stats from it
    train(policy, dataset, TrainConfig(steps=2000), "runs/ibc")
    policy = load_policy("runs/ibc/ckpt_last.pt")
    actions = policy.select_action(images_uint8_bhwc)  # (B, A), original units; (H, W, C) -> (A,)
    actions = policy.select_action(images_uint8_bhwc, optimizer=LangevinConfig())  # another optimizer

    langevin = ImplicitPolicyConfig.for_method("langevin")  # chain counter-examples + penalty
    policy = ImplicitPolicy.for_dataset(dataset, langevin)

    # By hand (what for_dataset does): bounds, the model's inputs and the state statistics.
    low, high = action_bounds_from_dataset(dataset)
    mean, std = state_stats_from_dataset(dataset)
    cfg = ImplicitPolicyConfig(model=EBMConfig(action_dim=2, inputs="state", state_dim=mean.size))
    policy = ImplicitPolicy(cfg, low, high, state_mean=mean, state_std=std, seed=0)
    actions = policy.select_action(states=states_bs)  # or {"image": ..., "state": ...}

    # Action chunks: the next H actions per observation (episode_ends: cumulative step counts).
    ranking = ImplicitPolicyConfig.for_method("ranking", chunk=ChunkConfig(horizon=8))
    chunked = ChunkedDataset(dataset, 8, episode_ends=ends_e)  # items' "action": (8, A)
    policy = ImplicitPolicy.for_dataset(chunked, ranking)  # learned proposal + ranking NCE
    chunks = policy.predict_action_chunk(images_uint8_bhwc)  # (B, 8, A)

A script that calls ``train`` trains on several processes when started by torchrun
(``torchrun --nproc-per-node 4 script.py``): DistributedDataParallel, rank 0 writes (see
``ebm_policy.trainer``).
"""

from ebm_policy.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)
from ebm_policy.chunks import ChunkedDataset, window_indices
from ebm_policy.config import (
    AutoregressiveInfoNCEConfig,
    BackboneConfig,
    ChunkConfig,
    CNNConfig,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicyConfig,
    ImplicitPolicyConfig,
    InfoNCEConfig,
    LangevinInfoNCEConfig,
    OptimConfig,
    PerturbedInfoNCEConfig,
    RankingNCEConfig,
    SoftArgmaxConfig,
    config_from_dict,
    config_to_dict,
)
from ebm_policy.datasets import ArrayDataset
from ebm_policy.distributed import DistributedError
from ebm_policy.energy import ModelEnergy
from ebm_policy.losses import info_nce_loss, make_candidates
from ebm_policy.metrics_log import read_metrics
from ebm_policy.models import EBMConvMLP, ExplicitConvMLP
from ebm_policy.modules import CNN, CoordConv, ResidualBlock, SpatialSoftArgmax
from ebm_policy.normalize import (
    ActionBounds,
    StateNormalizer,
    action_bounds_from_dataset,
    state_stats_from_dataset,
)
from ebm_policy.optimizers import (
    OPTIMIZERS,
    ActionEnergy,
    AnalyticEnergy,
    AutoregressiveDFO,
    AutoregressiveDFOConfig,
    DerivativeFreeOptimizer,
    DFOConfig,
    InferenceOptimizer,
    LangevinChainConfig,
    LangevinConfig,
    LangevinOptimizer,
    OptimizerConfig,
    ProposalDFO,
    ProposalDFOConfig,
    SearchHistory,
    build_optimizer,
    optimizer_config,
)
from ebm_policy.policies import POLICY_CLASSES, ExplicitPolicy, ImplicitPolicy, Policy
from ebm_policy.proposal import MixtureProposal
from ebm_policy.runtime import retain_freed_memory
from ebm_policy.trainer import TrainConfig, Trainer, train
from ebm_policy.workspace import Workspace

__all__ = [
    "ArrayDataset",
    "ChunkConfig",
    "ChunkedDataset",
    "window_indices",
    "MixtureProposal",
    "PerturbedInfoNCEConfig",
    "RankingNCEConfig",
    "ProposalDFO",
    "ProposalDFOConfig",
    "Workspace",
    "retain_freed_memory",
    "CNN",
    "OPTIMIZERS",
    "POLICY_CLASSES",
    "ActionBounds",
    "ActionEnergy",
    "AnalyticEnergy",
    "AutoregressiveDFO",
    "AutoregressiveDFOConfig",
    "AutoregressiveInfoNCEConfig",
    "BackboneConfig",
    "CNNConfig",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CoordConv",
    "DFOConfig",
    "DerivativeFreeOptimizer",
    "DistributedError",
    "EBMConfig",
    "EBMConvMLP",
    "ExplicitConfig",
    "ExplicitConvMLP",
    "ExplicitPolicy",
    "ExplicitPolicyConfig",
    "ImplicitPolicy",
    "ImplicitPolicyConfig",
    "InfoNCEConfig",
    "InferenceOptimizer",
    "LangevinChainConfig",
    "LangevinConfig",
    "LangevinInfoNCEConfig",
    "LangevinOptimizer",
    "ModelEnergy",
    "OptimConfig",
    "OptimizerConfig",
    "Policy",
    "ResidualBlock",
    "SearchHistory",
    "SoftArgmaxConfig",
    "SpatialSoftArgmax",
    "TrainConfig",
    "Trainer",
    "action_bounds_from_dataset",
    "StateNormalizer",
    "state_stats_from_dataset",
    "build_optimizer",
    "config_from_dict",
    "config_to_dict",
    "info_nce_loss",
    "load_checkpoint",
    "load_policy",
    "make_candidates",
    "optimizer_config",
    "read_metrics",
    "save_checkpoint",
    "train",
]
