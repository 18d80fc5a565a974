"""``ibc-gym viz softargmax``: what the spatial soft-argmax of the EBM's encoder looks at (task 3).

For one observation: the softmax weights ``softmax(f_c / T)`` of every feature channel ``c`` of
the CNN's last layer (small heat maps), and the expected positions ``(x_c, y_c)`` (the keypoints,
which with the action form the energy MLP's input) drawn over the image. Soft-argmax coordinates
are ``x`` = column and ``y`` = row in [-1, 1] (-1 = first column/row), so the image is drawn in
that frame: ``y`` grows downwards, as in the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from demos.viz.base import ModelFigureConfig, run_figure
from demos.viz.plotting import ActionFrame, new_figure
from demos.viz.sources import load_source
from ebm_policy import EBMConvMLP
from ebm_policy.policies import images_to_tensor


@dataclass(frozen=True)
class SoftArgmaxFigConfig(ModelFigureConfig):
    pass


@torch.inference_mode()
def softargmax_maps(model: EBMConvMLP, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``images (1, C, H, W)`` -> softmax weights ``(K, h, w)`` and keypoints ``(K, 2)`` (x, y)."""
    feats = model.cnn(images)  # (1, K, h, w)
    _, k, h, w = feats.shape
    t = model.softargmax.temperature
    weights = torch.softmax(feats.reshape(k, h * w) / t, dim=-1).reshape(k, h, w)
    keypoints = model.softargmax.keypoints(feats)[0]
    return weights.numpy(), keypoints.numpy()


def build_softargmax(cfg: SoftArgmaxFigConfig) -> Figure:
    """The observation with all keypoints, and one softmax-weight map per channel."""
    src = load_source(cfg)
    obs = src.observation(cfg.env_seed)
    model = src.policy.model
    x = images_to_tensor(obs.image[None], src.policy.device, model.cfg.backbone.cnn.in_channels)
    weights, kps = softargmax_maps(model, x)
    k, h, w = weights.shape
    colors = colormaps["tab20"](np.arange(k) % 20)
    frame = ActionFrame(
        ActionFrame.pixels(obs.image.shape[1]).extent,
        True,
        "soft-argmax x (= column)",
        "soft-argmax y (= row)",
    )
    cell = ActionFrame(
        (
            -1 - 1 / max(w - 1, 1),
            1 + 1 / max(w - 1, 1),
            1 + 1 / max(h - 1, 1),
            -1 - 1 / max(h - 1, 1),
        ),
        True,
    )

    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    fig = new_figure(5.2 + 1.9 * cols, max(5.6, 1.75 * rows + 0.8))
    left, right = fig.subfigures(1, 2, width_ratios=[5.2, 1.9 * cols])
    ax = left.subplots()
    frame.show_image(ax, obs.image)
    for c in range(k):
        ax.scatter(*kps[c], s=70, color=colors[c], edgecolors="k", linewidths=0.8, zorder=4)
        ax.annotate(
            str(c),
            kps[c],
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
            color="k",
            bbox={"boxstyle": "round,pad=0.1", "fc": "w", "alpha": 0.7, "lw": 0},
        )
    dead = int(sum(weights[c].max() * h * w < 1.001 for c in range(k)))
    ax.set_title(
        f"observation and the {k} keypoints (x_c, y_c)\n{obs.label}"
        + (f"\n{dead} channels are constant: their keypoint is the centre (0, 0)" if dead else ""),
        fontsize=10,
    )

    small = right.subplots(rows, cols, squeeze=False)
    for c, a in enumerate(small.ravel()):
        if c >= k:
            a.set_axis_off()
            continue
        a.imshow(weights[c], extent=cell.extent, cmap="magma", interpolation="nearest")
        a.scatter(*kps[c], s=45, color=colors[c], edgecolors="w", linewidths=1.2, zorder=4)
        a.set_xticks([])
        a.set_yticks([])
        peak = weights[c].max() * h * w
        a.set_title(
            f"#{c}: constant map (dead)" if peak < 1.001 else f"#{c}: peak {peak:.1f}x uniform",
            fontsize=8,
        )
    right.suptitle(
        f"softmax weights softmax(f_c / T) per channel ({h}x{w} map, T={float(model.softargmax.temperature.detach()):.2g});"
        " dot = expected (x, y)",
        fontsize=10,
    )
    fig.suptitle(f"Task 3: spatial soft-argmax of the energy model's encoder\n{src.description}")
    return fig


def run_softargmax(cfg: SoftArgmaxFigConfig) -> Path:
    """Write ``<out>/softargmax.png`` and return its path."""
    return run_figure(cfg, "softargmax", build_softargmax)
