"""``ibc-gym viz energy-1d``: ``E(x, y)`` against ``y`` for fixed 1-D inputs (task 1).

An MLP EBM is trained here (seconds) on the ``bimodal`` toy task of ``demos.viz.toy1d``: the
input is a 100-sample signal with two bumps and the demonstrated ``y`` is the position of either
bump, so for a fixed input the learned energy should have a basin at each bump. Below each energy
curve: ``p(y | x) = softmax(-E)`` over the plotted ``y`` grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from demos.args import help_field
from demos.viz.base import FigureConfig, run_figure
from demos.viz.plotting import new_figure
from demos.viz.toy1d import ToyTrainConfig, energy_grid, make_data, signal_grid, train_toy


@dataclass(frozen=True)
class Energy1DConfig(FigureConfig):
    inputs: int = help_field(3, "number of fixed test inputs shown side by side", min=1)
    epochs: int | None = help_field(
        None, "training epochs over 1024 examples (None: 30, or 2 with --quick)", min=0
    )


def build_energy_1d(cfg: Energy1DConfig) -> Figure:
    """Train the bimodal toy EBM and plot ``E(x, y)`` over ``y`` for a few test inputs."""
    epochs = cfg.epochs if cfg.epochs is not None else (2 if cfg.quick else 30)
    train_cfg = ToyTrainConfig(n_train=256 if cfg.quick else 1024, epochs=epochs, seed=cfg.seed)
    model, losses = train_toy("bimodal", train_cfg)
    signals, _, bumps = make_data("bimodal", cfg.inputs, cfg.seed + 1000)  # unseen inputs
    ys = np.linspace(-1.0, 1.0, 401)
    e = energy_grid(model, signals, ys)
    p = np.exp(-(e - e.min(axis=1, keepdims=True)))
    p /= p.sum(axis=1, keepdims=True) * (ys[1] - ys[0])

    n = cfg.inputs
    fig = new_figure(4.6 * n, 6.4)
    axes = fig.subplots(3, n, height_ratios=[1, 2, 1.1], squeeze=False)
    t = signal_grid()
    for i in range(n):
        ax_x, ax_e, ax_p = axes[0, i], axes[1, i], axes[2, i]
        ax_x.plot(t, signals[i], color="0.25", lw=1)
        ax_x.set(
            title=f"test input {i + 1}: a 100-sample signal x",
            xlabel="signal position t",
            ylabel="x(t)",
        )
        ax_e.plot(ys, e[i], color="tab:blue", lw=1.8)
        ax_p.fill_between(ys, p[i], color="tab:green", alpha=0.4)
        ax_p.plot(ys, p[i], color="tab:green", lw=1)
        k = int(e[i].argmin())
        ax_e.scatter(
            ys[k], e[i, k], marker="v", s=60, c="k", zorder=4, label=f"argmin y = {ys[k]:+.2f}"
        )
        for j, b in enumerate(bumps[i]):
            for ax in (ax_x, ax_e, ax_p):
                ax.axvline(
                    b,
                    color="tab:red",
                    ls="--",
                    lw=1,
                    label=("true modes (bump positions)" if j == 0 and ax is ax_e else None),
                )
        ax_e.set(xlabel="candidate y", ylabel="energy E(x, y)", xlim=(-1, 1))
        ax_e.legend(fontsize=8, loc="upper center")
        ax_p.set(xlabel="candidate y", ylabel="p(y | x)", xlim=(-1, 1))
        ax_x.set_xlim(-1, 1)
    fig.suptitle(
        f"Task 1: MLP EBM E(x, y) for fixed inputs x (two valid answers each); "
        f"{epochs} epochs of InfoNCE, final loss {losses[-1]:.2f}"
    )
    return fig


def run_energy_1d(cfg: Energy1DConfig) -> Path:
    """Write ``<out>/energy-1d.png`` and return its path."""
    return run_figure(cfg, "energy-1d", build_energy_1d)
