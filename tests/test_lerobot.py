"""LeRobotDataset v3.0 folders: export round trip, lazy reading, bad folders, training on one."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from agents.dataset import DatasetError, DemoDataset, DemoWriter
from agents.lerobot import LeRobotDemoDataset, _pick_camera, open_demos
from agents.lerobot_export import VideoConfig, _write_video, export_lerobot
from agents.rollout import Episode
from demos.cli import main
from demos.collect import CollectConfig, collect
from demos.evaluate import EvalConfig, evaluate
from demos.train import TrainJobConfig, run_train, tiny_policies
from ebm_policy import CheckpointError, TrainConfig, load_checkpoint

ENV_ID = "ibc/ReachTarget-v0"
SIZE = 32
LENGTHS = (10, 10)
# Largest per-channel difference a frame may have after the default encoding (H.264, crf 0,
# yuv444p: lossless in YUV, so only the RGB <-> YUV rounding remains).
TOLERANCE = 2


def make_episode(seed: int, length: int) -> Episode:
    """Smooth random images (blurred noise, like rendered scenes) and a 2-D agent position."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (length, SIZE // 8, SIZE // 8, 3))
    images = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.uint8)
    return Episode(
        seed=seed,
        observations={
            "pixels": images,
            "agent_pos": rng.uniform(-1, 1, (length, 2)).astype(np.float32),
        },
        actions=rng.uniform(-1, 1, (length, 2)).astype(np.float32),
        rewards=-rng.uniform(0, 1, length).astype(np.float32),
        success=True,
        final_distance=0.01,
        truncated=False,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Episode]]:
    root = tmp_path_factory.mktemp("lerobot")
    episodes = [make_episode(s, n) for s, n in zip((5, 8), LENGTHS, strict=True)]
    kwargs = {"obs_type": "pixels_agent_pos", "image_size": SIZE, "action_type": "position"}
    with DemoWriter(root / "demos.h5", env_id=ENV_ID, env_kwargs=kwargs) as writer:
        for ep in episodes:
            writer.add(ep)
    return root / "demos.h5", export_lerobot(root / "demos.h5", root / "lerobot"), episodes


@pytest.fixture
def folder(exported: tuple[Path, Path, list[Episode]], tmp_path: Path) -> Path:
    """A copy of the exported folder that a test may damage."""
    return Path(shutil.copytree(exported[1], tmp_path / "copy"))


@pytest.mark.parametrize("in_memory", [False, True])
def test_round_trip(exported: tuple[Path, Path, list[Episode]], in_memory: bool) -> None:
    h5, out, episodes = exported
    ds = LeRobotDemoDataset(out, in_memory=in_memory, state_key="observation.state")
    ref = DemoDataset(h5)
    assert (len(ds), ds.num_episodes, ds.fps) == (20, 2, 10)
    assert ds.image_shape == (SIZE, SIZE, 3) and ds.action_dim == 2
    assert ds.env_id == ENV_ID and ds.env_kwargs == ref.env_kwargs
    np.testing.assert_array_equal(ds.episode_ends, [10, 20])
    np.testing.assert_array_equal(ds.episode_seeds, [5, 8])
    np.testing.assert_array_equal(ds.actions, ref.actions)  # exact
    for e, ep in enumerate(episodes):
        got = ds.episode(e)
        np.testing.assert_array_equal(got["action"], ep.actions)
        np.testing.assert_array_equal(got["state"], ep.observations["agent_pos"])
        error = np.abs(got["image"].astype(int) - ep.observations["pixels"].astype(int))
        assert error.max() <= TOLERANCE
    item = ds[13]  # step 3 of episode 1
    assert item["image"].dtype == np.uint8 and item["action"].dtype == np.float32
    np.testing.assert_array_equal(item["action"], episodes[1].actions[3])
    assert np.abs(item["image"].astype(int) - episodes[1].observations["pixels"][3]).max() <= 2


