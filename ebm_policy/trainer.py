"""Training loop for any policy whose ``policy(batch, generator=g)`` (``forward``) returns
``(loss, metrics)``, on any (image, action) dataset, with atomic checkpoints and exact resumption,
in one process or several (torchrun, DistributedDataParallel).

Run directory layout::

    ckpt_last.pt            latest checkpoint (weights, configs, step, optimizer/RNG state)
    ckpt_step<N>.pt         periodic copies when ``keep_every`` is set
    metrics.jsonl           one JSON line per log step: train/loss, train/lr, train/samples_per_s...
    energy_snapshots.npz    implicit policies: positive vs counter-example energies of a fixed
                            batch at several steps (steps (S,), positive (S, B), negative (S, B, N))
    tb/                     TensorBoard scalars (when tensorboard is installed)

Resuming (``resume=True``) restores the weights, optimizer, scheduler, step, the counter-example
generator, torch's global RNG (dropout) and the data position, so K/2 steps + resume to K gives the
same weights as K steps straight through.

Checkpoints are written only at step boundaries, with the generator states of that step. Ctrl-C
(SIGINT, in the main thread) during a step lets the step finish, saves it and then raises
``KeyboardInterrupt``; a second Ctrl-C, or a ``KeyboardInterrupt`` raised inside a step some other
way, stops at once and saves nothing, so the last checkpoint stays and resuming replays the lost
steps: either way the resumed run is bitwise the straight one (as after SIGKILL).

The run holds an exclusive lock on ``out_dir`` (``runlock.FolderLock``) for its whole life, and
deletes temporary files that killed writers left there. A non-finite loss, gradient norm or weight
stops the run with ``TrainingDivergedError`` before anything non-finite is written. A run that
fails before its first checkpoint removes the folder it created.

Several processes (``distributed``; started by torchrun, or any initialized process group): the
policy is wrapped in ``DistributedDataParallel`` and called through it, so every backward pass
averages the gradients of all ranks and the weights stay identical. ``batch_size`` is the global
batch; rank ``r`` trains on its slice of it (``data.ShardSampler``), read through its own
``DataLoader`` (its own file handles). Each rank draws its own counter-examples and dropout masks
(``distributed.rank_seed``: rank 0 draws as a single process does). Rank 0 alone holds the folder
lock and writes checkpoints (its own and every rank's generator states, written once, atomically),
``metrics.jsonl`` (loss and the other metrics averaged over the ranks, samples/s of all of them),
TensorBoard, energy snapshots and the progress bar; the others read nothing from ``out_dir``
(rank 0 sends them the checkpoint it resumes from), so only rank 0's machine needs the folder.
The ranks agree at every step (one small all-reduce) on divergence and Ctrl-C, and after every
step that writes, on whether rank 0's writing worked, so they all stop at the same step, with the
same error. A process that dies or stops answering makes the others stop within
``TrainConfig.dist_timeout`` with ``DistributedError``.

Resuming with the same number of processes is exact (bitwise the straight run). Resuming with
another number ``W'`` (allowed when ``W'`` divides ``batch_size``) continues the same run: the
weights, optimizer, learning-rate schedule, step and the data order (the global batch of every
step holds the same examples) continue exactly; only the random draws cannot, because the saved
generator states belong to other ranks: each rank's counter-example and dropout generators
restart from ``rank_seed`` of ``(seed, rank, step)``. The continuation is reproducible for ``W'``
but not bitwise the run that would have continued with ``W`` processes.
"""

from __future__ import annotations

import gc
import inspect
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ebm_policy import distributed as D
from ebm_policy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ebm_policy.config import config_from_dict, config_to_dict
from ebm_policy.data import fixed_batch, make_loader
from ebm_policy.fileio import atomic_path, remove_stale_temporaries
from ebm_policy.metrics_log import MetricsLogger
from ebm_policy.optim import build_optimizer, build_scheduler
from ebm_policy.policies import Policy
from ebm_policy.runlock import FolderLock
from ebm_policy.train_config import TrainConfig, resolve_device

