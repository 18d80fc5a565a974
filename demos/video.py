"""``ibc-gym video``: record rollout videos of an agent (the expert or a trained checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import envs  # noqa: F401  (registers the ibc/ ids)
from agents.experts import make_expert
from agents.rollout import make_vector_env, rollout
from demos.args import help_field, registered_env
from demos.media import video_name, write_video
from envs.base import SIZE_RANGE


@dataclass(frozen=True)
class VideoConfig:
    env: str = help_field("ibc/ReachTarget-v0", "environment id", check=registered_env)
    agent: str = help_field("expert", "'expert' or the path of a trained checkpoint")
    episodes: int = help_field(3, "number of episodes to record", min=1)
    out: Path = help_field(Path("videos"), "output folder")
    seed: int = help_field(1000, "episode i is reset with seed + i", min=0)
    image_size: int = help_field(
        96,
        "observation image size (a checkpoint's own size wins)",
        min=SIZE_RANGE[0],
        max=SIZE_RANGE[1],
    )
    render_size: int = help_field(
        256, "video frame size in pixels", min=SIZE_RANGE[0], max=SIZE_RANGE[1]
    )
    action_type: Literal["position", "delta"] = help_field(
        "position", "the expert's action type (a checkpoint's own wins)"
    )


def record_videos(cfg: VideoConfig) -> list[Path]:
    """Roll out ``cfg.episodes`` episodes and write one video per episode."""
    env_kwargs = {
        "image_size": cfg.image_size,
        "render_mode": "rgb_array",
        "render_size": cfg.render_size,
    }
    if cfg.agent == "expert":
        policy = make_expert(cfg.env, seed=cfg.seed, action_type=cfg.action_type)
        env_kwargs["action_type"], label = cfg.action_type, "expert"
    else:
        from agents.learned import load_agent

        policy = load_agent(cfg.agent, env_id=cfg.env)
        env_kwargs.update(
            obs_type=getattr(policy, "obs_type", "pixels"),
            image_size=policy.image_size,
            action_type=policy.action_type,
        )
        label = policy.kind
    env = make_vector_env(cfg.env, 1, **env_kwargs)
    try:
        fps = env.metadata.get("render_fps", 10)
        seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
        written = []
        for i, ep in enumerate(
            rollout(env, policy, seeds, keep_observations=False, record_frames=cfg.episodes)
        ):
            path = write_video(
                cfg.out / video_name(cfg.env, label, i, ep.seed), ep.frames or [], fps
            )
            outcome = "success" if ep.success else "failure"
            print(f"{path}  ({ep.length} steps, {outcome}, final distance {ep.final_distance:.3f})")
            written.append(path)
    finally:
        env.close()
    return written


COMMANDS = [
    ("video", "Record rollout videos of the expert or a trained agent.", VideoConfig, record_videos)
]
