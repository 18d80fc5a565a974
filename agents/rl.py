"""The reinforcement-learning baseline: stable-baselines3 PPO (CNN policy) from reward alone.

It shows what demonstrations buy: the same env and the same evaluation as the BC agents, but
trained only from the dense reward. Its default budget is small (it must fit a demo on 2 CPU
cores); a larger ``total_timesteps`` is an option.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from ebm_policy.fileio import atomic_path, strict_json, write_text_atomic

RL_FORMAT = "ibc-gym-rl"


@dataclass(frozen=True)
class RLConfig:
    """PPO settings. ``n_steps * num_envs`` transitions per update."""

    env_id: str = "ibc/ReachTarget-v0"
    image_size: int = 64
    action_type: str = "position"
    total_timesteps: int = 20_000
    num_envs: int = 4
    n_steps: int = 128
    batch_size: int = 128
    n_epochs: int = 4
    learning_rate: float = 3e-4
    gamma: float = 0.95
    seed: int = 0


def _make_env(env_id: str, image_size: int, action_type: str) -> gym.Env:
    return gym.make(
        env_id,
        obs_type="pixels",
        image_size=image_size,
        reward_type="dense",
        action_type=action_type,
    )


def train_ppo(cfg: RLConfig, out_dir: str | os.PathLike[str]) -> Path:
    """Train PPO on ``cfg.env_id`` and save ``out_dir/model.zip`` (+ ``rl_config.json``)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    if cfg.image_size < 36:
        raise ValueError(
            f"PPO's CNN policy (NatureCNN) needs images of at least 36 px, got {cfg.image_size}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    venv = make_vec_env(
        lambda: _make_env(cfg.env_id, cfg.image_size, cfg.action_type),
        n_envs=cfg.num_envs,
        seed=cfg.seed,
    )
    model = PPO(
        "CnnPolicy",
        venv,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        seed=cfg.seed,
        verbose=0,
        device="cpu",
    )
    model.learn(total_timesteps=cfg.total_timesteps, progress_bar=False)
    venv.close()
    with atomic_path(out / "model.zip") as tmp:  # the temporary name ends in .zip, as SB3 wants
        model.save(tmp)
    meta = {"format": RL_FORMAT, "config": asdict(cfg)}
    write_text_atomic(out / "rl_config.json", strict_json(meta, indent=2))
    return out / "model.zip"


class PPOAgent:
    """A trained SB3 model behind the rollout ``Policy`` interface."""

    kind = "ppo"

    def __init__(self, model: Any, cfg: RLConfig) -> None:
        self.model = model
        self.config = cfg
        self.env_id = cfg.env_id
        self.image_size = cfg.image_size
        self.action_type = cfg.action_type
        self.env_kwargs = {
            "obs_type": "pixels",
            "image_size": cfg.image_size,
            "action_type": cfg.action_type,
        }
        self.train_seeds: list[int] = []  # trained from reward alone, on unseeded resets

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PPOAgent:
        from stable_baselines3 import PPO

        path = Path(path)
        meta_path = path.parent / "rl_config.json"
        if not meta_path.exists():
            raise ValueError(f"{path}: no rl_config.json beside it; not an ibc-gym RL run")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != RL_FORMAT:
            raise ValueError(f"{meta_path} is not an ibc-gym RL config")
        return cls(PPO.load(path, device="cpu"), RLConfig(**meta["config"]))

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """PPO's CNN policy is memoryless: nothing to reset."""

    def select_action(self, obs: np.ndarray, info: dict[str, Any] | None = None) -> np.ndarray:
        """``(n, H, W, 3)`` uint8 -> ``(n, 2)`` deterministic actions."""
        actions, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(actions, dtype=np.float32)
