"""``ibc-gym collect``: record scripted-expert demonstrations into an HDF5 dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

import envs  # noqa: F401  (registers the ibc/ ids)
from agents.dataset import DemoWriter
from agents.experts import make_expert
from agents.rollout import Episode, make_vector_env, rollout
from demos.args import check_options, help_field, registered_env
from envs.base import SIZE_RANGE


@dataclass(frozen=True)
class CollectConfig:
    env: str = help_field("ibc/ReachTarget-v0", "environment id", check=registered_env)
    episodes: int = help_field(200, "number of episodes to keep", min=1)
    out: Path = help_field(Path("data/demos.h5"), "dataset file to write (HDF5)")
    seed: int = help_field(
        0, "episode i is reset with seed + i; the expert's RNG is seeded with it too", min=0
    )
    noise: float = help_field(0.0, "std of Gaussian noise added to the expert's actions", min=0)
    image_size: int = help_field(
        96, "observation image size in pixels", min=SIZE_RANGE[0], max=SIZE_RANGE[1]
    )
    obs_type: Literal["pixels", "pixels_agent_pos", "state"] = help_field(
        "pixels", "observation type"
    )
    action_type: Literal["position", "delta"] = help_field(
        "position", "actions: absolute set-points, or displacements of the set-point per step"
    )
    num_envs: int = help_field(1, "sub-envs stepped together", min=1)
    keep_failures: bool = help_field(False, "also keep episodes where the expert failed")
    overwrite: bool = help_field(False, "replace an existing output file")
    progress: bool = help_field(True, "show a progress bar")

    def __post_init__(self) -> None:
        check_options(self)


def collect(cfg: CollectConfig) -> Path:
    """Collect ``cfg.episodes`` expert episodes and write them atomically to ``cfg.out``."""
    env_kwargs = {
        "obs_type": cfg.obs_type,
        "image_size": cfg.image_size,
        "action_type": cfg.action_type,
    }
    env = make_vector_env(cfg.env, cfg.num_envs, **env_kwargs)
    expert = make_expert(cfg.env, seed=cfg.seed, noise=cfg.noise, action_type=cfg.action_type)
    source = {"agent": "expert", "noise": cfg.noise, "seed": cfg.seed}
    kept = failed = 0
    bar = tqdm(total=cfg.episodes, desc=f"collect {cfg.env}", unit="ep", disable=not cfg.progress)
    try:
        with DemoWriter(
            cfg.out, env_id=cfg.env, env_kwargs=env_kwargs, source=source, overwrite=cfg.overwrite
        ) as writer:
            next_seed = cfg.seed
            while kept < cfg.episodes:
                # Episodes the expert fails are dropped, so draw more seeds until enough are kept.
                batch = list(range(next_seed, next_seed + cfg.episodes - kept))
                next_seed += len(batch)
                episodes: list[Episode] = rollout(env, expert, batch)
                for ep in episodes:
                    if ep.success or cfg.keep_failures:
                        writer.add(ep)
                        kept += 1
                        bar.update(1)
                    else:
                        failed += 1
                if failed > 10 * cfg.episodes:
                    raise RuntimeError(
                        f"the expert failed {failed} episodes on {cfg.env}; giving up"
                    )
    finally:
        bar.close()
        env.close()
    print(f"wrote {kept} episodes ({failed} failed expert episodes dropped) to {cfg.out}")
    return cfg.out


COMMANDS = [
    ("collect", "Record scripted-expert demos into an HDF5 dataset.", CollectConfig, collect)
]
