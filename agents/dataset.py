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

``DemoDataset`` exposes the observations the file's ``obs_type`` names (``OBS_KEYS``): ``pixels``
as ``"image"``, ``state`` as ``"state"``, and for ``pixels_agent_pos`` the pixels as ``"image"``
and the agent position as ``"state"`` (the proprio input).

Images are stored one frame per chunk with LZF compression, so random access during training
decompresses one frame, and a dataset larger than memory can be trained on.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from agents.rollout import Episode
from ebm_policy.fileio import remove_stale_temporaries

# Observation type -> {item key: file key under /obs}: what a dataset of that type trains on.
OBS_KEYS: dict[str, dict[str, str]] = {
    "pixels": {"image": "pixels"},
    "state": {"state": "state"},
    "pixels_agent_pos": {"image": "pixels", "state": "agent_pos"},
}

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
            raise FileExistsError(
                f"{self.path} exists; pass overwrite=True (--overwrite) to replace it"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(self.path.parent, base=self.path.name):
            print(f"removed {stale}, left behind by an interrupted collection", file=sys.stderr)
        # A temp file beside the target (same filesystem, so the final rename is atomic); its
        # name carries the pid, so the next writer of this path removes it if this one is killed.
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
            chunks = (
                (1, *data.shape[1:])
                if data.ndim >= 3
                else (max(1, min(4096, len(data))), *data.shape[1:])
            )
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
            raise ValueError(
                f"{name}: got {data.dtype}{data.shape[1:]}, file has {ds.dtype}{ds.shape[1:]}"
            )
        ds.resize(ds.shape[0] + len(data), axis=0)
        ds[-len(data) :] = data

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
    """(observation, action) pairs of a demo file, read lazily, as ``ebm_policy``'s trainer takes
    them.

    Items are ``{"image": uint8 (H, W, C), "state": float32 (S,), "action": float32 (A,)}`` with
    the observation keys ``obs_keys`` maps to file keys (default: those of the file's
    ``obs_type``, ``OBS_KEYS``; ``obs_key`` alone names the image's file key, as before).
    ``inputs`` says which (``"image"``, ``"state"`` or ``"image_state"``, the model's
    ``inputs``). States are read into memory; images lazily, the file handle opened per process
    on first access, so the dataset works with DataLoader workers. ``in_memory=True`` reads the
    images once too (fast for small datasets).

    Raises ``DatasetError`` for a missing, truncated or foreign file, a format version this code
    does not read, arrays of the wrong shape or type, non-finite actions, malformed JSON
    attributes, or (with ``env_id``) a dataset recorded on another env; and, when an item is read,
    for a frame whose data is damaged (naming the frame and its episode).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        env_id: str | None = None,
        obs_key: str | None = None,
        obs_keys: Mapping[str, str] | None = None,
        in_memory: bool = False,
    ) -> None:
        self.path = Path(path)
        try:
            with _open(self.path) as f:
                obs_type = str(f.attrs.get("obs_type", "pixels"))
                if obs_keys is None:
                    obs_keys = {"image": obs_key} if obs_key else OBS_KEYS.get(obs_type)
                if not obs_keys or set(obs_keys) - {"image", "state"}:
                    raise DatasetError(
                        f"{self.path}: observation keys {obs_keys} for obs_type {obs_type!r}; "
                        f"give obs_keys as {{'image': file key, 'state': file key}}"
                    )
                self.obs_keys = dict(obs_keys)
                self.obs_key = self.obs_keys.get("image")  # the image's file key
                self.attrs = _validate(f, self.path, self.obs_keys)
                self.episode_ends = f["episode_ends"][()]
                self.episode_seeds = f["episode_seeds"][()]
                self.episode_success = f["episode_success"][()]
                self.image_shape: tuple[int, ...] | None = (
                    tuple(f[f"obs/{self.obs_key}"].shape[1:]) if self.obs_key else None
                )
                self.action_dim = int(f["actions"].shape[1])
                self.actions = f["actions"][()]
                self._check_actions()
                state_key = self.obs_keys.get("state")
                self.states: np.ndarray | None = (
                    np.asarray(f[f"obs/{state_key}"][()], dtype=np.float32) if state_key else None
                )
                self._check_states()
                self._images = (
                    self._read_all(f[f"obs/{self.obs_key}"]) if in_memory and self.obs_key else None
                )
        except (OSError, KeyError) as e:  # h5py raises these on damaged files
            raise DatasetError(f"{self.path} is damaged or truncated: {_first_line(e)}") from e
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
    def obs_type(self) -> str:
        """The env's observation type the demos were recorded with."""
        return str(self.attrs.get("obs_type", "pixels"))

    @property
    def inputs(self) -> str:
        """What an item observes: ``"image"``, ``"state"`` or ``"image_state"``."""
        if self.obs_key and self.states is not None:
            return "image_state"
        return "image" if self.obs_key else "state"

    @property
    def state_dim(self) -> int:
        """Dimensions of an item's ``"state"`` (0: none)."""
        return 0 if self.states is None else int(self.states.shape[1])

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

    def _item(self, start: int, end: int) -> dict[str, np.ndarray]:
        item: dict[str, np.ndarray] = {}
        if self.obs_key:
            item["image"] = self._read(start, end)
        if self.states is not None:
            item["state"] = self.states[start:end]
        item["action"] = self.actions[start:end]
        return item

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self._item(i, i + 1).items()}

    def episode(self, e: int) -> dict[str, np.ndarray]:
        """All steps of episode ``e``: ``{"image": (T, H, W, C), "state": (T, S), "action": (T,
        A)}`` (the observation keys the dataset has)."""
        start = 0 if e == 0 else int(self.episode_ends[e - 1])
        return self._item(start, int(self.episode_ends[e]))

    def locate(self, i: int) -> tuple[int, int]:
        """``(episode, step within it)`` of frame ``i``."""
        e = int(np.searchsorted(self.episode_ends, i, side="right"))
        return e, i - (0 if e == 0 else int(self.episode_ends[e - 1]))

    def _read(self, start: int, end: int) -> np.ndarray:
        """Frames ``[start, end)``: ``-> (end - start, H, W, C)``; a damaged one raises
        ``DatasetError`` naming it."""
        try:
            return np.asarray(self._images_ds()[start:end])
        except OSError:  # a damaged chunk: find the first frame that cannot be read
            if end - start > 1:
                for i in range(start, end):
                    self._read(i, i + 1)
            raise DatasetError(self._damaged_frame(start)) from None

    def _read_all(self, images: h5py.Dataset) -> np.ndarray:
        try:
            return images[()]
        except OSError:
            for i in range(len(images)):
                try:
                    images[i]
                except OSError:
                    raise DatasetError(self._damaged_frame(i)) from None
            raise

    def _damaged_frame(self, i: int) -> str:
        e, t = self.locate(i)
        return (
            f"{self.path}: frame {i} (episode {e}, step {t}) of obs/{self.obs_key} cannot be read: "
            f"its data is damaged"
        )

    def _check_actions(self) -> None:
        check_finite_actions(self.path, self.actions, self.locate)

    def _check_states(self) -> None:
        if self.states is None:
            return
        if self.states.ndim != 2 or self.states.shape[1] < 1:
            raise DatasetError(
                f"{self.path}: obs/{self.obs_keys['state']} must be a float (N, S) array, got "
                f"shape {self.states.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(self.states).all(axis=1))
        if len(bad):
            e, t = self.locate(int(bad[0]))
            raise DatasetError(
                f"{self.path}: obs/{self.obs_keys['state']} of {len(bad)} frames is not finite; "
                f"the first is frame {bad[0]} (episode {e}, step {t})"
            )

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


def check_finite_actions(
    path: Path, actions: np.ndarray, locate: Callable[[int], tuple[int, int]]
) -> None:
    """``DatasetError`` naming the first frame (and its episode and step, from ``locate``) whose
    action in ``actions (N, A)`` is not finite."""
    bad = np.flatnonzero(~np.isfinite(actions).all(axis=1))
    if len(bad):
        e, t = locate(int(bad[0]))
        raise DatasetError(
            f"{path}: the actions of {len(bad)} of {len(actions)} frames are not finite; the "
            f"first is frame {bad[0]} (episode {e}, step {t}): {actions[bad[0]].tolist()}"
        )


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(
            f"{path} is not a readable HDF5 demo file (truncated or another format): {e}"
        ) from e


def _validate(f: h5py.File, path: Path, obs_keys: Mapping[str, str]) -> dict[str, Any]:
    fmt = f.attrs.get("format")
    if fmt != FORMAT:
        raise DatasetError(
            f"{path} is not an ibc-gym demo dataset (format attribute {fmt!r}, expected {FORMAT!r})"
        )
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format version {version}; this ibc-gym reads version {FORMAT_VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in f]
    if missing:
        raise DatasetError(
            f"{path} is incomplete (missing {', '.join(missing)}): was its writing interrupted?"
        )
    for obs_key in obs_keys.values():
        if f"obs/{obs_key}" not in f:
            keys = sorted(f["obs"].keys()) if "obs" in f else []
            raise DatasetError(f"{path} has no observation {obs_key!r}; it has {keys}")
    n = _check_array(f, path, "actions", ndim=2, kinds="f")
    _check_array(f, path, "rewards", ndim=1, kinds="f")
    image_key = obs_keys.get("image")
    images = f[f"obs/{image_key}"] if image_key else None
    if (
        images is not None
        and image_key == "pixels"
        and (images.ndim != 4 or images.shape[-1] != 3 or images.dtype != "u1")
    ):
        raise DatasetError(
            f"{path}: obs/pixels must be uint8 (N, H, W, 3) images, got {images.dtype} "
            f"{images.shape}"
        )
    state_key = obs_keys.get("state")
    if state_key and f[f"obs/{state_key}"].dtype.kind != "f":
        raise DatasetError(
            f"{path}: obs/{state_key} must be a float array, got {f[f'obs/{state_key}'].dtype}"
        )
    for name in ("episode_ends", "episode_seeds", "episode_success"):
        _check_array(f, path, name, ndim=1, kinds="b" if name == "episode_success" else "iu")
    ends = f["episode_ends"][()]
    lengths = {k: f[f"obs/{k}"].shape[0] for k in f["obs"]}
    if (
        len(ends) == 0
        or int(ends[-1]) != n
        or any(v != n for v in lengths.values())
        or f["rewards"].shape[0] != n
    ):
        raise DatasetError(
            f"{path} is inconsistent: episode ends, actions and observations disagree in length"
        )
    if ends[0] <= 0 or np.any(np.diff(ends) <= 0):
        raise DatasetError(
            f"{path} is inconsistent: episode_ends must increase strictly from above 0"
        )
    if not (len(ends) == len(f["episode_seeds"]) == len(f["episode_success"])):
        raise DatasetError(f"{path} is inconsistent: per-episode arrays disagree in length")
    attrs = dict(f.attrs)
    attrs["env_kwargs"] = _json_attr(path, attrs, "env_kwargs")
    attrs["source"] = _json_attr(path, attrs, "source", default="{}")
    return attrs


def _check_array(f: h5py.File, path: Path, name: str, *, ndim: int, kinds: str) -> int:
    """Check ``f[name]``'s rank and dtype kind; returns its length."""
    ds = f[name]
    if not isinstance(ds, h5py.Dataset) or ds.ndim != ndim or ds.dtype.kind not in kinds:
        shape = "(N, A)" if ndim == 2 else "(N,)"
        kind = {"f": "float", "iu": "integer", "b": "bool"}[kinds]
        got = f"{ds.dtype} {ds.shape}" if isinstance(ds, h5py.Dataset) else "a group"
        raise DatasetError(f"{path}: {name} must be a {kind} array of shape {shape}, got {got}")
    if ndim == 2 and ds.shape[1] < 1:
        raise DatasetError(f"{path}: {name} has no columns (shape {ds.shape})")
    return int(ds.shape[0])


def _json_attr(
    path: Path, attrs: dict[str, Any], name: str, default: str | None = None
) -> dict[str, Any]:
    """The JSON-object attribute ``name`` as a dict; ``DatasetError`` if missing or malformed."""
    text = attrs.get(name, default)
    if text is None:
        raise DatasetError(f"{path}: the {name} attribute is missing")
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as e:
        raise DatasetError(
            f"{path}: the {name} attribute is not valid JSON ({e}): {str(text)[:60]!r}"
        ) from None
    if not isinstance(value, dict):
        raise DatasetError(
            f"{path}: the {name} attribute must be a JSON object, got {str(text)[:60]!r}"
        )
    return value


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
