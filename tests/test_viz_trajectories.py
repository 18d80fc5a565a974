"""``ibc-gym viz trajectories``: each panel shows its episode's real path over its scene, one
block per checkpoint; the titles count the successes; bad checkpoints are named in one line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from matplotlib.figure import Figure

import demos.cli
import demos.viz.base
from agents.learned import load_agent
from agents.rollout import make_vector_env, rollout
from demos.args import add_dataclass_arguments, dataclass_from_namespace
from demos.collect import CollectConfig, collect
from demos.train import TrainJobConfig, run_train, tiny_policies
from demos.viz.bc_pair import TINY_BATCH_SIZE
from demos.viz.trajectories import TrajectoriesConfig, run_trajectories
from ebm_policy import TrainConfig
from envs.physics import VIEW_HALF_EXTENT

ENV = "ibc/ReachAnyTarget-v0"
OTHER_ENV = "ibc/ReachTarget-v0"
SIZE = 32
EPISODES, NUM_ENVS = 5, 2


def _train(root: Path, env: str, policy: str) -> Path:
    data = root / f"{env.split('/')[-1]}.h5"
    if not data.exists():
        collect(CollectConfig(env=env, episodes=3, image_size=SIZE, out=data, progress=False))
    cfg = TrainJobConfig(
        data=data,
        policy=policy,
        out=root / f"{env.split('/')[-1]}-{policy}",  # type: ignore[arg-type]
        policies=tiny_policies(),
        train=TrainConfig(steps=3, batch_size=TINY_BATCH_SIZE, progress=False),
    )
    return run_train(cfg)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trajectories")
    return {
        "implicit": _train(root, ENV, "implicit"),
        "explicit": _train(root, ENV, "explicit"),
        "other_env": _train(root, OTHER_ENV, "explicit"),
    }


@pytest.fixture(scope="module")
def shown(ckpts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Figure, Path]:
    """The figure of the implicit and the explicit checkpoint, as drawn before saving."""
    out = tmp_path_factory.mktemp("fig")
    figures: list[Figure] = []
    real_save = demos.viz.base.save_figure

    def keep(fig: Figure, path: Any, dpi: int = 100) -> Path:
        figures.append(fig)
        return real_save(fig, path, dpi=dpi)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demos.viz.base, "save_figure", keep)
        path = run_trajectories(
            TrajectoriesConfig(
                ckpt=(ckpts["implicit"], ckpts["explicit"]),
                episodes=EPISODES,
                num_envs=NUM_ENVS,
                render_size=48,
                out=out,
                dpi=40,
            )
        )
    return figures[0], path


def _rollout(ckpt: Path, seeds: list[int]) -> list[Any]:
    """The same episodes, run here independently of the figure code."""
    agent = load_agent(ckpt)
    env = make_vector_env(agent.env_id, NUM_ENVS, **agent.env_kwargs)
    try:
        return rollout(env, agent, seeds, keep_observations=False, keep_infos=True)
    finally:
        env.close()


def _start(seed: int) -> np.ndarray:
    env = gym.make(ENV, image_size=SIZE)
    try:
        return np.asarray(env.reset(seed=seed)[1]["agent_pos"])
    finally:
        env.close()


def _line(ax: Any, gid: str) -> Any:
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    return line


def test_panels_show_each_rollout_over_its_scene(
    shown: tuple[Figure, Path], ckpts: dict[str, Path]
) -> None:
    fig, path = shown
    assert path.is_file() and path.name == "trajectories.png"
    blocks = fig.subfigs
    assert len(blocks) == 2  # one block per checkpoint, side by side
    assert sum(len(b.axes) for b in blocks) == EPISODES * 2  # one panel per episode
    seeds = list(range(100_000, 100_000 + EPISODES))
    h = VIEW_HALF_EXTENT
    for block, policy in zip(blocks, ("implicit", "explicit"), strict=True):
        episodes = _rollout(ckpts[policy], seeds)
        title = block.get_suptitle()
        successes = sum(ep.success for ep in episodes)
        assert title.startswith(f"{policy}: {successes}/{EPISODES} successes")
        for ax, ep in zip(block.axes, episodes, strict=True):
            (image,) = ax.get_images()
            assert tuple(image.get_extent()) == (-h, h, -h, h)  # the path overlays the frame
            assert image.get_array().shape == (48, 48, 3)
            steps = np.stack([info["agent_pos"] for info in ep.infos])
            drawn = _line(ax, "path").get_xydata()
            np.testing.assert_allclose(drawn[1:], steps, atol=1e-6)
            np.testing.assert_allclose(drawn[0], _start(ep.seed), atol=1e-6)
            np.testing.assert_allclose(_line(ax, "start").get_xydata()[0], drawn[0])
            end = _line(ax, "end")
            np.testing.assert_allclose(end.get_xydata()[0], steps[-1], atol=1e-6)
            assert end.get_markerfacecolor() == ("limegreen" if ep.success else "red")
            outcome = "success" if ep.success else "failure"
            assert ax.get_title() == f"seed {ep.seed}: {outcome}"


def test_panel_frame_is_the_scene_at_reset(shown: tuple[Figure, Path]) -> None:
    """The panel's picture is the env rendered after a reset with the panel's seed: the red target
    markers sit at the info's targets when read back through the extent."""
    fig, _ = shown
    ax = fig.subfigs[0].axes[0]
    seed = int(re.match(r"seed (\d+)", ax.get_title()).group(1))  # type: ignore[union-attr]
    frame = np.asarray(ax.get_images()[0].get_array())
    env = gym.make(ENV, render_mode="rgb_array", render_size=48)
    try:
        _, info = env.reset(seed=seed)
        np.testing.assert_array_equal(frame, env.render())
    finally:
        env.close()
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    rows, cols = np.nonzero((r > 150) & (g < 100) & (b < 100))
    left, right, bottom, top = ax.get_images()[0].get_extent()
    xs = left + (cols + 0.5) / frame.shape[1] * (right - left)
    ys = top + (rows + 0.5) / frame.shape[0] * (bottom - top)
    for target in info["targets"]:
        near = np.hypot(xs - target[0], ys - target[1]) < 0.15
        assert near.sum() > 3  # red pixels around each target


