"""The names the README's Python examples import are public and importable as written."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_imports() -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from X import a, b`` in the README's python blocks."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module:
                found += [(node.module, alias.name) for alias in node.names]
    return found


def test_the_readme_has_python_examples() -> None:
    assert len(readme_imports()) >= 5


@pytest.mark.parametrize("module, name", readme_imports())
def test_every_name_the_readme_imports_exists(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"from {module} import {name}"


@pytest.mark.parametrize(
    "module, names",
    [
        (
            "agents",
            ["IBCAgent", "ExplicitBCAgent", "load_agent", "make_expert", "rollout", "DemoDataset"],
        ),
        ("envs", ["ENV_IDS"]),
        ("ebm_policy", ["ImplicitPolicy", "ImplicitPolicyConfig", "train", "load_policy"]),
    ],
)
def test_packages_export_what_users_reach_for(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in names if n not in getattr(mod, "__all__", ())]
    assert not missing, f"{module}.__all__ lacks {missing}"


def test_an_agent_makes_the_env_it_was_trained_for(tmp_path: Path) -> None:
    """A checkpoint trained at 24 px acts in ``agent.make_env()`` without passing its kwargs."""
    import numpy as np

    from agents import IBCAgent
    from demos.collect import CollectConfig, collect
    from demos.train import TrainJobConfig, run_train, tiny_policies
    from ebm_policy import TrainConfig

    data = collect(
        CollectConfig(env="ibc/ReachTarget-v0", episodes=2, image_size=24, out=tmp_path / "d.h5")
    )
    ckpt = run_train(
        TrainJobConfig(
            data=data,
            out=tmp_path / "run",
            policies=tiny_policies(),
            train=TrainConfig(
                steps=2, batch_size=4, log_interval=1, progress=False, energy_snapshots=0
            ),
        )
    )
    agent = IBCAgent.load(ckpt)
    env = agent.make_env(max_episode_steps=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (24, 24, 3)
    action = agent.select_action(obs[None])
    assert np.asarray(action).shape == (1, 2)
    env.close()


@pytest.mark.parametrize("kind", ["implicit", "explicit"])
def test_the_action_dimension_comes_from_the_bounds(kind: str) -> None:
    """The README's one-liner with the default config works for 3-D actions."""
    import numpy as np
    import torch

    from ebm_policy import (
        ExplicitPolicy,
        ExplicitPolicyConfig,
        ImplicitPolicy,
        ImplicitPolicyConfig,
    )

    low, high = -np.ones(3), np.ones(3)
    if kind == "implicit":
        policy = ImplicitPolicy(ImplicitPolicyConfig(), low, high, seed=0)
    else:
        policy = ExplicitPolicy(ExplicitPolicyConfig(), low, high, seed=0)
    assert policy.config.model.action_dim == 3
    images = torch.zeros(2, 72, 96, 3, dtype=torch.uint8)  # not square
    assert tuple(policy.select_action(images).shape) == (2, 3)
