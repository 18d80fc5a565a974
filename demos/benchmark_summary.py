"""The statistics and ``summary.md`` of ``ibc-gym benchmark`` from its results rows.

Per env x policy x number of demos x action type x observation type (a *group*, over training
seeds), at each
cell's final checkpoint: the success rate's mean and sample standard deviation (``ddof=1``; 0
for one seed) over the seeds, the pooled 95% Wilson interval (all seeds' episodes together), and
the policy's ms per control step. Per cell: the *spread*, max minus min success over its last
``last`` evaluated checkpoints (stability; the goal for the implicit policy is at most
``SPREAD_GOAL``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from demos.evaluate import wilson_interval

SPREAD_GOAL = 0.10  # at most 10 points of success between the last checkpoints (implicit)
GROUP_KEYS = ("env", "policy", "n_demos", "action_type", "obs_type", "horizon")
ROW_DEFAULTS: dict[str, Any] = {"obs_type": "pixels", "horizon": 1}  # rows from before them


def row_value(row: dict[str, Any], key: str) -> Any:
    return row[key] if key in row or key not in ROW_DEFAULTS else ROW_DEFAULTS[key]


def group_rows(
    rows: Iterable[dict[str, Any]], keys: tuple[str, ...]
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(row_value(r, k) for k in keys), []).append(r)
    return groups


def cell_stats(rows: list[dict[str, Any]], last: int) -> list[dict[str, Any]]:
    """One entry per cell: its final checkpoint's row and its spread over the last ``last``."""
    out = []
    for cell_rows in group_rows(rows, (*GROUP_KEYS, "seed")).values():
        ordered = sorted(cell_rows, key=lambda r: r["step"])
        tail = [r["success_rate"] for r in ordered[-last:]]
        out.append(
            {
                **{k: row_value(ordered[-1], k) for k in (*GROUP_KEYS, "seed")},
                "final": ordered[-1],
                "spread": max(tail) - min(tail),
                "spread_checkpoints": len(tail),
            }
        )
    return out


def group_stats(rows: list[dict[str, Any]], last: int) -> list[dict[str, Any]]:
    """One entry per group (see the module docstring), in the order the groups first appear."""
    out = []
    for key, cells in group_rows(cell_stats(rows, last), GROUP_KEYS).items():
        rates = [c["final"]["success_rate"] for c in cells]
        successes = sum(c["final"]["successes"] for c in cells)
        episodes = sum(c["final"]["episodes"] for c in cells)
        mean = sum(rates) / len(rates)
        var = sum((r - mean) ** 2 for r in rates) / (len(rates) - 1) if len(rates) > 1 else 0.0
        out.append(
            {
                **dict(zip(GROUP_KEYS, key, strict=True)),
                "seeds": [c["seed"] for c in cells],
                "step": cells[0]["final"]["step"],
                "success_mean": mean,
                "success_std": math.sqrt(var),
                "successes": successes,
                "episodes": episodes,
                "pooled_ci95": wilson_interval(successes, episodes),
                "policy_ms_per_step": sum(c["final"]["policy_ms_per_step"] for c in cells)
                / len(cells),
                "max_spread": max(c["spread"] for c in cells),
                "action_change": _mean_of(c["final"].get("mean_action_change") for c in cells),
            }
        )
    return out


def _mean_of(values: Iterable[float | None]) -> float:
    """The mean of the known values (``nan`` when none is: rows from before the metric)."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else math.nan


def policy_label(g: dict[str, Any]) -> str:
    """The policy's name, with its chunk length when it predicts chunks (``implicit H=4``)."""
    h = row_value(g, "horizon")
    return g["policy"] if h == 1 else f"{g['policy']} H={h}"


