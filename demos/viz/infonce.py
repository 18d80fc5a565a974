"""``ibc-gym viz infonce``: positive vs counter-example energies during training (task 4).

Reads ``energy_snapshots.npz`` that ``ebm_policy``'s trainer writes into a run folder (the energies
of a fixed batch's expert actions and of fixed uniform counter-examples at several steps): from the
folder of ``--ckpt``, or from the small model trained here. InfoNCE only fixes each example's
energies up to a constant, so energies are shown relative to the median of the same example's
counter-examples: ``E - median_j E(x, y_j^-)``; separation means positives far to the left.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from demos.viz.base import ModelFigureConfig, run_figure
from demos.viz.plotting import new_figure
from demos.viz.sources import load_source
from ebm_policy import read_metrics

SNAPSHOTS = "energy_snapshots.npz"


@dataclass(frozen=True)
class InfoNCEFigConfig(ModelFigureConfig):
    pass


def load_snapshots(run_dir: Path) -> dict[str, np.ndarray]:
    """``steps (S,), positive (S, B), negative (S, B, N)`` from a run folder."""
    path = run_dir / SNAPSHOTS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no energy snapshots next to the checkpoint (train with energy_snapshots > 0, "
            "or leave out --ckpt to train a small model here)"
        )
    with np.load(path) as z:
        return {k: np.asarray(z[k]) for k in ("steps", "positive", "negative")}


def separation_stats(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """InfoNCE loss, how often the positive has the lowest energy, and the mean gap between the
    median counter-example and the positive, for one snapshot ``pos (B,), neg (B, N)``."""
    logits = -np.concatenate([pos[:, None], neg], axis=1)
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return {
        "loss": float(np.mean(lse - logits[:, 0])),
        "argmin": float(np.mean(pos < neg.min(axis=1))),
        "gap": float(np.mean(np.median(neg, axis=1) - pos)),
    }


def build_infonce(cfg: InfoNCEFigConfig) -> Figure:
    """Histograms of relative positive / counter-example energies at every snapshot."""
    if cfg.ckpt is not None:
        run_dir = Path(cfg.ckpt).parent
        desc = f"run folder {run_dir.name}"
    else:
        src = load_source(cfg)
        assert src.run_dir is not None
        run_dir, desc = src.run_dir, src.description
    snap = load_snapshots(run_dir)
    steps, pos, neg = snap["steps"], snap["positive"], snap["negative"]
    ref = np.median(neg, axis=2, keepdims=True)  # (S, B, 1)
    rel_pos, rel_neg = pos - ref[..., 0], neg - ref
    lo = float(min(np.percentile(rel_pos, 1), np.percentile(rel_neg, 0.5)))
    hi = float(np.percentile(rel_neg, 99.5))
    bins = np.linspace(lo, max(hi, lo + 1e-6), 36)
    stats = [separation_stats(p, n) for p, n in zip(pos, neg, strict=True)]

    s = len(steps)
    fig = new_figure(3.2 * s + 4.2, 4.3)
    axes = fig.subplots(1, s + 1, width_ratios=[1] * s + [1.3], sharey=False)
    for i in range(s):
        ax = axes[i]
        ax.hist(
            rel_neg[i].ravel(),
            bins=bins,
            density=True,
            color="tab:gray",
            alpha=0.6,
            label="counter-examples y-",
        )
        ax.hist(
            rel_pos[i],
            bins=bins,
            density=True,
            color="tab:green",
            alpha=0.75,
            label="expert actions y+",
        )
        ax.set_title(
            f"step {int(steps[i])}\nloss {stats[i]['loss']:.2f}, y+ lowest {100 * stats[i]['argmin']:.0f}%",
            fontsize=9,
        )
        ax.set_xlabel("E - median E(y-) of the example")
        if i == 0:
            ax.set_ylabel("density")
    axes[0].legend(fontsize=7, loc="upper right")

    ax = axes[s]
    ax.plot(
        steps,
        [st["gap"] for st in stats],
        "o-",
        color="tab:green",
        label="mean gap median E(y-) - E(y+)",
    )
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set(xlabel="training step", ylabel="energy gap", title="separation during training")
    ax2 = ax.twinx()
    ax2.plot(
        steps,
        [100 * st["argmin"] for st in stats],
        "s--",
        color="tab:purple",
        label="y+ has the lowest energy (%)",
    )
    ax2.set_ylabel("y+ lowest among candidates (%)", color="tab:purple")
    ax2.set_ylim(0, 100)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(
        lines[0] + lines2[0],
        lines[1] + lines2[1],
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncols=1,
    )
    try:
        records = [r for r in read_metrics(run_dir) if "train/loss" in r]
    except (FileNotFoundError, OSError, ValueError):
        records = []
    n_neg = neg.shape[2]
    fig.suptitle(
        f"Task 4: InfoNCE energies of {pos.shape[1]} fixed examples, each with {n_neg} uniform counter-examples "
        f"(chance loss log({n_neg + 1}) = {np.log(n_neg + 1):.2f})\n{desc}"
        + (f"; last logged train loss {records[-1]['train/loss']:.2f}" if records else "")
    )
    return fig


def run_infonce(cfg: InfoNCEFigConfig) -> Path:
    """Write ``<out>/infonce.png`` and return its path."""
    return run_figure(cfg, "infonce", build_infonce)
