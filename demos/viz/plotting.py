"""Shared plotting helpers: pyplot-free figures, atomic PNG output, image/action frames.

Figures are plain ``matplotlib.figure.Figure`` objects (no pyplot, no global backend state), so
the commands work headless and leak nothing between calls. Every figure is written to a temporary
file in the output folder and moved into place with ``os.replace``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure

from ebm_policy.fileio import atomic_path

ENERGY_CMAP = "viridis_r"  # low energy (good actions) = bright yellow, high energy = dark
ITER_CMAP = "plasma"


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width x height`` inches."""
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (``ebm_policy.fileio.atomic_path``)."""
    path = Path(path)
    with atomic_path(path, fsync=False) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


@dataclass(frozen=True)
class ActionFrame:
    """Where the observation image lies in action (or target) coordinates.

    ``extent`` is the image's ``imshow`` extent ``(left, right, bottom, top)`` in action units;
    ``y_down`` says whether the action's y grows downwards in the picture (row coordinate, as in
    the coordinate-regression targets) or upwards (the envs' workspace y, row 0 = +y edge).
    Axes set up with ``apply`` show images and energy maps in the same orientation, so energy
    basins sit over the objects they refer to.
    """

    extent: tuple[float, float, float, float]
    y_down: bool
    x_label: str = "action x"
    y_label: str = "action y"

    @classmethod
    def env(cls, half_extent: float) -> ActionFrame:
        """The envs' top-down camera: it sees ``[-h, h]^2`` with image row 0 at ``y = +h``."""
        h = half_extent
        return cls(
            (-h, h, -h, h),
            y_down=False,
            x_label="action x (workspace)",
            y_label="action y (workspace)",
        )

    @classmethod
    def pixels(cls, resolution: int) -> ActionFrame:
        """Targets ``2 * pixel / (res - 1) - 1``: x = column, y = row (downwards)."""
        d = 1.0 / (resolution - 1)
        return cls(
            (-1 - d, 1 + d, 1 + d, -1 - d),
            y_down=True,
            x_label="x = column [-1, 1]",
            y_label="y = row [-1, 1]",
        )

    def apply(
        self,
        ax: Axes,
        *,
        labels: bool = True,
        box: tuple[np.ndarray, np.ndarray] | None = None,
        pad: float = 0.05,
    ) -> None:
        """Set ``ax``'s limits (and labels) in this orientation: to the image's extent, or to
        ``box = (low, high)`` widened by ``pad`` of its size."""
        left, right, bottom, top = self.extent
        if box is not None:
            low, high = np.asarray(box[0], dtype=float), np.asarray(box[1], dtype=float)
            m = pad * (high - low)
            left, right = low[0] - m[0], high[0] + m[0]
            bottom, top = (
                (high[1] + m[1], low[1] - m[1]) if self.y_down else (low[1] - m[1], high[1] + m[1])
            )
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.set_aspect("equal")
        if labels:
            ax.set_xlabel(self.x_label)
            ax.set_ylabel(self.y_label)

    def show_image(
        self, ax: Axes, image: np.ndarray, *, labels: bool = True, alpha: float = 1.0
    ) -> None:
        """Draw an ``(H, W, 3)`` image at its place in action coordinates."""
        ax.imshow(image, extent=self.extent, origin="upper", interpolation="nearest", alpha=alpha)
        self.apply(ax, labels=labels)


def grid_2d(low: np.ndarray, high: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ``n x n`` grid over the box: ``xs (n,), ys (n,), points (n * n, 2)`` (row-major in y)."""
    xs = np.linspace(float(low[0]), float(high[0]), n)
    ys = np.linspace(float(low[1]), float(high[1]), n)
    gx, gy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def energy_map(
    ax: Axes,
    xs: np.ndarray,
    ys: np.ndarray,
    energy: np.ndarray,
    *,
    colorbar: bool = True,
    levels: int = 12,
    norm: Normalize | None = None,
    gamma: float = 0.5,
    label: str = "energy E (lower = better; sqrt colour scale)",
) -> None:
    """Heat map plus contour lines of ``energy (len(ys), len(xs))`` over the grid.

    Without ``norm`` the colours follow ``((E - min) / (max - min)) ** gamma``, which spreads the
    low-energy region (the basins) over more of the colour map.
    """
    if norm is None:
        norm = PowerNorm(gamma, vmin=float(energy.min()), vmax=float(energy.max()))
    img = ax.pcolormesh(
        xs, ys, energy, cmap=ENERGY_CMAP, shading="auto", norm=norm, rasterized=True
    )
    if levels:
        ax.contour(xs, ys, energy, levels=levels, colors="k", linewidths=0.4, alpha=0.5)
    if colorbar:
        ax.figure.colorbar(img, ax=ax, label=label, shrink=0.85)


def draw_box(ax: Axes, low: np.ndarray, high: np.ndarray, **kwargs: object) -> None:
    """Outline of the box ``[low, high]`` (e.g. the policy's action bounds)."""
    x0, y0 = float(low[0]), float(low[1])
    x1, y1 = float(high[0]), float(high[1])
    style = {"color": "0.3", "lw": 0.8, "ls": "--"} | kwargs
    ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], **style)  # type: ignore[arg-type]


MARKERS = {
    "target": {
        "marker": "o",
        "s": 140,
        "facecolors": "none",
        "edgecolors": "red",
        "linewidths": 2.0,
    },
    "expert": {"marker": "*", "s": 220, "c": "white", "edgecolors": "black", "linewidths": 1.0},
    "dfo": {"marker": "X", "s": 120, "c": "magenta", "edgecolors": "black", "linewidths": 1.0},
    "truth": {"marker": "+", "s": 260, "c": "black", "linewidths": 2.5},
    "explicit": {
        "marker": "D",
        "s": 70,
        "c": "tab:orange",
        "edgecolors": "black",
        "linewidths": 1.0,
    },
    "agent": {
        "marker": "s",
        "s": 60,
        "facecolors": "none",
        "edgecolors": "tab:blue",
        "linewidths": 1.5,
    },
}


def mark(ax: Axes, points: np.ndarray, kind: str, label: str | None = None) -> None:
    """Scatter ``points (k, 2)`` with the style ``MARKERS[kind]`` on top of everything."""
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    ax.scatter(p[:, 0], p[:, 1], label=label, zorder=5, **MARKERS[kind])  # type: ignore[arg-type]
