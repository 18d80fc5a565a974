"""LeRobotDataset v3.0 folders as training data: ``LeRobotDemoDataset`` reads one lazily.

Layout (the parts this module reads; ``agents.lerobot_export`` writes all of them)::

    meta/info.json              codebase_version "v3.0", fps, features (dtype, shape, names),
                                data_path / video_path templates, total_episodes, total_frames
    meta/stats.json             per-feature min / max / mean / std / count (not read here)
    meta/tasks.parquet          task strings and their task_index (not read here)
    meta/episodes/chunk-*/file-*.parquet
                                one row per episode: episode_index, length, dataset_from_index,
                                dataset_to_index, data/chunk_index, data/file_index and, per video
                                feature K, videos/K/chunk_index, videos/K/file_index,
                                videos/K/from_timestamp, videos/K/to_timestamp
    data/chunk-*/file-*.parquet one row per frame: action, observation.state, ..., timestamp,
                                frame_index, episode_index, index, task_index
    videos/K/chunk-*/file-*.mp4 the frames of feature K, episodes one after another in a file
    meta/ibc_gym.json           (ibc-gym's own, optional) env_id, env_kwargs, episode seeds and
                                success of the demos it was exported from

Images come from a ``video`` feature (``observation.image`` or ``observation.images.<camera>``),
decoded with PyAV: an item decodes its one frame (seeking to the nearest keyframe), ``episode(e)``
decodes the episode's frames and keeps the last few episodes. ``in_memory=True`` decodes
everything once, at construction.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agents.dataset import DatasetError, check_finite_actions

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
IBC_META_PATH = "meta/ibc_gym.json"
IBC_META_FORMAT = "ibc-gym-lerobot"
ACTION = "action"
IMAGE = "observation.image"
CAMERAS_PREFIX = "observation.images."
# ibc-gym observation key -> LeRobot feature (proprioception is observation.state by convention).
OBS_FEATURES = {
    "pixels": IMAGE,
    "agent_pos": "observation.state",
    "state": "observation.environment_state",
}
_INFO_KEYS = ("codebase_version", "fps", "features", "data_path", "total_episodes", "total_frames")
_EPISODE_COLUMNS = (
    "episode_index",
    "length",
    "dataset_from_index",
    "dataset_to_index",
    "data/chunk_index",
    "data/file_index",
)


def open_demos(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """A ``DemoDataset`` for an HDF5 file, a ``LeRobotDemoDataset`` for a folder; ``kwargs``
    (``env_id``, ``in_memory``, ``camera``) go to it (``camera`` only to a LeRobot folder)."""
    from agents.dataset import DemoDataset

    camera = kwargs.pop("camera", None)
    if Path(path).is_dir():
        return LeRobotDemoDataset(path, camera=camera, **kwargs)
    if camera is not None:
        raise DatasetError(f"{path}: --camera applies to a LeRobot dataset folder only")
    return DemoDataset(path, **kwargs)


class LeRobotDemoDataset:
    """(image, action) pairs of a LeRobotDataset v3.0 folder, with ``DemoDataset``'s protocol.

    Items are ``{"image": uint8 (H, W, 3), "action": float32 (A,)}``, plus ``"state"``: float32
    (D,) when ``state_key`` names a feature (e.g. ``"observation.state"``). ``camera`` is the
    image feature (default ``observation.image``, else the only ``observation.images.*``).
    ``env_id``/``env_kwargs``/``episode_seeds`` come from ``meta/ibc_gym.json`` when the folder
    was exported by ibc-gym; a foreign dataset has no seeds, and ``env_id`` None unless the
    ``env_id`` argument names the env it is to be trained for.

    Raises ``DatasetError`` (one line, naming the file) for a folder without ``meta/info.json``,
    info missing a key, another codebase version, a missing or damaged Parquet or video file,
    episode metadata that disagrees with the Parquet rows, a video whose frame count disagrees
    with them (at construction from the MP4 header; when an episode is decoded, for it), missing
    features, non-finite actions, or (with ``env_id``) another env.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        env_id: str | None = None,
        camera: str | None = None,
        state_key: str | None = None,
        in_memory: bool = False,
        cache_episodes: int = 16,
    ) -> None:
        self.path = Path(path)
        self.info = _read_info(self.path)
        self.fps = int(self.info["fps"])
        features: dict[str, Any] = self.info["features"]
        self.camera = _pick_camera(self.path, features, camera)
        for key in (ACTION, state_key):
            if key is not None and key not in features:
                raise DatasetError(
                    f"{self.path / INFO_PATH}: has no feature {key!r}; it has {sorted(features)}"
                )
        self.state_key = state_key
        ft = features[self.camera]
        if ft.get("dtype") != "video":
            raise DatasetError(
                f"{self.path / INFO_PATH}: {self.camera} is stored as {ft.get('dtype')!r}; "
                f"ibc-gym reads image features stored as video"
            )
        shape = tuple(int(v) for v in ft.get("shape", ()))
        if len(shape) != 3 or shape[-1] != 3:
            raise DatasetError(
                f"{self.path / INFO_PATH}: {self.camera} must be (height, width, 3) RGB, got "
                f"shape {list(shape)}"
            )
        self.image_shape: tuple[int, ...] = shape
        self.ibc_meta = _read_ibc_meta(self.path)
        self._episodes = _read_episodes(self.path, self.camera)
        self.episode_ends = np.cumsum(self._episodes["length"]).astype(np.int64)
        columns = [ACTION] + ([state_key] if state_key else [])
        frames = _read_frames(self.path, self.info, self._episodes, columns)
        self.actions = frames[ACTION].astype(np.float32)
        if self.actions.ndim != 2 or self.actions.shape[1] < 1:
            raise DatasetError(f"{self.path}: action must be a vector per frame")
        self.action_dim = int(self.actions.shape[1])
        self.states = frames[state_key].astype(np.float32) if state_key else None
        self._check_actions()
        self._check_video_headers()
        if env_id is not None and self.env_id is None:  # a foreign dataset: trained for env_id
            self.ibc_meta = {**self.ibc_meta, "env_id": env_id}
        if env_id is not None and self.env_id != env_id:
            raise DatasetError(f"{self.path} was recorded on {self.env_id}, not on {env_id}")
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_episodes = max(1, cache_episodes)
        self._containers: dict[Path, Any] = {}
        self._pid = os.getpid()
        self._images: np.ndarray | None = None
        if in_memory:
            self._images = self._decode_all()
            self.close()

    @property
    def env_id(self) -> str | None:
        value = self.ibc_meta.get("env_id")
        return None if value is None else str(value)

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.ibc_meta.get("env_kwargs") or {})

    @property
    def action_type(self) -> str:
        return str(self.env_kwargs.get("action_type", "position"))

    @property
    def obs_keys(self) -> dict[str, str]:
        """Item key -> the feature it is read from."""
        return {"image": self.camera, **({"state": self.state_key} if self.state_key else {})}

    @property
    def inputs(self) -> str:
        """What an item observes: ``"image"``, or ``"image_state"`` with ``state_key``."""
        return "image" if self.states is None else "image_state"

    @property
    def state_dim(self) -> int:
        """Dimensions of an item's ``"state"`` (0: none)."""
        return 0 if self.states is None else int(self.states.shape[1])

    @property
    def obs_type(self) -> str:
        """The env observation type an agent trained on these items acts from."""
        return "pixels" if self.states is None else "pixels_agent_pos"

    @property
    def episode_seeds(self) -> np.ndarray:
        return np.asarray(self.ibc_meta.get("episode_seeds", []), dtype=np.int64)

    @property
    def episode_success(self) -> np.ndarray:
        return np.asarray(self.ibc_meta.get("episode_success", []), dtype=bool)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    def __len__(self) -> int:
        return len(self.actions)

    def locate(self, i: int) -> tuple[int, int]:
        """``(episode, step within it)`` of frame ``i``."""
        e = int(np.searchsorted(self.episode_ends, i, side="right"))
        return e, i - (0 if e == 0 else int(self.episode_ends[e - 1]))

    def _start(self, e: int) -> int:
        return 0 if e == 0 else int(self.episode_ends[e - 1])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} of a dataset of {len(self)}")
        if self._images is not None:
            image = self._images[i]
        else:
            e, t = self.locate(i)
            image = self._cache[e][t] if e in self._cache else self._decode_frame(e, t)
        item = {"image": image, "action": self.actions[i]}
        if self.states is not None:
            item["state"] = self.states[i]
        return item

    def episode(self, e: int) -> dict[str, np.ndarray]:
        """All steps of episode ``e``: ``{"image": (T, H, W, 3), "action": (T, A)}`` (and
        ``"state": (T, D)`` with ``state_key``)."""
        start, end = self._start(e), int(self.episode_ends[e])
        images = self._images[start:end] if self._images is not None else self._episode_images(e)
        out = {"image": images, "action": self.actions[start:end]}
        if self.states is not None:
            out["state"] = self.states[start:end]
        return out

    def episodes(self) -> Iterator[dict[str, np.ndarray]]:
        for e in range(self.num_episodes):
            yield self.episode(e)

    def _episode_images(self, e: int) -> np.ndarray:
        """Decoded frames of episode ``e`` (the last ``cache_episodes`` are kept):
        ``-> (T, H, W, 3)``."""
        if e in self._cache:
            self._cache.move_to_end(e)
            return self._cache[e]
        images = self._decode(e)
        self._cache[e] = images
        while len(self._cache) > self.cache_episodes:
            self._cache.popitem(last=False)
        return images

    def video_file(self, e: int) -> Path:
        """The MP4 file holding episode ``e``'s frames."""
        ep = self._episodes
        return self.path / str(self.info["video_path"]).format(
            video_key=self.camera,
            chunk_index=int(ep["video/chunk_index"][e]),
            file_index=int(ep["video/file_index"][e]),
        )

    def _first_frame(self, e: int) -> int:
        """Position in its video file of episode ``e``'s first frame."""
        return int(round(float(self._episodes["video/from_timestamp"][e]) * self.fps))

    def _decode(self, e: int) -> np.ndarray:
        """Decode episode ``e`` from its video: ``-> (T, H, W, 3)`` uint8."""
        length = int(self._episodes["length"][e])
        first = self._first_frame(e)
        frames = self._read_video(self.video_file(e), first, first + length, e)
        return self._complete(e, frames, first, length)

    def _decode_frame(self, e: int, t: int) -> np.ndarray:
        """Decode step ``t`` of episode ``e`` alone (seek to the key frame before it):
        ``-> (H, W, 3)``."""
        path = self.video_file(e)
        position = self._first_frame(e) + t
        frames = self._read_video(path, position, position + 1, e)
        if position not in frames:
            length = int(self._episodes["length"][e])
            raise DatasetError(
                f"{path}: episode {e} has no video frame for step {t} (at "
                f"{position / self.fps:g} s), but {length} rows in the Parquet data"
            )
        return self._checked_shape(path, frames[position][None])[0]

    def _decode_all(self) -> np.ndarray:
        """Every episode's frames, each video file decoded once, in order: ``-> (N, H, W, 3)``."""
        by_file: dict[Path, list[int]] = {}
        for e in range(self.num_episodes):
            by_file.setdefault(self.video_file(e), []).append(e)
        decoded: dict[int, np.ndarray] = {}
        for path, episodes in by_file.items():
            lengths = self._episodes["length"]
            stop = max(self._first_frame(e) + int(lengths[e]) for e in episodes)
            frames = self._read_video(path, 0, stop, episodes[0])
            for e in episodes:
                decoded[e] = self._complete(e, frames, self._first_frame(e), int(lengths[e]))
        return np.concatenate([decoded[e] for e in range(self.num_episodes)])

    def _complete(
        self, e: int, frames: dict[int, np.ndarray], first: int, length: int
    ) -> np.ndarray:
        """Episode ``e``'s frames ``[first, first + length)`` of ``frames``, all of them."""
        path = self.video_file(e)
        have = [frames[p] for p in range(first, first + length) if p in frames]
        if len(have) != length:
            raise DatasetError(
                f"{path}: episode {e} has {len(have)} video frames from "
                f"{first / self.fps:g} s, but {length} rows in the Parquet data"
            )
        return self._checked_shape(path, np.stack(have))

    def _checked_shape(self, path: Path, images: np.ndarray) -> np.ndarray:
        if images.shape[1:] != self.image_shape:
            raise DatasetError(
                f"{path}: frames of {images.shape[1:]}, but info.json says {self.camera} is "
                f"{self.image_shape}"
            )
        return images

    def _container(self, path: Path) -> Any:
        """This process's open reader of ``path`` (opened on first use, per process)."""
        if self._pid != os.getpid():
            self._containers, self._pid = {}, os.getpid()
        if path not in self._containers:
            container = av.open(str(path))
            # one decoding thread: no FFmpeg worker threads, so a process that forks
            # DataLoader workers while holding this reader leaves them a consistent FFmpeg
            container.streams.video[0].thread_count = 1
            self._containers[path] = container
        return self._containers[path]

    def _read_video(self, path: Path, start: int, stop: int, e: int) -> dict[int, np.ndarray]:
        """The frames of ``path`` at positions ``[start, stop)`` that it holds, by position."""
        frames: dict[int, np.ndarray] = {}
        try:
            container = self._container(path)
            stream = container.streams.video[0]
            target = max(0.0, (start - 0.5) / self.fps)
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                position = int(round(frame.time * self.fps))
                if position >= stop:
                    break
                if position >= start:
                    frames[position] = frame.to_ndarray(format="rgb24")
        except FileNotFoundError:
            raise DatasetError(f"{path}: the video of episode {e} is missing") from None
        except (av.error.FFmpegError, OSError) as err:
            self._containers.pop(path, None)
            raise DatasetError(f"{path}: cannot decode the video of episode {e}: {err}") from None
        return frames

    def _check_video_headers(self) -> None:
        """Each video file exists and (where its header says) holds as many frames as the
        episodes placed in it."""
        expected: dict[Path, int] = {}
        for e in range(self.num_episodes):
            path = self.video_file(e)
            end = int(round(float(self._episodes["video/to_timestamp"][e]) * self.fps))
            expected[path] = max(expected.get(path, 0), end)
        for path, frames in expected.items():
            if not path.is_file():
                raise DatasetError(f"{path}: video file missing (named by {EPISODES_DIR})")
            try:
                with av.open(str(path)) as container:
                    count = int(container.streams.video[0].frames)
            except (av.error.FFmpegError, OSError, IndexError) as err:
                raise DatasetError(f"{path}: not a readable video: {err}") from None
            if count and count != frames:
                raise DatasetError(
                    f"{path}: the video has {count} frames, but the episodes stored in it have "
                    f"{frames} rows in the Parquet data"
                )

    def _check_actions(self) -> None:
        check_finite_actions(self.path, self.actions, self.locate)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        state["_containers"] = {}
        return state

    def close(self) -> None:
        """Close the open video files and drop the decoded episodes."""
        for container in self._containers.values():
            container.close()
        self._containers = {}
        self._cache.clear()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (not a LeRobot dataset folder?)") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not readable JSON: {e}") from None


