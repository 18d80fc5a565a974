"""Demo datasets: one HDF5 file per dataset, written atomically, read lazily.

File layout (``format = "ibc-gym-demos"``, ``format_version = 1``)::

    /                   attrs: format, format_version, env_id, env_kwargs (JSON), obs_type,
                               source (JSON: who produced the demos), created (ISO time)
    /obs/<key>          (N, ...) one dataset per observation key: "pixels" uint8 (N, H, W, 3),
                        "agent_pos" float32 (N, 2), "state" float32 (N, D)
    /actions            (N, A) float32, the action taken after each observation
    /rewards            (N,) float32
    /episode_ends       (E,) int64, exclusive end index of each episode (zarr / diffusion-policy
                        convention: episode e spans [ends[e-1], ends[e]))
    /episode_seeds      (E,) int64, the reset seed of each episode
    /episode_success    (E,) bool

Images are stored one frame per chunk with LZF compression, so random access during training
decompresses one frame, and a dataset larger than memory can be trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from agents.rollout import Episode

FORMAT = "ibc-gym-demos"
FORMAT_VERSION = 1
_REQUIRED = ("actions", "rewards", "episode_ends", "episode_seeds", "episode_success")


class DatasetError(ValueError):
    """A demo dataset file that cannot be used, with the reason."""


class DemoWriter:
    """Streams episodes into a new dataset file; the file appears only on ``close()``.

    Use as a context manager: on an exception the temporary file is removed and nothing is left
    at ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        env_id: str,
        env_kwargs: Mapping[str, Any],
        source: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A temp file beside the target (same filesystem, so the final rename is atomic).
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._f = h5py.File(self._tmp, "w")
        self._f.attrs["format"] = FORMAT
        self._f.attrs["format_version"] = FORMAT_VERSION
        self._f.attrs["env_id"] = env_id
        self._f.attrs["env_kwargs"] = json.dumps(dict(env_kwargs), sort_keys=True)
        self._f.attrs["obs_type"] = str(env_kwargs.get("obs_type", "pixels"))
        self._f.attrs["source"] = json.dumps(dict(source or {}), sort_keys=True)
        self._f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._n = 0
        self._ends: list[int] = []
        self._seeds: list[int] = []
        self._success: list[bool] = []

    def _append(self, name: str, data: np.ndarray) -> None:
        if name not in self._f:
            chunks = (1, *data.shape[1:]) if data.ndim >= 3 else (max(1, min(4096, len(data))), *data.shape[1:])
            self._f.create_dataset(
                name,
                shape=(0, *data.shape[1:]),
                maxshape=(None, *data.shape[1:]),
                dtype=data.dtype,
                chunks=chunks,
                compression="lzf" if data.ndim >= 3 else None,
            )
        ds = self._f[name]
        if ds.shape[1:] != data.shape[1:] or ds.dtype != data.dtype:
            raise ValueError(f"{name}: got {data.dtype}{data.shape[1:]}, file has {ds.dtype}{ds.shape[1:]}")
        ds.resize(ds.shape[0] + len(data), axis=0)
        ds[-len(data):] = data

    def add(self, episode: Episode) -> None:
        """Append one episode (it must carry its observations)."""
        if episode.observations is None:
            raise ValueError("episode has no observations: collect with keep_observations=True")
        obs = episode.observations
        obs_dict = obs if isinstance(obs, dict) else {"pixels" if obs.ndim == 4 else "state": obs}
        for key, arr in obs_dict.items():
            self._append(f"obs/{key}", np.asarray(arr))
        self._append("actions", episode.actions.astype(np.float32))
        self._append("rewards", episode.rewards.astype(np.float32))
        self._n += episode.length
        self._ends.append(self._n)
        self._seeds.append(episode.seed)
        self._success.append(episode.success)

    def close(self) -> Path:
        """Finish the file and move it into place atomically."""
        if self._n == 0:
            self.abort()
            raise ValueError("no episodes were added; nothing written")
        self._f.create_dataset("episode_ends", data=np.asarray(self._ends, dtype=np.int64))
        self._f.create_dataset("episode_seeds", data=np.asarray(self._seeds, dtype=np.int64))
        self._f.create_dataset("episode_success", data=np.asarray(self._success, dtype=bool))
        self._f.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._f:
            self._f.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> DemoWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class DemoDataset:
    """(image, action) pairs of a demo file, read lazily, as ``ebm_policy``'s trainer takes them.

    Items are ``{"image": uint8 (H, W, C), "action": float32 (A,)}`` (``image`` is the
    ``obs_key`` observation). The file handle is opened per process on first access, so the
    dataset works with DataLoader workers. ``in_memory=True`` reads everything once (fast for
    small datasets).

    Raises ``DatasetError`` for a missing, truncated or foreign file, a format version this code
    does not read, or (with ``env_id``) a dataset recorded on another env.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        env_id: str | None = None,
        obs_key: str = "pixels",
        in_memory: bool = False,
    ) -> None:
        self.path = Path(path)
        self.obs_key = obs_key
        try:
            with _open(self.path) as f:
                self.attrs = _validate(f, self.path, obs_key)
                self.episode_ends = f["episode_ends"][()]
                self.episode_seeds = f["episode_seeds"][()]
                self.episode_success = f["episode_success"][()]
                self.image_shape = tuple(f[f"obs/{obs_key}"].shape[1:])
                self.action_dim = int(f["actions"].shape[1])
                self.actions = f["actions"][()]
                self._images = f[f"obs/{obs_key}"][()] if in_memory else None
        except (OSError, KeyError) as e:  # h5py raises these on damaged files
            raise DatasetError(f"{self.path} is damaged or truncated: {e}") from e
        if env_id is not None and self.env_id != env_id:
            raise DatasetError(f"{self.path} was recorded on {self.env_id}, not on {env_id}")
        self._file: h5py.File | None = None
        self._pid = -1

    @property
    def env_id(self) -> str:
        return str(self.attrs["env_id"])

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.attrs["env_kwargs"])

    @property
    def action_type(self) -> str:
        """``"position"`` or ``"delta"``: how the env read the recorded actions (files from
        before the option existed hold absolute set-points)."""
        return str(self.env_kwargs.get("action_type", "position"))

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    def __len__(self) -> int:
        return len(self.actions)

    def _images_ds(self) -> Any:
        if self._images is not None:
            return self._images
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[f"obs/{self.obs_key}"]

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"image": np.asarray(self._images_ds()[i]), "action": self.actions[i]}

    def episode(self, e: int) -> dict[str, np.ndarray]:
        """All steps of episode ``e``: ``{"image": (T, H, W, C), "action": (T, A)}``."""
        start = 0 if e == 0 else int(self.episode_ends[e - 1])
        end = int(self.episode_ends[e])
        return {"image": np.asarray(self._images_ds()[start:end]), "action": self.actions[start:end]}

    def episodes(self) -> Iterator[dict[str, np.ndarray]]:
        for e in range(self.num_episodes):
            yield self.episode(e)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path} is not a readable HDF5 demo file (truncated or another format): {e}") from e


def _validate(f: h5py.File, path: Path, obs_key: str) -> dict[str, Any]:
    fmt = f.attrs.get("format")
    if fmt != FORMAT:
        raise DatasetError(f"{path} is not an ibc-gym demo dataset (format attribute {fmt!r}, expected {FORMAT!r})")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise DatasetError(f"{path} has format version {version}; this ibc-gym reads version {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in f]
    if missing:
        raise DatasetError(f"{path} is incomplete (missing {', '.join(missing)}): was its writing interrupted?")
    if f"obs/{obs_key}" not in f:
        keys = sorted(f["obs"].keys()) if "obs" in f else []
        raise DatasetError(f"{path} has no observation {obs_key!r}; it has {keys}")
    n = f["actions"].shape[0]
    ends = f["episode_ends"][()]
    lengths = {k: f[f"obs/{k}"].shape[0] for k in f["obs"]}
    if len(ends) == 0 or int(ends[-1]) != n or any(v != n for v in lengths.values()) or f["rewards"].shape[0] != n:
        raise DatasetError(f"{path} is inconsistent: episode ends, actions and observations disagree in length")
    if not (len(ends) == len(f["episode_seeds"]) == len(f["episode_success"])):
        raise DatasetError(f"{path} is inconsistent: per-episode arrays disagree in length")
    attrs = dict(f.attrs)
    attrs["env_kwargs"] = json.loads(attrs["env_kwargs"])
    attrs["source"] = json.loads(attrs.get("source", "{}"))
    return attrs
