"""Training on several processes (DistributedDataParallel, gloo on the CPU, 2 ranks).

The ranks are forked from the test process (``torch.multiprocessing``, a file store), run every
scenario once (module fixture ``runs``) and leave what the tests compare in files; the launcher
tests start ``ibc-gym train --nproc-per-node 2`` (torchrun) as a subprocess.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from agents.dataset import DemoDataset, DemoWriter
from agents.rollout import Episode
from demos.bench_train import QUICK_MODEL
from demos.train import tiny_policies
from ebm_policy import (
    DistributedError,
    ExplicitPolicy,
    ImplicitPolicy,
    TrainConfig,
    load_checkpoint,
    load_policy,
    read_metrics,
    train,
)
from ebm_policy.data import ShardSampler

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = 2
K = 6  # steps of the straight runs; the interrupted ones stop after K // 2 + 1
SIZE = 8  # image side (px)
FRAMES = 20


def write_demos(path: Path) -> Path:
    """A lazy-read demo file: 2 episodes of 10 random 8x8 frames, 2-D actions in [-1, 1]."""
    rng = np.random.default_rng(0)
    with DemoWriter(path, env_id="ibc/ReachTarget-v0", env_kwargs={"image_size": SIZE}) as w:
        for seed in range(2):
            w.add(
                Episode(
                    seed=seed,
                    observations=rng.integers(0, 256, (FRAMES // 2, SIZE, SIZE, 3), dtype=np.uint8),
                    actions=rng.uniform(-1, 1, (FRAMES // 2, 2)).astype(np.float32),
                    rewards=np.zeros(FRAMES // 2, np.float32),
                    success=True,
                    final_distance=0.0,
                    truncated=False,
                )
            )
    return path


class Recording(Dataset):
    """A dataset that notes every index this process reads."""

    def __init__(self, inner: DemoDataset) -> None:
        self.inner, self.read = inner, []
        self.actions = inner.actions

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        self.read.append(int(i))
        return self.inner[i]


def make(kind: str, dropout: float = 0.0, seed: int = 0) -> ImplicitPolicy | ExplicitPolicy:
    config = tiny_policies().chosen(kind, action_dim=2)
    if kind == "explicit":
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, dropout=dropout)
        )
        return ExplicitPolicy(config, [-1.0, -1.0], [1.0, 1.0], seed=seed)  # type: ignore[arg-type]
    return ImplicitPolicy(config, [-1.0, -1.0], [1.0, 1.0], seed=seed)  # type: ignore[arg-type]


def config(**kw: Any) -> TrainConfig:
    base = TrainConfig(
        steps=K,
        batch_size=8,
        seed=3,
        log_interval=1,
        ckpt_interval=K // 2,
        energy_snapshots=3,
        snapshot_batch_size=4,
        progress=False,
        tensorboard=False,
    )
    return dataclasses.replace(base, **kw)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Interrupt(Exception):
    pass


def stop_at(step: int) -> Callable[[int, dict], None]:
    def callback(s: int, _: dict) -> None:
        if s == step:
            raise Interrupt

    return callback


# ---- what every rank runs -------------------------------------------------------------------


def scenarios(rank: int, root: Path) -> None:
    """All 2-process scenarios, on rank ``rank``; results under ``root/dump``."""
    dump = root / "dump"
    data = DemoDataset(root / "demos.h5", in_memory=False)
    images = np.random.default_rng(5).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)

    def out(name: str) -> Path:  # rank 1 gets a folder of its own, which must never appear
        return root / name if rank == 0 else root / f"{name}.rank{rank}"

    # one step of the explicit policy: same weights everywhere; which frames this rank read
    recording = Recording(data)
    policy = train(make("explicit"), recording, config(steps=1), out("one"))
    torch.save({"state": policy.state_dict(), "read": recording.read}, dump / f"one.{rank}.pt")

    # straight vs interrupted + resumed (same world size), both kinds (dropout: torch's RNG)
    for kind, dropout in (("implicit", 0.0), ("explicit", 0.5)):
        straight = train(make(kind, dropout), data, config(), out(f"straight-{kind}"))
        with pytest.raises(Interrupt):
            train(
                make(kind, dropout),
                data,
                config(),
                out(f"resumed-{kind}"),
                callback=stop_at(K // 2 + 1),
            )
        resumed = train(
            make(kind, dropout, seed=99), data, config(), out(f"resumed-{kind}"), resume=True
        )
        torch.save(
            {
                "straight": straight.state_dict(),
                "resumed": resumed.state_dict(),
                "actions": straight.select_action(images, torch.Generator().manual_seed(0)),
            },
            dump / f"runs-{kind}.{rank}.pt",
        )

    # stopped after K // 2 by 2 processes; the test resumes it in one
    with pytest.raises(Interrupt):
        train(make("explicit"), data, config(), out("half"), callback=stop_at(K // 2 + 1))

    # a NaN loss on rank 1 only stops both ranks at the same step, with the same error
    class NaNOnRank1(ExplicitPolicy):
        def forward(self, batch: Any, generator: Any = None) -> Any:
            loss, metrics = super().forward(batch, generator)
            return (loss * float("nan") if rank == 1 else loss), metrics

    nan = NaNOnRank1(make("explicit").config, [-1.0, -1.0], [1.0, 1.0], seed=0)
    try:
        train(nan, data, config(steps=2), out("diverged"))
    except Exception as e:
        (dump / f"diverged.{rank}.txt").write_text(f"{type(e).__name__}: {e}")


def _rank_main(
    rank: int, root: Path, fn: Callable[[int, Path], None], timeout_s: float, world: int
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{root / 'store'}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        fn(rank, root)
    finally:
        dist.destroy_process_group()


def run_ranks(
    root: Path, fn: Callable[[int, Path], None], timeout_s: float = 60, world: int = WORLD
) -> None:
    """``fn(rank, root)`` on ``world`` forked processes in one gloo group (collectives time out
    after ``timeout_s``)."""
    (root / "dump").mkdir(parents=True, exist_ok=True)
    mp.start_processes(
        _rank_main, args=(root, fn, timeout_s, world), nprocs=world, start_method="fork"
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    write_demos(root / "demos.h5")
    run_ranks(root, scenarios)
    return root


def dumped(root: Path, name: str) -> list[Any]:
    return [torch.load(root / "dump" / f"{name}.{r}.pt", weights_only=False) for r in range(WORLD)]


# ---- the tests ------------------------------------------------------------------------------


def test_one_step_equals_one_process_on_the_union_of_the_batches(runs: Path) -> None:
    ranks = dumped(runs, "one")
    assert same_weights(ranks[0]["state"], ranks[1]["state"])  # identical on both ranks
    single = train(
        make("explicit"), DemoDataset(runs / "demos.h5"), config(steps=1), runs / "single"
    )
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][k], v, rtol=1e-5, atol=1e-6)
    assert not same_weights(ranks[0]["state"], make("explicit").state_dict())  # it did train
    # each rank read its own half of the global batch, together the single process's batch
    batch = [i for i, _ in zip(ShardSampler(FRAMES, seed=3, batch_size=8), range(8), strict=False)]
    assert ranks[0]["read"] == batch[:4] and ranks[1]["read"] == batch[4:]


def test_only_rank_0_writes_and_its_checkpoint_acts_the_same(runs: Path) -> None:
    for name in ("one", "straight-implicit", "resumed-implicit", "straight-explicit", "half"):
        assert not (runs / f"{name}.rank1").exists()  # rank 1 never touched its out_dir
    assert sorted(p.name for p in (runs / "straight-implicit").iterdir()) == [
        "ckpt_last.pt",
        "energy_snapshots.npz",
        "metrics.jsonl",
    ]
    assert [r["step"] for r in read_metrics(runs / "straight-implicit")] == list(range(1, K + 1))
    with np.load(runs / "straight-implicit" / "energy_snapshots.npz") as z:
        assert z["steps"].tolist() == [0, K // 2, K]
    ckpt = load_checkpoint(runs / "straight-implicit" / "ckpt_last.pt")
    trainer = ckpt["trainer"]
    assert trainer["world_size"] == WORLD and len(trainer["rank_rng"]) == WORLD
    # per-rank generators: different draws on each rank
    assert not torch.equal(trainer["rank_rng"][0]["generator"], trainer["rank_rng"][1]["generator"])
    policy = load_policy(runs / "straight-implicit" / "ckpt_last.pt")
    images = np.random.default_rng(5).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    action = policy.select_action(images, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(action, dumped(runs, "runs-implicit")[0]["actions"])


@pytest.mark.parametrize("kind", ["implicit", "explicit"])
def test_interrupted_and_resumed_equals_straight_bitwise(runs: Path, kind: str) -> None:
    for rank in dumped(runs, f"runs-{kind}"):
        assert same_weights(rank["straight"], rank["resumed"])
    assert [r["step"] for r in read_metrics(runs / f"resumed-{kind}")] == list(range(1, K + 1))


def test_resume_is_bitwise_with_three_processes(tmp_path: Path) -> None:
    """With 3 ranks an all-reduce's summation order would follow DDP's bucket layout, which
    changes after a run's first step; the rank-ordered gradient mean keeps resuming exact."""
    write_demos(tmp_path / "demos.h5")
    run_ranks(tmp_path, _three, world=3)
    runs = [torch.load(tmp_path / "dump" / f"three.{r}.pt") for r in range(3)]
    assert all(same_weights(r["straight"], r["resumed"]) for r in runs)
    assert same_weights(runs[0]["straight"], runs[2]["straight"])