def test_cli_takes_repeated_or_listed_checkpoints(
    ckpts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, TrajectoriesConfig)
    a, b = str(ckpts["implicit"]), str(ckpts["explicit"])
    listed = dataclass_from_namespace(TrajectoriesConfig, p.parse_args(["--ckpt", a, b]))
    repeated = dataclass_from_namespace(
        TrajectoriesConfig, p.parse_args(["--ckpt", a, "--ckpt", b])
    )
    assert listed.ckpt == repeated.ckpt == (Path(a), Path(b))
    monkeypatch.setattr(demos.cli, "COMMAND_MODULES", ("demos.viz",))
    argv = [
        "viz",
        "trajectories",
        "--ckpt",
        a,
        "--ckpt",
        b,
        "--episodes",
        "2",
        "--out",
        str(tmp_path),
        "--dpi",
        "30",
        "--render-size",
        "32",
    ]
    assert demos.cli.main(argv) == 0
    assert (tmp_path / "trajectories.png").is_file()


@pytest.mark.parametrize(
    ("which", "options", "error", "message"),
    [
        (("implicit", "missing"), {}, FileNotFoundError, r"missing\.pt: no such checkpoint file"),
        (
            ("implicit", "other_env"),
            {},
            ValueError,
            r"checkpoints of different envs: .* is from ibc/ReachAnyTarget-v0, .* from ibc/ReachTarget-v0",
        ),
        (
            ("other_env",),
            {"env": ENV},
            ValueError,
            "trained on 'ibc/ReachTarget-v0', not on 'ibc/ReachAnyTarget-v0'",
        ),
        (
            ("implicit",),
            {"eval_seed": 1},
            ValueError,
            "evaluation seeds overlap 2 training-demo seeds",
        ),
        (("implicit",), {"episodes": 0}, ValueError, "--episodes must be at least 1, got 0"),
        (("implicit",), {"columns": 0}, ValueError, "--columns must be at least 1, got 0"),
    ],
)
def test_bad_input_is_one_clear_line(
    ckpts: dict[str, Path],
    tmp_path: Path,
    which: tuple[str, ...],
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    paths = tuple(ckpts.get(w, tmp_path / f"{w}.pt") for w in which)
    cfg = TrajectoriesConfig(ckpt=paths, out=tmp_path / "fig", **options)
    with pytest.raises(error, match=message) as e:
        run_trajectories(cfg)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "fig" / "trajectories.png").exists()
