"""``ibc-gym viz fusion``: how the image features shape the energy over the action (task 6).

The energy model fuses the image only through its keypoint features: ``E(o, a) = MLP([phi(o), a])``.
Holding ``phi`` fixed makes the energy a function of the action alone. Top: two observations A and
B and the energy surfaces ``E(phi(A), a)`` and ``E(phi(B), a)``. Bottom: the landscape for the
interpolated features ``(1 - t) phi(A) + t phi(B)`` (no image has these features, but the MLP
does not know that): the basins move with the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from demos.args import help_field
from demos.viz.base import ModelFigureConfig, run_figure
from demos.viz.plotting import ENERGY_CMAP, draw_box, grid_2d, mark, new_figure
from demos.viz.sources import ModelSource, Observation, load_source
from ebm_policy.policies import images_to_tensor

PEAK_CMAP = "viridis"  # ENERGY_CMAP for -E: the same colour for the same energy


@dataclass(frozen=True)
class FusionConfig(ModelFigureConfig):
    steps: int = help_field(5, "interpolation steps between the two feature vectors (>= 2)", min=2)


@torch.inference_mode()
def features(src: ModelSource, obs: Observation) -> torch.Tensor:
    """The keypoint features ``phi(o)`` of one observation: ``-> (1, D)``."""
    model = src.policy.model
    return model.encode(
        images_to_tensor(obs.image[None], src.policy.device, model.cfg.backbone.cnn.in_channels)
    )


@torch.inference_mode()
def energy_for_features(src: ModelSource, phi: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """``E(phi, a)`` for actions ``points (N, A)`` in original units: ``-> (N,)``."""
    actions = src.policy.bounds.normalize(torch.as_tensor(points, device=src.policy.device)[None])
    return src.policy.model.energy(phi, actions)[0].cpu().numpy()


def build_fusion(cfg: FusionConfig) -> Figure:
    """Energy surfaces for two images' features and for features in between."""
    src = load_source(cfg)
    obs_a, obs_b = src.observation(cfg.env_seed), src.observation(cfg.env_seed + 1)
    phi_a, phi_b = features(src, obs_a), features(src, obs_b)
    low, high = src.action_box()
    xs, ys, pts = grid_2d(low, high, 31 if cfg.quick else 61)
    ts = np.linspace(0.0, 1.0, max(2, 2 if cfg.quick else cfg.steps))
    maps = []
    for t in ts:
        e = energy_for_features(src, (1 - t) * phi_a + t * phi_b, pts).reshape(len(ys), len(xs))
        maps.append(e - e.min())
    vmax = float(np.percentile(np.stack(maps), 95))
    norm = PowerNorm(0.5, vmin=0.0, vmax=max(vmax, 1e-6))
    frame = obs_a.frame
    gx, gy = np.meshgrid(xs, ys)

    n = len(ts)
    fig = new_figure(max(3.4 * n, 14), 8.6)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.1, 1])
    axs = top.subplots(1, 4, width_ratios=[1, 1.25, 1.25, 1])
    for ax, obs, name in ((axs[0], obs_a, "A"), (axs[3], obs_b, "B")):
        frame.show_image(ax, obs.image)
        mark(ax, obs.goals, "target", "targets")
        ax.set_title(f"observation {name}\n{obs.label}", fontsize=9)
    for slot, e, name in ((1, maps[0], "A"), (2, maps[-1], "B")):
        axs[slot].remove()
        ax3 = top.add_subplot(1, 4, slot + 1, projection="3d")
        clip = float(np.median(e))  # basins fill the z range; the plateau above is cut off
        z = -np.minimum(e, clip)  # drawn upside down: basins are peaks, visible from any angle
        ax3.plot_surface(
            gx,
            gy,
            z,
            cmap=PEAK_CMAP,
            vmin=-clip,
            vmax=0.0,
            linewidth=0,
            antialiased=False,
            rcount=45,
            ccount=45,
        )
        ax3.set(xlabel=frame.x_label, ylabel=frame.y_label)
        ax3.set_title(
            f"-E(phi({name}), a), phi({name}) held fixed\n(minus E - min E, cut at the median)",
            fontsize=9,
        )
        ax3.set_zlabel("-(E - min E)", fontsize=8, labelpad=2)
        for axis in (ax3.xaxis, ax3.yaxis):
            axis.label.set_size(8)
        ax3.tick_params(labelsize=7, pad=0)
        ax3.set_xticks([-0.5, 0.0, 0.5])
        ax3.set_yticks([-0.5, 0.0, 0.5])
        ax3.set_box_aspect(None, zoom=0.82)
        if frame.y_down:
            ax3.set_ylim(float(high[1]), float(low[1]))
        ax3.view_init(elev=45, azim=-60)

    axb = bottom.subplots(1, n, squeeze=False)[0]
    for ax, t, e in zip(axb, ts, maps, strict=True):
        img = ax.pcolormesh(xs, ys, e, cmap=ENERGY_CMAP, norm=norm, shading="auto", rasterized=True)
        ax.contour(xs, ys, e, levels=10, colors="k", linewidths=0.3, alpha=0.5)
        draw_box(ax, low, high)
        mark(ax, obs_a.goals, "target", "targets of A")
        ax.scatter(
            obs_b.goals[:, 0],
            obs_b.goals[:, 1],
            s=140,
            facecolors="none",
            edgecolors="cyan",
            linewidths=2,
            zorder=5,
            label="targets of B",
        )
        frame.apply(ax, box=(low, high), labels=ax is axb[0])
        ax.set_title(f"t = {t:.2f}: (1 - t) phi(A) + t phi(B)", fontsize=9)
    bottom.colorbar(img, ax=list(axb), label="E - min E (sqrt scale)", shrink=0.9)
    bottom.legend(
        *axb[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8
    )
    fig.suptitle(
        f"Task 6: feature fusion E = MLP([phi(o), a]) with the image features held fixed\n{src.description}"
    )
    return fig


def run_fusion(cfg: FusionConfig) -> Path:
    """Write ``<out>/fusion.png`` and return its path."""
    return run_figure(cfg, "fusion", build_fusion)
