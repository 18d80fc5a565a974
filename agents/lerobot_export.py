"""Export an ibc-gym HDF5 demo file as a LeRobotDataset v3.0 folder (``agents.lerobot`` reads it).

Observations map to features ``pixels -> observation.image`` (video), ``agent_pos ->
observation.state``, ``state -> observation.environment_state``; actions to ``action``, rewards to
``next.reward``, the last step of each episode to ``next.done``. All episodes go into one Parquet
file and one MP4 per video feature (LeRobot's size limits only decide when its writer opens a
new file; a reader follows the episode table). ibc-gym's own metadata (env id and kwargs, episode
seeds and success) goes to ``meta/ibc_gym.json``, a file LeRobot ignores.

The folder is written beside its destination under a temporary name and renamed into place at
the end, so an interrupted export leaves nothing at ``out_dir``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agents.dataset import DemoDataset
from agents.lerobot import (
    CODEBASE_VERSION,
    EPISODES_DIR,
    IBC_META_FORMAT,
    IBC_META_PATH,
    INFO_PATH,
    OBS_FEATURES,
    STATS_PATH,
    TASKS_PATH,
)
from ebm_policy.params import check_params, one_of, param
from envs.physics import CONTROL_HZ

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
_STAMP = {"chunk_index": 0, "file_index": 0}


@dataclass(frozen=True)
class VideoConfig:
    """How image features are encoded (H.264 through PyAV/FFmpeg).

    The default (``crf 0``, ``yuv444p``) is lossless in YUV: only the RGB -> YUV -> RGB rounding
    remains (see the README for the measured pixel error). ``yuv420p`` with a higher ``crf`` gives
    much smaller files that every player opens, at a visible loss on small images.
    """

    codec: str = param("libx264", "FFmpeg video encoder", check=one_of("libx264", "libx265"))
    crf: int = param(
        0, "constant rate factor (0: lossless YUV; 23: FFmpeg's default)", min=0, max=51
    )
    pix_fmt: Literal["yuv444p", "yuv420p"] = param(
        "yuv444p", "pixel format (yuv420p halves the colour resolution)"
    )
    gop: int = param(2, "frames between key frames (small: fast random access)", min=1)

    def __post_init__(self) -> None:
        check_params(self)


def export_lerobot(
    h5_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    video: VideoConfig | None = None,
    task: str | None = None,
    fps: int = CONTROL_HZ,
    overwrite: bool = False,
) -> Path:
    """Write the demos of ``h5_path`` as a LeRobotDataset v3.0 folder ``out_dir``; returns it.

    ``task`` is the one task string of every frame (default: the env id). Refuses an existing
    ``out_dir`` unless ``overwrite``; raises ``DatasetError`` for a bad demo file.
    """
    video = video or VideoConfig()
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    demos = DemoDataset(h5_path)  # validates the file (any observation type)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(demos, tmp, video=video, task=task or demos.env_id, fps=fps)
        if out.exists():
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        demos.close()
    return out


def _remove_stale(out: Path) -> None:
    """Remove the temporary folders of exports to ``out`` whose process is gone."""
    for path in out.parent.glob(f".{out.name}.*.tmp"):
        pid = path.name.removeprefix(f".{out.name}.").removesuffix(".tmp")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(demos: DemoDataset, root: Path, *, video: VideoConfig, task: str, fps: int) -> None:
    import h5py

    n, num_episodes = len(demos), demos.num_episodes
    ends = demos.episode_ends.astype(np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    lengths = ends - starts
    episode_index = np.repeat(np.arange(num_episodes), lengths)
    frame_index = np.arange(n) - np.repeat(starts, lengths)
    with h5py.File(demos.path, "r") as f:
        obs = {k: f[f"obs/{k}"] for k in f["obs"] if k in OBS_FEATURES}
        rewards = f["rewards"][()].astype(np.float32)
        vectors = {
            OBS_FEATURES[k]: ds[()].astype(np.float32) for k, ds in obs.items() if ds.ndim == 2
        }
        images = {OBS_FEATURES[k]: ds for k, ds in obs.items() if ds.ndim == 4}
        features: dict[str, Any] = {}
        stats: dict[str, dict[str, Any]] = {}
        video_meta: dict[str, np.ndarray] = {}
        for key, ds in images.items():
            features[key] = _video_feature(ds.shape[1:], video, fps)
            stats[key] = _write_video(
                ds, root / VIDEO_PATH.format(video_key=key, **_STAMP), video, fps
            )
            video_meta[f"videos/{key}/chunk_index"] = np.zeros(num_episodes, np.int64)
            video_meta[f"videos/{key}/file_index"] = np.zeros(num_episodes, np.int64)
            video_meta[f"videos/{key}/from_timestamp"] = starts / fps
            video_meta[f"videos/{key}/to_timestamp"] = ends / fps
    columns: dict[str, pa.Array] = {}
    for key, values in [("action", demos.actions.astype(np.float32)), *sorted(vectors.items())]:
        features[key] = {
            "dtype": "float32",
            "shape": [values.shape[1]],
            "names": [f"{key.rsplit('.', 1)[-1]}_{i}" for i in range(values.shape[1])],
        }
        columns[key] = pa.FixedSizeListArray.from_arrays(
            pa.array(values.reshape(-1)), values.shape[1]
        )
        stats[key] = _vector_stats(values)
    done = np.zeros(n, dtype=bool)
    done[ends - 1] = True
    scalars = {
        "next.reward": pa.array(rewards),
        "next.done": pa.array(done),
        "timestamp": pa.array((frame_index / fps).astype(np.float32)),
        "frame_index": pa.array(frame_index.astype(np.int64)),
        "episode_index": pa.array(episode_index.astype(np.int64)),
        "index": pa.array(np.arange(n, dtype=np.int64)),
        "task_index": pa.array(np.zeros(n, dtype=np.int64)),
    }
    for key, arr in scalars.items():
        columns[key] = arr
        features[key] = {
            "dtype": np.dtype(arr.type.to_pandas_dtype()).name,
            "shape": [1],
            "names": None,
        }
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64)[:, None]
        stats[key] = _vector_stats(values)
    _write_parquet(pa.table(columns), root / DATA_PATH.format(**_STAMP))
    episodes = {
        "episode_index": pa.array(np.arange(num_episodes, dtype=np.int64)),
        "tasks": pa.array([[task]] * num_episodes, type=pa.list_(pa.string())),
        "length": pa.array(lengths),
        "data/chunk_index": pa.array(np.zeros(num_episodes, np.int64)),
        "data/file_index": pa.array(np.zeros(num_episodes, np.int64)),
        "dataset_from_index": pa.array(starts.astype(np.int64)),
        "dataset_to_index": pa.array(ends),
        **{k: pa.array(v) for k, v in video_meta.items()},
        "meta/episodes/chunk_index": pa.array(np.zeros(num_episodes, np.int64)),
        "meta/episodes/file_index": pa.array(np.zeros(num_episodes, np.int64)),
    }
    _write_parquet(pa.table(episodes), root / EPISODES_DIR / "chunk-000/file-000.parquet")
    _write_tasks(root / TASKS_PATH, [task])
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": None,
        "total_episodes": num_episodes,
        "total_frames": n,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{num_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if images else None,
        "features": features,
    }
    _write_json(root / INFO_PATH, info)
    _write_json(root / STATS_PATH, stats)
    _write_json(
        root / IBC_META_PATH,
        {
            "format": IBC_META_FORMAT,
            "format_version": 1,
            "env_id": demos.env_id,
            "env_kwargs": demos.env_kwargs,
            "source": demos.attrs.get("source", {}),
            "exported_from": str(demos.path),
            "episode_seeds": [int(s) for s in demos.episode_seeds],
            "episode_success": [bool(s) for s in demos.episode_success],
            "video": {"codec": video.codec, "crf": video.crf, "pix_fmt": video.pix_fmt},
        },
    )


def _video_feature(shape: tuple[int, ...], video: VideoConfig, fps: int) -> dict[str, Any]:
    height, width, channels = (int(v) for v in shape)
    return {
        "dtype": "video",
        "shape": [height, width, channels],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height,
            "video.width": width,
            "video.codec": "h264" if video.codec == "libx264" else "hevc",
            "video.pix_fmt": video.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": channels,
            "has_audio": False,
        },
    }


def _write_video(frames: Any, path: Path, video: VideoConfig, fps: int) -> dict[str, Any]:
    """Encode ``frames`` (N, H, W, 3) uint8 (read in blocks) into ``path``, frame ``i`` at time
    ``i / fps``; returns the per-channel stats of the images in [0, 1], shaped (3, 1, 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n, height, width, _ = frames.shape
    total = np.zeros(3)
    total_sq = np.zeros(3)
    low, high = np.full(3, 255.0), np.zeros(3)
    options = {"crf": str(video.crf), "g": str(video.gop)}
    if video.codec == "libx265":
        options = {"x265-params": f"crf={video.crf}:keyint={video.gop}:log-level=error"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(video.codec, rate=fps, options=options)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, video.pix_fmt
        stream.time_base = Fraction(1, fps)
        for start in range(0, n, 256):
            block = np.asarray(frames[start : start + 256])
            pixels = block.reshape(-1, 3).astype(np.float64)
            total += pixels.sum(0)
            total_sq += (pixels**2).sum(0)
            low, high = np.minimum(low, pixels.min(0)), np.maximum(high, pixels.max(0))
            for i, image in enumerate(block):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = start + i
                frame.time_base = Fraction(1, fps)
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    count = n * height * width
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))

    def shaped(v: np.ndarray) -> list[Any]:
        return (v / 255.0).reshape(3, 1, 1).tolist()

    return {
        "min": shaped(low),
        "max": shaped(high),
        "mean": shaped(mean),
        "std": shaped(std),
        "count": [int(n)],
    }


def _vector_stats(values: np.ndarray) -> dict[str, Any]:
    """min / max / mean / std / count of ``values`` (N, D) per column."""
    values = np.asarray(values, dtype=np.float64)
    return {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": [len(values)],
    }


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """``meta/tasks.parquet`` as pandas writes a frame indexed by the task string (LeRobot reads
    it with ``pandas.read_parquet``): a ``task`` column, used as the index, and ``task_index``."""
    table = pa.table(
        {"task_index": pa.array(np.arange(len(tasks), dtype=np.int64)), "task": pa.array(tasks)}
    )
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    _write_parquet(table, path)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n")
