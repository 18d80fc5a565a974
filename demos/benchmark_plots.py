"""The figures of ``ibc-gym benchmark`` from its results rows (pyplot-free, written atomically).

- ``stability.png``: success against training step, one panel per env x number of demos x action
  type, one line per policy and training seed (the evaluated kept checkpoints), the spread's
  window shaded.
- ``data_efficiency.png``: final-checkpoint success against number of demos (log axis), one panel
  per env x action type, one line per policy: the mean over training seeds, error bars of one
  sample standard deviation, the seeds as dots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from demos.benchmark_summary import cell_stats, group_rows, group_stats, row_value
from demos.viz.plotting import new_figure, save_figure

POLICY_COLORS = {"implicit": "tab:blue", "explicit": "tab:orange"}
SEED_STYLES = ("-", "--", ":", "-.")
SUCCESS_LIMITS = (-0.03, 1.03)


def _panels(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return (n + cols - 1) // cols, cols


def stability_figure(rows: list[dict[str, Any]], last: int = 5) -> Figure:
    """Success rate against training step; line ``label`` = ``"<policy> seed <s>"``; a grey band
    marks the last ``last`` checkpoints (those the spread is taken over)."""
    panels = group_rows(rows, ("env", "n_demos", "action_type"))
    nr, nc = _panels(len(panels))
    fig = new_figure(4.2 * nc, 3.2 * nr)
    axes = fig.subplots(nr, nc, squeeze=False).ravel()
    for ax, ((env, n, at), prow) in zip(axes, panels.items(), strict=False):
        seeds = sorted({r["seed"] for r in prow})
        window = sorted({r["step"] for r in prow})[-last:]
        ax.axvspan(
            window[0], window[-1], color="0.9", zorder=0, label=f"last {len(window)} checkpoints"
        )
        for (policy, seed), crow in sorted(group_rows(prow, ("policy", "seed")).items()):
            crow = sorted(crow, key=lambda r: r["step"])
            ax.plot(
                [r["step"] for r in crow],
                [r["success_rate"] for r in crow],
                color=POLICY_COLORS.get(policy),
                ls=SEED_STYLES[seeds.index(seed) % len(SEED_STYLES)],
                marker="o",
                ms=3,
                label=f"{policy} seed {seed}",
            )
        _finish(ax, f"{env}, {n} demos, {at}", "training step", "success rate", legend_size=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig


def _finish(ax: Any, title: str, xlabel: str, ylabel: str, legend_size: int) -> None:
    """Title, labels, the success axis's limits, a grid and the legend of one panel."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*SUCCESS_LIMITS)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)


def data_efficiency_figure(rows: list[dict[str, Any]], last: int = 5) -> Figure:
    """Final success against number of demos; the mean line's ``label`` is the policy name."""
    groups = group_stats(rows, last)
    cells = cell_stats(rows, last)
    panels = group_rows(groups, ("env", "action_type"))
    nr, nc = _panels(len(panels))
    fig = new_figure(4.2 * nc, 3.2 * nr)
    axes = fig.subplots(nr, nc, squeeze=False).ravel()
    for ax, ((env, at), prow) in zip(axes, panels.items(), strict=False):
        demos = sorted({g["n_demos"] for g in prow})
        for policy, grows in group_rows(prow, ("policy",)).items():
            grows = sorted(grows, key=lambda g: g["n_demos"])
            color = POLICY_COLORS.get(policy[0])
            ax.errorbar(
                [g["n_demos"] for g in grows],
                [g["success_mean"] for g in grows],
                yerr=[g["success_std"] for g in grows],
                color=color,
                marker="o",
                capsize=3,
                label=policy[0],
            )
            dots = [
                c
                for c in cells
                if (c["env"], c["action_type"], c["policy"]) == (env, at, policy[0])
            ]
            ax.scatter(
                [c["n_demos"] for c in dots],
                [c["final"]["success_rate"] for c in dots],
                color=color,
                s=10,
                alpha=0.5,
                zorder=3,
            )
        ax.set_xscale("log")
        ax.set_xticks(demos, [str(d) for d in demos])
        ax.minorticks_off()
        _finish(
            ax, f"{env}, {at}", "number of demos", "success rate (final checkpoint)", legend_size=8
        )
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig


def write_plots(rows: list[dict[str, Any]], out: Path, last: int = 5) -> list[Path]:
    """Write ``stability.png`` and ``data_efficiency.png`` to ``out`` atomically (with several
    observation types, a line is a policy on one of them: ``"implicit state"``)."""
    if len({row_value(r, "obs_type") for r in rows}) > 1:
        rows = [{**r, "policy": f"{r['policy']} {row_value(r, 'obs_type')}"} for r in rows]
    return [
        save_figure(stability_figure(rows, last), out / "stability.png"),
        save_figure(data_efficiency_figure(rows, last), out / "data_efficiency.png"),
    ]
