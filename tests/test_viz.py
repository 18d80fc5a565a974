"""The ``ibc-gym viz`` figures: each command writes a real, non-blank PNG of the figure's size;
the image/action geometry puts targets where the picture shows them; the inference figure draws
the populations of the optimizer it is given; the CLI wiring."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import demos.cli
import demos.viz.base
from demos.args import dataclass_from_namespace
from demos.viz import FIGURES
from demos.viz.base import ModelFigureConfig
from demos.viz.dfo import DfoFigConfig, build_dfo
from demos.viz.free_energy import decode, free_energy
from demos.viz.sources import block_observation, env_observation, load_source
from ebm_policy import (
    AutoregressiveDFOConfig,
    BackboneConfig,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    LangevinChainConfig,
    LangevinConfig,
    save_checkpoint,
)


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


@pytest.fixture(scope="module")
def implicit_ckpts(out_dir: Path) -> dict[str, Path]:
    """``quick``: the figures' quick model (InfoNCE + DFO 1,024 x 3; trained once, reused);
    ``autoregressive``: an untrained policy with prefix energies (autoregressive DFO 64 x 2)."""
    quick = load_source(ModelFigureConfig(out=out_dir, quick=True)).run_dir
    assert quick is not None
    tiny = EBMConfig(
        backbone=BackboneConfig(
            cnn=CNNConfig(channels=(8, 8), strides=(2, 1), pools=(1, 1), out_channels=4)
        )
    )
    config = ImplicitPolicyConfig.for_method(
        "autoregressive_dfo",
        model=tiny,
        optimizer=AutoregressiveDFOConfig(num_samples=64, iterations=2),
    )
    policy = ImplicitPolicy(config, [-0.5, -0.5], [0.5, 0.5], seed=0)
    meta = {
        "env_id": "ibc/ReachAnyTarget-v0",
        "env_kwargs": {"obs_type": "pixels", "image_size": 32},
        "image_shape": [32, 32, 3],
    }
    ar = save_checkpoint(out_dir / "autoregressive" / "ckpt_last.pt", policy, metadata=meta)
    return {"quick": quick / "ckpt_last.pt", "autoregressive": ar}


LANGEVIN = LangevinConfig(num_samples=32, chain=LangevinChainConfig(steps=12))


@pytest.mark.parametrize(
    "ckpt, optimizer, panels, titles, suptitle",
    [
        (  # a Langevin chain on a DFO-trained model: 13 populations, 5 of them shown evenly
            "quick",
            LANGEVIN,
            5,
            ["start", "after 3 steps", "after 6 steps", "after 9 steps", "after 12 steps (final)"],
            "Langevin MCMC inference, 32 chains x 12 steps",
        ),
        (
            "quick",
            DFOConfig(num_samples=64, iterations=3),
            6,
            ["start", "after 1 iteration", "after 2 iterations", "after 3 iterations (final)"],
            "DFO inference, 64 samples x 3 iterations",
        ),
        (  # the checkpoint's own: DFO 1,024 x 3, drawn as 256-sample subsets
            "quick",
            None,
            6,
            ["start", "after 1 iteration", "after 2 iterations", "after 3 iterations (final)"],
            "DFO inference, 1024 samples x 3 iterations (256 of 1024 samples drawn)",
        ),
        (
            "autoregressive",
            None,
            6,
            ["start", "after 1 pass", "after 2 passes (final)"],
            "autoregressive DFO inference, 64 samples x 2 passes",
        ),
    ],
)
def test_inference_figure_draws_the_optimizers_populations(
    implicit_ckpts: dict[str, Path],
    out_dir: Path,
    ckpt: str,
    optimizer: Any,
    panels: int,
    titles: list[str],
    suptitle: str,
) -> None:
    """Each top panel shows samples of the population its title names (the same search, rerun
    here with the same seed); the energy panel covers every population of the history."""
    cfg = DfoFigConfig(
        out=out_dir,
        quick=True,
        ckpt=implicit_ckpts[ckpt],
        optimizer=optimizer,
        panels=panels,
        seed=3,
    )
    fig = build_dfo(cfg)
    assert fig.get_suptitle().splitlines()[0] == f"Task 5: {suptitle}"

    src = load_source(cfg)
    used = optimizer or src.policy.config.optimizer
    _, hist = src.policy.select_action(  # type: ignore[misc]
        src.observation(cfg.env_seed).image[None],
        generator=torch.Generator().manual_seed(cfg.seed),
        optimizer=used,
        return_history=True,
    )
    pops = [p[0].numpy() for p in hist.samples]
    top = [ax for ax in fig.axes if ax.get_title().startswith(("start", "after"))]
    assert [ax.get_title().splitlines()[0] for ax in top] == titles
    low, high = src.action_box()
    for ax, title in zip(top, titles, strict=True):
        i = 0 if title == "start" else int(title.split()[1])
        (scatter,) = [c for c in ax.collections if c.get_gid() == f"population-{i}"]
        shown = np.asarray(scatter.get_offsets())
        assert len(shown) == min(cfg.points, used.num_samples)
        assert np.all((shown >= low - 1e-5) & (shown <= high + 1e-5))
        # every drawn point is a sample of population i
        dist = np.abs(shown[:, None, :] - pops[i][None, :, :]).max(-1).min(-1)
        assert dist.max() < 1e-5
    (energy_ax,) = [ax for ax in fig.axes if ax.get_title() == "energies of the populations"]
    minima = energy_ax.get_lines()[0].get_ydata()
    assert np.allclose(minima, [e[0].min().item() for e in hist.energies], atol=1e-5)


def test_inference_figure_refuses_an_optimizer_the_model_cannot_use(
    implicit_ckpts: dict[str, Path], out_dir: Path
) -> None:
    with pytest.raises(ValueError, match="autoregressive_dfo"):
        build_dfo(
            DfoFigConfig(
                out=out_dir,
                quick=True,
                ckpt=implicit_ckpts["quick"],
                optimizer=AutoregressiveDFOConfig(),
            )
        )


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


def test_dfo_command_takes_a_nested_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _viz_parser(monkeypatch)

    def parse(*argv: str) -> DfoFigConfig:
        ns = parser.parse_args(["viz", "dfo", *argv])
        return dataclass_from_namespace(ns._cfg_cls, ns, parser=ns._parser)

    assert parse().optimizer is None  # the checkpoint's
    cfg = parse(
        "--optimizer", "langevin", "--optimizer.steps", "50", "--optimizer.num-samples", "64"
    )
    assert cfg.optimizer == LangevinConfig(num_samples=64, chain=LangevinChainConfig(steps=50))
    assert parse("--optimizer", "dfo", "--optimizer.iterations", "5").optimizer == DFOConfig(
        iterations=5
    )
    for old in (
        ["--samples", "64"],
        ["--iterations", "2"],
    ):  # the optimizer's settings live under --optimizer.*
        with pytest.raises(SystemExit):
            parse(*old)


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
    payload["config"]["model"]["backbone"]["cnn"]["coord_conv"] = (
        True  # as if trained with other settings
    )
    torch.save(payload, ckpt_path)
    again = train_here(cfg, "explicit", 32)
    assert not again.policy.config.model.backbone.cnn.coord_conv  # retrained with today's settings
    saved = torch.load(ckpt_path, weights_only=False)["config"]
    assert saved["model"]["backbone"]["cnn"]["coord_conv"] is False