def _read_info(root: Path) -> dict[str, Any]:
    if not root.exists():
        raise DatasetError(f"dataset {root} does not exist")
    path = root / INFO_PATH
    info = _read_json(path)
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: must hold a JSON object")
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        raise DatasetError(f"{path}: lacks {', '.join(missing)}")
    version = str(info["codebase_version"])
    if version.split(".")[0] != CODEBASE_VERSION.split(".")[0]:
        raise DatasetError(
            f"{path}: codebase_version {version}; ibc-gym reads LeRobotDataset {CODEBASE_VERSION} "
            f"(convert older datasets with lerobot's convert_dataset_v21_to_v30)"
        )
    if not isinstance(info["features"], dict) or not isinstance(info["fps"], (int, float)):
        raise DatasetError(f"{path}: features must be an object and fps a number")
    if info["fps"] <= 0:
        raise DatasetError(f"{path}: fps must be positive, got {info['fps']}")
    return info


def _read_ibc_meta(root: Path) -> dict[str, Any]:
    path = root / IBC_META_PATH
    if not path.exists():
        return {}
    meta = _read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != IBC_META_FORMAT:
        raise DatasetError(f"{path}: not an ibc-gym metadata file (format {IBC_META_FORMAT!r})")
    return meta


def _pick_camera(root: Path, features: dict[str, Any], camera: str | None) -> str:
    cameras = sorted(k for k in features if k == IMAGE or k.startswith(CAMERAS_PREFIX))
    if camera is not None:
        if camera not in features:
            raise DatasetError(
                f"{root / INFO_PATH}: has no feature {camera!r}; its image features: {cameras}"
            )
        return camera
    if IMAGE in features:
        return IMAGE
    if len(cameras) == 1:
        return cameras[0]
    if not cameras:
        raise DatasetError(
            f"{root / INFO_PATH}: has no image feature ({IMAGE} or {CAMERAS_PREFIX}*)"
        )
    raise DatasetError(
        f"{root / INFO_PATH}: has several cameras ({', '.join(cameras)}); choose one (--camera)"
    )


