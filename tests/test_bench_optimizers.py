"""``ibc-gym bench optimizers``: its N-D task has the stated known answer, and a tiny grid runs
every method end to end and reports what it measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from demos.bench_optimizers import (
    BLOCK,
    COLORS,
    METHODS,
    BenchOptimizersConfig,
    make_blocks,
    run_bench_optimizers,
)
from demos.cli import main
from ebm_policy import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("blocks", [1, 4, 8])
def test_targets_are_the_block_centres_in_colour_order(blocks: int) -> None:
    size = 48
    images, targets = make_blocks(20, blocks, size, np.random.default_rng(0))
    assert images.shape == (20, size, size, 3) and targets.shape == (20, 2 * blocks)
    assert targets.min() >= -1 and targets.max() <= 1
    lo, hi = BLOCK // 2, size - 1 - BLOCK // 2
    for img, t in zip(images, targets, strict=True):
        for i in range(blocks):
            mask = (img == COLORS[i]).all(-1)
            assert mask.sum() == BLOCK * BLOCK  # whole, not overlapped
            rows, cols = np.nonzero(mask)
            centre = np.array([cols.mean(), rows.mean()])
            assert np.allclose((centre - lo) / (hi - lo) * 2 - 1, t[2 * i : 2 * i + 2], atol=1e-6)


def test_tiny_grid_runs_every_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = BenchOptimizersConfig(
        out=tmp_path,
        dims=(2, 4),
        image_size=24,
        train_images=8,
        test_images=4,
        latency_repeats=3,
        jobs=1,
        train=TrainConfig(
            steps=2, batch_size=4, progress=False, energy_snapshots=0, tensorboard=False
        ),
    )
    rows = run_bench_optimizers(cfg)
    assert sorted((r["method"], r["dim"]) for r in rows) == sorted(
        (m, n) for m in METHODS for n in (2, 4)
    )
    for r in rows:
        assert r["optimizer"]["kind"] == r["method"] and 0 <= r["success_rate"] <= 1
        assert r["infer_ms_median"] > 0 and r["mean_block_error_px"] >= 0
    saved = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(saved) == 6
    table = (tmp_path / "summary.md").read_text()
    assert "| 4 | autoregressive_dfo |" in table and "every coordinate within 2 px" in table
    # A re-run reuses every finished row.
    capsys.readouterr()
    assert len(run_bench_optimizers(cfg)) == 6
    assert "0 runs to go (6 done)" in capsys.readouterr().out


def test_odd_dimensions_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "optimizers", "--dims", "3"]) == 2
    assert "--dims must be even (two coordinates per block), got [3]" in capsys.readouterr().err
