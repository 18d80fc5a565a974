"""1-D toy tasks for an MLP-only EBM: a 100-sample signal ``x`` with bumps, a scalar target ``y``.

The signal is ``x(t) = sum_k exp(-(t - s_k)^2 / (2 sigma^2)) + noise`` sampled at 100 points
``t`` in [-1, 1]; the bump positions ``s_k`` are the task's latent parameters.

* ``bimodal``: two bumps, ``y`` is the position of either one (chosen at random): for a fixed
  input ``E(x, y)`` should have one basin per bump.
* ``step``: one bump at ``s``, ``y = 0.5 s + 0.4 sign(s)``, a regression with a jump at ``s = 0``
  (the kind of discontinuity the IBC paper says implicit models keep sharp).

The model is ``E(x, y) = MLP([x, y])`` (no CNN), trained with InfoNCE over uniform
counter-examples in [-1, 1]; lower energy = better, as in ``ebm_policy``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIGNAL_LEN = 100
SIGMA = 0.08
NOISE = 0.05
Task = Literal["bimodal", "step"]


def signal_grid() -> np.ndarray:
    """The 100 sample positions ``t`` of a signal, in [-1, 1]."""
    return np.linspace(-1.0, 1.0, SIGNAL_LEN)


def render_signals(bumps: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """``bumps (n, k)`` bump positions -> ``(n, 100)`` float32 signals (noise if ``rng``)."""
    t = signal_grid()
    b = np.asarray(bumps, dtype=np.float64).reshape(len(bumps), -1)
    x = np.exp(-((t[None, None, :] - b[:, :, None]) ** 2) / (2 * SIGMA**2)).sum(axis=1)
    if rng is not None:
        x = x + rng.normal(0.0, NOISE, x.shape)
    return x.astype(np.float32)


def step_target(s: np.ndarray) -> np.ndarray:
    """The ``step`` task's target of a bump at ``s``: ``0.5 s + 0.4 sign(s)``."""
    s = np.asarray(s, dtype=np.float64)
    return (0.5 * s + 0.4 * np.where(s >= 0, 1.0, -1.0)).astype(np.float32)


def sample_bumps(task: Task, n: int, rng: np.random.Generator) -> np.ndarray:
    """Bump positions ``(n, k)``: two at least 0.4 apart in [-0.85, 0.85] for ``bimodal``
    (sorted), one in [-0.95, 0.95] for ``step``."""
    if task == "step":
        return rng.uniform(-0.95, 0.95, (n, 1))
    out = np.empty((n, 2))
    for i in range(n):
        while True:
            a, b = rng.uniform(-0.85, 0.85, 2)
            if abs(a - b) >= 0.4:
                out[i] = sorted((a, b))
                break
    return out


def make_data(task: Task, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(signals (n, 100), targets (n,), bumps (n, k))`` of a task, seeded."""
    rng = np.random.default_rng(seed)
    bumps = sample_bumps(task, n, rng)
    if task == "step":
        y = step_target(bumps[:, 0])
    else:
        y = bumps[np.arange(n), rng.integers(0, 2, n)].astype(np.float32)
    return render_signals(bumps, rng), y, bumps


class MLPEnergy(nn.Module):
    """``E(x, y) = MLP([x, y])``: ``x (B, D), y (B, N) -> (B, N)``, lower = better.

    The first layer is applied split (``W_x x`` once per signal, ``w_y y`` per candidate), which
    equals the concatenated layer.
    """

    def __init__(self, signal_dim: int = SIGNAL_LEN, hidden: int = 128) -> None:
        super().__init__()
        self.signal = nn.Linear(signal_dim, hidden)
        self.target = nn.Linear(1, hidden, bias=False)
        self.rest = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """``(B, D), (B, N) -> (B, N)``."""
        h = self.signal(x).unsqueeze(1) + self.target(y.unsqueeze(-1))  # (B, N, H)
        return self.rest(h).squeeze(-1)


def info_nce_step(
    model: MLPEnergy, x: Tensor, y: Tensor, n_neg: int, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """InfoNCE with the positive at index 0 (the loss is permutation invariant over candidates):
    ``-> (loss, positive energies (B,), counter-example energies (B, N))``."""
    neg = torch.rand((x.shape[0], n_neg), generator=gen) * 2 - 1
    energies = model(x, torch.cat([y.unsqueeze(1), neg], dim=1))
    loss = F.cross_entropy(-energies, torch.zeros(x.shape[0], dtype=torch.long))
    return loss, energies[:, 0], energies[:, 1:]


@dataclass(frozen=True)
class ToyTrainConfig:
    """Training of the 1-D EBM."""

    n_train: int = 1024
    epochs: int = 40
    batch_size: int = 64
    counter_examples: int = 64
    lr: float = 2e-3
    hidden: int = 128
    seed: int = 0


EpochCallback = Callable[[int, MLPEnergy], None]


def train_toy(
    task: Task, cfg: ToyTrainConfig, on_epoch: EpochCallback | None = None
) -> tuple[MLPEnergy, list[float]]:
    """Train an ``MLPEnergy`` on ``task``; ``on_epoch(epoch, model)`` runs before training
    (epoch 0) and after every epoch. ``-> (model in eval mode, loss per epoch)``."""
    x_np, y_np, _ = make_data(task, cfg.n_train, cfg.seed)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = MLPEnergy(hidden=cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses: list[float] = []
    if on_epoch is not None:
        on_epoch(0, model.eval())
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x) - cfg.batch_size + 1, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss, _, _ = info_nce_step(model, x[idx], y[idx], cfg.counter_examples, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / max(1, len(x) // cfg.batch_size))
        if on_epoch is not None:
            on_epoch(epoch, model.eval())
    return model.eval(), losses


@torch.inference_mode()
def energy_grid(model: MLPEnergy, signals: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Energies of every candidate ``ys (M,)`` for every signal: ``(n, 100) -> (n, M)``."""
    x = torch.as_tensor(signals, dtype=torch.float32)
    y = torch.as_tensor(ys, dtype=torch.float32).expand(len(x), -1)
    return model(x, y).numpy()
