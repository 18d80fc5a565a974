"""Coordinate-regression experiment: data generation and a tiny end-to-end run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from demos.args import add_dataclass_arguments, dataclass_from_namespace
from demos.coord_regression import (
    COMMANDS,
    GREEN,
    CoordRegressionConfig,
    centers_to_targets,
    make_split,
    render_blocks,
    run_coord_regression,
    sample_centers,
    target_bounds,
    targets_to_pixels,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("x, y", [(3, 3), (92, 3), (10, 80), (50, 20)])
def test_block_is_drawn_at_column_x_row_y(x: int, y: int) -> None:
    img = render_blocks(np.array([[x, y]]))[0]
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    green = (img == GREEN).all(-1)
    rows, cols = np.nonzero(green)
    assert green.sum() == 49
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (y - 3, y + 3, x - 3, x + 3)
    assert (img[~green] == 255).all()


def test_targets_scale_to_unit_range_and_back() -> None:
    centers = np.array([[0, 95], [95, 0], [47, 48]])
    t = centers_to_targets(centers)
    assert t.dtype == np.float32
    assert np.allclose(t[:2], [[-1, 1], [1, -1]])
    assert np.allclose(targets_to_pixels(t), centers)
    low, high = target_bounds()
    assert np.allclose(low, centers_to_targets(np.array([[3, 3]]))[0])
    assert np.allclose(high, -low)


def test_sampling_is_seeded_and_stays_inside() -> None:
    c1 = sample_centers(200, np.random.default_rng(0))
    c2 = sample_centers(200, np.random.default_rng(0))
    assert np.array_equal(c1, c2)
    assert c1.min() == 3 and c1.max() == 92  # every valid centre, no block clipped


def test_extrapolation_split_separates_the_halves() -> None:
    train, test = make_split("extrapolation", 50, 60, seed=1)
    assert train.centers[:, 0].max() <= 47 < test.centers[:, 0].min()
    std_train, std_test = make_split("standard", 10, 60, seed=1)
    _, std_test_30 = make_split("standard", 30, 60, seed=1)
    assert np.array_equal(std_test.centers, std_test_30.centers)  # same test set for every N
    item = std_train[0]
    assert item["image"].shape == (96, 96, 3) and item["action"].shape == (2,)


def test_quick_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = CoordRegressionConfig(quick=True, split="both", out=tmp_path, progress=False)
    result = run_coord_regression(cfg)
    rows = result["results"]
    assert {(r["split"], r["model"]) for r in rows} == {
        (s, m) for s in ("standard", "extrapolation") for m in ("implicit", "explicit")
    }
    for r in rows:
        assert 0 <= r["median_px"] <= r["max_px"] and 0 <= r["under_1px"] <= 1 and r["train_s"] > 0
    out = capsys.readouterr().out
    assert "### implicit" in out and "### explicit" in out and "| mean px |" in out
    assert json.loads((tmp_path / "results.json").read_text())["results"] == rows
    assert (tmp_path / "standard_n4_implicit" / "ckpt_last.pt").exists()
    assert (tmp_path / "standard_n4_implicit" / "energy_snapshots.npz").exists()


def test_command_options() -> None:
    (name, _, cls, run), = COMMANDS
    assert name == "coord-regression" and cls is CoordRegressionConfig and run is run_coord_regression
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, CoordRegressionConfig)
    cfg = dataclass_from_namespace(
        CoordRegressionConfig, parser.parse_args(["--train-sizes", "10", "--split", "both", "--quick"])
    )
    assert cfg.train_sizes == (10,) and cfg.split == "both" and cfg.quick
    with pytest.raises(ValueError, match="positive"):
        run_coord_regression(CoordRegressionConfig(train_sizes=(0,)))
