"""Demo dataset files: round trip, lazy reading, atomic writes, clear errors on bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from agents.dataset import DatasetError, DemoDataset, DemoWriter
from agents.rollout import Episode

ENV_ID = "ibc/ReachTarget-v0"


def make_episode(seed: int, length: int, size: int = 8) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        seed=seed,
        observations=rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (length, 2)).astype(np.float32),
        rewards=-rng.uniform(0, 1, length).astype(np.float32),
        success=True,
        final_distance=0.01,
        truncated=False,
    )


def write(path: Path, episodes: list[Episode]) -> Path:
    with DemoWriter(path, env_id=ENV_ID, env_kwargs={"obs_type": "pixels", "image_size": 8}) as w:
        for ep in episodes:
            w.add(ep)
    return path


@pytest.fixture
def demo_file(tmp_path: Path) -> tuple[Path, list[Episode]]:
    episodes = [make_episode(s, length) for s, length in [(3, 5), (4, 7), (9, 2)]]
    return write(tmp_path / "demos.h5", episodes), episodes


@pytest.mark.parametrize("in_memory", [False, True])
def test_round_trip(demo_file: tuple[Path, list[Episode]], in_memory: bool) -> None:
    path, episodes = demo_file
    ds = DemoDataset(path, env_id=ENV_ID, in_memory=in_memory)
    assert len(ds) == 14 and ds.num_episodes == 3
    assert ds.image_shape == (8, 8, 3) and ds.action_dim == 2
    assert ds.env_kwargs == {"obs_type": "pixels", "image_size": 8}
    np.testing.assert_array_equal(ds.episode_ends, [5, 12, 14])
    np.testing.assert_array_equal(ds.episode_seeds, [3, 4, 9])
    item = ds[6]  # second step of the second episode
    np.testing.assert_array_equal(item["image"], episodes[1].observations[1])
    np.testing.assert_array_equal(item["action"], episodes[1].actions[1])
    assert item["image"].dtype == np.uint8 and item["action"].dtype == np.float32
    for e, ep in enumerate(ds.episodes()):
        np.testing.assert_array_equal(ep["image"], episodes[e].observations)


def test_pickles_for_dataloader_workers(demo_file: tuple[Path, list[Episode]]) -> None:
    path, episodes = demo_file
    ds = DemoDataset(path)
    _ = ds[0]  # opens the file handle
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[13]["image"], episodes[2].observations[1])


def test_writer_is_atomic_on_error(tmp_path: Path) -> None:
    path = tmp_path / "demos.h5"
    with pytest.raises(RuntimeError), DemoWriter(path, env_id=ENV_ID, env_kwargs={}) as w:
        w.add(make_episode(0, 3))
        raise RuntimeError("interrupted")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_writer_refuses_to_overwrite(demo_file: tuple[Path, list[Episode]]) -> None:
    path, _ = demo_file
    with pytest.raises(FileExistsError, match="overwrite"):
        DemoWriter(path, env_id=ENV_ID, env_kwargs={})


def test_wrong_env_is_named(demo_file: tuple[Path, list[Episode]]) -> None:
    path, _ = demo_file
    with pytest.raises(
        DatasetError, match="recorded on ibc/ReachTarget-v0, not on ibc/ArmReach-v0"
    ):
        DemoDataset(path, env_id="ibc/ArmReach-v0")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        DemoDataset(tmp_path / "nope.h5")


def test_truncated_file(demo_file: tuple[Path, list[Episode]], tmp_path: Path) -> None:
    path, _ = demo_file
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated|damaged"):
        DemoDataset(cut)


def test_foreign_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not a dataset")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        DemoDataset(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("data", data=np.zeros(3))
    with pytest.raises(DatasetError, match="not an ibc-gym demo dataset"):
        DemoDataset(other)


def test_newer_format_version(demo_file: tuple[Path, list[Episode]]) -> None:
    path, _ = demo_file
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(DatasetError, match="format version 99"):
        DemoDataset(path)


def test_inconsistent_lengths(demo_file: tuple[Path, list[Episode]]) -> None:
    path, _ = demo_file
    with h5py.File(path, "a") as f:
        f["actions"].resize(10, axis=0)
    with pytest.raises(DatasetError, match="inconsistent"):
        DemoDataset(path)


def test_missing_observation_key(demo_file: tuple[Path, list[Episode]]) -> None:
    path, _ = demo_file
    with pytest.raises(DatasetError, match="no observation 'agent_pos'.*pixels"):
        DemoDataset(path, obs_key="agent_pos")
