"""``ibc-gym benchmark`` from its rows: the statistics and summary.md against hand computations on
synthetic rows, what the plots show, and the grid's checkpoint plan."""

from __future__ import annotations

import math
from typing import Any

import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer

from demos.benchmark_config import BenchmarkConfig
from demos.benchmark_plots import SUCCESS_LIMITS, data_efficiency_figure, stability_figure
from demos.benchmark_summary import cell_stats, format_summary, group_stats

ENV = "ibc/ReachAnyTarget-v0"
STEPS = (100, 200, 300, 400, 500, 600)
# success rates per (policy, n_demos, seed) at STEPS; the final checkpoint has 50 episodes
CURVES: dict[tuple[str, int, int], tuple[float, ...]] = {
    ("implicit", 10, 0): (0.0, 0.6, 0.9, 0.8, 1.0, 0.9),  # last 5: 0.6..1.0 -> spread 0.4
    ("implicit", 10, 1): (0.2, 0.9, 0.9, 0.9, 0.9, 0.8),  # 0.0 lies outside the window: 0.1
    ("implicit", 10, 2): (0.5, 1.0, 1.0, 1.0, 1.0, 1.0),  # 0.0
    ("explicit", 10, 0): (0.1, 0.2, 0.3, 0.3, 0.2, 0.4),
    ("explicit", 10, 1): (0.1, 0.2, 0.3, 0.3, 0.2, 0.2),
    ("explicit", 10, 2): (0.1, 0.2, 0.3, 0.3, 0.2, 0.3),
    ("implicit", 30, 0): (0.9,) * 6,
    ("implicit", 30, 1): (0.7,) * 6,
    ("implicit", 30, 2): (0.8,) * 6,
    ("explicit", 30, 0): (0.5,) * 6,
    ("explicit", 30, 1): (0.5,) * 6,
    ("explicit", 30, 2): (0.5,) * 6,
}


def synthetic_rows() -> list[dict[str, Any]]:
    rows = []
    for (policy, n, seed), curve in CURVES.items():
        for step, rate in zip(STEPS, curve, strict=True):
            episodes = 50 if step == STEPS[-1] else 10
            rows.append(
                {
                    "env": ENV,
                    "policy": policy,
                    "n_demos": n,
                    "action_type": "position",
                    "seed": seed,
                    "cell": f"{policy}_{n}_{seed}",
                    "step": step,
                    "episodes": episodes,
                    "successes": round(rate * episodes),
                    "success_rate": rate,
                    "policy_ms_per_step": {"implicit": 3.0 + seed, "explicit": 1.0}[policy],
                    "train_seconds": 100.0,
                    "eval_seconds": 10.0,
                    "train_cpu_seconds": 90.0,
                    "eval_cpu_seconds": 5.0,
                }
            )
    return rows


def test_group_statistics_by_hand() -> None:
    groups = {(g["policy"], g["n_demos"]): g for g in group_stats(synthetic_rows(), last=5)}
    g = groups[("implicit", 10)]
    # final successes 0.9, 0.8, 1.0: mean 0.9, sample std sqrt((0 + 0.01 + 0.01) / 2) = 0.1
    assert g["seeds"] == [0, 1, 2] and g["step"] == 600
    assert g["success_mean"] == pytest.approx(0.9)
    assert g["success_std"] == pytest.approx(0.1)
    # pooled: 45 + 40 + 50 = 135 of 150; Wilson, z = 1.96: centre (0.9 + z^2/300) / (1 + z^2/150),
    # half-width z sqrt(0.9 * 0.1 / 150 + z^2 / 90000) / (1 + z^2/150)
    assert (g["successes"], g["episodes"]) == (135, 150)
    z2 = 1.959964**2
    centre = (0.9 + z2 / 300) / (1 + z2 / 150)
    half = math.sqrt(z2) * math.sqrt(0.09 / 150 + z2 / 90000) / (1 + z2 / 150)
    assert g["pooled_ci95"] == pytest.approx((centre - half, centre + half))
    assert g["pooled_ci95"] == pytest.approx((0.8416, 0.9384), abs=1e-4)
    assert g["policy_ms_per_step"] == pytest.approx(4.0)  # (3 + 4 + 5) / 3
    assert g["max_spread"] == pytest.approx(0.4)
    e = groups[("explicit", 10)]
    assert e["success_mean"] == pytest.approx(0.3) and e["success_std"] == pytest.approx(0.1)
    one_seed = group_stats([r for r in synthetic_rows() if r["seed"] == 0], last=5)
    assert all(x["success_std"] == 0.0 for x in one_seed)


@pytest.mark.parametrize(
    ("seed", "last", "spread"), [(0, 5, 0.4), (1, 5, 0.1), (2, 5, 0.0), (0, 6, 1.0), (0, 2, 0.1)]
)
def test_spread_over_the_last_checkpoints(seed: int, last: int, spread: float) -> None:
    cells = {(c["policy"], c["n_demos"], c["seed"]): c for c in cell_stats(synthetic_rows(), last)}
    c = cells[("implicit", 10, seed)]
    assert c["spread"] == pytest.approx(spread)
    assert c["spread_checkpoints"] == last
    assert c["final"]["step"] == 600