def format_chunk_table(groups: list[dict[str, Any]]) -> list[str]:
    """Chunk lengths side by side: one row per env x action type x observation type x policy,
    per horizon the success mean ± std over seeds, the policy's ms per control step and the
    mean absolute change of the commanded action between steps (smoothness)."""
    horizons = sorted({row_value(g, "horizon") for g in groups})
    by_row = group_rows(groups, ("env", "action_type", "obs_type", "n_demos", "policy"))
    lines = [
        "## Action chunks (success mean ± std over seeds / policy ms per step / mean |change| of "
        "the commanded action between steps)",
        "",
        "| env | action | obs | demos | policy | " + " | ".join(f"H={h}" for h in horizons) + " |",
        "|---|---|---|---:|---|" + "---:|" * len(horizons),
    ]
    for (env, at, ot, n, policy), grows in by_row.items():
        cell = {row_value(g, "horizon"): g for g in grows}
        values = [
            f"{_pct(cell[h]['success_mean'])} ± {100 * cell[h]['success_std']:.0f} / "
            f"{cell[h]['policy_ms_per_step']:.1f} ms / {cell[h]['action_change']:.3f}"
            if h in cell
            else "-"
            for h in horizons
        ]
        lines.append(f"| {env} | {at} | {ot} | {n} | {policy} | " + " | ".join(values) + " |")
    return lines


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def format_obs_table(groups: list[dict[str, Any]]) -> list[str]:
    """The IBC paper's Table 3 layout: one row per env (x demos x action type), one column per
    policy x observation type, the mean success over seeds (``n`` seeds)."""
    columns = list(dict.fromkeys((g["policy"], g["obs_type"]) for g in groups))
    by_row = group_rows(groups, ("env", "n_demos", "action_type"))
    lines = [
        "## Policies x observation types (mean success over seeds)",
        "",
        "| env | demos | action | " + " | ".join(f"{p}, {o}" for p, o in columns) + " |",
        "|---|---:|---|" + "---:|" * len(columns),
    ]
    for (env, n, at), grows in by_row.items():
        cell = {(g["policy"], g["obs_type"]): g for g in grows}
        values = [
            f"{_pct(cell[c]['success_mean'])} (n={len(cell[c]['seeds'])})" if c in cell else "-"
            for c in columns
        ]
        lines.append(f"| {env} | {n} | {at} | " + " | ".join(values) + " |")
    return lines


def format_summary(rows: list[dict[str, Any]], last: int, command: str = "") -> str:
    """``summary.md``: the group table, the per-cell stability table and the cells' wall time."""
    lines = ["# ibc-gym benchmark", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        "Success at the final checkpoint: mean and sample std over training seeds, pooled 95% "
        f"Wilson interval over all their episodes. Spread: max minus min success over a cell's last "
        f"{last} evaluated checkpoints (goal for the implicit policy: at most "
        f"{100 * SPREAD_GOAL:.0f} points).",
        "",
        "| env | policy | demos | action | obs | seeds | step | success mean | std | pooled 95% CI "
        "| episodes | max spread | policy ms/step |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    groups = group_stats(rows, last)
    for g in groups:
        lo, hi = g["pooled_ci95"]
        lines.append(
            f"| {g['env']} | {policy_label(g)} | {g['n_demos']} | {g['action_type']} | {g['obs_type']} "
            f"| {len(g['seeds'])} "
            f"| {g['step']} | {_pct(g['success_mean'])} | {100 * g['success_std']:.1f} pts "
            f"| {_pct(lo)}-{_pct(hi)} | {g['episodes']} | {100 * g['max_spread']:.0f} pts "
            f"| {g['policy_ms_per_step']:.1f} |"
        )
    if len({g["obs_type"] for g in groups}) > 1:
        lines += ["", *format_obs_table(groups)]
    if len({row_value(g, "horizon") for g in groups}) > 1:
        lines += ["", *format_chunk_table(groups)]
    lines += [
        "",
        "## Stability per cell",
        "",
        "| env | policy | demos | action | obs | seed | final success | spread | checkpoints "
        "| goal met |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for c in cell_stats(rows, last):
        goal = (
            ("yes" if c["spread"] <= SPREAD_GOAL + 1e-9 else "no")
            if c["policy"].startswith("implicit")
            else "-"
        )
        lines.append(
            f"| {c['env']} | {policy_label(c)} | {c['n_demos']} | {c['action_type']} "
            f"| {c['obs_type']} | {c['seed']} "
            f"| {_pct(c['final']['success_rate'])} | {100 * c['spread']:.0f} pts "
            f"| {c['spread_checkpoints']} | {goal} |"
        )
    lines += [
        "",
        "## Time per cell (one process, one torch thread; a resumed cell counts its last part)",
        "",
        "| policy | cells | train s | train CPU s | eval s | eval CPU s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total_cpu = 0.0
    for (policy,), prow in group_rows(rows, ("policy",)).items():
        cells = list(group_rows(prow, ("cell",)).values())
        t = [
            [
                c[0]["train_seconds"],
                c[0].get("train_cpu_seconds", math.nan),
                sum(r["eval_seconds"] for r in c),
                sum(r.get("eval_cpu_seconds", math.nan) for r in c),
            ]
            for c in cells
        ]
        means = [sum(col) / len(col) for col in zip(*t, strict=True)]
        total_cpu += sum(x[1] + x[3] for x in t)
        lines.append(f"| {policy} | {len(cells)} | " + " | ".join(f"{m:.0f}" for m in means) + " |")
    lines += [
        "",
        f"CPU time of all cells: {total_cpu:.0f} s (about {total_cpu / 120:.0f} min of wall time "
        f"on two idle cores with --jobs 2).",
    ]
    return "\n".join(lines) + "\n"
