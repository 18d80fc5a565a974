"""The trainer: any (image, action) dataset, logs, snapshots, checkpoints, exact resumption."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from ebm_policy import (
    BackboneConfig,
    CheckpointError,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicy,
    ExplicitPolicyConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    InfoNCEConfig,
    OptimConfig,
    TrainConfig,
    Trainer,
    load_checkpoint,
    load_policy,
    read_metrics,
    train,
)
from ebm_policy.data import StreamSampler
from ebm_policy.runlock import FolderInUseError
from ebm_policy.trainer import TrainingDivergedError

CNN = CNNConfig(channels=(4, 4), strides=(1, 1), pools=(1, 1), out_channels=4)
K = 12  # steps of the straight run; the interrupted run stops at K // 2


pytestmark = pytest.mark.usefixtures("one_thread")


class DotDataset(Dataset):
    """``{"image": uint8 (8, 8, 3), "action": float32 (2,)}`` items, as numpy or tensors."""

    def __init__(self, n: int = 10, as_tensor: bool = False) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        self.acts = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        self.as_tensor = as_tensor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.images[i], "action": self.acts[i]}
        return {k: torch.from_numpy(v) for k, v in item.items()} if self.as_tensor else item


def make(
    kind: str, seed: int = 0, optim: OptimConfig | None = None
) -> ImplicitPolicy | ExplicitPolicy:
    optim = optim or OptimConfig(
        scheduler="step", step_size=3, gamma=0.5
    )  # the lr changes within the run
    low, high = [-1.0, -1.0], [1.0, 1.0]
    if kind == "implicit":
        cfg = ImplicitPolicyConfig(
            model=EBMConfig(backbone=BackboneConfig(cnn=CNN), hidden_dims=(16,)),
            loss=InfoNCEConfig(num_counter_examples=8),
            optimizer=DFOConfig(num_samples=32),
            optim=optim,
        )
        return ImplicitPolicy(cfg, low, high, seed=seed)
    cfg = ExplicitPolicyConfig(
        model=ExplicitConfig(backbone=BackboneConfig(cnn=CNN), hidden_dims=(16,), dropout=0.5),
        optim=optim,
    )
    return ExplicitPolicy(cfg, low, high, seed=seed)


def config(**kw: object) -> TrainConfig:
    base = TrainConfig(
        steps=K,
        batch_size=4,
        seed=3,
        log_interval=2,
        ckpt_interval=K // 2,
        energy_snapshots=3,
        snapshot_batch_size=4,
        progress=False,
        tensorboard=False,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("kind", ["implicit", "explicit"])
@pytest.mark.parametrize("how", ["keyboard", "crash"])
def test_resume_gives_the_same_weights_as_a_straight_run(
    tmp_path: Path, kind: str, how: str
) -> None:
    straight = train(make(kind), DotDataset(), config(), tmp_path / "straight")

    def stop(step: int, _: dict) -> None:
        if step == K // 2 + (1 if how == "crash" else 0):
            # KeyboardInterrupt: the trainer saves the current step. Another exception one step
            # after a periodic checkpoint: that step is lost and replayed on resume.
            raise KeyboardInterrupt if how == "keyboard" else Interrupt

    run = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt if how == "keyboard" else Interrupt):
        train(make(kind), DotDataset(), config(), run, callback=stop)
    assert load_checkpoint(run / "ckpt_last.pt")["step"] == K // 2
    resumed = train(make(kind, seed=99), DotDataset(), config(), run, resume=True)
    assert same_weights(straight, resumed)
    assert not same_weights(straight, make(kind))
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == list(range(2, K + 1, 2))  # the resumed log reads like one run
    if kind == "implicit":
        with np.load(run / "energy_snapshots.npz") as z:
            assert z["steps"].tolist() == [0, K // 2, K]


def test_logs_snapshots_and_checkpoints(tmp_path: Path) -> None:
    cfg = config(keep_every=K // 2, tensorboard=True)
    policy = train(
        make("implicit"), DotDataset(as_tensor=True), cfg, tmp_path, metadata={"env_id": "x"}
    )
    assert not policy.training
    records = read_metrics(tmp_path)
    assert {
        "train/loss",
        "train/lr",
        "train/samples_per_s",
        "train/energy_pos",
        "train/energy_neg",
    } <= set(records[0])
    lrs = [r["train/lr"] for r in records]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-3 * 0.5**4)
    with np.load(tmp_path / "energy_snapshots.npz") as z:
        assert z["positive"].shape == (3, 4) and z["negative"].shape == (3, 4, 8)
    ckpt = load_checkpoint(tmp_path / "ckpt_last.pt")
    assert ckpt["step"] == K and ckpt["metadata"] == {"env_id": "x"} and ckpt["trainer"] is not None
    assert load_checkpoint(tmp_path / f"ckpt_step{K // 2}.pt")["step"] == K // 2
    assert same_weights(load_policy(tmp_path / "ckpt_last.pt"), policy)
    if importlib.util.find_spec("tensorboard") is not None:  # the optional TensorBoard log
        assert any((tmp_path / "tb").iterdir())
    else:
        assert not (tmp_path / "tb").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_same_seed_same_run_and_other_seed_differs(tmp_path: Path) -> None:
    a = train(make("implicit"), DotDataset(), config(energy_snapshots=0), tmp_path / "a")
    b = train(make("implicit"), DotDataset(), config(energy_snapshots=0), tmp_path / "b")
    c = train(make("implicit"), DotDataset(), config(energy_snapshots=0, seed=4), tmp_path / "c")
    assert same_weights(a, b) and not same_weights(a, c)


def test_workers_and_epochs(tmp_path: Path) -> None:
    cfg = config(steps=None, epochs=2, num_workers=1, energy_snapshots=0, log_interval=1)
    train(make("explicit"), DotDataset(), cfg, tmp_path)
    assert load_checkpoint(tmp_path / "ckpt_last.pt")["step"] == 5  # ceil(2 * 10 / 4)
    assert read_metrics(tmp_path)[-1]["train/epoch"] == pytest.approx(2.0)


def test_refuses_to_overwrite_and_to_resume_another_config(tmp_path: Path) -> None:
    train(make("implicit"), DotDataset(), config(steps=2), tmp_path)
    with pytest.raises(FileExistsError, match="resume"):
        train(make("implicit"), DotDataset(), config(steps=2), tmp_path)
    with pytest.raises(CheckpointError, match="another policy config"):
        train(
            make("implicit", optim=OptimConfig(lr=0.1)),
            DotDataset(),
            config(steps=4),
            tmp_path,
            resume=True,
        )
    with pytest.raises(CheckpointError, match="explicit"):
        train(make("explicit"), DotDataset(), config(steps=4), tmp_path, resume=True)
    with pytest.raises(ValueError, match="batch_size and seed"):
        train(make("implicit"), DotDataset(), config(steps=4, seed=5), tmp_path, resume=True)


def test_metrics_file_is_json_lines(tmp_path: Path) -> None:
    train(make("explicit"), DotDataset(), config(steps=4, log_interval=1), tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


@pytest.mark.parametrize("start", [0, 7, 10, 23])
def test_stream_sampler_resumes_mid_epoch(start: int) -> None:
    full = StreamSampler(10, seed=1)
    it = iter(full)
    expected = [next(it) for _ in range(start + 15)][start:]
    it = iter(StreamSampler(10, seed=1, start=start))
    assert [next(it) for _ in range(15)] == expected
    assert sorted(full.permutation(2).tolist()) == list(range(10))


# ---- interrupts inside a step, divergence, the run-folder lock, stale temporaries -------------


class InterruptingPolicy:
    """Wraps a policy: on the ``at``-th call (step ``at``), after the
    counter-examples were drawn, ``how`` happens: one or two SIGINTs (Ctrl-C), or a
    ``KeyboardInterrupt`` raised in the middle of the step."""

    def __init__(self, policy: ImplicitPolicy | ExplicitPolicy, at: int, how: str) -> None:
        self._policy, self._at, self._how, self._calls = policy, at, how, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._policy, name)

    def __call__(self, batch: dict, generator: torch.Generator) -> tuple:
        out = self._policy(batch, generator=generator)
        self._calls += 1
        if self._calls == self._at:
            if self._how == "raise":
                raise KeyboardInterrupt
            for _ in range(1 if self._how == "ctrl-c" else 2):
                signal.raise_signal(signal.SIGINT)
        return out


@pytest.fixture
def ctrl_c_interrupts() -> Iterator[None]:
    """Python's own Ctrl-C handler for the test, also when pytest was started with SIGINT ignored
    (a background job of a non-interactive shell), where a raised SIGINT would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    ("how", "saved"),
    [("ctrl-c", K // 2 + 2), ("ctrl-c-twice", K // 2), ("raise", K // 2)],
)
@pytest.mark.parametrize("kind", ["implicit", "explicit"])
@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_interrupt_inside_a_step_resumes_bitwise(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str, how: str, saved: int
) -> None:
    """A first Ctrl-C lets the step finish and saves it; a second one, or a KeyboardInterrupt
    raised inside the step, saves nothing (the periodic checkpoint of step K/2 stays). Either way
    the resumed run equals the straight one bit for bit: the checkpoint never holds the generator
    state of a step it does not contain."""
    straight = train(make(kind), DotDataset(), config(), tmp_path / "straight")
    run = tmp_path / "run"
    inner = make(kind)
    trainer = Trainer(inner, DotDataset(), config(), run)
    trainer.policy = InterruptingPolicy(inner, at=K // 2 + 2, how=how)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert load_checkpoint(run / "ckpt_last.pt")["step"] == saved
    if how == "ctrl-c":
        assert f"finishing step {saved}" in capfd.readouterr().err
    resumed = train(make(kind, seed=99), DotDataset(), config(), run, resume=True)
    assert same_weights(straight, resumed)
    assert [r["step"] for r in read_metrics(run)] == list(range(2, K + 1, 2))


class NaNAt:
    """Wraps a policy: its loss is multiplied by ``value`` (NaN, inf) from step ``at`` on."""

    def __init__(self, policy: ImplicitPolicy | ExplicitPolicy, at: int, value: float) -> None:
        self._policy, self._at, self._value, self._calls = policy, at, value, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._policy, name)

    def __call__(self, batch: dict, generator: torch.Generator) -> tuple:
        loss, metrics = self._policy(batch, generator=generator)
        self._calls += 1
        return (loss * self._value if self._calls >= self._at else loss), metrics


def finite_checkpoint(path: Path) -> bool:
    state = load_checkpoint(path)["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize(
    ("value", "what"), [(float("nan"), "the loss is nan"), (float("inf"), "the loss is inf")]
)
def test_divergence_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, value: float, what: str
) -> None:
    policy = make("implicit")
    trainer = Trainer(policy, DotDataset(), config(ckpt_interval=4, log_interval=1), tmp_path)
    trainer.policy = NaNAt(policy, at=7, value=value)  # type: ignore[assignment]
    with pytest.raises(
        TrainingDivergedError,
        match=rf"at step 7: {what}; .*\(.*ckpt_last.pt, step 4\) is kept.*learning rate",
    ):
        trainer.run()
    assert load_checkpoint(tmp_path / "ckpt_last.pt")["step"] == 4 and finite_checkpoint(
        tmp_path / "ckpt_last.pt"
    )
    text = (tmp_path / "metrics.jsonl").read_text()
    assert [json.loads(line)["step"] for line in text.splitlines()] == [1, 2, 3, 4, 5, 6]
    assert "NaN" not in text and "Infinity" not in text


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    """A learning rate near float32's largest value on scaled-up (finite) gradients: the first
    update makes the weights non-finite; the checkpoint due after it is refused, and the run
    folder it created is removed (nothing to keep). (An infinite lr is refused by the config.)"""
    run = tmp_path / "run"
    policy = make("explicit", optim=OptimConfig(name="sgd", lr=1e38))
    for p in policy.parameters():
        p.register_hook(lambda g: g * 1e3)
    with pytest.raises(
        TrainingDivergedError, match=r"at step 1: the weight .* is not finite.*removed"
    ):
        train(policy, DotDataset(), config(ckpt_interval=1), run)
    assert not run.exists()