def test_metadata_lerobot_reads(exported: tuple[Path, Path, list[Episode]]) -> None:
    out = exported[1]
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"]) == (2, 20)
    assert info["features"]["observation.image"]["dtype"] == "video"
    assert info["features"]["observation.state"]["shape"] == [2]
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.column("frame_index").to_pylist()[8:12] == [8, 9, 0, 1]
    assert data.column("episode_index").to_pylist()[8:12] == [0, 0, 1, 1]
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert episodes["videos/observation.image/from_timestamp"] == [0.0, 1.0]
    assert episodes["dataset_to_index"] == [10, 20]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.shape(stats["observation.image"]["mean"]) == (3, 1, 1)
    tasks = pq.read_table(out / "meta/tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0], "task": [ENV_ID]}


def test_frames_are_read_lazily_and_cached(
    exported: tuple[Path, Path, list[Episode]], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[int, int]] = []
    original = LeRobotDemoDataset._read_video
    monkeypatch.setattr(
        LeRobotDemoDataset,
        "_read_video",
        lambda self, path, start, stop, e: (
            reads.append((start, stop)) or original(self, path, start, stop, e)
        ),
    )
    ds = LeRobotDemoDataset(exported[1], cache_episodes=1)
    assert reads == []  # nothing decoded at construction
    ds[12]
    assert reads == [(12, 13)]  # an item alone: one frame (from the key frame before it)
    ds.episode(0)
    assert reads[-1] == (0, 10)  # a whole episode, then kept
    for i in (0, 5, 9):
        ds[i]
    assert len(reads) == 2
    ds.episode(1)
    ds[3]
    assert reads[-1] == (3, 4)  # a cache of one episode
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned worker gets: no decoded frames
    assert len(clone._cache) == 0 and clone[3]["image"].shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(clone[17]["image"], ds.episode(1)["image"][7])


def test_dataloader_workers_open_their_own_readers(
    exported: tuple[Path, Path, list[Episode]],
) -> None:
    ds = LeRobotDemoDataset(exported[1])
    first = ds[0]["image"]  # the parent holds an open reader when the workers fork
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    images = np.concatenate([batch["image"].numpy() for batch in loader])
    assert images.shape == (20, SIZE, SIZE, 3)
    np.testing.assert_array_equal(images[0], first)
    np.testing.assert_array_equal(images[10:], ds.episode(1)["image"])


def test_export_refuses_to_overwrite_and_leaves_nothing_on_failure(
    exported: tuple[Path, Path, list[Episode]], tmp_path: Path
) -> None:
    h5, out, _ = exported
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        export_lerobot(h5, out)
    with pytest.raises(DatasetError, match="does not exist"):
        export_lerobot(tmp_path / "nope.h5", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
    again = export_lerobot(h5, tmp_path / "y", video=VideoConfig(crf=23, pix_fmt="yuv420p"))
    assert len(LeRobotDemoDataset(again)) == 20  # lossy settings still read back


def _drop_key(folder: Path, key: str) -> None:
    info = json.loads((folder / "meta/info.json").read_text())
    del info[key]
    (folder / "meta/info.json").write_text(json.dumps(info))


def _set_version(folder: Path) -> None:
    info = json.loads((folder / "meta/info.json").read_text())
    info["codebase_version"] = "v2.1"
    (folder / "meta/info.json").write_text(json.dumps(info))


def _short_video(folder: Path) -> None:
    """Re-encode the video with the last frame of the last episode missing."""
    path = folder / "videos/observation.image/chunk-000/file-000.mp4"
    frames = LeRobotDemoDataset(folder, in_memory=True)._images
    _write_video(frames[:-1], path, VideoConfig(), 10)


DAMAGE = {
    "no info": (
        lambda f: (f / "meta/info.json").unlink(),
        r"meta/info\.json: missing \(not a LeRobot dataset folder\?\)",
    ),
    "no fps": (lambda f: _drop_key(f, "fps"), r"meta/info\.json: lacks fps"),
    "old version": (_set_version, r"meta/info\.json: codebase_version v2\.1; ibc-gym reads"),
    "no episodes": (
        lambda f: shutil.rmtree(f / "meta/episodes"),
        r"meta/episodes: no episode metadata",
    ),
    "no video": (
        lambda f: (f / "videos/observation.image/chunk-000/file-000.mp4").unlink(),
        r"file-000\.mp4: video file missing",
    ),
    "short video": (
        _short_video,
        r"file-000\.mp4: the video has 19 frames, but the episodes stored in it have 20 rows",
    ),
    "no data": (
        lambda f: (f / "data/chunk-000/file-000.parquet").unlink(),
        r"data/chunk-000/file-000\.parquet: missing",
    ),
    "bad data": (
        lambda f: (f / "data/chunk-000/file-000.parquet").write_bytes(b"PAR1 nope"),
        r"file-000\.parquet: not a readable Parquet file",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_bad_folder_is_named(folder: Path, damage: str) -> None:
    change, message = DAMAGE[damage]
    change(folder)
    with pytest.raises(DatasetError, match=message):
        LeRobotDemoDataset(folder)


def test_short_episode_video_is_named_when_decoded(folder: Path) -> None:
    """A video whose header gives no frame count is checked per episode, when decoded."""
    ds = LeRobotDemoDataset(folder)
    _short_video(folder)
    with pytest.raises(DatasetError, match=r"episode 1 has 9 video frames from 1 s, but 10 rows"):
        ds.episode(1)
    with pytest.raises(
        DatasetError, match=r"episode 1 has no video frame for step 9 \(at 1\.9 s\)"
    ):
        ds[19]
    assert ds[18]["image"].shape == (SIZE, SIZE, 3)


def test_camera_choice() -> None:
    video = {"dtype": "video", "shape": [8, 8, 3]}
    root = Path("d")
    assert _pick_camera(root, {"observation.images.top": video}, None) == "observation.images.top"
    two = {"observation.images.top": video, "observation.images.wrist": video}
    with pytest.raises(DatasetError, match="several cameras .* choose one"):
        _pick_camera(root, two, None)
    assert _pick_camera(root, two, "observation.images.wrist") == "observation.images.wrist"
    with pytest.raises(DatasetError, match="has no image feature"):
        _pick_camera(root, {"action": {}}, None)


def test_cli_export_and_its_errors(
    exported: tuple[Path, Path, list[Episode]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h5 = exported[0]
    assert main(["export", "--format", "lerobot", str(h5), str(tmp_path / "out")]) == 0
    assert len(open_demos(tmp_path / "out")) == 20
    assert main(["export", str(h5), str(tmp_path / "out")]) == 2
    assert "ibc-gym export: error: " in capsys.readouterr().err


def test_train_and_eval_from_a_lerobot_folder(tmp_path: Path) -> None:
    """An exported folder trains like its HDF5 file; a foreign one (no ibc-gym metadata) trains
    too, and its policy is evaluated with --env; a folder that does not fit a run is refused."""
    data = collect(
        CollectConfig(
            env=ENV_ID, episodes=2, image_size=SIZE, out=tmp_path / "d.h5", progress=False
        )
    )
    folder = export_lerobot(data, tmp_path / "lr")
    tiny = {
        "policies": tiny_policies(),
        "train": TrainConfig(steps=3, batch_size=4, progress=False),
    }
    ckpts = {}
    for name, source in (("h5", data), ("lerobot", folder)):
        ckpts[name] = run_train(TrainJobConfig(data=source, out=tmp_path / name, **tiny))  # type: ignore[arg-type]
    a, b = (load_checkpoint(ckpts[k]) for k in ("h5", "lerobot"))
    for x, y in zip(a["action_bounds"], b["action_bounds"], strict=True):  # the same actions
        np.testing.assert_array_equal(x, y)
    assert b["metadata"]["env_id"] == ENV_ID
    assert b["metadata"]["train_seeds"] == a["metadata"]["train_seeds"]

    (folder / "meta/ibc_gym.json").unlink()  # now a dataset recorded elsewhere
    foreign = run_train(TrainJobConfig(data=folder, out=tmp_path / "foreign", **tiny))  # type: ignore[arg-type]
    settings = {"episodes": 1, "num_envs": 1, "asynchronous": False, "videos": 0}
    with pytest.raises(CheckpointError, match="its demos named no env .*; pass --env"):
        evaluate(EvalConfig(ckpt=foreign, out=tmp_path / "e1", progress=False, **settings))
    metrics = evaluate(
        EvalConfig(ckpt=foreign, env=ENV_ID, out=tmp_path / "e2", progress=False, **settings)
    )
    assert metrics["eval/episodes"] == 1

    info = json.loads((folder / "meta/info.json").read_text())
    info["features"]["observation.image"]["shape"] = [16, 16, 3]  # as a 16 px dataset says
    (folder / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"2-D actions and 16x16x3 images do not fit the policy"):
        run_train(
            TrainJobConfig(data=folder, out=tmp_path / "h5", resume=True, in_memory=False, **tiny)
        )  # type: ignore[arg-type]


FOREIGN = Path(__file__).parent / "data" / "lerobot_v30_by_lerobot"


@pytest.mark.parametrize("in_memory", [False, True])
def test_reads_a_folder_lerobot_wrote(in_memory: bool) -> None:
    """lerobot 0.4.4's own recording (AV1, one ``observation.images.*`` camera, per-episode
    stats, no ibc-gym metadata); see lerobot_v30_by_lerobot.md."""
    ds = open_demos(FOREIGN, in_memory=in_memory)
    assert (
        ds.camera == "observation.images.top" and ds.env_id is None and len(ds.episode_seeds) == 0
    )
    np.testing.assert_array_equal(ds.episode_ends, [8, 17, 27])
    np.testing.assert_array_equal(
        ds.actions, np.load(FOREIGN.with_name(FOREIGN.name + "_actions.npy"))
    )
    for e, t in ((0, 0), (1, 4), (2, 9)):
        image = ds.episode(e)["image"][t].astype(int)
        expected = np.full((32, 32, 3), (20 * t + 40 * e) % 200)
        expected[:, : 4 + t] = 200
        assert np.abs(image - expected).mean() < 3  # AV1 at crf 30 is lossy


def test_cli_trains_on_a_folder_lerobot_wrote(tmp_path: Path) -> None:
    tiny = ["--steps", "2", "--batch-size", "4", "--no-progress", "--cnn.channels", "8", "8", "8"]
    args = ["train", "--data", str(FOREIGN), "--env", ENV_ID, "--out", str(tmp_path / "r"), *tiny]
    assert main(args) == 0
    assert load_checkpoint(tmp_path / "r/ckpt_last.pt")["metadata"]["env_id"] == ENV_ID


def test_a_state_demo_file_exports_without_videos(tmp_path: Path) -> None:
    data = collect(
        CollectConfig(env="ibc/ReachTarget-v0", episodes=2, obs_type="state", out=tmp_path / "s.h5")
    )
    out = export_lerobot(data, tmp_path / "lr")
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["video_path"] is None and "observation.environment_state" in info["features"]
    table = pq.read_table(next((out / "data").rglob("*.parquet")))
    states = np.stack(table.column("observation.environment_state").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(states, DemoDataset(data).states)
