"""The names the README's Python examples import are public and importable as written."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import numpy as np
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


def toy_dataset(n: int = 16, states: bool = False) -> Any:
    """``n`` non-square 40x56 frames with 3-D actions (and 4-D states), through public names."""
    from ebm_policy import ArrayDataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 40, 56, 3), dtype=np.uint8)
    actions = rng.uniform([-1.0, 0.0, 10.0], [1.0, 5.0, 20.0], size=(n, 3)).astype(np.float32)
    extra = {"states": rng.normal(size=(n, 4))} if states else {}
    return ArrayDataset(actions, images=images, **extra)


def tiny_config(kind: str) -> Any:
    from ebm_policy import (
        BackboneConfig,
        CNNConfig,
        DFOConfig,
        EBMConfig,
        ExplicitConfig,
        ExplicitPolicyConfig,
        ImplicitPolicyConfig,
        InfoNCEConfig,
    )

    backbone = BackboneConfig(
        cnn=CNNConfig(channels=(8,), strides=(2,), pools=(1,), out_channels=4)
    )
    if kind == "explicit":
        return ExplicitPolicyConfig(model=ExplicitConfig(backbone=backbone, hidden_dims=(16,)))
    return ImplicitPolicyConfig(
        model=EBMConfig(backbone=backbone, hidden_dims=(16,)),
        loss=InfoNCEConfig(num_counter_examples=4),
        optimizer=DFOConfig(num_samples=32, iterations=2),
    )


@pytest.mark.parametrize("states", [False, True], ids=["image", "image_state"])
@pytest.mark.parametrize("kind", ["implicit", "explicit"])
def test_a_policy_trains_and_acts_on_anyones_arrays(
    kind: str, states: bool, tmp_path: Path
) -> None:
    """Non-square images, 3-D actions: ``for_dataset``, ``train``, ``load_policy`` and
    ``select_action`` on one frame and on a batch, numpy in and out, through public names."""
    import torch

    from ebm_policy import ExplicitPolicy, ImplicitPolicy, TrainConfig, load_policy, train

    data = toy_dataset(states=states)
    cls = ImplicitPolicy if kind == "implicit" else ExplicitPolicy
    policy = cls.for_dataset(data, tiny_config(kind), seed=0)
    assert (policy.inputs, policy.state_dim) == (data.inputs, data.state_dim)
    assert policy.config.model.action_dim == 3
    cfg = TrainConfig(steps=2, batch_size=4, progress=False, energy_snapshots=0, tensorboard=False)
    train(policy, data, cfg, tmp_path / "run")
    loaded = load_policy(tmp_path / "run" / "ckpt_last.pt")
    assert type(loaded) is cls

    def observe(i: Any) -> Any:
        return {"image": data.images[i], "state": data.states[i]} if states else data.images[i]

    one = loaded.select_action(observe(0), torch.Generator().manual_seed(1))
    batch = loaded.select_action(observe(slice(0, 5)), torch.Generator().manual_seed(1))
    assert isinstance(one, np.ndarray) and one.shape == (3,)
    assert isinstance(batch, np.ndarray) and batch.shape == (5, 3)
    low, high = data.actions.min(axis=0), data.actions.max(axis=0)
    pad = 0.05 * (high - low) + 1e-5
    assert ((batch >= low - pad) & (batch <= high + pad)).all(), "actions in the data's units"
    again = policy.select_action(observe(slice(0, 5)), torch.Generator().manual_seed(1))
    np.testing.assert_allclose(again, batch, rtol=1e-5, atol=1e-6)  # the checkpoint round trip


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"actions": np.zeros((4, 3))}, "needs images=, states= or both"),
        ({"actions": np.zeros(4), "states": np.zeros((4, 2))}, r"shape \(N, D\)"),
        ({"actions": np.full((4, 3), np.nan), "states": np.zeros((4, 2))}, "non-finite"),
        ({"actions": np.zeros((4, 3)), "states": np.zeros((5, 2))}, "states has 5 rows"),
        ({"actions": np.zeros((4, 3)), "images": np.zeros((4, 8, 8, 3))}, "must be uint8"),
        (
            {"actions": np.zeros((4, 3)), "images": np.zeros((4, 3, 40, 56), np.uint8)},
            "channels-first",
        ),
        ({"actions": np.zeros((4, 3)), "images": np.zeros((4, 8, 8), np.uint8)}, "(N, H, W, C)"),
    ],
    ids=["no-observation", "1-D-actions", "nan", "lengths", "float-images", "chw", "3-D-images"],
)
def test_array_dataset_refuses_bad_arrays(kwargs: dict[str, Any], match: str) -> None:
    from ebm_policy import ArrayDataset

    with pytest.raises(ValueError, match=match):
        ArrayDataset(kwargs.pop("actions"), **kwargs)


def test_array_dataset_items_hold_the_keys_given() -> None:
    import torch

    from ebm_policy import ArrayDataset

    data = ArrayDataset(torch.zeros(3, 2), states=torch.ones(3, 5))
    assert (len(data), data.inputs, data.state_dim, data.action_dim) == (3, "state", 5, 2)
    assert data.image_shape is None
    item = data[1]
    assert set(item) == {"state", "action"} and item["state"].dtype == np.float32
    assert toy_dataset().image_shape == (40, 56, 3)


class PlainItems:
    """The protocol's minimum: ``__len__`` and ``__getitem__``, no attributes."""

    def __init__(self, items: list[dict[str, np.ndarray]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.items[i]


@pytest.mark.parametrize(
    "item, inputs, state_dim, channels",
    [
        ({"state": np.arange(5, dtype=np.float32)}, "state", 5, 3),
        ({"image": np.zeros((12, 20, 1), np.uint8)}, "image", 0, 1),
        ({"image": np.zeros((12, 20, 4), np.uint8), "state": np.ones(2)}, "image_state", 2, 4),
    ],
    ids=["state", "grayscale", "rgba+state"],
)
def test_for_dataset_reads_the_inputs_off_the_items(
    item: dict[str, np.ndarray], inputs: str, state_dim: int, channels: int, tmp_path: Path
) -> None:
    """A dataset without attributes: inputs, state size and image channels from its items."""
    from ebm_policy import ImplicitPolicy, TrainConfig, train

    rng = np.random.default_rng(0)
    items = [
        {**{k: (v + i).astype(v.dtype) for k, v in item.items()}, "action": rng.normal(size=2)}
        for i in range(8)
    ]
    data = PlainItems(items)
    policy = ImplicitPolicy.for_dataset(data, tiny_config("implicit"), seed=0)
    assert (policy.inputs, policy.state_dim) == (inputs, state_dim)
    assert policy.config.model.backbone.cnn.in_channels == channels
    if state_dim:
        assert policy.state_norm is not None
        np.testing.assert_allclose(
            policy.state_norm.mean, np.mean([it["state"] for it in items], 0)
        )
    quick = TrainConfig(
        steps=1, batch_size=4, progress=False, energy_snapshots=0, tensorboard=False
    )
    train(policy, data, quick, tmp_path / "run")
    obs = {k: v for k, v in items[0].items() if k != "action"}
    assert policy.select_action(obs).shape == (2,)
