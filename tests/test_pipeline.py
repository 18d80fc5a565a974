"""The main loop on tiny settings: collect -> train -> eval -> videos, and its error paths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import demos.evaluate as evaluate_mod
from agents.dataset import DatasetError, DemoDataset
from agents.learned import ExplicitBCAgent, IBCAgent, load_agent
from demos.collect import CollectConfig, collect
from demos.demo import DemoConfig, run_demo
from demos.evaluate import EvalConfig, evaluate, wilson_interval
from demos.train import TrainJobConfig, run_train, tiny_policies
from ebm_policy import (
    AutoregressiveDFOConfig,
    CheckpointError,
    DFOConfig,
    LangevinChainConfig,
    LangevinConfig,
    TrainConfig,
    load_checkpoint,
)

ENV = "ibc/ReachTarget-v0"
SIZE = 32
TINY = {"policies": tiny_policies(), "train": TrainConfig(steps=3, batch_size=4, progress=False)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    data = collect(
        CollectConfig(env=ENV, episodes=3, image_size=SIZE, out=root / "demos.h5", progress=False)
    )
    paths = {"data": data}
    for policy in ("implicit", "explicit"):
        paths[policy] = run_train(
            TrainJobConfig(data=data, policy=policy, out=root / policy, **TINY)
        )  # type: ignore[arg-type]
    return paths


def test_checkpoint_rebuilds_the_agent(runs: dict[str, Path]) -> None:
    imp, exp = load_agent(runs["implicit"]), load_agent(runs["explicit"])
    assert isinstance(imp, IBCAgent) and isinstance(exp, ExplicitBCAgent)
    assert imp.env_id == ENV and imp.image_shape == (SIZE, SIZE, 3)
    assert imp.train_seeds == [0, 1, 2]
    obs = np.zeros((5, SIZE, SIZE, 3), np.uint8)
    for agent in (imp, exp):
        actions = agent.select_action(obs)
        assert actions.shape == (5, 2) and actions.dtype == np.float32
        assert agent.select_action(obs[0]).shape == (2,)
    with pytest.raises(CheckpointError, match="holds an explicit policy"):
        IBCAgent.load(runs["explicit"])


def test_implicit_agent_is_deterministic_after_reset(runs: dict[str, Path]) -> None:
    agent = load_agent(runs["implicit"])
    obs = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    agent.reset()
    first = agent.select_action(obs)
    agent.reset()
    np.testing.assert_array_equal(agent.select_action(obs), first)


def test_wrong_image_size_is_named(runs: dict[str, Path]) -> None:
    agent = load_agent(runs["implicit"])
    with pytest.raises(ValueError, match=r"trained on \(32, 32, 3\)"):
        agent.select_action(np.zeros((1, 64, 64, 3), np.uint8))


def test_sb3_evaluate_policy_runs_the_agent(runs: dict[str, Path]) -> None:
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    agent = load_agent(runs["implicit"])
    venv = DummyVecEnv([lambda: Monitor(gym.make(ENV, image_size=SIZE))])
    mean_reward, _ = evaluate_policy(agent, venv, n_eval_episodes=2)
    assert np.isfinite(mean_reward) and mean_reward <= 0.0  # dense reward = -distance
    venv.close()


@pytest.mark.parametrize("policy", ["implicit", "explicit"])
def test_eval_writes_metrics_and_videos(runs: dict[str, Path], tmp_path: Path, policy: str) -> None:
    out = tmp_path / "eval"
    metrics = evaluate(
        EvalConfig(
            ckpt=runs[policy],
            episodes=3,
            num_envs=2,
            videos=2,
            render_size=64,
            out=out,
            progress=False,
            asynchronous=False,
        )
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["eval/episodes"] == 3 and saved["policy"] == policy
    assert saved["seeds"] == [100_000, 100_001, 100_002]
    assert 0.0 <= saved["eval/success_rate"] <= 1.0
    lo, hi = saved["eval/success_ci95"]
    assert lo <= saved["eval/success_rate"] <= hi
    assert saved["eval/policy_ms_per_step"] > 0
    videos = sorted(p.name for p in (out / "videos").iterdir())
    assert len(videos) == 2 and videos[0].startswith(f"ReachTarget-v0_{policy}_")
    assert "_ep000_seed100000" in videos[0]
    assert metrics["eval/success_rate"] == saved["eval/success_rate"]


def test_eval_refuses_training_seeds(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overlap 2 training-demo seeds"):
        evaluate(
            EvalConfig(ckpt=runs["implicit"], episodes=2, seed=1, out=tmp_path, progress=False)
        )


def test_eval_optimizer_is_chosen_at_load_and_recorded(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    agent = load_agent(runs["implicit"], optimizer=DFOConfig(num_samples=64, iterations=1))
    assert (agent.policy.optimizer.cfg.num_samples, agent.policy.optimizer.cfg.iterations) == (
        64,
        1,
    )  # what runs
    default_eval = runs["implicit"].parent / "eval" / "metrics.json"
    before = default_eval.read_bytes() if default_eval.exists() else None
    cfg = EvalConfig(
        ckpt=runs["implicit"],
        episodes=1,
        num_envs=1,
        videos=0,
        progress=False,
        optimizer=DFOConfig(num_samples=64, iterations=1, resampling="multinomial"),
    )
    metrics = evaluate(cfg)
    assert metrics["optimizer"] == {
        "kind": "dfo",
        "num_samples": 64,
        "iterations": 1,
        "noise_scale": 0.33,
        "noise_shrink": 0.5,
        "resampling": "multinomial",
    }
    own = runs["implicit"].parent / "eval_dfo-64x1-multinomial" / "metrics.json"
    assert json.loads(own.read_text())["optimizer"] == metrics["optimizer"]
    langevin = LangevinConfig(num_samples=8, chain=LangevinChainConfig(steps=3))
    metrics = evaluate(replace(cfg, optimizer=langevin))
    assert (
        metrics["optimizer"]["kind"] == "langevin" and metrics["optimizer"]["chain"]["steps"] == 3
    )
    assert (runs["implicit"].parent / "eval_langevin-8x3" / "metrics.json").exists()
    # the checkpoint's own evaluation (read by `demo` and `report`) is left alone
    assert (default_eval.read_bytes() if default_eval.exists() else None) == before
    with pytest.raises(
        CheckpointError, match="holds an explicit policy, which has no inference optimizer"
    ):
        evaluate(
            EvalConfig(
                ckpt=runs["explicit"],
                episodes=1,
                optimizer=DFOConfig(),
                out=tmp_path,
                progress=False,
            )
        )
    with pytest.raises(
        CheckpointError,
        match="optimizer 'autoregressive_dfo' needs a model trained with loss 'autoregressive'",
    ):
        evaluate(
            EvalConfig(
                ckpt=runs["implicit"],
                episodes=1,
                optimizer=AutoregressiveDFOConfig(),
                out=tmp_path,
                progress=False,
            )
        )


def test_eval_on_another_env_is_named(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="trained on 'ibc/ReachTarget-v0', not on 'ibc/ReachAnyTarget-v0'"
    ):
        evaluate(
            EvalConfig(
                ckpt=runs["implicit"], env="ibc/ReachAnyTarget-v0", out=tmp_path, progress=False
            )
        )


def test_train_on_another_envs_data_is_named(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError, match="recorded on ibc/ReachTarget-v0, not on ibc/ArmReach-v0"
    ):
        run_train(
            TrainJobConfig(data=runs["data"], env="ibc/ArmReach-v0", out=tmp_path / "x", **TINY)
        )  # type: ignore[arg-type]


def test_action_type_is_recorded_and_a_policy_refuses_the_other(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    data = collect(
        CollectConfig(
            env=ENV,
            episodes=2,
            image_size=SIZE,
            action_type="delta",
            out=tmp_path / "delta.h5",
            progress=False,
        )
    )
    dataset = DemoDataset(data)
    assert dataset.action_type == "delta" and DemoDataset(runs["data"]).action_type == "position"
    ckpt = run_train(TrainJobConfig(data=data, policy="explicit", out=tmp_path / "run", **TINY))
    agent = load_agent(ckpt)
    assert agent.action_type == "delta" and agent.env_kwargs["action_type"] == "delta"
    metrics = evaluate(EvalConfig(ckpt=ckpt, episodes=1, num_envs=1, videos=0, progress=False))
    assert metrics["eval/episodes"] == 1
    for path, other in ((ckpt, "position"), (runs["implicit"], "delta")):
        with pytest.raises(
            ValueError, match=f"action_type=.*but the env was made with action_type=\\['{other}'\\]"
        ):
            evaluate(
                EvalConfig(
                    ckpt=path,
                    episodes=1,
                    num_envs=1,
                    videos=0,
                    action_type=other,
                    out=tmp_path / "refused",
                    progress=False,
                )
            )
    assert not (tmp_path / "refused").exists()


def test_interrupted_eval_leaves_no_metrics(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_mod, "rollout", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            EvalConfig(
                ckpt=runs["implicit"], episodes=2, out=tmp_path, progress=False, asynchronous=False
            )
        )
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (5, 10, (0.2366, 0.7634)),
        (95, 100, (0.8882, 0.9785)),
    ],
)
def test_wilson_interval(k: int, n: int, expected: tuple[float, float]) -> None:
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    np.testing.assert_allclose((lo, hi), expected, atol=1e-4)


def test_demo_end_to_end(tmp_path: Path) -> None:
    models = tiny_policies()
    cnn = replace(
        models.backbone.cnn, coord_conv=True, center_input=False, conv_bias=True
    )  # the earlier settings
    cfg = DemoConfig(
        out=tmp_path / "out",
        envs=("ibc/ReachTarget-v0",),
        episodes=2,
        image_size=SIZE,
        eval_episodes=2,
        num_envs=1,
        videos=1,
        models=replace(models, backbone=replace(models.backbone, cnn=cnn)),
        train=TrainConfig(steps=2, batch_size=4, progress=False),
    )
    rows = run_demo(cfg)
    for policy in ("implicit", "explicit"):  # the shared backbone reaches both models
        ckpt = load_checkpoint(cfg.out / "runs" / "ReachTarget-v0" / policy / "ckpt_last.pt")
        cnn = ckpt["config"]["model"]["backbone"]["cnn"]
        assert (cnn["coord_conv"], cnn["center_input"], cnn["conv_bias"]) == (True, False, True)
        assert ckpt["step"] == 2
    assert [(r["env"], r["policy"]) for r in rows] == [(ENV, "implicit"), (ENV, "explicit")]
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert len(summary["rows"]) == 2
    assert "| ibc/ReachTarget-v0 | implicit |" in (cfg.out / "summary.md").read_text()
    assert any((cfg.out / "runs" / "ReachTarget-v0" / "implicit" / "eval" / "videos").iterdir())
    assert any((cfg.out / "videos" / "expert").iterdir())
    assert (cfg.out / "runs" / "ReachTarget-v0" / "explicit" / "report.html").stat().st_size > 1000
    # A re-run reuses the finished stages and gives the same table.
    again = run_demo(cfg)
    assert [r["success_rate"] for r in again] == [r["success_rate"] for r in rows]


def test_ppo_baseline_trains_saves_and_evaluates(tmp_path: Path) -> None:
    from agents.rl import PPOAgent
    from demos.rl import RLJobConfig, run_rl

    with pytest.raises(ValueError, match="at least 36"):
        run_rl(RLJobConfig(out=tmp_path / "small", image_size=SIZE))
    model = run_rl(RLJobConfig(out=tmp_path / "ppo", timesteps=256, image_size=40, num_envs=2))
    agent = load_agent(model, env_id=ENV)
    assert isinstance(agent, PPOAgent) and agent.image_size == 40
    assert agent.select_action(np.zeros((3, 40, 40, 3), np.uint8)).shape == (3, 2)
    metrics = evaluate(
        EvalConfig(ckpt=model, episodes=2, num_envs=1, videos=0, out=tmp_path / "e", progress=False)
    )
    assert metrics["policy"] == "ppo" and metrics["eval/episodes"] == 2
    with pytest.raises(ValueError, match="not on 'ibc/ArmReach-v0'"):
        load_agent(model, env_id="ibc/ArmReach-v0")
