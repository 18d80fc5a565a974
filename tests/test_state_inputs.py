"""State and image + proprio inputs: the MLP EBM over states with every optimizer, image +
state shapes end to end, checkpoints that record the inputs, state-dimension mismatches, and
collect -> train picking the model from the dataset's observation type."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.dataset import DemoDataset
from agents.learned import load_agent
from demos.collect import CollectConfig, collect
from demos.train import TrainJobConfig, run_train, tiny_policies
from ebm_policy import (
    BackboneConfig,
    CheckpointError,
    CNNConfig,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicy,
    ExplicitPolicyConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    InfoNCEConfig,
    ModelEnergy,
    TrainConfig,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)
from ebm_policy.config import AutoregressiveInfoNCEConfig, LangevinInfoNCEConfig
from ebm_policy.models import EBMConvMLP
from ebm_policy.optimizers import (
    AutoregressiveDFOConfig,
    DFOConfig,
    LangevinChainConfig,
    LangevinConfig,
)

pytestmark = pytest.mark.usefixtures("one_thread")

S = 3  # state dimensions
LOW, HIGH = [-1.0, -1.0], [1.0, 1.0]
CNN = CNNConfig(channels=(4,), strides=(2,), pools=(1,), out_channels=2)
LEGACY = Path(__file__).parent / "data" / "legacy_dfo_v1.pt"
# The paper's pairs on small settings (a few hundred samples, short chains).
METHODS = {
    "dfo": (InfoNCEConfig(num_counter_examples=32), DFOConfig(num_samples=256)),
    "langevin": (
        LangevinInfoNCEConfig(num_counter_examples=8, chain=LangevinChainConfig(steps=10)),
        LangevinConfig(num_samples=64, chain=LangevinChainConfig(steps=20)),
    ),
    "autoregressive_dfo": (
        AutoregressiveInfoNCEConfig(num_counter_examples=32),
        AutoregressiveDFOConfig(num_samples=256),
    ),
}


def state_batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """States in original units (offset and scaled: the policy normalizes them); the expert
    action is a fixed function of the state."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-1, 1, (n, S)).astype(np.float32)
    action = np.stack([0.8 * s[:, 0], 0.8 * s[:, 1] * s[:, 2]], axis=1).astype(np.float32)
    return {"state": s * 5.0 + 10.0, "action": action}


