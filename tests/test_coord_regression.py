"""Coordinate-regression experiment: data generation and a tiny end-to-end run."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from demos.args import add_dataclass_arguments, dataclass_from_namespace
from demos.coord_regression import (
    COMMANDS,
    COORD_REGRESSION_EXPLICIT,
    COORD_REGRESSION_IMPLICIT,
    COORD_REGRESSION_TRAIN,
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
from ebm_policy import DFOConfig, LangevinConfig

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
    cfg = CoordRegressionConfig(
        quick=True,
        split="both",
        out=tmp_path,
        train=replace(COORD_REGRESSION_TRAIN, progress=False),
    )
    result = run_coord_regression(cfg)
    rows = result["results"]
    assert {(r["split"], r["model"]) for r in rows} == {
        (s, m) for s in ("standard", "extrapolation") for m in ("implicit", "explicit")
    }
    for r in rows:
        assert 0 <= r["median_px"] <= r["max_px"] and 0 <= r["under_1px"] <= 1 and r["train_s"] > 0
    out = capsys.readouterr().out
    assert "### implicit" in out and "### explicit" in out and "| mean px |" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == rows
    # the quick settings as run, nested as on the command line
    assert saved["config"]["implicit"]["optimizer"] == {
        **saved["config"]["implicit"]["optimizer"],
        "kind": "dfo",
        "num_samples": 64,
        "iterations": 2,
    }
    assert (saved["config"]["train"]["steps"], saved["config"]["train"]["batch_size"]) == (8, 4)
    assert (tmp_path / "standard_n4_implicit" / "ckpt_last.pt").exists()
    assert (tmp_path / "standard_n4_implicit" / "energy_snapshots.npz").exists()


def test_presets_are_the_experiments_settings() -> None:
    """The settings the README's measurements were taken with."""
    imp, exp, tr = COORD_REGRESSION_IMPLICIT, COORD_REGRESSION_EXPLICIT, COORD_REGRESSION_TRAIN
    assert imp.model.backbone == exp.model.backbone  # one backbone for both
    cnn = imp.model.backbone.cnn
    assert (cnn.channels, cnn.strides, cnn.out_channels) == ((16, 32, 32), (2, 1, 1), 16)
    assert (cnn.coord_conv, cnn.center_input, cnn.conv_bias) == (False, True, False)
    assert imp.model.backbone.softargmax.temperature == 0.1
    assert imp.loss.num_counter_examples == 128
    assert imp.optimizer == DFOConfig(num_samples=2048, iterations=5, resampling="stratified")
    assert (imp.optim.lr, imp.optim.scheduler, imp.optim.weight_decay) == (1e-3, "cosine", 0.0)
    assert (exp.model.dropout, exp.optim.weight_decay, exp.optim.scheduler) == (0.1, 1e-4, "cosine")
    assert (tr.steps, tr.batch_size, tr.seed, tr.num_threads) == (2000, 8, 0, None)


def _parse(*argv: str) -> CoordRegressionConfig:
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, CoordRegressionConfig)
    return dataclass_from_namespace(CoordRegressionConfig, parser.parse_args(argv), parser=parser)


def test_command_options() -> None:
    ((name, _, cls, run),) = COMMANDS
    assert (
        name == "coord-regression" and cls is CoordRegressionConfig and run is run_coord_regression
    )
    cfg = _parse()
    assert (cfg.implicit, cfg.explicit, cfg.train) == (
        COORD_REGRESSION_IMPLICIT,
        COORD_REGRESSION_EXPLICIT,
        COORD_REGRESSION_TRAIN,
    )
    cfg = _parse("--train-sizes", "10", "--split", "both", "--quick")
    assert cfg.train_sizes == (10,) and cfg.split == "both" and cfg.quick
    cfg = _parse(
        "--implicit.optimizer.num-samples",
        "1024",
        "--batch-size",
        "4",
        "--seed",
        "2",
        "--implicit.model.cnn.strides",
        "1",
        "1",
        "1",
        "--explicit.model.dropout",
        "0.2",
        "--implicit.model.softargmax.temperature",
        "1.0",
        "--explicit.optim.lr",
        "3e-4",
    )
    assert cfg.implicit.optimizer == replace(COORD_REGRESSION_IMPLICIT.optimizer, num_samples=1024)
    assert cfg.implicit.model.backbone.cnn == replace(
        COORD_REGRESSION_IMPLICIT.model.backbone.cnn, strides=(1, 1, 1)
    )
    assert cfg.implicit.model.backbone.softargmax.temperature == 1.0
    assert (cfg.explicit.model.dropout, cfg.explicit.optim.lr) == (0.2, 3e-4)
    assert (
        cfg.explicit.model.backbone == COORD_REGRESSION_EXPLICIT.model.backbone
    )  # only what was given
    assert cfg.train == replace(COORD_REGRESSION_TRAIN, batch_size=4, seed=2)
    langevin = _parse(
        "--implicit.optimizer", "langevin", "--implicit.optimizer.steps", "30"
    ).implicit.optimizer
    assert isinstance(langevin, LangevinConfig) and langevin.chain.steps == 30
    for old in (["--dfo-samples", "1024"], ["--temperature", "1.0"], ["--threads", "2"]):
        with pytest.raises(
            SystemExit
        ):  # the model's settings live under --implicit.* / --explicit.*
            _parse(*old)
    with pytest.raises(ValueError, match="--train-sizes"):
        CoordRegressionConfig(train_sizes=(0,))
