"""``ibc-gym viz dfo``: the derivative-free optimizer's populations over the energy (task 5).

The DFO evaluates ``M`` uniform samples, resamples them by ``softmax(-E)``, adds Gaussian noise that
shrinks every iteration, and returns the lowest-energy final sample. Top row: each population over
the energy contours. Bottom: the observation, every population at once with arrows from each
iteration's lowest-energy sample to the next one's, and the energies per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from demos.args import help_field
from demos.viz.base import ModelFigureConfig, run_figure
from demos.viz.energy_2d import energy_on_grid, mark_observation
from demos.viz.plotting import ITER_CMAP, draw_box, mark, new_figure
from demos.viz.sources import ModelSource, Observation, load_source
from ebm_policy import DerivativeFreeOptimizer, DFOHistory


@dataclass(frozen=True)
class DfoFigConfig(ModelFigureConfig):
    samples: int = help_field(
        256, "DFO samples per iteration (fewer than at inference, to keep the scatter legible)", min=1
    )
    iterations: int | None = help_field(None, "DFO iterations (None: the policy's)", min=0)


def run_dfo_history(
    src: ModelSource, obs: Observation, samples: int, iterations: int | None, seed: int
) -> tuple[np.ndarray, DFOHistory]:
    """DFO on ``obs`` with ``samples`` per population: ``-> (best action (A,), history)``, both in
    original units (the policy's own DFO settings are restored afterwards)."""
    policy = src.policy
    own = policy.dfo
    cfg = replace(
        own.cfg,
        num_samples=samples,
        iterations=own.cfg.iterations if iterations is None else iterations,
    )
    policy.dfo = DerivativeFreeOptimizer(cfg)
    try:
        out = policy.select_action(
            obs.image[None], generator=torch.Generator().manual_seed(seed), return_history=True
        )
    finally:
        policy.dfo = own
    assert isinstance(out, tuple)
    best, hist = out
    return best[0].numpy(), hist


def build_dfo(cfg: DfoFigConfig) -> Figure:
    """Populations of every DFO iteration over the energy landscape of one observation."""
    src = load_source(cfg)
    obs = src.observation(cfg.env_seed)
    best, hist = run_dfo_history(
        src, obs, 64 if cfg.quick else cfg.samples, cfg.iterations, cfg.seed
    )
    xs, ys, e = energy_on_grid(src, obs, 41 if cfg.quick else 81)
    box = src.action_box()
    pops = [s[0].numpy() for s in hist.samples]
    energies = [en[0].numpy() for en in hist.energies]
    k = len(pops)
    colors = colormaps[ITER_CMAP](np.linspace(0.0, 0.85, k))
    sigma0 = src.policy.config.dfo.noise_scale
    shrink = src.policy.config.dfo.noise_shrink
    halfwidth = (box[1] - box[0]) / 2

    fig = new_figure(3.6 * max(k, 4), 8.0)
    grid = fig.add_gridspec(2, max(k, 4), height_ratios=[1, 1.15])
    for i in range(k):
        ax = fig.add_subplot(grid[0, i])
        ax.contourf(xs, ys, e, levels=14, cmap="Greys", alpha=0.55)
        ax.contour(xs, ys, e, levels=14, colors="0.4", linewidths=0.3)
        ax.scatter(
            pops[i][:, 0], pops[i][:, 1], s=7, color=colors[i], alpha=0.75, edgecolors="none"
        )
        mark(ax, obs.goals, "target")
        if i == 0:
            how = "uniform in the action box"
        else:
            sig = sigma0 * shrink ** (i - 1) * halfwidth
            how = f"resampled + noise std ({sig[0]:.2f}, {sig[1]:.2f})"
        ax.set_title(
            f"population {i}" + (" (final)" if i == k - 1 else "") + f"\n{how}", fontsize=9
        )
        obs.frame.apply(ax, box=box, labels=False)
        if i == 0:
            ax.set_ylabel(obs.frame.y_label)

    ax_o = fig.add_subplot(grid[1, 0])
    obs.frame.show_image(ax_o, obs.image)
    mark_observation(ax_o, obs)
    ax_o.set_title(f"observation\n{obs.label}", fontsize=9)

    ax_all = fig.add_subplot(grid[1, 1:-1])
    ax_all.contour(xs, ys, e, levels=16, cmap="viridis_r", linewidths=0.8)
    for i in range(k):
        ax_all.scatter(
            pops[i][:, 0],
            pops[i][:, 1],
            s=8,
            color=colors[i],
            alpha=0.5,
            edgecolors="none",
            label=f"population {i}",
        )
    bests = np.stack([p[int(en.argmin())] for p, en in zip(pops, energies, strict=True)])
    for i in range(k - 1):
        ax_all.annotate(
            "",
            xy=bests[i + 1],
            xytext=bests[i],
            arrowprops={"arrowstyle": "-|>", "color": "k", "lw": 1.5, "shrinkA": 2, "shrinkB": 2},
        )
    ax_all.scatter(
        bests[:, 0],
        bests[:, 1],
        s=40,
        c=colors,
        edgecolors="k",
        zorder=5,
        label="lowest energy of each population",
    )
    draw_box(ax_all, *box)
    mark(ax_all, obs.goals, "target", "target(s)")
    mark(ax_all, best, "dfo", "DFO result")
    obs.frame.apply(ax_all, box=box)
    ax_all.set_title(
        "all populations; arrows: lowest-energy sample of one iteration to the next", fontsize=9
    )
    fig.legend(
        *ax_all.get_legend_handles_labels(), loc="outside lower center", ncols=k + 3, fontsize=8
    )

    ax_s = fig.add_subplot(grid[1, -1])
    it = np.arange(k)
    ax_s.plot(it, [en.min() for en in energies], "o-", label="min")
    ax_s.plot(it, [np.median(en) for en in energies], "s-", label="median")
    ax_s.fill_between(
        it,
        [np.percentile(en, 10) for en in energies],
        [np.percentile(en, 90) for en in energies],
        alpha=0.25,
        label="10-90 %",
    )
    ax_s.set(xticks=it, xlabel="population", ylabel="energy E", title="energies of the populations")
    ax_s.legend(fontsize=8)
    fig.suptitle(
        f"Task 5: DFO inference, {len(pops[0])} samples x {k - 1} iterations\n{src.description}"
    )
    return fig


def run_dfo(cfg: DfoFigConfig) -> Path:
    """Write ``<out>/dfo.png`` and return its path."""
    return run_figure(cfg, "dfo", build_dfo)
