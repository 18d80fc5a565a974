"""``ibc-gym benchmark``: implicit vs explicit BC over envs, training seeds and numbers of demos.

For each env (x action type) the demos are collected once (the largest number; smaller datasets
are its first N episodes, on seeds disjoint from the evaluation seeds). Every cell (env x policy
x demos x action type x observation type x training seed) trains with a checkpoint kept every ``--keep-every``
steps; the last ``--eval-last`` kept checkpoints are evaluated on ``--eval-episodes`` held-out
seeds and the earlier ones on the first ``--early-eval-episodes`` of them, through ``rollout()``.

The results folder (``--out``)::

    grid.json          the grid's settings; a folder holding another grid is refused
    data/              the demo datasets
    cells/<cell>/      run/ (training, kept checkpoints), rows.json (written when the cell is done)
    results.jsonl      one row per cell and evaluated checkpoint, with every setting
    summary.md         success mean/std over seeds, pooled Wilson interval, spreads, ms/step
    stability.png, data_efficiency.png

A re-run skips finished cells, so an interrupted run loses at most the cells in progress (and
their training resumes from its last checkpoint). Cells run in ``--jobs`` processes.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from typing import Any

from tqdm.auto import tqdm

from demos.benchmark_cell import prepare_datasets, read_rows, run_cell
from demos.benchmark_config import DEFAULT_ENVS, BenchmarkConfig, Cell
from demos.benchmark_plots import write_plots
from demos.benchmark_summary import format_summary
from ebm_policy.fileio import write_text_atomic

__all__ = ["DEFAULT_ENVS", "BenchmarkConfig", "prepare_out", "run_benchmark", "write_results"]


def prepare_out(cfg: BenchmarkConfig) -> None:
    """Check ``cfg.out`` before anything is written, then record the grid in ``grid.json``.

    Raises ``ValueError`` for a non-empty folder without ``grid.json`` (not a benchmark folder;
    even ``--fresh`` does not delete it) or one holding another grid (unless ``--fresh``).
    """
    grid_path = cfg.out / "grid.json"
    grid = cfg.grid_dict()
    if cfg.out.exists() and not cfg.out.is_dir():
        raise ValueError(f"--out {cfg.out} is a file, not a results folder")
    if cfg.out.exists() and any(cfg.out.iterdir()):
        if not grid_path.exists():
            raise ValueError(
                f"{cfg.out} is not empty and holds no grid.json (not a benchmark folder); "
                f"choose another --out"
            )
        old = json.loads(grid_path.read_text())
        if old != grid and not cfg.fresh:
            differ = sorted(k for k in old.keys() | grid.keys() if old.get(k) != grid.get(k))
            raise ValueError(
                f"{cfg.out} holds another grid (differs in {', '.join(differ)}); "
                f"pass --fresh to replace it or choose another --out"
            )
        if cfg.fresh:
            shutil.rmtree(cfg.out)
    if not grid_path.exists():
        write_text_atomic(grid_path, json.dumps(grid, indent=2) + "\n")


def write_results(cfg: BenchmarkConfig) -> list[dict[str, Any]]:
    """Rewrite ``results.jsonl`` atomically from the finished cells (in grid order)."""
    rows = [r for cell in cfg.cells() for r in read_rows(cfg, cell) or []]
    write_text_atomic(cfg.out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


_interrupted = False  # set in a worker process once Ctrl-C has reached it


def _worker_run_cell(cfg: BenchmarkConfig, cell: Cell) -> list[dict[str, Any]]:
    """``run_cell`` in a pool process; after a Ctrl-C the calls already queued to this process
    return at once instead of starting their cell."""
    global _interrupted
    if _interrupted:
        raise KeyboardInterrupt
    try:
        return run_cell(cfg, cell)
    except KeyboardInterrupt:
        _interrupted = True
        raise


def _run_cells(cfg: BenchmarkConfig, todo: list[Cell], bar: tqdm) -> None:
    """Run ``todo``: in this process with one job, else in ``--jobs`` spawned processes."""

    def finished() -> None:
        bar.update(1)
        write_results(cfg)

    if cfg.jobs == 1 or len(todo) <= 1:
        for cell in todo:
            run_cell(cfg, cell)
            finished()
        return
    # Longest first: implicit cells (DFO at evaluation) before explicit ones.
    todo = sorted(todo, key=lambda c: not c.policy.startswith("implicit"))
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch/pybullet state
    pool = ProcessPoolExecutor(max_workers=min(cfg.jobs, len(todo)), mp_context=ctx)
    try:
        pending: set[Future[Any]] = {pool.submit(_worker_run_cell, cfg, cell) for cell in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                fut.result()  # re-raises a cell's error
                finished()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_benchmark(cfg: BenchmarkConfig) -> list[dict[str, Any]]:
    """Run the grid (``--quick``: the tiny one); returns the results rows."""
    cfg = cfg.effective()
    prepare_out(cfg)
    t0 = time.perf_counter()
    for env in cfg.envs:
        for action_type in cfg.action_types:
            for obs_type in cfg.obs_types:
                prepare_datasets(cfg, env, action_type, obs_type)
    cells = cfg.cells()
    todo = [c for c in cells if read_rows(cfg, c) is None]
    print(
        f"benchmark: {len(cells)} cells ({len(cells) - len(todo)} already done), "
        f"{cfg.jobs} job(s) -> {cfg.out}"
    )
    bar = tqdm(
        total=len(cells),
        initial=len(cells) - len(todo),
        desc="benchmark",
        unit="cell",
        disable=not cfg.progress,
    )
    try:
        _run_cells(cfg, todo, bar)
    finally:
        bar.close()
    rows = write_results(cfg)
    summary = format_summary(rows, cfg.eval_last, cfg.command_line())
    write_text_atomic(cfg.out / "summary.md", summary)
    write_plots(rows, cfg.out, cfg.eval_last)
    print(summary)
    print(
        f"done in {time.perf_counter() - t0:.0f} s: {cfg.out / 'results.jsonl'}, summary.md, "
        f"stability.png, data_efficiency.png"
    )
    return rows


COMMANDS = [
    (
        "benchmark",
        "Compare policies over envs, training seeds, numbers of demos and checkpoints.",
        BenchmarkConfig,
        run_benchmark,
    )
]
