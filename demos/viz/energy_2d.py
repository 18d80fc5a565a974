"""``ibc-gym viz energy-2d``: the energy over the 2-D action space for one observation (task 2).

Left: the observation, drawn in action coordinates. Middle: ``E(o, a)`` on a grid over the
policy's padded action box, with the targets, the expert's action and the inference optimizer's
choice (the checkpoint's: DFO, Langevin or autoregressive DFO). Right:
``p(a | o) = softmax(-E)`` over the grid as contours on the image, so the basins can be checked
against the objects they belong to. On ``ibc/ReachAnyTarget-v0`` a well-trained policy shows one
basin per target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from demos.args import help_field
from demos.viz.base import ModelFigureConfig, run_figure
from demos.viz.plotting import draw_box, energy_map, grid_2d, mark, new_figure
from demos.viz.sources import ModelSource, Observation, load_source


@dataclass(frozen=True)
class Energy2DConfig(ModelFigureConfig):
    resolution: int = help_field(121, "grid points per action dimension (quick: 41)", min=2)


def energy_on_grid(
    src: ModelSource, obs: Observation, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``E(o, a)`` over an ``n x n`` grid of the policy's action box: ``-> xs, ys, E (n, n)``."""
    low, high = src.action_box()
    xs, ys, pts = grid_2d(low, high, n)
    e = src.policy.energy(obs.image[None], pts[None]).numpy().reshape(len(ys), len(xs))
    return xs, ys, e


def dfo_action(src: ModelSource, obs: Observation, seed: int) -> np.ndarray:
    """The policy's action for ``obs`` by its own inference optimizer (original units)."""
    out = src.policy.select_action(obs.image, generator=torch.Generator().manual_seed(seed))
    assert isinstance(out, np.ndarray)  # one numpy observation in, one action out
    return out


def mark_observation(ax: Axes, obs: Observation) -> None:
    """Targets, agent and expert action of ``obs`` on ``ax``."""
    mark(ax, obs.goals, "target", "target(s)")
    if obs.agent is not None:
        mark(ax, obs.agent, "agent", "agent")
    if obs.expert is not None:
        mark(ax, obs.expert, "expert", "expert action")


def build_energy_2d(cfg: Energy2DConfig) -> Figure:
    """Energy landscape of one observation beside the observation itself."""
    src = load_source(cfg)
    obs = src.observation(cfg.env_seed)
    xs, ys, e = energy_on_grid(src, obs, 41 if cfg.quick else cfg.resolution)
    best = dfo_action(src, obs, cfg.seed)
    argmin = f"{src.policy.config.optimizer.kind} argmin"
    low, high = src.action_box()
    frame = obs.frame

    fig = new_figure(15.5, 5.2)
    ax_o, ax_e, ax_p = fig.subplots(1, 3)
    frame.show_image(ax_o, obs.image)
    mark_observation(ax_o, obs)
    ax_o.set_title(f"observation ({obs.image.shape[1]}x{obs.image.shape[0]} px)\n{obs.label}")

    energy_map(ax_e, xs, ys, e)
    draw_box(ax_e, low, high, label="policy action box")
    mark_observation(ax_e, obs)
    mark(ax_e, best, "dfo", argmin)
    frame.apply(ax_e)
    ax_e.set_title("energy E(o, a) over the action space")

    frame.show_image(ax_p, obs.image)
    p = np.exp(-(e - e.min()))  # p(a | o) / max_a p(a | o) on the grid
    cs = ax_p.contourf(
        xs, ys, p, levels=[0.05, 0.2, 0.4, 0.6, 0.8, 1.0], cmap="autumn_r", alpha=0.55
    )
    ax_p.contour(xs, ys, p, levels=[0.05, 0.2, 0.4, 0.6, 0.8], colors="darkred", linewidths=0.6)
    fig.colorbar(cs, ax=ax_p, label="p(a | o) / max p = exp(-(E - min E))", shrink=0.85)
    mark(ax_p, best, "dfo", argmin)
    ax_p.set_title("p(a | o) = softmax(-E) over the observation")
    fig.legend(*ax_e.get_legend_handles_labels(), loc="outside lower center", ncols=5, fontsize=9)
    fig.suptitle(f"Task 2: energy landscape of the implicit policy\n{src.description}")
    return fig


def run_energy_2d(cfg: Energy2DConfig) -> Path:
    """Write ``<out>/energy-2d.png`` and return its path."""
    return run_figure(cfg, "energy-2d", build_energy_2d)