__all__ = [
    "CKPT_LAST",
    "SNAPSHOTS",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "resolve_device",
    "train",
]

CKPT_LAST = "ckpt_last.pt"
SNAPSHOTS = "energy_snapshots.npz"
StepCallback = Callable[[int, dict[str, float]], None]


class TrainingDivergedError(FloatingPointError):
    """The loss, the gradient norm or the weights stopped being finite; none of it was saved.
    Every rank of a distributed run raises it at the same step (``shared``)."""

    shared = True


def train(
    policy: Policy,
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    metadata: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Policy:
    """Train ``policy`` on ``dataset`` into ``out_dir``; returns the policy (in eval mode).

    ``resume=True`` continues from ``out_dir/ckpt_last.pt`` when it exists (else starts fresh);
    ``resume=False`` refuses a directory that already holds a checkpoint. ``metadata`` is stored
    in every checkpoint. ``callback(step, metrics)`` runs after every step, on every rank (with
    that rank's metrics; an exception it raises must be raised by all ranks at the same step). On
    KeyboardInterrupt the last finished step is checkpointed before re-raising (see the module
    docstring). Under torchrun (``WORLD_SIZE > 1``) the process group is joined and left here.

    Raises ``FolderInUseError`` when another process trains into ``out_dir``,
    ``TrainingDivergedError`` when training produces a non-finite loss, gradient norm or weight,
    and ``DistributedError`` when another training process died or stopped answering.
    """
    return Trainer(policy, dataset, cfg, Path(out_dir), metadata=metadata).run(
        resume=resume, callback=callback
    )


class Trainer:
    """One training run; see ``train``.

    ``policy`` is the raw model (nanoGPT's ``raw_model``: what is saved and evaluated);
    ``model`` is what a training step calls: ``DistributedDataParallel(policy)`` when several
    processes train, else ``policy`` itself (set by ``run``).
    """

    def __init__(
        self,
        policy: Policy,
        dataset: Dataset,
        cfg: TrainConfig,
        out_dir: Path,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.cfg, self.dataset, self.out_dir = cfg, dataset, out_dir
        self.metadata = dict(metadata or {})
        self.rank = D.current_rank()  # torchrun's before run() joins the group
        self.device = resolve_device(cfg.device, self.rank)
        self.policy = policy.to(self.device)
        self.model: nn.Module | Any = None
        self.n = len(dataset)  # type: ignore[arg-type]
        if self.n == 0:
            raise ValueError("cannot train on an empty dataset")
        if cfg.batch_size % self.rank.world_size:
            raise _shared(
                ValueError(
                    f"the batch size ({cfg.batch_size}) must be a multiple of the number of processes "
                    f"({self.rank.world_size}): it is the global batch, split evenly between them"
                )
            )
        self.total = cfg.total_steps(self.n)
        self.optimizer = build_optimizer(policy.parameters(), policy.config.optim)
        self.scheduler = build_scheduler(self.optimizer, policy.config.optim, self.total)
        self.generator = torch.Generator(self.device).manual_seed(
            D.rank_seed(cfg.seed + 1, self.rank.rank)
        )
        self.step = 0
        self.snapshots: dict[str, list[np.ndarray]] = {"steps": [], "positive": [], "negative": []}
        self._saved_at: int | None = None  # step of the last checkpoint in out_dir
        self._in_step = False  # between taking a batch and finishing that step's bookkeeping
        self._stop_requested = False  # Ctrl-C arrived during a step: stop after it
        self._stop_agreed = False  # some rank asked to stop: all stop after this step
        self._removes_folder = False  # a failure before the first checkpoint deletes out_dir

    @property
    def master(self) -> bool:
        """Rank 0 (the only rank of a single-process run): the one that writes."""
        return self.rank.master

    # ----------------------------------------------------------------- state
    def _rng_state(self) -> dict[str, torch.Tensor]:
        """This rank's random states: counter-example generator, torch's global RNG (dropout)."""
        state = {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":  # dropout on the GPU draws from its own generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def trainer_state(self) -> dict[str, Any] | None:
        """Everything beyond the weights needed to continue exactly (on rank 0; the other ranks
        send their random states and get ``None``). Rank 0's random states are at the top level,
        as in a single-process checkpoint; ``rank_rng`` lists every rank's."""
        states = D.gather_objects(
            self.rank, self._rng_state(), f"the random states of step {self.step}", self.device
        )
        if states is None:
            return None
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **states[0],
            "train_config": config_to_dict(self.cfg),
            "world_size": self.rank.world_size,
        }
        if self.rank.enabled:
            state["rank_rng"] = states
        return state

    def _check_weights(self) -> None:
        """``TrainingDivergedError`` if a weight is not finite (every rank holds the same weights,
        so every rank decides alike)."""
        for name, value in self.policy.state_dict().items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise self._diverged(self.step, f"the weight {name!r} is not finite")

    def save(self) -> Path:
        """Atomically write ``ckpt_last.pt`` (and a kept copy when due) on rank 0; every rank
        calls it at the same step. Non-finite weights raise ``TrainingDivergedError`` instead."""
        self._check_weights()
        state = self.trainer_state()
        self._master_io(
            lambda: self._write_checkpoint(state), f"writing the checkpoint of step {self.step}"
        )
        self._saved_at = self.step
        return self.out_dir / CKPT_LAST

    def _write_checkpoint(self, state: dict[str, Any] | None) -> None:
        save_checkpoint(
            self.out_dir / CKPT_LAST,
            self.policy,
            step=self.step,
            metadata=self.metadata,
            trainer_state=state,
        )
        if self.cfg.keep_every and self.step % self.cfg.keep_every == 0:
            save_checkpoint(
                self.out_dir / f"ckpt_step{self.step}.pt",
                self.policy,
                step=self.step,
                metadata=self.metadata,
            )

    def _master_io(self, work: Callable[[], None], what: str) -> None:
        """Run ``work`` (writing files) on rank 0; every rank calls this at the same point and
        learns whether it worked: on failure rank 0 raises its error and the others a
        ``DistributedError`` quoting it, so no rank goes on alone."""
        failure: BaseException | None = None
        if self.master:
            try:
                work()
            except Exception as e:
                failure = e
        verdict = None if failure is None else f"{type(failure).__name__}: {failure}"
        verdict = D.broadcast_object(self.rank, verdict, what, self.device)
        if failure is not None:
            raise failure
        if verdict is not None:
            raise _shared(
                D.DistributedError(f"{self.rank}: rank 0 failed {what} ({verdict}); stopping too")
            )

    def _diverged(self, step: int, problem: str) -> TrainingDivergedError:
        last = self.out_dir / CKPT_LAST
        if self._saved_at is not None:
            kept = f"the last good checkpoint ({last}, step {self._saved_at}) is kept"
        elif self._removes_folder:
            kept = f"no checkpoint had been written yet, so {self.out_dir} is removed"
        else:
            kept = "no checkpoint had been written yet"
        lr = self.scheduler.get_last_lr()[0]
        clip = self.policy.config.optim.grad_clip_norm
        clipping = f"a lower gradient-norm clip (now {clip:g})" if clip else "gradient clipping"
        return TrainingDivergedError(
            f"training diverged at step {step}: {problem}; nothing of that step was saved and "
            f"{kept}. Try a lower learning rate (now {lr:g}), {clipping} or another seed"
        )

    def restore(self, path: Path) -> None:
        """Load weights and trainer state from ``path`` (raises ``CheckpointError`` on mismatch)."""
        self._restore(load_checkpoint(path, map_location="cpu"), path)

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        """Continue from the checkpoint payload ``ckpt`` (read by rank 0 from ``path``)."""
        state = ckpt.get("trainer")
        if ckpt["kind"] != self.policy.kind:
            raise CheckpointError(
                f"{path}: holds an {ckpt['kind']} policy, resuming an {self.policy.kind} one"
            )
        old_model = ckpt["config"].get("model", {})
        old_inputs = (old_model.get("inputs", "image"), old_model.get("state_dim", 0))
        if old_inputs != (self.policy.inputs, self.policy.state_dim):
            raise CheckpointError(
                f"{path}: was trained on {_describe_inputs(*old_inputs)}, this run's policy "
                f"observes {_describe_inputs(self.policy.inputs, self.policy.state_dim)} "
                f"(another dataset?); cannot resume"
            )
        if _training_part(ckpt["config"]) != _training_part(config_to_dict(self.policy.config)):
            raise CheckpointError(f"{path}: was trained with another policy config; cannot resume")
        if state is None:
            raise CheckpointError(f"{path}: has no trainer state to resume from")
        old = config_from_dict(TrainConfig, state["train_config"])
        if (old.batch_size, old.seed) != (self.cfg.batch_size, self.cfg.seed):
            raise ValueError(
                f"resuming needs the same batch_size and seed as the interrupted run "
                f"({old.batch_size}, {old.seed})"
            )
        self.policy.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(ckpt["step"])
        self._saved_at = self.step
        self._restore_rng(state)
        if self.master:
            self._load_snapshots()

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """This rank's random states: the saved ones when the world size is the same, else fresh
        seeds of ``(seed, rank, step)`` (see the module docstring)."""
        saved_world = int(state.get("world_size", 1))
        if saved_world == self.rank.world_size:
            mine = state["rank_rng"][self.rank.rank] if self.rank.enabled else state
            self.generator.set_state(mine["generator"].cpu())
            torch.set_rng_state(mine["torch_rng"].cpu())
            if "cuda_rng" in mine and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda_rng"].cpu(), self.device)
            return
        rank, seed = self.rank.rank, self.cfg.seed
        self.generator.manual_seed(D.rank_seed(seed + 1, rank, self.step))
        torch.manual_seed(D.rank_seed(seed, rank, self.step))
        if self.master:
            print(
                f"resuming a {saved_world}-process run with {self.rank.world_size}: weights, "
                f"optimizer, schedule and data order continue exactly; counter-example and dropout "
                f"draws restart from seeds of (seed, rank, step {self.step})",
                file=sys.stderr,
            )

    # ------------------------------------------------------------- snapshots
    def _snapshot_steps(self) -> set[int]:
        k = self.cfg.energy_snapshots
        if k <= 0 or not hasattr(self.policy, "energy_samples"):
            return set()
        return {int(s) for s in np.linspace(0, self.total, k).round()}

    def _take_snapshot(self) -> None:
        batch = fixed_batch(self.dataset, self.cfg.snapshot_batch_size, self.cfg.seed)
        gen = torch.Generator(self.device).manual_seed(self.cfg.seed + 2)  # same counter-examples
        was_training = self.policy.training
        self.policy.eval()
        samples = self.policy.energy_samples(batch, generator=gen)  # type: ignore[union-attr,operator]
        self.policy.train(was_training)
        self.snapshots["steps"].append(np.asarray(self.step))
        self.snapshots["positive"].append(samples["positive"])
        self.snapshots["negative"].append(samples["negative"])
        arrays = {k: np.stack(v) for k, v in self.snapshots.items()}
        with atomic_path(self.out_dir / SNAPSHOTS) as tmp:
            np.savez(tmp, **arrays)  # type: ignore[arg-type]

    def _load_snapshots(self) -> None:
        path = self.out_dir / SNAPSHOTS
        if not path.exists():
            return
        with np.load(path) as z:
            keep = z["steps"] <= self.step
            self.snapshots = {k: list(z[k][keep]) for k in ("steps", "positive", "negative")}

    # ------------------------------------------------------------------ loop
    def run(self, *, resume: bool = False, callback: StepCallback | None = None) -> Policy:
        """Train to ``total`` steps (see ``train``); joins torchrun's process group if needed."""
        joined = D.join_from_env(self.device, self.cfg.dist_timeout)
        try:
            self.rank = D.current_rank()
            return self._run(resume, callback)
        finally:
            # DistributedDataParallel goes first: its reducer must not be what last holds the
            # process group, whose destructor would then run under the GIL and can deadlock
            # with gloo's threads (pytorch/pytorch#56297)
            self.model = None
            if joined:
                gc.collect()
                D.leave()

    def _start(
        self, stack: ExitStack, resume: bool
    ) -> tuple[FolderLock | None, dict[str, Any] | None]:
        """Rank 0 locks the folder, checks it and reads the checkpoint to resume from; every rank
        gets that checkpoint, or rank 0's error (raised everywhere)."""
        lock: FolderLock | None = None
        news: dict[str, Any] | None = None
        failure: Exception | None = None
        if self.master:
            created = not self.out_dir.exists()
            try:
                lock = stack.enter_context(FolderLock(self.out_dir, "train"))
                for path in remove_stale_temporaries(self.out_dir):
                    print(f"removed {path}, left behind by an interrupted write", file=sys.stderr)
                last = self.out_dir / CKPT_LAST
                if last.exists() and not resume:
                    raise FileExistsError(
                        f"{last} exists; resume it or choose another output directory"
                    )
                ckpt = (
                    load_checkpoint(last, map_location="cpu") if resume and last.exists() else None
                )
                news = {"created": created, "ckpt": ckpt}
            except Exception as e:
                failure, news = e, {"error": (type(e), str(e))}
        news = D.broadcast_object(self.rank, news, "the start of the run", self.device)
        if failure is not None:
            raise failure
        if "error" in news:
            kind, message = news["error"]
            raise _shared(_rebuild(kind, f"rank 0 could not start: {message}"))
        self._removes_folder = bool(news["created"])
        return lock, news["ckpt"]

    def _run(self, resume: bool, callback: StepCallback | None) -> Policy:
        last = self.out_dir / CKPT_LAST
        with ExitStack() as stack:
            lock, ckpt = self._start(stack, resume)
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            try:
                with torch.random.fork_rng(devices=devices):  # dropout's RNG, restored afterwards
                    torch.manual_seed(D.rank_seed(self.cfg.seed, self.rank.rank))
                    if ckpt is not None:
                        self._restore(ckpt, last)
                    self.model = self._wrap()
                    self._loop(callback)
            except BaseException:
                if lock is not None and self._removes_folder and not last.exists():
                    lock.discard_folder()  # nothing worth keeping: leave no folder behind
                raise
        return self.policy.eval()

    def _wrap(self) -> nn.Module | Any:
        """``DistributedDataParallel(policy)`` for several processes, else the policy."""
        if not self.rank.enabled:
            return self.policy
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # the buffers (action bounds) never change during training: no syncing at every forward
        newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        no_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
        model = D.collective(
            self.rank,
            "wrapping the policy",
            lambda: DistributedDataParallel(self.policy, device_ids=ids, **no_sync),  # type: ignore[arg-type]
        )
        model.register_comm_hook(None, D.ordered_mean_hook)  # exact resumption (see the hook)
        return model

    @contextmanager
    def _deferred_interrupts(self) -> Iterator[None]:
        """While a step runs, a first Ctrl-C only asks to stop once that step is done. With
        several processes every Ctrl-C only asks (the ranks must stop at the same step)."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers belong to the main thread
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous in (signal.SIG_IGN, None):
            yield
            return

        def on_sigint(signum: int, frame: object) -> None:
            if self.rank.enabled:
                if not self._stop_requested and self.master:
                    print(
                        "\ninterrupt: all processes stop after the step they agree on, and save it",
                        file=sys.stderr,
                    )
                self._stop_requested = True
                return
            if self._in_step and not self._stop_requested:
                print(
                    f"\ninterrupt: finishing step {self.step + 1}, then saving it "
                    f"(Ctrl-C again to stop at once; the last checkpoint then stays)",
                    file=sys.stderr,
                )
                self._stop_requested = True
                return
            if callable(previous):
                previous(signum, frame)  # type: ignore[arg-type]
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _loop(self, callback: StepCallback | None) -> None:
        cfg = self.cfg
        snap_steps = self._snapshot_steps()
        logger = (
            MetricsLogger(self.out_dir, start_step=self.step, tensorboard=cfg.tensorboard)
            if self.master
            else None
        )
        loader = make_loader(
            self.dataset,
            cfg.batch_size,
            cfg.seed,
            self.step,
            cfg.num_workers,
            rank=self.rank.rank,
            world_size=self.rank.world_size,
            pin_memory=self.device.type == "cuda",
        )
        bar = tqdm(
            total=self.total,
            initial=self.step,
            disable=not (cfg.progress and self.master),
            desc="train",
            dynamic_ncols=True,
        )
        sums: dict[str, float] = {}
        count, t0 = 0, time.perf_counter()
        batches = None
        self._in_step = self._stop_requested = self._stop_agreed = False
        try:
            with self._deferred_interrupts():
                try:
                    if self.step in snap_steps:
                        self._master_io(self._first_snapshot, "the first energy snapshot")
                    batches = iter(loader)
                    while self.step < self.total:
                        self._in_step = True
                        metrics = self._train_step(next(batches))
                        self.step += 1
                        count += 1
                        for k, v in metrics.items():
                            sums[k] = sums.get(k, 0.0) + v
                        bar.update(1)
                        scalars = None
                        if self.step % cfg.log_interval == 0 or self.step == self.total:
                            scalars = self._scalars(sums, count, time.perf_counter() - t0)
                            sums, count, t0 = {}, 0, time.perf_counter()
                        self._end_of_step(logger, bar, scalars, self.step in snap_steps)
                        self._in_step = False  # a step boundary: the state belongs to self.step
                        if self._stop_agreed or (self._stop_requested and not self.rank.enabled):
                            raise KeyboardInterrupt
                        if callback is not None:
                            callback(self.step, metrics)
                except KeyboardInterrupt:
                    if not self._in_step and self.step > (self._saved_at or 0):
                        self.save()
                    raise
        except RuntimeError as e:  # data-loader workers that the same Ctrl-C stopped
            if self._stop_requested and "DataLoader worker" in str(e):
                raise KeyboardInterrupt from e
            raise
        finally:
            bar.close()
            if logger is not None:
                logger.close()
            batches = None  # shuts data-loader workers down

    def _first_snapshot(self) -> None:
        if self.step not in self.snapshots["steps"]:
            self._take_snapshot()

    def _end_of_step(
        self,
        logger: MetricsLogger | None,
        bar: Any,
        scalars: dict[str, float] | None,
        snapshot: bool,
    ) -> None:
        """Rank 0 logs, snapshots and checkpoints (when due, in that order); all ranks agree on
        whether that worked."""
        save = self.step % self.cfg.ckpt_interval == 0 or self.step == self.total
        if scalars is None and not snapshot and not save:
            return
        state = None
        if save:
            self._check_weights()
            state = self.trainer_state()

        def work() -> None:
            if scalars is not None and logger is not None:
                logger.log(self.step, scalars)
                bar.set_postfix(loss=f"{scalars['train/loss']:.4f}")
            if snapshot:
                self._take_snapshot()
            if save:
                self._write_checkpoint(state)

        what = "writing the checkpoint" if save else "writing the logs"
        self._master_io(work, f"{what} of step {self.step}")
        if save:
            self._saved_at = self.step

    def _scalars(self, sums: dict[str, float], count: int, seconds: float) -> dict[str, float]:
        """The metrics of the last ``count`` steps, averaged over steps and ranks, with the
        learning rate, the samples/s of all ranks together and the epoch."""
        keys = sorted(sums)
        values = torch.tensor(
            [sums[k] for k in keys] + [seconds], dtype=torch.float64, device=self._comm_device()
        )
        D.all_reduce(self.rank, values, f"the metrics of step {self.step}")
        totals = values.tolist()
        world = self.rank.world_size
        scalars = {k: totals[i] / (count * world) for i, k in enumerate(keys)}
        scalars["train/lr"] = self.scheduler.get_last_lr()[0]
        scalars["train/samples_per_s"] = count * self.cfg.batch_size / max(totals[-1] / world, 1e-9)
        scalars["train/epoch"] = self.step * self.cfg.batch_size / self.n
        return scalars

    def _comm_device(self) -> torch.device:
        """Where small tensors for collectives live (NCCL needs them on the GPU)."""
        return (
            self.device if self.rank.enabled and self.device.type == "cuda" else torch.device("cpu")
        )

    def _train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One gradient step; raises ``TrainingDivergedError`` (on every rank alike) before a
        non-finite update."""
        try:
            return self._gradient_step(batch)
        except D.DistributedError:
            raise
        except RuntimeError as e:
            if self.rank.enabled and D.is_lost_peer(e):
                raise D.lost_peer_error(self.rank, f"step {self.step + 1}", e) from e
            raise

    def _gradient_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.policy.train()
        bf16 = self.cfg.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            loss, metrics = self.model(batch, generator=self.generator)
        loss_value = float(loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DistributedDataParallel averages the gradients of all ranks here
        params = [p for p in self.policy.parameters() if p.grad is not None]
        clip = self.policy.config.optim.grad_clip_norm
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            norm = _grad_norm(params)
        norm_value = float(norm)
        flags = torch.tensor(
            [
                float(not np.isfinite(loss_value)),
                float(not np.isfinite(norm_value)),
                float(self._stop_requested),
            ],
            dtype=torch.float32,
            device=self._comm_device(),
        )
        bad_loss, bad_norm, stop = D.all_reduce(
            self.rank, flags, f"the checks of step {self.step + 1}"
        ).tolist()
        if bad_loss:
            problem = f"the loss is {loss_value}"
            if self.rank.enabled:
                problem = f"the loss is not finite on {int(bad_loss)} of {self.rank.world_size} processes ({loss_value} on {self.rank})"
            raise self._diverged(self.step + 1, problem)
        if bad_norm:
            raise self._diverged(self.step + 1, f"the gradient norm is {norm_value}")
        self._stop_agreed = bool(stop)
        metrics["train/grad_norm"] = norm_value
        self.optimizer.step()
        self.scheduler.step()
        return metrics


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The global L2 norm of the gradients (what ``clip_grad_norm_`` computes, without clipping)."""
    if not params:
        return torch.zeros(())
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))


def _describe_inputs(inputs: str, state_dim: int) -> str:
    """``"images"``, ``"5-dim states"`` or ``"images + 2-dim states"``."""
    parts = {"image": ["images"], "state": [f"{state_dim}-dim states"]}
    parts["image_state"] = parts["image"] + parts["state"]
    return " + ".join(parts.get(inputs, [inputs]))


INFERENCE_ONLY = ("optimizer", "max_chunk_elements", "encode_group")
"""Policy config fields that do not change training (a resumed run may change them)."""


def _training_part(config: dict[str, Any]) -> dict[str, Any]:
    """A policy config without its inference-only settings (the optimizer, how many chunk
    actions run before the next prediction, ...)."""
    part = {k: v for k, v in config.items() if k not in INFERENCE_ONLY}
    if isinstance(part.get("chunk"), dict):
        part["chunk"] = {k: v for k, v in part["chunk"].items() if k != "execute"}
    return part


def _shared(error: BaseException) -> BaseException:
    """Mark ``error`` as one every rank raises alike (printed once per machine)."""
    error.shared = True  # type: ignore[attr-defined]
    return error


def _rebuild(kind: type, message: str) -> BaseException:
    """Rank 0's error, re-raised on another rank: the same class when it takes a message."""
    try:
        error = kind(message)
    except Exception:
        return D.DistributedError(message)
    return error if isinstance(error, Exception) else D.DistributedError(message)
