"""``ibc-gym viz coord-regression``: the whole 2-D coordinate-regression pipeline (task 8).

Data from ``demos.coord_regression`` (white images with one green block; the target is its centre,
x = column, y = row, in [-1, 1]). An implicit policy (InfoNCE + DFO) and the explicit baseline
(MSE) with the same backbone are trained on a few images (or loaded from checkpoints, each from
its own run folder), then: training curves, the energy landscape of one test image, and the
predictions against the truth on the whole test set. Models trained here are the experiment's
presets (``demos.coord_regression``), the implicit one with 64 counter-examples and 1,024 DFO
samples, trained with batch 8.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from demos.args import help_field
from demos.coord_regression import (
    COORD_REGRESSION_EXPLICIT,
    COORD_REGRESSION_TRAIN,
    make_policy,
    make_split,
    targets_to_pixels,
)
from demos.viz.base import FigureConfig, run_figure
from demos.viz.plotting import ActionFrame, energy_map, grid_2d, mark, new_figure
from demos.viz.sources import small_coord_implicit
from ebm_policy import (
    ExplicitPolicy,
    ImplicitPolicy,
    load_checkpoint,
    read_metrics,
    train,
)
from ebm_policy.checkpoint import policy_from_checkpoint
from ebm_policy.config import config_to_dict

Policy = ImplicitPolicy | ExplicitPolicy


@dataclass(frozen=True)
class CoordRegFigConfig(FigureConfig):
    ckpt: Path | None = help_field(
        None, "implicit coordinate-regression checkpoint (None: train one here)"
    )
    explicit_ckpt: Path | None = help_field(None, "explicit checkpoint (None: train one here)")
    split: Literal["standard", "extrapolation"] = help_field(
        "standard",
        "standard: test blocks anywhere; extrapolation: train left half, test right half",
    )
    train_size: int = help_field(30, "training images (quick: 6)", min=1)
    test_size: int = help_field(100, "test images (quick: 12)", min=1)
    steps: int = help_field(300, "training steps of each model trained here (quick: 10)", min=1)
    resolution: int = help_field(
        48, "image size of the models trained here, in pixels (quick: 32)", min=16
    )
    test_index: int = help_field(0, "which test image's energy landscape is shown", min=0)
    cache: bool = help_field(
        True, "reuse models trained earlier with the same settings from <out>/models"
    )


@dataclass
class Trained:
    """One trained policy, its run folder and its loss curve."""

    policy: Policy
    run_dir: Path
    steps: np.ndarray
    loss: np.ndarray


def _settings(cfg: CoordRegFigConfig) -> tuple[int, int, int, int]:
    if cfg.quick:
        return 6, 12, 10, 32
    return cfg.train_size, cfg.test_size, cfg.steps, cfg.resolution


def _curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        recs = [r for r in read_metrics(run_dir) if "train/loss" in r]
    except (FileNotFoundError, OSError, ValueError):
        recs = []
    return np.array([r["step"] for r in recs]), np.array([r["train/loss"] for r in recs])


def load_trained(path: Path, kind: str) -> Trained:
    """A policy of ``kind`` from a checkpoint, with the loss curve of its run folder."""
    ckpt = load_checkpoint(path)
    if ckpt["kind"] != kind:
        raise ValueError(f"{path}: holds an {ckpt['kind']} policy, expected {kind}")
    steps, loss = _curve(path.parent)
    return Trained(policy_from_checkpoint(ckpt, source=str(path)), path.parent, steps, loss)


def train_here(cfg: CoordRegFigConfig, kind: str, res: int) -> Trained:
    """Train (or reuse from ``<out>/models``) one policy on the figure's ``res``-pixel images."""
    n_train, _, steps, _ = _settings(cfg)
    run_dir = (
        Path(cfg.out)
        / "models"
        / f"coord-{kind}-{cfg.split}-{res}px-n{n_train}-seed{cfg.seed}-{steps}steps"
    )
    last = run_dir / "ckpt_last.pt"
    config = small_coord_implicit() if kind == "implicit" else COORD_REGRESSION_EXPLICIT
    policy = make_policy(config, res, cfg.seed)
    if cfg.cache and last.is_file():
        cached = load_checkpoint(last)  # reused only if it is this very model, fully trained
        if cached["config"] == config_to_dict(policy.config) and int(cached["step"]) >= steps:
            return load_trained(last, kind)
    if run_dir.exists():  # no cache wanted, or one from other settings or an unfinished run
        shutil.rmtree(run_dir)
    train_set, _ = make_split(cfg.split, n_train, 1, cfg.seed, resolution=res)
    print(
        f"training the {kind} coordinate-regression model on {n_train} images for {steps} steps -> {run_dir}"
    )
    tcfg = replace(
        COORD_REGRESSION_TRAIN,  # batch 8; the figure's --threads
        steps=steps,
        seed=cfg.seed,
        log_interval=max(1, steps // 40),
        ckpt_interval=max(1, steps),
        energy_snapshots=0,
        progress=False,
    )
    meta = {
        "experiment": "coord-regression",
        "split": cfg.split,
        "train_size": n_train,
        "resolution": res,
    }
    train(policy, train_set, tcfg, run_dir, resume=True, metadata=meta)
    return Trained(policy.eval(), run_dir, *_curve(run_dir))


def checkpoint_resolution(path: Path, default: int = 96) -> int:
    """The image size a coordinate-regression checkpoint was trained on (its metadata's
    ``resolution``, else ``default``, the experiment's standard size)."""
    meta = load_checkpoint(path).get("metadata") or {}
    return int(meta.get("resolution", default))


def predict(policy: Policy, images: np.ndarray, seed: int) -> np.ndarray:
    """Actions for ``images (n, H, W, 3)``: ``-> (n, 2)``."""
    out = policy.select_action(images, generator=torch.Generator().manual_seed(seed))
    assert isinstance(out, np.ndarray)  # numpy in, numpy out
    return out


def arrow_gain(*deltas: np.ndarray) -> float:
    """Magnification that makes the mean error arrow about 0.08 units long (1 to 10)."""
    mean = float(np.mean([np.linalg.norm(d, axis=1).mean() for d in deltas]))
    return float(np.clip(np.round(0.08 / max(mean, 1e-6)), 1, 10))


def error_arrows(
    ax: Axes,
    truth: np.ndarray,
    pred: np.ndarray,
    err_px: np.ndarray,
    frame: ActionFrame,
    title: str,
    gain: float,
) -> None:
    """Arrows from every true centre towards its prediction, ``gain`` times the error, coloured by
    the pixel error."""
    d = pred - truth
    q = ax.quiver(
        truth[:, 0],
        truth[:, 1],
        d[:, 0],
        d[:, 1],
        err_px,
        angles="xy",
        scale_units="xy",
        scale=1.0 / gain,
        cmap="coolwarm",
        width=0.006,
    )
    q.set_clim(0, max(3.0, float(np.percentile(err_px, 95))))
    ax.scatter(truth[:, 0], truth[:, 1], s=6, c="k", zorder=3)
    frame.apply(ax)
    ax.set_title(title + (f", arrows x{gain:g}" if gain > 1 else ""), fontsize=9)
    ax.figure.colorbar(q, ax=ax, label="error (px)", shrink=0.85)


def build_coord_regression(cfg: CoordRegFigConfig) -> Figure:
    """Training curves, one test image's energy landscape and test-set predictions."""
    _, n_test, _, res = _settings(cfg)
    given = cfg.ckpt or cfg.explicit_ckpt
    if given:
        res = checkpoint_resolution(given)  # models trained here match the given one's images
    imp = load_trained(cfg.ckpt, "implicit") if cfg.ckpt else train_here(cfg, "implicit", res)
    exp = (
        load_trained(cfg.explicit_ckpt, "explicit")
        if cfg.explicit_ckpt
        else train_here(cfg, "explicit", res)
    )
    _, test_set = make_split(cfg.split, 1, n_test, cfg.seed, resolution=res)
    truth = test_set.actions
    p_imp, p_exp = (
        predict(imp.policy, test_set.images, cfg.seed),
        predict(exp.policy, test_set.images, cfg.seed),
    )
    px = targets_to_pixels
    err_imp = np.linalg.norm(px(p_imp, res) - px(truth, res), axis=1)
    err_exp = np.linalg.norm(px(p_exp, res) - px(truth, res), axis=1)
    frame = ActionFrame.pixels(res)
    i = int(np.clip(cfg.test_index, 0, len(truth) - 1))
    assert isinstance(imp.policy, ImplicitPolicy)
    xs, ys, pts = grid_2d(np.array([-1.0, -1.0]), np.array([1.0, 1.0]), 41 if cfg.quick else 121)
    e = imp.policy.energy(test_set.images[i : i + 1], pts[None]).numpy().reshape(len(ys), len(xs))

    fig = new_figure(16, 9.5)
    (ax_c, ax_i, ax_e), (ax_ai, ax_ae, ax_h) = fig.subplots(2, 3)
    ax_c.plot(imp.steps, imp.loss, color="tab:blue", label="implicit: InfoNCE loss")
    ax_c.set(xlabel="training step", ylabel="InfoNCE loss", title="training curves")
    ax_c.tick_params(axis="y", labelcolor="tab:blue")
    ax_m = ax_c.twinx()
    ax_m.plot(exp.steps, exp.loss, color="tab:orange", label="explicit: MSE loss")
    ax_m.set_ylabel("MSE loss (normalized units)")
    ax_m.tick_params(axis="y", labelcolor="tab:orange")
    if len(exp.loss) and exp.loss.min() > 0:
        ax_m.set_yscale("log")
    h1, l1 = ax_c.get_legend_handles_labels()
    h2, l2 = ax_m.get_legend_handles_labels()
    ax_c.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")

    frame.show_image(ax_i, test_set.images[i])
    mark(ax_i, p_imp[i], "dfo", f"implicit ({err_imp[i]:.2f} px)")
    mark(ax_i, p_exp[i], "explicit", f"explicit ({err_exp[i]:.2f} px)")
    mark(ax_i, truth[i], "truth", "truth")
    ax_i.set_title(f"test image {i} ({res}x{res} px)", fontsize=10)
    ax_i.legend(fontsize=8, loc="lower right")

    energy_map(ax_e, xs, ys, e)
    mark(ax_e, p_imp[i], "dfo")
    mark(ax_e, p_exp[i], "explicit")
    mark(ax_e, truth[i], "truth")
    frame.apply(ax_e)
    ax_e.set_title(f"energy landscape E(image {i}, (x, y)) of the implicit model", fontsize=10)

    gain = arrow_gain(p_imp - truth, p_exp - truth)
    error_arrows(
        ax_ai,
        truth,
        p_imp,
        err_imp,
        frame,
        f"implicit (EBM + {imp.policy.config.optimizer.kind}): truth -> prediction\n{n_test} test images",
        gain,
    )
    error_arrows(
        ax_ae,
        truth,
        p_exp,
        err_exp,
        frame,
        f"explicit (MSE): truth -> prediction\n{n_test} test images",
        gain,
    )

    bins = np.linspace(0, max(float(err_imp.max()), float(err_exp.max()), 1.0), 30)
    for err, name, color in (
        (err_imp, "implicit", "tab:blue"),
        (err_exp, "explicit", "tab:orange"),
    ):
        ax_h.hist(
            err,
            bins=bins,
            alpha=0.6,
            color=color,
            label=f"{name}: mean {err.mean():.2f}, median {np.median(err):.2f} px",
        )
    ax_h.set(xlabel="test error (pixels)", ylabel="test images", title="error distribution")
    ax_h.legend(fontsize=8)
    fig.suptitle(
        f"Task 8: coordinate regression from marker images ({cfg.split} split) - implicit vs explicit\n"
        f"runs: {imp.run_dir.name}, {exp.run_dir.name}"
    )
    return fig


def run_coord_regression_fig(cfg: CoordRegFigConfig) -> Path:
    """Write ``<out>/coord-regression.png`` and return its path."""
    return run_figure(cfg, "coord-regression", build_coord_regression)
