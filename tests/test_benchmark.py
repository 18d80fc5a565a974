"""``ibc-gym benchmark`` end to end on the quick grid: the results rows, the shared datasets, the
plots, a re-run that skips finished cells, and bad grids refused with nothing overwritten."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import pytest

import demos.benchmark_cell
import demos.cli
from agents.dataset import DemoDataset
from demos.benchmark import prepare_out
from demos.benchmark_config import COLLECT_HAS_ACTION_TYPE, BenchmarkConfig, action_type_kwargs

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK_ARGS = ["--quick", "--no-progress"]


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick grid, run once with two spawned worker processes."""
    out = tmp_path_factory.mktemp("bench") / "quick"
    assert demos.cli.main(["benchmark", "--out", str(out), "--jobs", "2", *QUICK_ARGS]) == 0
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_results_have_a_row_per_cell_and_checkpoint(quick_out: Path) -> None:
    cfg = BenchmarkConfig(out=quick_out, quick=True).effective()
    assert json.loads((quick_out / "grid.json").read_text()) == cfg.grid_dict()
    rows = read_jsonl(quick_out / "results.jsonl")
    plan = cfg.eval_plan()
    expected = {
        (c.env, c.policy, c.n_demos, c.action_type, c.seed, step)
        for c in cfg.cells()
        for step in plan
    }
    got = [
        (r["env"], r["policy"], r["n_demos"], r["action_type"], r["seed"], r["step"]) for r in rows
    ]
    assert len(got) == len(expected) == len(cfg.cells()) * len(plan) and set(got) == expected
    for r in rows:
        assert {k: r[k] for k in cfg.row_settings()} == cfg.row_settings()  # every setting
        assert r["episodes"] == plan[r["step"]] and 0 <= r["successes"] <= r["episodes"]
        assert r["success_rate"] == r["successes"] / r["episodes"]
        assert r["policy_ms_per_step"] > 0 and r["train_seconds"] > 0 and r["train_cpu_seconds"] > 0
        ckpt = quick_out / r["checkpoint"]
        assert ckpt.name == f"ckpt_step{r['step']}.pt" and ckpt.is_file()
    summary = (quick_out / "summary.md").read_text()
    assert summary.count(f"| {cfg.envs[0]} | implicit |") == len(cfg.demos) * (1 + len(cfg.seeds))


def test_datasets_are_nested_and_disjoint_from_evaluation(quick_out: Path) -> None:
    cfg = BenchmarkConfig(out=quick_out, quick=True).effective()
    env, at = cfg.envs[0], cfg.action_types[0]
    sets = {
        n: DemoDataset(cfg.dataset_path(env, at, n), env_id=env, in_memory=True) for n in cfg.demos
    }
    small, large = (sets[n] for n in sorted(cfg.demos))
    assert (small.num_episodes, large.num_episodes) == tuple(sorted(cfg.demos))
    assert list(small.episode_seeds) == list(large.episode_seeds[: small.num_episodes])
    assert (small.actions == large.actions[: len(small)]).all()
    assert (
        small.episode(small.num_episodes - 1)["image"]
        == large.episode(small.num_episodes - 1)["image"]
    ).all()
    assert small.attrs["source"]["first_episodes"] == small.num_episodes
    assert small.env_kwargs == large.env_kwargs
    eval_seeds = set(range(cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes))
    assert not eval_seeds & {int(s) for s in large.episode_seeds}


