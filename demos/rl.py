"""``ibc-gym rl``: train the stable-baselines3 PPO baseline from reward alone.

Evaluate it like the BC agents: ``ibc-gym eval --ckpt <out>/model.zip``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import envs  # noqa: F401  (registers the ibc/ ids)
from agents.rl import RLConfig, train_ppo
from demos.args import help_field, registered_env
from envs.base import SIZE_RANGE


@dataclass(frozen=True)
class RLJobConfig:
    env: str = help_field("ibc/ReachTarget-v0", "environment id", check=registered_env)
    out: Path = help_field(Path("runs/ppo"), "run folder (model.zip, rl_config.json)")
    timesteps: int = help_field(
        20_000, "environment steps of PPO training (more: better, slower)", min=1
    )
    image_size: int = help_field(64, "observation image size", min=36, max=SIZE_RANGE[1])
    num_envs: int = help_field(4, "parallel envs", min=1)
    seed: int = help_field(0, "seed", min=0)


def run_rl(cfg: RLJobConfig) -> Path:
    rl_cfg = RLConfig(
        env_id=cfg.env,
        image_size=cfg.image_size,
        total_timesteps=cfg.timesteps,
        num_envs=cfg.num_envs,
        seed=cfg.seed,
    )
    path = train_ppo(rl_cfg, cfg.out)
    print(f"PPO trained for {cfg.timesteps} steps on {cfg.env} -> {path}")
    return path


COMMANDS = [
    (
        "rl",
        "Train the PPO baseline (stable-baselines3, CNN policy) from reward alone.",
        RLJobConfig,
        run_rl,
    )
]
