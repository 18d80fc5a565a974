"""Policies: batch format, action normalization, losses, action selection, energy convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebm_policy import (
    ActionBounds,
    BackboneConfig,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicy,
    ExplicitPolicyConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    InfoNCEConfig,
    OptimConfig,
    SoftArgmaxConfig,
    action_bounds_from_dataset,
)
from ebm_policy.optim import build_optimizer

CNN = CNNConfig(channels=(8, 8), strides=(1, 1), pools=(1, 1), out_channels=4)
LOW, HIGH = np.array([0.0, -2.0], np.float32), np.array([10.0, 2.0], np.float32)


pytestmark = pytest.mark.usefixtures("one_thread")


def implicit(seed: int = 0, **kw: object) -> ImplicitPolicy:
    cfg = ImplicitPolicyConfig(
        model=EBMConfig(
            backbone=BackboneConfig(cnn=CNN, softargmax=SoftArgmaxConfig(temperature=0.1)),
            hidden_dims=(64,),
        ),
        loss=InfoNCEConfig(num_counter_examples=31),
        optimizer=DFOConfig(num_samples=256),
        **kw,  # type: ignore[arg-type]
    )
    return ImplicitPolicy(cfg, LOW, HIGH, seed=seed)


def explicit(seed: int = 0) -> ExplicitPolicy:
    cfg = ExplicitPolicyConfig(
        model=ExplicitConfig(backbone=BackboneConfig(cnn=CNN), hidden_dims=(32,), dropout=0.1)
    )
    return ExplicitPolicy(cfg, LOW, HIGH, seed=seed)


def dot_batch(n: int, size: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Dark images with one bright 2x2 dot; the action is the dot's (column, row) in LOW..HIGH."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), np.uint8)
    cols, rows = rng.integers(0, size - 1, n), rng.integers(0, size - 1, n)
    for img, c, r in zip(images, cols, rows, strict=True):
        img[r : r + 2, c : c + 2] = 255
    frac = np.stack([cols, rows], 1) / (size - 2)
    actions = (LOW + frac * (HIGH - LOW)).astype(np.float32)
    return {"image": torch.from_numpy(images), "action": torch.from_numpy(actions)}


@pytest.mark.parametrize("padding", [0.0, 0.05, 0.5])
def test_action_bounds_map_padded_box_to_unit_box(padding: float) -> None:
    b = ActionBounds(LOW, HIGH, padding)
    width = torch.from_numpy(HIGH - LOW)
    padded = torch.stack(
        [torch.from_numpy(LOW) - padding * width, torch.from_numpy(HIGH) + padding * width]
    )
    assert torch.allclose(b.normalize(padded), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), atol=1e-6)
    a = torch.rand(5, 2) * width + torch.from_numpy(LOW)
    assert torch.allclose(b.unnormalize(b.normalize(a)), a, atol=1e-5)
    assert set(dict(b.named_buffers())) == {"low", "high"}


@pytest.mark.parametrize(
    "low, high", [([0.0], [1.0, 2.0]), ([1.0], [0.0]), ([float("nan")], [1.0])]
)
def test_action_bounds_reject_invalid(low: list[float], high: list[float]) -> None:
    with pytest.raises(ValueError):
        ActionBounds(low, high)


def test_constant_action_dimension_stays_invertible() -> None:
    b = ActionBounds([1.0, 0.0], [1.0, 1.0])
    a = torch.tensor([[1.0, 0.5]])
    assert torch.isfinite(b.normalize(a)).all()
    assert torch.allclose(b.unnormalize(b.normalize(a)), a)


def test_action_bounds_from_dataset() -> None:
    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> dict:
            return {"image": np.zeros((4, 4, 3), np.uint8), "action": np.array([i, -i], np.float32)}

    low, high = action_bounds_from_dataset(Items())
    assert low.tolist() == [0.0, -2.0] and high.tolist() == [2.0, 0.0]


@pytest.mark.parametrize("make", [implicit, explicit], ids=["implicit", "explicit"])
def test_compute_loss_metrics_and_gradients(make) -> None:
    policy = make()
    loss, metrics = policy.compute_loss(dot_batch(4), generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert metrics["train/loss"] == pytest.approx(loss.item())
    if policy.kind == "implicit":
        assert {"train/energy_pos", "train/energy_neg", "train/pos_is_argmin"} <= set(metrics)
    loss.backward()
    assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)


@pytest.mark.parametrize("make", [implicit, explicit], ids=["implicit", "explicit"])
@pytest.mark.parametrize("as_numpy", [False, True])
def test_select_action_in_original_units_as_the_kind_given(make, as_numpy: bool) -> None:
    policy = make()
    images = dot_batch(3)["image"]
    images = images.numpy() if as_numpy else images
    actions = policy.select_action(images, generator=torch.Generator().manual_seed(0))
    assert isinstance(actions, np.ndarray if as_numpy else torch.Tensor)  # numpy in, numpy out
    assert actions.shape == (3, 2) and actions.dtype in (np.float32, torch.float32)
    values = np.asarray(actions)
    pad = 0.05 * (HIGH - LOW)
    assert (values >= LOW - pad - 1e-5).all() and (values <= HIGH + pad + 1e-5).all()


@pytest.mark.parametrize("make", [implicit, explicit], ids=["implicit", "explicit"])
@pytest.mark.parametrize("as_numpy", [False, True])
def test_one_observation_gives_one_action(make, as_numpy: bool) -> None:
    policy = make()
    images = dot_batch(3)["image"]
    images = images.numpy() if as_numpy else images
    batch = policy.select_action(images, generator=torch.Generator().manual_seed(0))
    one = policy.select_action(images[1], generator=torch.Generator().manual_seed(0))
    assert isinstance(one, type(batch)) and tuple(one.shape) == (2,)
    if make is explicit:  # deterministic: the same action as in the batch
        np.testing.assert_allclose(np.asarray(one), np.asarray(batch)[1], atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        policy.select_action(images[1, 0])  # a row of pixels is neither


@pytest.mark.parametrize("make", [implicit, explicit], ids=["implicit", "explicit"])
def test_select_action_rejects_channels_first(make) -> None:
    with pytest.raises(ValueError, match="channels last"):
        make().select_action(torch.zeros(2, 3, 12, 12, dtype=torch.uint8))


def test_implicit_select_action_history_and_determinism() -> None:
    policy = implicit()
    images = dot_batch(2)["image"]
    a1 = policy.select_action(images, generator=torch.Generator().manual_seed(4))
    a2, hist = policy.select_action(
        images, generator=torch.Generator().manual_seed(4), return_history=True
    )
    assert torch.equal(a1, a2)
    assert len(hist.samples) == policy.config.optimizer.iterations + 1
    assert hist.samples[0].shape == (2, 256, 2)
    assert hist.samples[0][..., 0].max() > 5  # history in original units (LOW..HIGH = 0..10)
    _, hist = policy.select_action(
        images, optimizer=DFOConfig(num_samples=16, iterations=1), return_history=True
    )  # another optimizer for one call
    assert len(hist.samples) == 2 and hist.samples[0].shape == (2, 16, 2)
    assert policy.config.optimizer.num_samples == 256  # the policy is unchanged


def test_explicit_select_action_is_deterministic_and_keeps_mode() -> None:
    policy = explicit().train()
    images = dot_batch(2)["image"]
    assert torch.equal(policy.select_action(images), policy.select_action(images))
    assert policy.training


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b, c = implicit(seed=3), implicit(seed=3), implicit(seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_the_bounds_decide_the_action_dimension() -> None:
    """``action_dim`` follows the bounds (as ``ibc-gym train`` takes it from the dataset)."""
    policy = ImplicitPolicy(
        ImplicitPolicyConfig(model=EBMConfig(action_dim=3, backbone=BackboneConfig(cnn=CNN))),
        LOW,
        HIGH,
    )
    assert policy.config.model.action_dim == len(LOW) == policy.model.cfg.action_dim


def test_trained_energy_is_lower_for_expert_actions() -> None:
    """The convention end to end: after a little InfoNCE training the expert actions get LOWER
    energy than counter-examples, and DFO moves towards them."""
    torch.manual_seed(0)
    policy = implicit(seed=0, optim=OptimConfig(lr=3e-3))
    opt = build_optimizer(policy.parameters(), policy.config.optim)
    g = torch.Generator().manual_seed(0)
    batch = dot_batch(16, seed=1)
    before = policy.energy_samples(batch, generator=torch.Generator().manual_seed(1))
    for _ in range(100):
        loss, _ = policy.compute_loss(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = policy.energy_samples(batch, generator=torch.Generator().manual_seed(1))
    assert after["positive"].shape == (16,) and after["negative"].shape == (16, 31)
    gap_before = before["negative"].mean() - before["positive"].mean()
    gap_after = after["negative"].mean() - after["positive"].mean()
    assert gap_after > 1.0 and gap_after > gap_before + 1.0
    pred = policy.select_action(batch["image"], generator=torch.Generator().manual_seed(0))
    err = (pred - batch["action"]).abs() / torch.from_numpy(HIGH - LOW)
    assert err.mean() < 0.15  # far better than a random guess (~0.33)
    grid = batch["action"][:, None, :] + torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    e = policy.energy(batch["image"], grid)
    assert (e[:, 0] < e[:, 1]).float().mean() > 0.8
