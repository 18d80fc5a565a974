"""Optimizer and learning-rate schedule from an ``OptimConfig``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ebm_policy.config import OptimConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD (momentum 0.9) over ``params`` with ``cfg.lr`` and ``cfg.weight_decay``."""
    params = list(params)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=_betas(cfg), weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=_betas(cfg), weight_decay=cfg.weight_decay
        )
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def _betas(cfg: OptimConfig) -> tuple[float, float]:
    if len(cfg.betas) != 2:
        raise ValueError(f"betas needs two values, got {cfg.betas}")
    return float(cfg.betas[0]), float(cfg.betas[1])


def lr_factor(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """The multiplier of ``cfg.lr`` at ``step`` (0-based) of a ``total_steps`` run.

    Linear warm-up over ``warmup_steps``, then ``"step"``: ``gamma ** (step // step_size)``;
    ``"cosine"``: from 1 to ``min_lr_ratio`` over the remaining steps; ``"constant"``: 1.
    """
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    if cfg.scheduler == "step":
        return warm * cfg.gamma ** (step // max(1, cfg.step_size))
    if cfg.scheduler == "cosine":
        span = max(1, total_steps - cfg.warmup_steps)
        t = min(1.0, max(0, step - cfg.warmup_steps) / span)
        return warm * (
            cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        )
    if cfg.scheduler == "constant":
        return warm
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following ``lr_factor``; its ``state_dict`` holds only numbers."""

    def factor(step: int) -> float:
        return lr_factor(cfg, step, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