def test_gradient_norm_guard(tmp_path: Path) -> None:
    policy = make("explicit")
    trainer = Trainer(policy, DotDataset(), config(ckpt_interval=2), tmp_path)

    def inf_grads(grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")

    next(policy.parameters()).register_hook(inf_grads)
    with pytest.raises(TrainingDivergedError, match="at step 1: the gradient norm is (inf|nan)"):
        trainer.run()


LOCK_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("runlock", sys.argv[1])
runlock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runlock)
with runlock.FolderLock(sys.argv[2], "train"):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock until its stdin is closed (or it is killed)."""
    import ebm_policy.runlock

    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, ebm_policy.runlock.__file__, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_trainer_on_a_busy_run_folder_is_refused(tmp_path: Path) -> None:
    train(make("explicit"), DotDataset(), config(steps=2), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(
            FolderInUseError, match=rf"in use by pid {holder.pid} \(ibc-gym train, since "
        ):
            train(make("explicit"), DotDataset(), config(steps=4), tmp_path, resume=True)
    finally:
        holder.communicate("\n")
    after = {
        p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"
    }
    assert after == before  # nothing touched
    train(make("explicit"), DotDataset(), config(steps=4), tmp_path, resume=True)  # free again
    assert not (tmp_path / ".lock").exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    holder = hold_lock(tmp_path)
    holder.kill()
    holder.wait()
    assert str(holder.pid) in (tmp_path / ".lock").read_text()
    train(make("explicit"), DotDataset(), config(steps=2), tmp_path)
    assert f"taking over the lock left by pid {holder.pid}" in capfd.readouterr().err
    assert load_checkpoint(tmp_path / "ckpt_last.pt")["step"] == 2


def test_stale_temporaries_are_removed_by_the_next_run(tmp_path: Path) -> None:
    """Killed writers leave temporaries (``.ckpt_last.<pid>.<token>.tmp.pt``); the next run in the
    folder removes those of dead processes and leaves a live writer's alone."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    stale = [
        tmp_path / f".ckpt_last.{pid}.0123abcd.tmp.pt",
        tmp_path / f".energy_snapshots.{pid}.89abcdef.tmp.npz",
    ]
    live = tmp_path / f".ckpt_last.{os.getppid()}.0123abcd.tmp.pt"  # a process that is running
    for p in [*stale, live]:
        p.write_bytes(b"")
    train(make("explicit"), DotDataset(), config(steps=2), tmp_path)
    assert not any(p.exists() for p in stale) and live.exists()