def state_policy(method: str, seed: int = 0) -> ImplicitPolicy:
    loss, optimizer = METHODS[method]
    cfg = ImplicitPolicyConfig(
        model=EBMConfig(inputs="state", state_dim=S, hidden_dims=(64,)),
        loss=loss,
        optimizer=optimizer,
    )
    return ImplicitPolicy(
        cfg, LOW, HIGH, state_mean=np.full(S, 10.0), state_std=np.full(S, 5.0), seed=seed
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_state_ebm_trains_and_infers_with_each_optimizer(method: str) -> None:
    policy = state_policy(method)
    assert not any(k.startswith("model.cnn") for k in policy.state_dict())
    assert policy.model.feature_dim == S  # an MLP over [state, action]
    test = state_batch(64, seed=1)
    g = torch.Generator().manual_seed(0)

    def error() -> float:
        pred = policy.select_action(test["state"], generator=torch.Generator().manual_seed(0))
        assert pred.shape == (64, 2)
        return float(np.abs(pred - test["action"]).mean())

    before = error()
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    data = state_batch(512)
    for step in range(100):
        idx = np.random.default_rng(step).integers(0, 512, 64)
        loss, _ = policy({k: v[idx] for k, v in data.items()}, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = error()
    assert after < 0.6 * before and after < 0.15, (before, after)
    # keyword and mapping forms give the same answer
    kw = policy.select_action(states=test["state"], generator=torch.Generator().manual_seed(0))
    mapped = policy.select_action({"state": test["state"]}, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(kw, mapped)


def test_state_energy_fast_paths_match_autograd() -> None:
    model = EBMConvMLP(EBMConfig(inputs="state", state_dim=S, hidden_dims=(16,)))
    states, actions = torch.randn(4, S), torch.rand(4, 9, 2) * 2 - 1
    energy = ModelEnergy.of_observations(model, states, 1 << 20)
    e, g = energy.with_grad(actions)
    a = actions.clone().requires_grad_(True)
    ref = model(states, a)
    (ref_g,) = torch.autograd.grad(ref.sum(), a)
    assert torch.allclose(e, ref, atol=1e-5) and torch.allclose(g, ref_g, atol=1e-5)
    assert torch.allclose(model.forward_naive(states, actions), ref, atol=1e-5)
    small = ModelEnergy.of_observations(model, states, 16 * 3)  # chunks of 3 actions
    assert torch.allclose(small(actions), ref, atol=1e-5)


def image_state_policy(kind: str) -> ImplicitPolicy | ExplicitPolicy:
    backbone = BackboneConfig(cnn=CNN)
    stats = {"state_mean": [0.5, -0.5], "state_std": [0.2, 0.3]}
    if kind == "implicit":
        cfg = ImplicitPolicyConfig(
            model=EBMConfig(inputs="image_state", state_dim=2, backbone=backbone, hidden_dims=(8,)),
            loss=InfoNCEConfig(num_counter_examples=4),
            optimizer=DFOConfig(num_samples=32),
        )
        return ImplicitPolicy(cfg, LOW, HIGH, seed=0, **stats)
    model = ExplicitConfig(inputs="image_state", state_dim=2, backbone=backbone, hidden_dims=(8,))
    return ExplicitPolicy(ExplicitPolicyConfig(model=model), LOW, HIGH, seed=0, **stats)


@pytest.mark.parametrize("kind", ["implicit", "explicit"])
def test_image_and_proprio_end_to_end(kind: str) -> None:
    policy = image_state_policy(kind)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 12, 12, 3), dtype=np.uint8)
    states = rng.normal(size=(4, 2)).astype(np.float32)
    batch = {"image": images, "state": states, "action": rng.uniform(-1, 1, (4, 2))}
    assert policy.model.feature_dim == 2 * CNN.out_channels + 2  # keypoints, then the state
    loss, _ = policy(batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in policy.named_parameters() if n.startswith("model.cnn")]
    assert grads and all(g is not None for g in grads)  # the image branch is trained too
    a = policy.select_action({"image": images, "state": states}, torch.Generator().manual_seed(0))
    b = policy.select_action(images, torch.Generator().manual_seed(0), states=states)
    assert isinstance(a, np.ndarray) and a.shape == (4, 2)  # numpy in, numpy out
    np.testing.assert_allclose(a, b)
    moved = policy.select_action(images, states=states + 3.0)
    if kind == "explicit":  # the state reaches the output
        assert not np.allclose(a, moved)
    with pytest.raises(ValueError, match="observes 'image_state', but no state was given"):
        policy.select_action(images)
    with pytest.raises(ValueError, match="no state was given"):
        policy({"image": images, "action": batch["action"]})


@pytest.mark.parametrize("kind", ["implicit", "explicit"])
def test_checkpoint_records_the_inputs(kind: str, tmp_path: Path) -> None:
    policy = image_state_policy(kind)
    path = save_checkpoint(tmp_path / "c.pt", policy, metadata={"env_id": "x"})
    ckpt = load_checkpoint(path)
    assert ckpt["inputs"] == {
        "inputs": "image_state",
        "state_dim": 2,
        "state_mean": pytest.approx([0.5, -0.5]),
        "state_std": pytest.approx([0.2, 0.3]),
    }
    loaded = load_policy(path)
    assert loaded.inputs == "image_state" and loaded.state_dim == 2
    assert loaded.state_norm is not None
    assert torch.allclose(loaded.state_norm.std, torch.tensor([0.2, 0.3]))
    images = np.zeros((2, 12, 12, 3), np.uint8)
    states = np.ones((2, 2), np.float32)
    g = torch.Generator
    np.testing.assert_array_equal(
        policy.eval().select_action(images, g().manual_seed(0), states=states),
        loaded.select_action(images, g().manual_seed(0), states=states),
    )


def test_legacy_checkpoint_observes_images() -> None:
    policy = load_policy(LEGACY)
    assert policy.inputs == "image" and policy.state_dim == 0 and policy.state_norm is None


def test_state_dimension_mismatch_names_the_file_and_both_dims(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "state.pt", state_policy("dfo"))
    policy = load_policy(path)
    with pytest.raises(ValueError, match=r"state\.pt: this policy was trained on 3-dim states, "):
        policy.select_action(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"got states of shape \(2, 5\) \(expected \(B, 3\)\)"):
        policy.select_action(np.zeros((2, 5), np.float32))


@pytest.fixture(scope="module")
def state_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("state_inputs")
    out: dict[str, Path] = {}
    for obs_type in ("state", "pixels_agent_pos"):
        out[obs_type] = collect(
            CollectConfig(
                env="ibc/ReachTarget-v0",
                episodes=2,
                image_size=24,
                obs_type=obs_type,  # type: ignore[arg-type]
                out=root / f"{obs_type}.h5",
                progress=False,
            )
        )
    return out


def tiny_job(data: Path, out: Path, policy: str = "implicit", **train: int) -> TrainJobConfig:
    return TrainJobConfig(
        data=data,
        policy=policy,  # type: ignore[arg-type]
        out=out,
        policies=tiny_policies(),
        train=TrainConfig(**{"steps": 2, "batch_size": 4, "progress": False, **train}),
    )


@pytest.mark.parametrize(
    ("obs_type", "policy", "inputs", "state_dim"),
    [
        ("state", "implicit", "state", 5),
        ("state", "explicit", "state", 5),
        ("pixels_agent_pos", "implicit", "image_state", 2),
    ],
)
def test_collect_and_train_pick_the_model_from_the_dataset(
    state_runs: dict[str, Path],
    tmp_path: Path,
    obs_type: str,
    policy: str,
    inputs: str,
    state_dim: int,
) -> None:
    data = DemoDataset(state_runs[obs_type])
    assert data.obs_type == obs_type and data.inputs == inputs and data.state_dim == state_dim
    item = data[0]
    assert item["state"].shape == (state_dim,) and ("image" in item) == (inputs != "state")
    ckpt = run_train(tiny_job(state_runs[obs_type], tmp_path / "run", policy))
    payload = load_checkpoint(ckpt)
    assert payload["config"]["model"]["inputs"] == inputs
    assert payload["metadata"]["obs_type"] == obs_type
    has_cnn = any(k.startswith("model.cnn") for k in payload["state_dict"])
    assert has_cnn == (inputs != "state")
    mean = payload["inputs"]["state_mean"]
    assert np.allclose(mean, data.states.mean(axis=0), atol=1e-5)  # type: ignore[union-attr]
    agent = load_agent(ckpt)
    assert agent.env_kwargs["obs_type"] == obs_type
    import gymnasium as gym

    env = gym.make("ibc/ReachTarget-v0", **agent.env_kwargs)
    obs, _ = env.reset(seed=1000)
    env.close()
    assert agent.select_action(obs).shape == (2,)
    if obs_type == "state":
        with pytest.raises(ValueError, match=r"run/ckpt_last\.pt was trained on 5-dim states"):
            agent.select_action(np.zeros((1, 7), np.float32))


def test_resuming_on_another_state_dimension_names_both(
    state_runs: dict[str, Path], tmp_path: Path
) -> None:
    run_train(tiny_job(state_runs["state"], tmp_path / "run", steps=2))
    with pytest.raises(
        CheckpointError,
        match=r"ckpt_last\.pt: was trained on 5-dim states, this run's policy observes "
        r"images \+ 2-dim states",
    ):
        run_train(replace(tiny_job(state_runs["pixels_agent_pos"], tmp_path / "run"), resume=True))
