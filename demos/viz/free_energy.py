"""``ibc-gym viz free-energy``: the latent-variable EBM of the ellipse lecture (no training).

Data: ``y = (2 cos(theta), 1.5 sin(theta)) + eps``, ``theta ~ U(0, 2 pi)``, ``eps ~ N(0, 0.05^2)``
(24 samples). Decoder ``g(z) = (w1 cos z, w2 sin z)``; energy ``E(y, z) = ||y - g(z)||^2``;
zero-temperature free energy ``F(y) = min_z E(y, z)`` with minimizer ``z_check``, whose gradient
is ``dF/dy = 2 (y - g(z_check))`` (envelope theorem): it points away from the decoder's manifold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from demos.args import help_field
from demos.viz.base import FigureConfig, run_figure
from demos.viz.plotting import ENERGY_CMAP, new_figure

LATENT_STEP = np.pi / 24  # the lecture's latent grid z = [0 : pi/24 : 2 pi)


@dataclass(frozen=True)
class FreeEnergyConfig(FigureConfig):
    samples: int = help_field(24, "number of training samples y drawn from the ellipse", min=1)
    w1: float = help_field(2.0, "decoder weight w1 (horizontal semi-axis)", above=0)
    w2: float = help_field(1.5, "decoder weight w2 (vertical semi-axis)", above=0)
    highlight: int = help_field(
        23, "1-based index of the sample whose energy curve is highlighted", min=1
    )


def ellipse_samples(n: int, rng: np.random.Generator, a: float = 2.0, b: float = 1.5) -> np.ndarray:
    """``(n, 2)`` noisy points of the ellipse with semi-axes ``a``, ``b``."""
    theta = rng.uniform(0.0, 2 * np.pi, n)
    pts = np.stack([a * np.cos(theta), b * np.sin(theta)], axis=1)
    return pts + rng.normal(0.0, 1.0 / 20, pts.shape)


def decode(z: np.ndarray, w1: float, w2: float) -> np.ndarray:
    """``g(z) = (w1 cos z, w2 sin z)``: ``(m,) -> (m, 2)``."""
    return np.stack([w1 * np.cos(z), w2 * np.sin(z)], axis=-1)


def energies(y: np.ndarray, z: np.ndarray, w1: float, w2: float) -> np.ndarray:
    """``E(y, z) = ||y - g(z)||^2`` for every pair: ``(n, 2), (m,) -> (n, m)``."""
    g = decode(z, w1, w2)
    return ((y[:, None, :] - g[None, :, :]) ** 2).sum(-1)


def free_energy(
    y: np.ndarray, w1: float, w2: float, n_z: int = 720
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-temperature free energy by exhaustive search over ``n_z`` latents:
    ``y (n, 2) -> F (n,), z_check (n,), grad F (n, 2)``."""
    z = np.linspace(0.0, 2 * np.pi, n_z, endpoint=False)
    out_f = np.empty(len(y))
    out_z = np.empty(len(y))
    for i in range(0, len(y), 4096):  # bounded memory for fine grids
        e = energies(y[i : i + 4096], z, w1, w2)
        k = e.argmin(axis=1)
        out_f[i : i + 4096] = e[np.arange(len(k)), k]
        out_z[i : i + 4096] = z[k]
    grad = 2 * (y - decode(out_z, w1, w2))
    return out_f, out_z, grad


