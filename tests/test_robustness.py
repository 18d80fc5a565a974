"""Hostile and damaged inputs: datasets damaged inside, hostile checkpoints, stale temporaries,
a busy eval folder, undefined metrics. Each gives one clear line and loses or leaves nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from agents.dataset import DatasetError, DemoDataset, DemoWriter
from agents.rollout import Episode, RolloutStats
from demos.cli import main
from demos.evaluate import summarize
from ebm_policy import (
    BackboneConfig,
    CheckpointError,
    CNNConfig,
    ExplicitConfig,
    ExplicitPolicy,
    ExplicitPolicyConfig,
    load_checkpoint,
    save_checkpoint,
)
from ebm_policy.fileio import remove_stale_temporaries, strict_json
from ebm_policy.metrics_log import MetricsLogger

ENV = "ibc/ReachTarget-v0"
SIZE = 16
TINY_TRAIN = [
    "--steps",
    "3",
    "--batch-size",
    "2",
    "--cnn.channels",
    "4",
    "--cnn.strides",
    "1",
    "--cnn.pools",
    "1",
    "--implicit.model.hidden-dims",
    "8",
    "--cnn.out-channels",
    "2",
    "--implicit.loss.num-counter-examples",
    "4",
    "--implicit.optimizer.num-samples",
    "16",
    "--no-progress",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def episode(seed: int, length: int) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        seed=seed,
        observations=np.full((length, SIZE, SIZE, 3), 200, np.uint8),  # compressible: LZF applies
        actions=rng.uniform(-1, 1, (length, 2)).astype(np.float32),
        rewards=np.zeros(length, np.float32),
        success=True,
        final_distance=0.0,
        truncated=False,
    )


@pytest.fixture
def demos(tmp_path: Path) -> Path:
    path = tmp_path / "demos.h5"
    with DemoWriter(path, env_id=ENV, env_kwargs={"obs_type": "pixels", "image_size": SIZE}) as w:
        for seed, length in [(0, 4), (1, 6), (2, 3)]:
            w.add(episode(seed, length))
    return path


def corrupt_frame(path: Path, frame: int) -> None:
    """Overwrite the compressed chunk of one image with bytes LZF cannot decode."""
    with h5py.File(path, "r") as f:
        info = f["obs/pixels"].id.get_chunk_info(frame)
    assert info.filter_mask == 0  # the chunk is LZF-compressed
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---- datasets damaged inside ----------------------------------------------------------------


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_damaged_image_chunk_names_the_frame(demos: Path, in_memory: bool) -> None:
    corrupt_frame(demos, 6)  # episode 1, step 2
    message = (
        rf"{demos}: frame 6 \(episode 1, step 2\) of obs/pixels cannot be read: its data is damaged"
    )
    if in_memory:
        with pytest.raises(DatasetError, match=message):
            DemoDataset(demos, in_memory=True)
        return
    ds = DemoDataset(demos)  # lazy: opening works, reading that frame does not
    assert ds[5]["image"].shape == (SIZE, SIZE, 3)
    with pytest.raises(DatasetError, match=message):
        ds[6]
    with pytest.raises(DatasetError, match=message):
        ds.episode(1)


def _set_attr(path: Path, name: str, value: str) -> None:
    with h5py.File(path, "a") as f:
        f.attrs[name] = value


def rewrite(path: Path, name: str, data: np.ndarray) -> None:
    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, data=data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda p: rewrite(p, "actions", np.zeros(13, np.float32)),
            r"actions must be a float array of shape \(N, A\), got float32 \(13,\)",
        ),
        (
            lambda p: rewrite(p, "actions", np.zeros((13, 2), np.int64)),
            r"actions must be a float array",
        ),
        (
            lambda p: rewrite(
                p,
                "actions",
                np.where(np.arange(26).reshape(13, 2) == 15, np.nan, 0.0).astype(np.float32),
            ),
            r"the actions of 1 of 13 frames are not finite; the first is frame 7 "
            r"\(episode 1, step 3\)",
        ),
        (lambda p: rewrite(p, "episode_ends", np.array([4, 3, 13])), "episode_ends must increase"),
        (
            lambda p: rewrite(p, "obs/pixels", np.zeros((13, SIZE, SIZE), np.uint8)),
            r"obs/pixels must be uint8 \(N, H, W, 3\)",
        ),
        (
            lambda p: _set_attr(p, "env_kwargs", "{obs_type: pixels"),
            r"the env_kwargs attribute is not valid JSON",
        ),
        (
            lambda p: _set_attr(p, "env_kwargs", "[1, 2]"),
            "the env_kwargs attribute must be a JSON object",
        ),
    ],
    ids=[
        "1-D actions",
        "integer actions",
        "NaN action",
        "episode ends",
        "grey images",
        "bad JSON",
        "JSON list",
    ],
)
def test_damaged_arrays_and_attributes(demos: Path, damage, message: str) -> None:
    damage(demos)
    with pytest.raises(DatasetError, match=message):
        DemoDataset(demos)


@pytest.mark.parametrize("in_memory", [False, True])
def test_train_on_a_damaged_dataset_leaves_no_run_folder(
    demos: Path, tmp_path: Path, in_memory: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_frame(demos, 6)
    run = tmp_path / "run"
    flag = "--in-memory" if in_memory else "--no-in-memory"
    assert main(["train", "--data", str(demos), "--out", str(run), flag, *TINY_TRAIN]) == 2
    assert "frame 6 (episode 1, step 2) of obs/pixels cannot be read" in one_line(capsys)
    assert not run.exists()


# ---- hostile checkpoints ----------------------------------------------------------------------


class Payload:
    """Unpickling this runs ``touch <marker>``: what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_checkpoint_is_refused_in_one_line_without_unsafe_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "ckpt_last.pt"
    torch.save({"format": "ibc-gym-policy", "state_dict": Payload(marker)}, evil)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil)
    assert str(info.value) == (
        f"{evil}: not an ibc-gym checkpoint: it asks to load posix.system, which no checkpoint "
        f"holds (refused; nothing in it was run)"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no torch text
    assert main(["eval", "--ckpt", str(evil), "--episodes", "1", "--no-progress"]) == 2
    line = one_line(capsys)
    assert str(evil) in line and "weights_only" not in line and "not an ibc-gym checkpoint" in line
    assert not marker.exists() and not (tmp_path / "eval").exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", b"PK\x03\x04garbage"])
def test_damaged_checkpoint_files_get_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ckpt.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "\n" not in text and "weights_only" not in text
    assert text == (
        f"{path}: not an ibc-gym checkpoint, or damaged: not a readable torch checkpoint "
        f"(truncated or corrupted?)"
    )


# ---- eval: a busy folder, an evaluation that must not replace metrics -------------------------


def tiny_checkpoint(run: Path) -> Path:
    cnn = CNNConfig(channels=(4,), strides=(1,), pools=(1,), out_channels=2)
    policy = ExplicitPolicy(
        ExplicitPolicyConfig(
            model=ExplicitConfig(backbone=BackboneConfig(cnn=cnn), hidden_dims=(4,))
        ),
        [-1, -1],
        [1, 1],
    )
    meta = {"env_id": ENV, "env_kwargs": {}, "image_shape": [SIZE, SIZE, 3], "train_seeds": [0, 1]}
    return save_checkpoint(run / "ckpt_last.pt", policy, metadata=meta)


def test_eval_into_a_busy_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ebm_policy.runlock

    ckpt = tiny_checkpoint(tmp_path / "run")
    metrics = tmp_path / "run" / "eval" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text('{"eval/episodes": 100}\n')
    script = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('runlock', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "with m.FolderLock(sys.argv[2], 'eval'):\n"
        "    print('locked', flush=True); sys.stdin.readline()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, ebm_policy.runlock.__file__, str(metrics.parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        argv = [
            "eval",
            "--ckpt",
            str(ckpt),
            "--episodes",
            "2",
            "--seed",
            "10",
            "--videos",
            "0",
            "--num-envs",
            "1",
            "--no-asynchronous",
            "--no-progress",
        ]
        assert main(argv) == 1
        assert f"is in use by pid {holder.pid} (ibc-gym eval, since " in one_line(capsys)
        assert metrics.read_text() == '{"eval/episodes": 100}\n'
        assert main([*argv[:4], "0", *argv[4:]]) == 2  # --episodes 0: refused before anything
        assert metrics.read_text() == '{"eval/episodes": 100}\n'
    finally:
        holder.communicate("\n")
    assert main(argv) == 0  # free again: a real evaluation replaces the file
    assert json.loads(metrics.read_text())["eval/episodes"] == 2
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["metrics.json"]


def test_undefined_metrics_are_null_in_strict_json(tmp_path: Path) -> None:
    metrics = summarize([], RolloutStats(), num_envs=1)
    assert metrics["eval/success_rate"] is None and metrics["eval/mean_final_distance"] is None
    text = strict_json(
        {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32("nan"), "d": np.float64(2.0)}
    )
    assert text == '{"a": null, "b": [null, 1.5], "c": null, "d": 2.0}'
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(1, {"train/loss": float("nan"), "train/lr": 0.1})
    logger.close()
    assert (
        tmp_path / "metrics.jsonl"
    ).read_text() == '{"step": 1, "train/loss": null, "train/lr": 0.1}\n'


# ---- temporaries of killed writers -------------------------------------------------------------


def dead_pid() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


def test_the_next_collection_removes_a_killed_writers_temp_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = dead_pid()
    stale = tmp_path / f".demos.h5.{pid}.tmp"  # what a SIGKILLed `ibc-gym collect` leaves
    live = tmp_path / f".demos.h5.{os.getppid()}.tmp"  # a running writer's
    other = tmp_path / f".other.h5.{pid}.tmp"  # another target's: not this writer's business
    for p in (stale, live, other):
        p.write_bytes(b"")
    with DemoWriter(tmp_path / "demos.h5", env_id=ENV, env_kwargs={}) as w:
        w.add(episode(0, 2))
    assert not stale.exists() and live.exists() and other.exists()
    assert f"removed {stale}" in capsys.readouterr().err
    assert remove_stale_temporaries(tmp_path) == [other]
