"""Writing rollout videos: mp4 through imageio-ffmpeg, GIF when ffmpeg is unavailable."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from ebm_policy.fileio import atomic_path


def ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    return True


def write_video(path: str | os.PathLike[str], frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames to ``path`` atomically and return the path written.

    The suffix of ``path`` picks the format; ``.mp4`` falls back to ``.gif`` (same stem) when no
    ffmpeg is available.
    """
    path = Path(path)
    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    if path.suffix == ".mp4" and not ffmpeg_available():
        path = path.with_suffix(".gif")
    arr = [np.asarray(f, dtype=np.uint8) for f in frames]
    with atomic_path(path, fsync=False) as tmp:
        if path.suffix == ".mp4":
            imageio.mimsave(tmp, arr, fps=fps, codec="libx264", quality=8, macro_block_size=1)
        else:
            imageio.mimsave(tmp, arr, duration=1000.0 / fps, loop=0)
    return path


def video_name(env_id: str, agent: str, episode: int, seed: int, suffix: str = ".mp4") -> str:
    """``ReachTarget-v0_expert_ep000_seed123.mp4``: videos are named by env, agent, episode and seed."""
    env = env_id.split("/")[-1]
    return f"{env}_{agent}_ep{episode:03d}_seed{seed}{suffix}"