def build_free_energy(cfg: FreeEnergyConfig) -> Figure:
    """Draw the samples and decoder, the 24 energy curves and the free-energy map."""
    rng = np.random.default_rng(cfg.seed)
    y = ellipse_samples(cfg.samples, rng)
    hi = int(np.clip(cfg.highlight, 1, cfg.samples)) - 1
    z_lecture = np.arange(0.0, 2 * np.pi, LATENT_STEP)
    z_fine = np.linspace(0.0, 2 * np.pi, 721)
    colors = colormaps["turbo"](np.linspace(0.05, 0.95, cfg.samples))
    _, z_check, _ = free_energy(y, cfg.w1, cfg.w2)

    fig = new_figure(17, 5.2)
    ax_y, ax_e, ax_f = fig.subplots(1, 3, width_ratios=[1, 1.15, 1.25])

    # (a) the samples and the decoder's outputs g(z) on the lecture's latent grid
    g = decode(z_lecture, cfg.w1, cfg.w2)
    ax_y.scatter(
        g[:, 0],
        g[:, 1],
        s=18,
        c="tab:purple",
        alpha=0.7,
        label=r"$\tilde y = g(z)$, $z \in [0:\pi/24:2\pi)$",
    )
    ax_y.scatter(
        y[:, 0],
        y[:, 1],
        s=30,
        c=colors,
        edgecolors="k",
        linewidths=0.4,
        zorder=3,
        label="samples $y^{(i)}$",
    )
    yh, gh = y[hi], decode(np.array([z_check[hi]]), cfg.w1, cfg.w2)[0]
    ax_y.scatter(*yh, s=120, c="lime", edgecolors="k", zorder=4, label=f"$y^{{({hi + 1})}}$")
    ax_y.plot([yh[0], gh[0]], [yh[1], gh[1]], "k-", lw=1)
    ax_y.scatter(
        *gh, s=90, marker="x", c="k", zorder=4, label=r"$g(\check z)$, closest decoded point"
    )
    ax_y.set(
        xlabel="$y_1$",
        ylabel="$y_2$",
        title=f"{cfg.samples} samples and the decoder's manifold",
        aspect="equal",
    )
    ax_y.legend(fontsize=7, loc="upper right", framealpha=0.8)
    ax_y.set_xlim(-3.2, 3.2)
    ax_y.set_ylim(-2.6, 2.9)

    # (b) E(y_i, z) against z, one curve per sample, z_check marked
    e = energies(y, z_fine, cfg.w1, cfg.w2)
    for i in range(cfg.samples):
        lw, alpha = (2.5, 1.0) if i == hi else (0.9, 0.6)
        ax_e.plot(
            z_fine,
            e[i],
            color="lime" if i == hi else colors[i],
            lw=lw,
            alpha=alpha,
            zorder=3 if i == hi else 2,
        )
    e_check = energies(y, z_check, cfg.w1, cfg.w2)[np.arange(cfg.samples), np.arange(cfg.samples)]
    ax_e.scatter(
        z_check,
        e_check,
        marker="x",
        c="k",
        s=30,
        zorder=4,
        label=r"$\check z = \arg\min_z E(y, z)$",
    )
    ax_e.set_xticks(
        np.arange(0, 2.01 * np.pi, np.pi / 2), ["0", r"$\pi/2$", r"$\pi$", r"$3\pi/2$", r"$2\pi$"]
    )
    ax_e.set(
        xlabel="latent $z$",
        ylabel=r"$E(y^{(i)}, z) = \|y^{(i)} - g(z)\|^2$",
        title=f"energy of each sample against $z$ (green: $y^{{({hi + 1})}}$)",
    )
    ax_e.legend(fontsize=8, loc="upper right")

    # (c) F(y) = min_z E(y, z) on a dense grid, gradient arrows on the lecture's 17 x 25 mesh
    n = 65 if cfg.quick else 161
    xs, ys = np.linspace(-3.2, 3.2, n), np.linspace(-2.6, 2.6, (n * 13) // 16)
    gx, gy = np.meshgrid(xs, ys)
    f, _, _ = free_energy(np.stack([gx.ravel(), gy.ravel()], 1), cfg.w1, cfg.w2)
    mesh = ax_f.pcolormesh(
        xs, ys, f.reshape(gx.shape), cmap=ENERGY_CMAP, shading="auto", rasterized=True
    )
    fig.colorbar(mesh, ax=ax_f, label=r"$F_\infty(y) = \min_z E(y, z)$")
    qx, qy = np.meshgrid(np.linspace(-3, 3, 25), np.linspace(-2.4, 2.4, 17))
    _, _, grad = free_energy(np.stack([qx.ravel(), qy.ravel()], 1), cfg.w1, cfg.w2)
    # Arrow lengths proportional to |grad F|, the longest one mesh cell long.
    scale = float(np.linalg.norm(grad, axis=1).max()) / (qx[0, 1] - qx[0, 0])
    ax_f.quiver(
        qx.ravel(),
        qy.ravel(),
        grad[:, 0],
        grad[:, 1],
        color="w",
        angles="xy",
        scale_units="xy",
        scale=scale,
        width=0.0035,
        alpha=0.9,
    )
    ell = decode(z_fine, cfg.w1, cfg.w2)
    ax_f.plot(ell[:, 0], ell[:, 1], color="tab:purple", lw=1.5, label="manifold $g(z)$ ($F = 0$)")
    ax_f.scatter(y[:, 0], y[:, 1], s=14, c="k", zorder=3, label="samples")
    ax_f.set(
        xlabel="$y_1$",
        ylabel="$y_2$",
        aspect="equal",
        title=r"zero-temperature free energy, arrows: $\nabla_y F_\infty$ (uphill)",
    )
    ax_f.legend(fontsize=7, loc="upper right", framealpha=0.8)
    fig.suptitle(
        "Latent-variable EBM on the ellipse: energy $E(y, z)$ and free energy $F_\\infty(y)$"
    )
    return fig


def run_free_energy(cfg: FreeEnergyConfig) -> Path:
    """Write ``<out>/free-energy.png`` and return its path."""
    return run_figure(cfg, "free-energy", build_free_energy)