def test_summary_table() -> None:
    text = format_summary(synthetic_rows(), last=5, command="ibc-gym benchmark --out x")
    assert "Command: `ibc-gym benchmark --out x`" in text
    assert (
        f"| {ENV} | implicit | 10 | position | pixels | 3 | 600 | 90% | 10.0 pts | 84%-94% | 150 | 40 pts | 4.0 |"
        in text
    )
    assert (
        f"| {ENV} | explicit | 30 | position | pixels | 3 | 600 | 50% | 0.0 pts | 42%-58% | 150 | 0 pts | 1.0 |"
        in text
    )
    # per cell: the implicit spread goal (10 points) is judged, the explicit one is not
    assert f"| {ENV} | implicit | 10 | position | pixels | 0 | 90% | 40 pts | 5 | no |" in text
    assert f"| {ENV} | implicit | 10 | position | pixels | 1 | 80% | 10 pts | 5 | yes |" in text
    assert f"| {ENV} | explicit | 10 | position | pixels | 0 | 40% | 20 pts | 5 | - |" in text
    assert (
        "| implicit | 6 | 100 | 90 | 60 | 30 |" in text
    )  # 6 checkpoints x 10 s of evaluation per cell
    assert "CPU time of all cells: 1440 s (about 12 min" in text  # 12 cells x (90 + 6 x 5) s


def test_stability_plot_shows_the_rows() -> None:
    rows = synthetic_rows()
    fig = stability_figure(rows, last=5)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [
        f"{ENV}, 10 demos, position",
        f"{ENV}, 30 demos, position",
    ]
    for ax, n in zip(axes, (10, 30), strict=True):
        assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "success rate"
        assert ax.get_ylim() == pytest.approx(SUCCESS_LIMITS)
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {f"{p} seed {s}" for p in ("implicit", "explicit") for s in (0, 1, 2)}
        for (policy, n_demos, seed), curve in CURVES.items():
            if n_demos == n:
                line = lines[f"{policy} seed {seed}"]
                assert list(line.get_xdata()) == list(STEPS)
                assert list(line.get_ydata()) == pytest.approx(curve)
        (band,) = ax.patches  # the spread's window: the last 5 checkpoints
        assert band.get_label() == "last 5 checkpoints"
        assert tuple(band.get_bbox().intervalx) == (STEPS[1], STEPS[-1])
        colors = {lab.split()[0]: line.get_color() for lab, line in lines.items()}
        assert colors["implicit"] != colors["explicit"]


def test_data_efficiency_plot_shows_the_means() -> None:
    fig = data_efficiency_figure(synthetic_rows(), last=5)
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "number of demos"
    assert ax.get_ylim() == pytest.approx(SUCCESS_LIMITS)
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    assert set(bars) == {"implicit", "explicit"}
    means = {"implicit": (0.9, 0.8), "explicit": (0.3, 0.5)}
    stds = {"implicit": (0.1, 0.1), "explicit": (0.1, 0.0)}
    for policy, container in bars.items():
        line = container.lines[0]
        assert list(line.get_xdata()) == [10, 30]
        assert list(line.get_ydata()) == pytest.approx(means[policy])
        # the error bar of each point spans mean +- std
        segments = container.lines[2][0].get_segments()
        spans = [seg[1][1] - seg[0][1] for seg in segments]
        assert spans == pytest.approx([2 * s for s in stds[policy]])
    # every seed's final success is drawn as a dot
    points = [
        p for c in ax.collections if isinstance(c, PathCollection) for p in c.get_offsets().tolist()
    ]
    dots = sorted((round(x), round(y, 9)) for x, y in points)
    assert dots == sorted((n, c[-1]) for (_, n, _), c in CURVES.items())


def test_checkpoint_plan() -> None:
    cfg = BenchmarkConfig()
    assert cfg.kept_steps() == [250, 500, 750, 1000, 1250, 1500, 1750, 2000]
    assert cfg.eval_plan() == {
        250: 10,
        500: 10,
        750: 10,
        1000: 50,
        1250: 50,
        1500: 50,
        1750: 50,
        2000: 50,
    }
    no_early = BenchmarkConfig(early_eval_episodes=0, eval_last=2)
    assert no_early.eval_plan() == {1750: 50, 2000: 50}
    quick = BenchmarkConfig(quick=True, envs=(ENV,), policies=("explicit",)).effective()
    assert quick.policies == ("explicit",) and quick.image_size == 32 and not quick.quick
    assert len(quick.cells()) == len(quick.seeds) * len(quick.demos)


def test_obs_types_get_their_own_groups_and_the_paper_table() -> None:
    pixels = synthetic_rows()  # rows from before obs_type existed: pixels
    state = [
        {**r, "obs_type": "state", "success_rate": 1.0, "successes": r["episodes"]} for r in pixels
    ]
    groups = group_stats(pixels + state, last=5)
    assert {g["obs_type"] for g in groups} == {"pixels", "state"}
    assert len(groups) == 2 * len(group_stats(pixels, last=5))
    text = format_summary(pixels + state, last=5)
    assert (
        "| env | demos | action | implicit, pixels | explicit, pixels | implicit, state | explicit, state |"
        in text
    )
    assert (
        f"| {ENV} | 10 | position | 90% (n=3) | " in text and "| 100% (n=3) | 100% (n=3) |" in text
    )
    assert "implicit, pixels" not in format_summary(pixels, last=5)  # one obs type: no such table


def test_obs_type_cells_keep_the_pixels_names() -> None:
    cfg = BenchmarkConfig(seeds=(0,), demos=(5,), obs_types=("pixels", "state"))
    names = {c.name for c in cfg.cells()}
    env = "ReachAroundObstacle-v0"
    assert f"{env}_implicit_n5_position_s0" in names
    assert f"{env}_implicit_n5_position_state_s0" in names and len(names) == 4
    assert cfg.dataset_path("ibc/" + env, "position", 5, "state").name == (
        f"{env}_position_state_seed0_n5.h5"
    )
    assert "obs_types" not in BenchmarkConfig().grid_dict()  # old grid.json files still match
    assert "--obs-types pixels state" in cfg.command_line()
    with pytest.raises(ValueError, match="unknown observation type 'rgb'"):
        BenchmarkConfig(obs_types=("rgb",))