def _read_table(path: Path, columns: list[str] | None = None) -> Any:
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (pa.ArrowException, OSError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"{path}: not a readable Parquet file: {message}") from None


def _read_episodes(root: Path, camera: str) -> dict[str, np.ndarray]:
    """The episode table, sorted by episode_index; the camera's video columns are renamed
    ``video/...``."""
    files = sorted((root / EPISODES_DIR).glob("*/*.parquet"))
    if not files:
        raise DatasetError(f"{root / EPISODES_DIR}: no episode metadata (chunk-*/file-*.parquet)")
    video_cols = {f"videos/{camera}/{c}": f"video/{c}" for c in _VIDEO_COLUMNS}
    need = list(_EPISODE_COLUMNS) + list(video_cols)
    table = _concat_tables(files, need, "episode column")
    columns = {video_cols.get(c, c): table.column(c).to_numpy() for c in need}
    order = np.argsort(columns["episode_index"], kind="stable")
    columns = {k: v[order] for k, v in columns.items()}
    n = len(order)
    if not np.array_equal(columns["episode_index"], np.arange(n)):
        raise DatasetError(f"{root / EPISODES_DIR}: episode_index must be 0..{n - 1}, each once")
    lengths = columns["length"]
    ends = np.cumsum(lengths)
    if (
        np.any(lengths <= 0)
        or not np.array_equal(columns["dataset_to_index"], ends)
        or not np.array_equal(columns["dataset_from_index"], ends - lengths)
    ):
        raise DatasetError(
            f"{root / EPISODES_DIR}: episode lengths and dataset_from_index/dataset_to_index "
            f"disagree (episodes must be stored in order, each with at least one frame)"
        )
    return columns


_VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")


def _concat_tables(paths: list[Path], columns: list[str], what: str) -> Any:
    """The ``columns`` of the Parquet files ``paths``, one table; ``DatasetError`` naming the
    file and the ``what`` (e.g. "episode column") it lacks."""
    parts = []
    for path in paths:
        table = _read_table(path)
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: lacks the {what}(s) {', '.join(missing)}")
        parts.append(table.select(columns))
    return pa.concat_tables(parts)


def _read_frames(
    root: Path, info: dict[str, Any], episodes: dict[str, np.ndarray], columns: list[str]
) -> dict[str, np.ndarray]:
    """``columns`` of every frame, in dataset order: ``name -> (N, D)``; checks that each
    episode's rows are where the episode metadata says."""
    files: dict[Path, None] = {}
    for c, f in zip(episodes["data/chunk_index"], episodes["data/file_index"], strict=True):
        files[root / str(info["data_path"]).format(chunk_index=int(c), file_index=int(f))] = None
    need = [*columns, "episode_index", "index"]
    table = _concat_tables(list(files), need, "column")
    index = table.column("index").to_numpy()
    order = np.argsort(index, kind="stable")
    n = int(episodes["dataset_to_index"][-1])
    if len(index) != n or not np.array_equal(index[order], np.arange(n)):
        raise DatasetError(
            f"{root}: the Parquet data holds {len(index)} rows (index column), the episode "
            f"metadata {n} frames"
        )
    episode_index = table.column("episode_index").to_numpy()[order]
    expected = np.repeat(np.arange(len(episodes["length"])), episodes["length"])
    if not np.array_equal(episode_index, expected):
        e = int(np.flatnonzero(episode_index != expected)[0])
        raise DatasetError(
            f"{root}: row {e} of the Parquet data belongs to episode {episode_index[e]}, the "
            f"episode metadata says {expected[e]}: the episode lengths disagree with the rows"
        )
    out = {}
    for name in columns:
        col = table.column(name).combine_chunks()
        try:
            flat = col.flatten() if _is_nested(col.type) else col
            values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64)
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise DatasetError(f"{root}: column {name} is not numeric: {e}") from None
        if len(values) % max(1, n) or len(values) == 0:
            raise DatasetError(
                f"{root}: column {name} does not hold one vector of equal size per row"
            )
        out[name] = values.reshape(n, -1)[order]
    return out


def _is_nested(tp: Any) -> bool:
    return bool(
        pa.types.is_list(tp) or pa.types.is_fixed_size_list(tp) or pa.types.is_large_list(tp)
    )
