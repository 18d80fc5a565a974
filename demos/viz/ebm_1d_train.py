"""``ibc-gym viz ebm-1d-train``: an MLP-only EBM learning a 1-D regression, epoch by epoch (task 7).

Task ``step`` of ``demos.viz.toy1d``: the input is a 100-sample signal with one bump at ``s`` and
the target is ``y = 0.5 s + 0.4 sign(s)`` (a jump at ``s = 0``). Each panel shows the energy over
``(s, y)``, i.e. over the input (through the bump position that generates it) and the candidate
output, at one epoch. InfoNCE only fixes energies up to a constant per input, so each column is
shown relative to its minimum: ``E(x(s), y) - min_y E(x(s), y)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from demos.args import help_field
from demos.viz.base import FigureConfig, run_figure
from demos.viz.plotting import ENERGY_CMAP, new_figure
from demos.viz.toy1d import (
    MLPEnergy,
    ToyTrainConfig,
    energy_grid,
    render_signals,
    step_target,
    train_toy,
)


@dataclass(frozen=True)
class Ebm1DTrainConfig(FigureConfig):
    epochs: tuple[int, ...] = help_field(
        (0, 1, 3, 10, 30),
        "epochs at which the landscape is drawn (the last one ends training; quick: 0 1 2)",
        min=0,
    )
    n_train: int = help_field(1024, "training examples", min=1)


def landscape(model: MLPEnergy, s: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``E(x(s), y) - min_y E`` on the grid: ``-> (len(ys), len(s))`` (noise-free signals)."""
    e = energy_grid(model, render_signals(s[:, None]), ys)  # (len(s), len(ys))
    return (e - e.min(axis=1, keepdims=True)).T


def build_ebm_1d_train(cfg: Ebm1DTrainConfig) -> Figure:
    """Train the step-task EBM, recording the landscape at ``cfg.epochs``."""
    shown = sorted(set((0, 1, 2) if cfg.quick else cfg.epochs))
    s = np.linspace(-0.95, 0.95, 120)
    ys = np.linspace(-1.0, 1.0, 161)
    maps: dict[int, np.ndarray] = {}

    def record(epoch: int, model: MLPEnergy) -> None:
        if epoch in shown:
            maps[epoch] = landscape(model, s, ys)

    train_cfg = ToyTrainConfig(
        n_train=256 if cfg.quick else cfg.n_train, epochs=max(shown), seed=cfg.seed
    )
    _, losses = train_toy("step", train_cfg, on_epoch=record)

    n = len(shown)
    fig = new_figure(3.3 * n + 3.6, 3.9)
    axes = fig.subplots(1, n + 1, width_ratios=[1] * n + [1.05])
    vmax = float(np.percentile(np.concatenate([m.ravel() for m in maps.values()]), 90))
    norm = PowerNorm(0.5, vmin=0.0, vmax=max(vmax, 1e-6))
    truth = step_target(s)
    for ax, epoch in zip(axes[:n], shown, strict=True):
        img = ax.pcolormesh(
            s, ys, maps[epoch], cmap=ENERGY_CMAP, norm=norm, shading="auto", rasterized=True
        )
        ax.plot(s[s < 0], truth[s < 0], "r--", lw=1.2, label="true y(s)")
        ax.plot(s[s >= 0], truth[s >= 0], "r--", lw=1.2)
        ax.scatter(
            s[::3],
            ys[maps[epoch].argmin(axis=0)][::3],
            s=7,
            c="w",
            edgecolors="k",
            linewidths=0.3,
            zorder=3,
            label="argmin_y E",
        )
        loss = f", loss {losses[epoch - 1]:.2f}" if epoch > 0 else " (initial)"
        ax.set(
            title=f"epoch {epoch}{loss}",
            xlabel="bump position s of the input x(s)",
            ylabel="candidate y",
        )
    axes[0].legend(fontsize=7, loc="upper left")
    fig.colorbar(img, ax=axes[n - 1], label="E - min_y E (sqrt scale, clipped)", shrink=0.9)
    ax_l = axes[n]
    ax_l.plot(np.arange(1, len(losses) + 1), losses, "o-", ms=3)
    ax_l.axhline(
        np.log(train_cfg.counter_examples + 1), color="0.5", ls=":", label="chance: log(N + 1)"
    )
    ax_l.set(
        title="InfoNCE training loss",
        xlabel="epoch",
        ylabel="loss",
        xscale="log" if len(losses) > 5 else "linear",
    )
    ax_l.legend(fontsize=8)
    fig.suptitle(
        "Task 7: MLP-only EBM E(x, y) = MLP([x, y]) learning y = 0.5 s + 0.4 sign(s) from 100-sample signals"
    )
    return fig


def run_ebm_1d_train(cfg: Ebm1DTrainConfig) -> Path:
    """Write ``<out>/ebm-1d-train.png`` and return its path."""
    return run_figure(cfg, "ebm-1d-train", build_ebm_1d_train)