def _three(rank: int, root: Path) -> None:
    data, cfg = DemoDataset(root / "demos.h5"), config(batch_size=6, energy_snapshots=0)
    out = root if rank == 0 else root / f"rank{rank}"
    straight = train(make("implicit"), data, cfg, out / "straight")
    with pytest.raises(Interrupt):
        train(make("implicit"), data, cfg, out / "resumed", callback=stop_at(K // 2 + 1))
    resumed = train(make("implicit", seed=99), data, cfg, out / "resumed", resume=True)
    torch.save(
        {"straight": straight.state_dict(), "resumed": resumed.state_dict()},
        root / "dump" / f"three.{rank}.pt",
    )


def test_divergence_on_one_rank_stops_all_ranks(runs: Path) -> None:
    errors = [(runs / "dump" / f"diverged.{r}.txt").read_text() for r in range(WORLD)]
    for e in errors:
        assert e.startswith(
            "TrainingDivergedError: training diverged at step 1: the loss is not finite on 1 of 2"
        )
    assert not (runs / "diverged").exists()  # nothing written: the folder it created is gone


def test_resume_with_another_world_size(runs: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Stopped by 2 processes at K/2, resumed by 1: the weights, optimizer, schedule and data
    order continue exactly (the explicit policy without dropout draws nothing, so it ends where
    the straight 2-process run did, up to float rounding of the gradient averaging)."""
    half = runs / "half-copy"
    shutil.copytree(runs / "half", half)
    resumed = train(make("explicit"), DemoDataset(runs / "demos.h5"), config(), half, resume=True)
    assert "resuming a 2-process run with 1" in capfd.readouterr().err
    straight = train(
        make("explicit"), DemoDataset(runs / "demos.h5"), config(), runs / "straight-1"
    )
    for k, v in resumed.state_dict().items():
        torch.testing.assert_close(v, straight.state_dict()[k], rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in read_metrics(half)] == list(range(1, K + 1))


def test_shard_sampler_splits_each_global_batch() -> None:
    def take(sampler: ShardSampler, k: int) -> list[int]:
        return [i for i, _ in zip(sampler, range(k), strict=False)]

    single = take(ShardSampler(10, seed=1, batch_size=4), 4 * 7)
    for step in (0, 3):
        shards = [
            take(ShardSampler(10, seed=1, batch_size=4, step=step, rank=r, world_size=2), 2 * 4)
            for r in (0, 1)
        ]
        for b in range(4):  # global batch step + b = rank 0's half, then rank 1's
            assert (
                shards[0][2 * b : 2 * b + 2] + shards[1][2 * b : 2 * b + 2]
                == single[4 * (step + b) : 4 * (step + b + 1)]
            )
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        ShardSampler(10, seed=1, batch_size=5, world_size=2)


# ---- the launcher ---------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def rank_of(pid: int) -> int | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def launch(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "demos.cli",
        "train",
        "--nproc-per-node",
        "2",
        "--data",
        str(data),
        "--out",
        str(out),
        "--no-in-memory",
        *QUICK_MODEL,  # the tiny model (demos.train.tiny_policies's sizes)
        "--batch-size",
        "4",
        "--log-interval",
        "1",
        "--ckpt-interval",
        "2",
        "--energy-snapshots",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--dist-timeout",
        "20",
        *extra,
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")
def test_a_killed_rank_ends_the_job_and_resume_continues(tmp_path: Path) -> None:
    data, out = write_demos(tmp_path / "demos.h5"), tmp_path / "run"
    job = launch(data, out, "--steps", "100000")
    try:
        deadline = time.monotonic() + 120
        while not (out / "ckpt_last.pt").exists():
            assert job.poll() is None, job.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
        # torchrun's agent runs in the launcher itself: the ranks are its children
        victim = next(p for p in children(job.pid) if rank_of(p) == 1)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, err = job.communicate(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 1, err
    assert "rank 1" in err and "SIGKILL" in err and "--resume" in err
    step = load_checkpoint(out / "ckpt_last.pt")["step"]
    assert step >= 2 and not (out / ".lock").exists()
    resumed = launch(data, out, "--steps", str(step + 2), "--resume")
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert load_checkpoint(out / "ckpt_last.pt")["step"] == step + 2


@pytest.mark.parametrize("peer", ["dead", "hung"])
def test_collectives_fail_clearly_when_a_peer_is_gone(tmp_path: Path, peer: str) -> None:
    """Without a launcher to stop it, the survivor raises DistributedError: at once when the
    peer died (its connections close), after the collective timeout when it hangs."""
    write_demos(tmp_path / "demos.h5")
    t0 = time.monotonic()
    run_ranks(tmp_path, _dead_peer if peer == "dead" else _hung_peer, timeout_s=2)
    text = (tmp_path / "dump" / "survivor.txt").read_text()
    assert text.startswith(
        "DistributedError: rank 0 of 2: another process stopped or stopped answering during the start"
    )
    assert time.monotonic() - t0 < 30


def _survive(root: Path) -> None:
    try:
        train(make("explicit"), DemoDataset(root / "demos.h5"), config(steps=2), root / "survivor")
    except DistributedError as e:
        (root / "dump" / "survivor.txt").write_text(f"{type(e).__name__}: {e}")


def _dead_peer(rank: int, root: Path) -> None:
    if rank == 1:
        os._exit(0)  # dies without a word before training
    _survive(root)


def _hung_peer(rank: int, root: Path) -> None:
    if rank == 1:
        time.sleep(5)  # alive, but never joins the training's collectives
        os._exit(0)
    _survive(root)


def test_bf16_autocast_trains_on_the_cpu(tmp_path: Path) -> None:
    """``precision="bf16"``: forward passes in bfloat16 (weights stay float32), here on the CPU."""
    data = DemoDataset(write_demos(tmp_path / "demos.h5"))
    for kind in ("implicit", "explicit"):
        policy = train(make(kind), data, config(steps=2, precision="bf16"), tmp_path / kind)
        assert all(
            p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in policy.parameters()
        )
        assert (
            load_checkpoint(tmp_path / kind / "ckpt_last.pt")["trainer"]["train_config"][
                "precision"
            ]
            == "bf16"
        )
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        config(precision="fp16")


def test_bench_train_quick(capsys: pytest.CaptureFixture[str]) -> None:
    from demos.bench_train import BenchTrainConfig, run_bench_train

    results = run_bench_train(BenchTrainConfig(quick=True, settings=("env",), processes=(1, 2)))
    assert set(results["env"]) == {1, 2} and all(v > 0 for v in results["env"].values())
    table = capsys.readouterr().out
    assert "| 1 process | 2 processes | 2 vs 1 |" in table and "| env job | 16 px | 32 |" in table


def test_launcher_reports_the_first_failure_in_one_line(tmp_path: Path) -> None:
    from demos.launch import describe_failure, torchrun_argv

    class Failure:
        def __init__(self, code: int, pid: int) -> None:
            self.exitcode, self.pid = code, pid

        def signal_name(self) -> str:
            return signal.Signals(-self.exitcode).name

    class Failed:
        def __init__(self, failures: dict[int, Failure], first: int) -> None:
            self.failures, self.first = failures, first

        def get_first_failure(self) -> tuple[int, Failure]:
            return self.first, self.failures[self.first]

    killed = Failed({1: Failure(-9, 42), 0: Failure(1, 41)}, first=1)
    assert describe_failure(killed, tmp_path) == (
        f"rank 1 (pid 42) was killed by SIGKILL; the other processes stopped. No checkpoint was written in {tmp_path}",
        1,
    )
    refused = Failed({0: Failure(2, 41), 1: Failure(-15, 42)}, first=0)
    message, code = describe_failure(refused)
    assert code == 2 and message.startswith(
        "rank 0 (pid 41) failed with exit code 2 (its error is above)"
    )
    assert torchrun_argv(2, ["train", "--steps", "3"]) == [
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "-m",
        "demos.cli",
        "train",
        "--steps",
        "3",
    ]
