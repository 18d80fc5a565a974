"""The ``ibc-gym viz`` figures: each command writes a real, non-blank PNG of the figure's size;
the image/action geometry puts targets where the picture shows them; the CLI wiring."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest

import demos.cli
import demos.viz.base
from demos.viz import FIGURES
from demos.viz.free_energy import decode, free_energy
from demos.viz.sources import block_observation, env_observation


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output folder for all figures, so the quick model is trained once and reused."""
    return tmp_path_factory.mktemp("viz")


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_writes_png(name: str, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cfg_cls, run = FIGURES[name]
    sizes: list[Any] = []
    real_save = demos.viz.base.save_figure

    def recording_save(fig: Any, path: Any, dpi: int = 100) -> Path:
        sizes.append(fig.get_size_inches() * dpi)
        return real_save(fig, path, dpi=dpi)

    monkeypatch.setattr(demos.viz.base, "save_figure", recording_save)
    path = run(cfg_cls(out=out_dir, quick=True, dpi=40))
    assert path == out_dir / f"{name}.png" and path.is_file()
    assert not list(out_dir.glob(f".{name}.*"))  # no temporary file left behind
    img = iio.imread(path)
    w, h = np.round(sizes[0]).astype(int)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[:2] == (h, w)
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 20, "figure looks blank"
    assert len(np.unique(rgb, axis=0)) > 50, "figure has too few colours"


def _red_centroid(image: np.ndarray) -> tuple[float, float]:
    r, g, b = (image[..., i].astype(int) for i in range(3))
    rows, cols = np.nonzero((r > 150) & (g < 100) & (b < 100))
    return float(rows.mean()), float(cols.mean())


def _pixel_to_action(
    extent: tuple[float, float, float, float], shape: tuple[int, ...], row: float, col: float
) -> np.ndarray:
    left, right, bottom, top = extent
    h, w = shape[:2]
    return np.array(
        [left + (col + 0.5) / w * (right - left), top + (row + 0.5) / h * (bottom - top)]
    )


def test_env_frame_puts_the_target_under_its_marker() -> None:
    obs = env_observation("ibc/ReachTarget-v0", seed=3, image_size=96)
    row, col = _red_centroid(obs.image)
    at = _pixel_to_action(obs.frame.extent, obs.image.shape, row, col)
    assert np.allclose(at, obs.goals[0], atol=0.05)
    assert not obs.frame.y_down


def test_block_frame_puts_the_target_under_the_block() -> None:
    obs = block_observation(seed=5, resolution=48)
    r, g, b = (obs.image[..., i].astype(int) for i in range(3))
    rows, cols = np.nonzero((g > 200) & (r < 50) & (b < 50))
    at = _pixel_to_action(obs.frame.extent, obs.image.shape, rows.mean(), cols.mean())
    assert np.allclose(at, obs.goals[0], atol=1e-3)
    assert obs.frame.y_down


def test_free_energy_is_the_distance_to_the_ellipse_and_its_gradient() -> None:
    z = np.array([0.3, 2.0, 4.0])
    on = decode(z, 2.0, 1.5)
    f, _, _ = free_energy(on, 2.0, 1.5)
    assert np.all(f < 1e-4)
    y = np.array([[0.4, -0.3], [2.5, 1.0]])
    f, _, grad = free_energy(y, 2.0, 1.5, n_z=20000)
    eps = 1e-4
    for k in range(2):
        d = np.zeros(2)
        d[k] = eps
        fp, _, _ = free_energy(y + d, 2.0, 1.5, n_z=20000)
        fm, _, _ = free_energy(y - d, 2.0, 1.5, n_z=20000)
        assert np.allclose((fp - fm) / (2 * eps), grad[:, k], atol=2e-2)


def _viz_parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    monkeypatch.setattr(demos.cli, "COMMAND_MODULES", ("demos.viz",))  # independent of other jobs
    return demos.cli.build_parser()


def test_viz_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _viz_parser(monkeypatch)
    for argv in (["viz", "--help"], *(["viz", name, "--help"] for name in FIGURES)):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in FIGURES)
    assert "--out" in text and "--ckpt" in text and "--env-seed" in text


def test_viz_cli_runs_a_figure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demos.cli, "COMMAND_MODULES", ("demos.viz",))
    assert (
        demos.cli.main(["viz", "free-energy", "--out", str(tmp_path), "--quick", "--dpi", "30"])
        == 0
    )
    assert (tmp_path / "free-energy.png").is_file()
    assert str(tmp_path / "free-energy.png") in capsys.readouterr().out


def test_missing_snapshots_is_a_clear_error(tmp_path: Path) -> None:
    from demos.viz.infonce import InfoNCEFigConfig, run_infonce

    with pytest.raises(FileNotFoundError, match="energy_snapshots"):
        run_infonce(InfoNCEFigConfig(out=tmp_path, ckpt=tmp_path / "run" / "ckpt_last.pt"))


def test_coord_model_cache_is_reused_only_for_the_same_model(tmp_path: Path) -> None:
    """A cached model is reused when its config and steps match; one trained with other settings
    (here: an older CNN config) is retrained, not silently reused."""
    import torch

    from demos.viz.coord_pipeline import CoordRegFigConfig, train_here

    cfg = CoordRegFigConfig(out=tmp_path, quick=True)
    first = train_here(cfg, "explicit", 32)
    ckpt_path = first.run_dir / "ckpt_last.pt"
    stamp = ckpt_path.stat().st_mtime_ns
    assert train_here(cfg, "explicit", 32).run_dir == first.run_dir
    assert ckpt_path.stat().st_mtime_ns == stamp  # reused, not retrained
    payload = torch.load(ckpt_path, weights_only=False)
    payload["config"]["model"]["cnn"]["coord_conv"] = True  # as if trained with other settings
    torch.save(payload, ckpt_path)
    again = train_here(cfg, "explicit", 32)
    assert not again.policy.config.model.cnn.coord_conv  # retrained with today's settings
    assert torch.load(ckpt_path, weights_only=False)["config"]["model"]["cnn"]["coord_conv"] is False
