"""Training loop for any policy with ``compute_loss(batch, generator)`` on any (image, action)
dataset, with atomic checkpoints and exact resumption.

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
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ebm_policy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ebm_policy.config import config_from_dict, config_to_dict
from ebm_policy.data import fixed_batch, make_loader
from ebm_policy.fileio import atomic_path, remove_stale_temporaries
from ebm_policy.metrics_log import MetricsLogger
from ebm_policy.optim import build_optimizer, build_scheduler
from ebm_policy.params import check_params, param
from ebm_policy.policies import Policy
from ebm_policy.runlock import FolderLock

CKPT_LAST = "ckpt_last.pt"
SNAPSHOTS = "energy_snapshots.npz"
StepCallback = Callable[[int, dict[str, float]], None]


class TrainingDivergedError(FloatingPointError):
    """The loss, the gradient norm or the weights stopped being finite; none of it was saved."""


def _torch_device(value: str) -> None:
    if value != "auto":
        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError(f"must be auto or a torch device (cpu, cuda, cuda:1, ...), got {value!r}") from None


@dataclass(frozen=True)
class TrainConfig:
    """How long and how to train (the policy's own config holds the optimizer settings)."""

    steps: int | None = param(2000, "gradient steps (None: use epochs)", min=1)
    epochs: float | None = param(None, "passes over the dataset, when steps is None", above=0)
    batch_size: int = param(32, "examples per step", min=1)
    seed: int = param(0, "seed of the weights, data order and counter-examples", min=0)
    log_interval: int = param(50, "steps between logged metrics", min=1)
    ckpt_interval: int = param(500, "steps between checkpoints", min=1)
    keep_every: int | None = param(
        None, "also keep ckpt_step<N>.pt every this many steps (a multiple of ckpt_interval)", min=1
    )
    energy_snapshots: int = param(5, "snapshots of positive vs counter-example energies (0: off)", min=0)
    snapshot_batch_size: int = param(32, "examples per energy snapshot", min=1)
    device: str = param("cpu", "cpu, cuda, cuda:1, ... or auto", check=_torch_device)
    num_workers: int = param(0, "DataLoader worker processes", min=0)
    num_threads: int | None = param(
        1, "torch threads (small convolutions run fastest on 1; None: torch's default)", min=1
    )
    progress: bool = param(True, "show a progress bar")
    tensorboard: bool = param(True, "also log to TensorBoard (when installed)")

    def __post_init__(self) -> None:
        check_params(self)
        if self.steps is None and self.epochs is None:
            raise ValueError("TrainConfig needs steps or epochs")
        if self.keep_every is not None and self.keep_every % self.ckpt_interval:
            raise ValueError(
                f"keep_every ({self.keep_every}) must be a multiple of ckpt_interval "
                f"({self.ckpt_interval}): checkpoints are kept only when they are written"
            )

    def total_steps(self, dataset_len: int) -> int:
        """Steps of the run: ``steps``, or ``ceil(epochs * len / batch_size)``."""
        if self.steps is not None:
            return int(self.steps)
        if self.epochs is None:
            raise ValueError("TrainConfig needs steps or epochs")
        return math.ceil(self.epochs * dataset_len / self.batch_size)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    in every checkpoint. ``callback(step, metrics)`` runs after every step. On KeyboardInterrupt
    the last finished step is checkpointed before re-raising (see the module docstring).

    Raises ``FolderInUseError`` when another process trains into ``out_dir``, and
    ``TrainingDivergedError`` when training produces a non-finite loss, gradient norm or weight.
    """
    return Trainer(policy, dataset, cfg, Path(out_dir), metadata=metadata).run(
        resume=resume, callback=callback
    )


class Trainer:
    """One training run; see ``train``."""

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
        self.device = resolve_device(cfg.device)
        self.policy = policy.to(self.device)
        self.n = len(dataset)  # type: ignore[arg-type]
        if self.n == 0:
            raise ValueError("cannot train on an empty dataset")
        self.total = cfg.total_steps(self.n)
        self.optimizer = build_optimizer(policy.parameters(), policy.config.optim)
        self.scheduler = build_scheduler(self.optimizer, policy.config.optim, self.total)
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self.step = 0
        self.snapshots: dict[str, list[np.ndarray]] = {"steps": [], "positive": [], "negative": []}
        self._saved_at: int | None = None  # step of the last checkpoint in out_dir
        self._in_step = False  # between taking a batch and finishing that step's bookkeeping
        self._stop_requested = False  # Ctrl-C arrived during a step: stop after it
        self._removes_folder = False  # a failure before the first checkpoint deletes out_dir

    # ----------------------------------------------------------------- state
    def trainer_state(self) -> dict[str, Any]:
        """Everything beyond the weights needed to continue exactly."""
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "train_config": config_to_dict(self.cfg),
        }
        if self.device.type == "cuda":  # dropout on the GPU draws from its own generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self) -> Path:
        """Atomically write ``ckpt_last.pt`` (and a kept copy when due); non-finite weights
        raise ``TrainingDivergedError`` instead."""
        for name, value in self.policy.state_dict().items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise self._diverged(self.step, f"the weight {name!r} is not finite")
        path = save_checkpoint(
            self.out_dir / CKPT_LAST,
            self.policy,
            step=self.step,
            metadata=self.metadata,
            trainer_state=self.trainer_state(),
        )
        if self.cfg.keep_every and self.step % self.cfg.keep_every == 0:
            save_checkpoint(
                self.out_dir / f"ckpt_step{self.step}.pt",
                self.policy,
                step=self.step,
                metadata=self.metadata,
            )
        self._saved_at = self.step
        return path

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
        ckpt = load_checkpoint(path, map_location=self.device)
        state = ckpt.get("trainer")
        if ckpt["kind"] != self.policy.kind:
            raise CheckpointError(f"{path}: holds an {ckpt['kind']} policy, resuming an {self.policy.kind} one")
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
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.step = int(ckpt["step"])
        self._saved_at = self.step
        self._load_snapshots()

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
        samples = self.policy.energy_samples(batch, generator=gen)  # type: ignore[union-attr]
        self.policy.train(was_training)
        self.snapshots["steps"].append(np.asarray(self.step))
        self.snapshots["positive"].append(samples["positive"])
        self.snapshots["negative"].append(samples["negative"])
        arrays = {k: np.stack(v) for k, v in self.snapshots.items()}
        with atomic_path(self.out_dir / SNAPSHOTS) as tmp:
            np.savez(tmp, **arrays)

    def _load_snapshots(self) -> None:
        path = self.out_dir / SNAPSHOTS
        if not path.exists():
            return
        with np.load(path) as z:
            keep = z["steps"] <= self.step
            self.snapshots = {k: list(z[k][keep]) for k in ("steps", "positive", "negative")}

    # ------------------------------------------------------------------ loop
    def run(self, *, resume: bool = False, callback: StepCallback | None = None) -> Policy:
        """Train to ``total`` steps (see ``train``)."""
        created = not self.out_dir.exists()
        with FolderLock(self.out_dir, "train") as lock:
            for path in remove_stale_temporaries(self.out_dir):
                print(f"removed {path}, left behind by an interrupted write", file=sys.stderr)
            last = self.out_dir / CKPT_LAST
            if last.exists() and not resume:
                raise FileExistsError(
                    f"{last} exists; resume it or choose another output directory"
                )
            self._removes_folder = created
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            try:
                with torch.random.fork_rng(devices=devices):  # dropout's RNG, restored afterwards
                    torch.manual_seed(self.cfg.seed)
                    if resume and last.exists():
                        self.restore(last)
                    self._loop(callback)
            except BaseException:
                if created and not last.exists():  # nothing worth keeping: leave no folder behind
                    lock.discard_folder()
                raise
        return self.policy.eval()

    @contextmanager
    def _deferred_interrupts(self) -> Iterator[None]:
        """While a step runs, a first Ctrl-C only asks to stop once that step is done."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers belong to the main thread
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous in (signal.SIG_IGN, None):
            yield
            return

        def on_sigint(signum: int, frame: object) -> None:
            if self._in_step and not self._stop_requested:
                self._stop_requested = True
                print(
                    f"\ninterrupt: finishing step {self.step + 1}, then saving it "
                    f"(Ctrl-C again to stop at once; the last checkpoint then stays)",
                    file=sys.stderr,
                )
                return
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _loop(self, callback: StepCallback | None) -> None:
        cfg = self.cfg
        snap_steps = self._snapshot_steps()
        logger = MetricsLogger(self.out_dir, start_step=self.step, tensorboard=cfg.tensorboard)
        loader = make_loader(self.dataset, cfg.batch_size, cfg.seed, self.step * cfg.batch_size, cfg.num_workers)
        bar = tqdm(total=self.total, initial=self.step, disable=not cfg.progress, desc="train", dynamic_ncols=True)
        sums: dict[str, float] = {}
        count, t0 = 0, time.perf_counter()
        batches = None
        self._in_step = self._stop_requested = False
        try:
            with self._deferred_interrupts():
                if self.step in snap_steps and self.step not in self.snapshots["steps"]:
                    self._take_snapshot()
                batches = iter(loader)
                while self.step < self.total:
                    self._in_step = True
                    metrics = self._train_step(next(batches))
                    self.step += 1
                    count += 1
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v
                    bar.update(1)
                    if self.step % cfg.log_interval == 0 or self.step == self.total:
                        dt = time.perf_counter() - t0
                        scalars = {k: v / count for k, v in sums.items()}
                        scalars["train/lr"] = self.scheduler.get_last_lr()[0]
                        scalars["train/samples_per_s"] = count * cfg.batch_size / max(dt, 1e-9)
                        scalars["train/epoch"] = self.step * cfg.batch_size / self.n
                        logger.log(self.step, scalars)
                        bar.set_postfix(loss=f"{scalars['train/loss']:.4f}")
                        sums, count, t0 = {}, 0, time.perf_counter()
                    if self.step in snap_steps:
                        self._take_snapshot()
                    if self.step % cfg.ckpt_interval == 0 or self.step == self.total:
                        self.save()
                    self._in_step = False  # a step boundary: the state belongs to self.step
                    if self._stop_requested:
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
            logger.close()
            batches = None  # shuts data-loader workers down

    def _train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One gradient step; raises ``TrainingDivergedError`` before a non-finite update."""
        self.policy.train()
        loss, metrics = self.policy.compute_loss(batch, generator=self.generator)
        if not bool(torch.isfinite(loss)):
            raise self._diverged(self.step + 1, f"the loss is {float(loss.detach())}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        clip = self.policy.config.optim.grad_clip_norm
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            norm = _grad_norm(params)
        if not bool(torch.isfinite(norm)):
            raise self._diverged(self.step + 1, f"the gradient norm is {float(norm)}")
        metrics["train/grad_norm"] = float(norm)
        self.optimizer.step()
        self.scheduler.step()
        return metrics


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The global L2 norm of the gradients (what ``clip_grad_norm_`` computes, without clipping)."""
    if not params:
        return torch.zeros(())
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))


def _training_part(config: dict[str, Any]) -> dict[str, Any]:
    """A policy config without its inference-only settings (the optimizer may change between
    runs)."""
    return {k: v for k, v in config.items() if k not in ("optimizer", "max_chunk_elements")}
