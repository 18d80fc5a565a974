"""``ibc-gym viz dfo``: an inference optimizer's populations over the energy (task 5).

The optimizer is the checkpoint's own, or the one ``--optimizer KIND --optimizer.*`` describes
(``--optimizer langevin --optimizer.steps 50``); the policy is never changed. Whatever populations
its search history holds are drawn: DFO's after each resample-and-perturb iteration, Langevin's
after each chain step, autoregressive DFO's after each pass over the action dimensions. Top row:
up to ``--panels`` of them (a longer history at evenly spaced steps, the first and the last
included) over the energy contours. Bottom: the observation, the shown populations at once with
arrows from each one's lowest-energy sample to the next one's, and the energies of every
population of the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from demos.args import help_field
from demos.viz.base import ModelFigureConfig, run_figure
from demos.viz.energy_2d import energy_on_grid, mark_observation
from demos.viz.plotting import ITER_CMAP, draw_box, mark, new_figure
from demos.viz.sources import ModelSource, Observation, load_source
from ebm_policy import (
    AutoregressiveDFOConfig,
    DFOConfig,
    LangevinConfig,
    OptimizerConfig,
    SearchHistory,
)

KIND_NAMES = {"dfo": "DFO", "langevin": "Langevin MCMC", "autoregressive_dfo": "autoregressive DFO"}
STEP_NAMES = {"dfo": "iteration", "langevin": "step", "autoregressive_dfo": "pass"}


@dataclass(frozen=True)
class DfoFigConfig(ModelFigureConfig):
    optimizer: OptimizerConfig | None = help_field(
        None, "inference optimizer (default: the checkpoint's)"
    )
    panels: int = help_field(
        6, "populations drawn in the top row at most (a longer history: evenly spaced ones)", min=2
    )
    points: int = help_field(
        256,
        "samples drawn per population (a random subset of larger ones; the search uses all)",
        min=1,
    )


def search_history(
    src: ModelSource, obs: Observation, optimizer: OptimizerConfig | None, seed: int
) -> tuple[np.ndarray, SearchHistory, OptimizerConfig]:
    """Run ``optimizer`` (``None``: the policy's own) on ``obs``: ``-> (best action (A,), history,
    the optimizer's config)``, actions in original units."""
    config = optimizer if optimizer is not None else src.policy.config.optimizer
    out = src.policy.select_action(
        obs.image,
        generator=torch.Generator().manual_seed(seed),
        optimizer=config,
        return_history=True,
    )
    assert isinstance(out, tuple)
    best, hist = out
    assert isinstance(best, np.ndarray)  # one numpy observation in, one action out
    return best, hist, config


def plural(step: str) -> str:
    """``"iterations"``, ``"steps"``, ``"passes"``."""
    return step + ("es" if step.endswith("s") else "s")


def after(i: int, step: str) -> str:
    """``"after 1 iteration"``, ``"after 2 passes"``..."""
    return f"after {i} {step if i == 1 else plural(step)}"


def shown_indices(n: int, panels: int) -> list[int]:
    """At most ``panels`` evenly spaced indices of ``0..n-1``, the first and the last included."""
    return sorted({int(i) for i in np.round(np.linspace(0, n - 1, min(n, panels)))})


def optimizer_summary(config: Any) -> str:
    """``"DFO inference, 2048 samples x 3 iterations"`` and the like."""
    name = KIND_NAMES.get(config.kind, config.kind)
    if isinstance(config, LangevinConfig):
        chain = config.chain
        second = f" + {chain.second_pass_steps}" if chain.second_pass_steps else ""
        return f"{name} inference, {config.num_samples} chains x {chain.steps}{second} steps"
    if isinstance(config, AutoregressiveDFOConfig):
        return f"{name} inference, {config.num_samples} samples x {config.iterations} passes"
    return f"{name} inference, {config.num_samples} samples x {config.iterations} iterations"


def population_label(config: Any, i: int, last: int, halfwidth: np.ndarray) -> str:
    """Two title lines for population ``i`` of a history whose final population is ``last``:
    how far the search got and what moved the samples there."""
    step = STEP_NAMES.get(config.kind, "step")
    if i == 0:
        return f"start{' (final)' if last == 0 else ''}\nuniform in the action box"
    head = after(i, step) + (" (final)" if i == last else "")
    if isinstance(config, LangevinConfig):
        chain = config.chain
        sizes = chain.schedule(chain.steps, chain.step_size_init)
        if chain.second_pass_steps:
            sizes += chain.schedule(chain.second_pass_steps, chain.second_pass_step_size)
        return f"{head}\ngradient + noise, step size {sizes[min(i, len(sizes)) - 1]:.2g}"
    if isinstance(config, (DFOConfig, AutoregressiveDFOConfig)):
        sig = config.noise_scale * config.noise_shrink ** (i - 1) * halfwidth
        how = (
            "resampled + noise std"
            if isinstance(config, DFOConfig)
            else "per dimension: resampled + noise std"
        )
        return f"{head}\n{how} ({sig[0]:.2f}, {sig[1]:.2f})"
    return head


def build_dfo(cfg: DfoFigConfig) -> Figure:
    """Populations of the inference optimizer's search over one observation's energy landscape."""
    src = load_source(cfg)
    obs = src.observation(cfg.env_seed)
    best, hist, opt = search_history(src, obs, cfg.optimizer, cfg.seed)
    xs, ys, e = energy_on_grid(src, obs, 41 if cfg.quick else 81)
    box = src.action_box()
    pops = [s[0].numpy() for s in hist.samples]
    energies = [en[0].numpy() for en in hist.energies]
    last = len(pops) - 1
    shown = shown_indices(len(pops), cfg.panels)
    k = len(shown)
    m = len(pops[0])
    drawn = np.sort(
        np.random.default_rng(cfg.seed).choice(m, size=min(cfg.points, m), replace=False)
    )
    colors = colormaps[ITER_CMAP](np.linspace(0.0, 0.85, k))
    halfwidth = (box[1] - box[0]) / 2
    step = STEP_NAMES.get(opt.kind, "step")
    name = KIND_NAMES.get(opt.kind, opt.kind)

    fig = new_figure(3.6 * max(k, 4), 8.0)
    grid = fig.add_gridspec(2, max(k, 4), height_ratios=[1, 1.15])
    for col, i in enumerate(shown):
        ax = fig.add_subplot(grid[0, col])
        ax.contourf(xs, ys, e, levels=14, cmap="Greys", alpha=0.55)
        ax.contour(xs, ys, e, levels=14, colors="0.4", linewidths=0.3)
        p = pops[i][drawn]
        ax.scatter(
            p[:, 0],
            p[:, 1],
            s=7,
            color=colors[col],
            alpha=0.75,
            edgecolors="none",
            gid=f"population-{i}",
        )
        mark(ax, obs.goals, "target")
        ax.set_title(population_label(opt, i, last, halfwidth), fontsize=9)
        obs.frame.apply(ax, box=box, labels=False)
        if col == 0:
            ax.set_ylabel(obs.frame.y_label)

    ax_o = fig.add_subplot(grid[1, 0])
    obs.frame.show_image(ax_o, obs.image)
    mark_observation(ax_o, obs)
    ax_o.set_title(f"observation\n{obs.label}", fontsize=9)

    ax_all = fig.add_subplot(grid[1, 1:-1])
    ax_all.contour(xs, ys, e, levels=16, cmap="viridis_r", linewidths=0.8)
    for col, i in enumerate(shown):
        p = pops[i][drawn]
        ax_all.scatter(
            p[:, 0],
            p[:, 1],
            s=8,
            color=colors[col],
            alpha=0.5,
            edgecolors="none",
            label="start" if i == 0 else after(i, step),
        )
    bests = np.stack([pops[i][int(energies[i].argmin())] for i in shown])
    for j in range(k - 1):
        ax_all.annotate(
            "",
            xy=bests[j + 1],
            xytext=bests[j],
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
    mark(ax_all, best, "dfo", f"{name} result")
    obs.frame.apply(ax_all, box=box)
    ax_all.set_title(
        "populations above; arrows: lowest-energy sample of one to the next", fontsize=9
    )
    fig.legend(
        *ax_all.get_legend_handles_labels(), loc="outside lower center", ncols=k + 3, fontsize=8
    )

    ax_s = fig.add_subplot(grid[1, -1])
    it = np.arange(len(pops))
    style = "o-" if len(pops) <= 12 else "-"
    ax_s.plot(it, [en.min() for en in energies], style, label="min")
    ax_s.plot(it, [np.median(en) for en in energies], style.replace("o", "s"), label="median")
    ax_s.fill_between(
        it,
        [np.percentile(en, 10) for en in energies],
        [np.percentile(en, 90) for en in energies],
        alpha=0.25,
        label="10-90 %",
    )
    if len(pops) <= 12:
        ax_s.set_xticks(it)
    ax_s.set(xlabel=f"{plural(step)} done", ylabel="energy E", title="energies of the populations")
    ax_s.legend(fontsize=8)
    subset = f" ({len(drawn)} of {m} samples drawn)" if len(drawn) < m else ""
    fig.suptitle(f"Task 5: {optimizer_summary(opt)}{subset}\n{src.description}")
    return fig


def run_dfo(cfg: DfoFigConfig) -> Path:
    """Write ``<out>/dfo.png`` and return its path."""
    return run_figure(cfg, "dfo", build_dfo)