def test_plots_are_written(quick_out: Path) -> None:
    for name in ("stability.png", "data_efficiency.png"):
        img = iio.imread(quick_out / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img[..., :3].std() > 20
    assert not list(quick_out.glob(".*.tmp*"))


def test_rerun_skips_finished_cells(
    quick_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(quick_out, out)
    trained: list[Path] = []
    real_train = demos.benchmark_cell.run_train

    def counting_train(job: Any) -> Path:
        trained.append(job.out)
        return real_train(job)

    monkeypatch.setattr(demos.benchmark_cell, "run_train", counting_train)
    before = read_jsonl(out / "results.jsonl")
    assert demos.cli.main(["benchmark", "--out", str(out), "--jobs", "1", *QUICK_ARGS]) == 0
    assert trained == []  # every cell had finished
    assert read_jsonl(out / "results.jsonl") == before
    # A cell without its marker (interrupted) runs again; its training resumes at its last step.
    marker = next(out.glob("cells/*implicit*/rows.json"))
    marker.unlink()
    assert demos.cli.main(["benchmark", "--out", str(out), "--jobs", "1", *QUICK_ARGS]) == 0
    assert trained == [marker.parent / "run"] and marker.is_file()
    after = read_jsonl(out / "results.jsonl")
    keys = ("cell", "step", "episodes", "successes", "mean_final_distance")
    assert [{k: r[k] for k in keys} for r in after] == [{k: r[k] for k in keys} for r in before]


BAD_GRIDS = [
    (["--envs", "ibc/Nope-v0"], "--envs: must be a registered env id"),
    (
        ["--policies", "implicit", "ppo"],
        "--policies: must be one of implicit, explicit, implicit-langevin, "
        "implicit-autoregressive_dfo, implicit-perturbed, implicit-ranking, got 'ppo'",
    ),
    (
        ["--action-types", "sideways"],
        "--action-types: must be one of position, delta, got 'sideways'",
    ),
    (["--demos", "0"], "--demos: must be an integer >= 1, got 0"),
    (["--demos", "10", "10"], "--demos lists a value twice"),
    (["--horizons", "0"], "--horizons: must be an integer >= 1, got 0"),
    (["--horizons", "4", "4"], "--horizons lists a value twice"),
    (
        ["--steps", "300", "--keep-every", "250"],
        "--steps (300) must be a multiple of --keep-every (250)",
    ),
    (["--eval-seed", "5"], "may overlap the demo seeds"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_GRIDS)
def test_bad_grid_is_refused(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    assert demos.cli.main(["benchmark", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ibc-gym benchmark: error: ") and message in err[0]
    assert not out.exists()


def test_folder_of_another_grid_is_refused(
    quick_out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(quick_out)
    argv = ["benchmark", "--out", str(quick_out), "--eval-seed", "200000", *QUICK_ARGS]
    assert demos.cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"ibc-gym benchmark: error: {quick_out} holds another grid (differs in eval_seed); "
        f"pass --fresh to replace it or choose another --out"
    )
    assert snapshot(quick_out) == before


def test_foreign_folder_is_refused_even_with_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    for extra in ([], ["--fresh"]):
        assert demos.cli.main(["benchmark", "--out", str(tmp_path), *extra, *QUICK_ARGS]) == 2
        assert "holds no grid.json (not a benchmark folder)" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_fresh_replaces_another_grid(tmp_path: Path) -> None:
    old = BenchmarkConfig(out=tmp_path, quick=True).effective()
    prepare_out(old)
    (tmp_path / "results.jsonl").write_text("{}\n")
    new = BenchmarkConfig(out=tmp_path, quick=True, eval_seed=200_000, fresh=True).effective()
    prepare_out(new)
    assert json.loads((tmp_path / "grid.json").read_text())["eval_seed"] == 200_000
    assert not (tmp_path / "results.jsonl").exists()
    prepare_out(
        BenchmarkConfig(out=tmp_path, quick=True, eval_seed=200_000).effective()
    )  # same grid: kept


def test_action_type_reaches_collection() -> None:
    expected = {"action_type": "position"} if COLLECT_HAS_ACTION_TYPE else {}
    assert action_type_kwargs("position") == expected
    if not COLLECT_HAS_ACTION_TYPE:
        with pytest.raises(
            ValueError, match="action type 'delta' needs envs with an action_type kwarg"
        ):
            BenchmarkConfig(action_types=("position", "delta"))
