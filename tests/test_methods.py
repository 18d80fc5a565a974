"""The paper's three methods at the policy level: their training objectives (uniform InfoNCE,
Langevin counter-examples + gradient penalty, per-prefix InfoNCE), training to a usable policy,
optimizer choice per call and at load, and checkpoints of every method (old ones included)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ebm_policy import (
    AutoregressiveDFOConfig,
    AutoregressiveInfoNCEConfig,
    BackboneConfig,
    CheckpointError,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    LangevinChainConfig,
    LangevinConfig,
    LangevinInfoNCEConfig,
    ModelEnergy,
    OptimConfig,
    load_policy,
    save_checkpoint,
)
from ebm_policy.checkpoint import checkpoint_dict
from ebm_policy.losses import info_nce_loss, make_candidates
from ebm_policy.optim import build_optimizer
from ebm_policy.optimizers import run_chain
from tests.test_policies import HIGH, LOW, dot_batch

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"
METHODS = ("dfo", "langevin", "autoregressive_dfo")
CNN = CNNConfig(channels=(8, 8), strides=(1, 1), pools=(1, 1), out_channels=4)
SMALL = {  # small inference settings per method, same pairing as for_method
    "dfo": DFOConfig(num_samples=256),
    "langevin": LangevinConfig(num_samples=64, chain=LangevinChainConfig(steps=25)),
    "autoregressive_dfo": AutoregressiveDFOConfig(num_samples=256),
}


def policy_for(method: str, seed: int = 0, **kw: object) -> ImplicitPolicy:
    cfg = ImplicitPolicyConfig.for_method(
        method,  # type: ignore[arg-type]
        model=EBMConfig(backbone=BackboneConfig(cnn=CNN), hidden_dims=(64,)),
        optimizer=SMALL[method],
        **kw,
    )
    if method == "langevin":
        cfg = replace(cfg, loss=replace(cfg.loss, chain=LangevinChainConfig(steps=10)))
    return ImplicitPolicy(cfg, LOW, HIGH, seed=seed)


@pytest.mark.parametrize("method", METHODS)
def test_loss_is_finite_and_reaches_every_weight(method: str) -> None:
    policy = policy_for(method)
    loss, metrics = policy.compute_loss(dot_batch(6), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and metrics["train/loss"] == pytest.approx(loss.item())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in policy.parameters())
    expected = {
        "langevin": {"train/infonce", "train/grad_penalty"},
        "autoregressive_dfo": {"train/infonce_first", "train/infonce_full"},
    }
    assert expected.get(method, set()) <= set(metrics)


def test_langevin_counter_examples_come_from_an_undifferentiated_chain() -> None:
    policy = policy_for("langevin")
    features = policy.model.encode(torch.rand(3, 3, 12, 12))
    start = torch.rand(3, 8, 2) * 2 - 1
    chain = LangevinChainConfig(steps=10, noise_scale=0.0)
    out = run_chain(
        ModelEnergy(policy.model, features, 1 << 20), start, -torch.ones(2), torch.ones(2), chain
    )
    assert not out.requires_grad and out.grad_fn is None
    assert (out.abs() <= 1).all() and not torch.equal(out, start)
    energy = ModelEnergy(policy.model, features, 1 << 20)
    assert (
        energy(out) <= energy(start) + 1e-4
    ).float().mean() > 0.9  # noise off: the chain descends


def test_gradient_penalty_enters_the_loss_only_outside_the_margin() -> None:
    """Scaled-up head weights make |dE/da| far above the margin: the penalty is then positive and
    part of the loss; with weight 0 the loss is the InfoNCE term alone."""
    batch, g = dot_batch(6), 0
    policy = policy_for("langevin")
    with torch.no_grad():
        policy.model.head.first.weight.mul_(50.0)
    loss, metrics = policy.compute_loss(batch, generator=torch.Generator().manual_seed(g))
    assert metrics["train/grad_penalty"] > 0
    assert loss.item() == pytest.approx(
        metrics["train/infonce"] + metrics["train/grad_penalty"], rel=1e-5
    )
    off = ImplicitPolicy(
        replace(policy.config, loss=replace(policy.config.loss, penalty_weight=0.0)), LOW, HIGH
    )
    off.load_state_dict(policy.state_dict())
    loss_off, metrics_off = off.compute_loss(batch, generator=torch.Generator().manual_seed(g))
    assert "train/grad_penalty" not in metrics_off and loss_off.item() == pytest.approx(
        metrics["train/infonce"], rel=1e-5
    )
    # Within the margin (the weights as initialized) the penalty is exactly zero.
    _, small = policy_for("langevin").compute_loss(
        batch, generator=torch.Generator().manual_seed(g)
    )
    assert small["train/grad_penalty"] == 0.0


def test_autoregressive_loss_is_the_mean_of_one_infonce_per_prefix() -> None:
    """With uniform counter-examples only (``conditional_fraction=0``) each term is InfoNCE
    over the same candidates cut to the prefix."""
    policy = policy_for(
        "autoregressive_dfo", loss=AutoregressiveInfoNCEConfig(conditional_fraction=0.0)
    )
    batch = dot_batch(5)
    loss, _ = policy.compute_loss(batch, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    positives = policy._actions(batch["action"])
    candidates, labels = make_candidates(
        positives, policy.config.loss.num_counter_examples, -torch.ones(2), torch.ones(2), g
    )
    features = policy.model.encode(policy._images(batch["image"]))
    terms = [
        info_nce_loss(policy.model.energy(features, candidates[..., :j]), labels) for j in (1, 2)
    ]
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_to_a_usable_policy(method: str) -> None:
    """100 steps on dot images: the method's own optimizer lands near the dot (a random guess
    is off by about a third of the range)."""
    policy = policy_for(method, optim=OptimConfig(lr=3e-3))
    opt = build_optimizer(policy.parameters(), policy.config.optim)
    g = torch.Generator().manual_seed(0)
    batch = dot_batch(16, seed=1)
    for _ in range(100):
        loss, _ = policy.compute_loss(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    pred = policy.select_action(batch["image"], generator=torch.Generator().manual_seed(0))
    err = (pred - batch["action"]).abs() / torch.from_numpy(HIGH - LOW)
    assert err.mean() < 0.15, f"{method}: mean error {err.mean():.3f} of the range"


def test_optimizer_per_call_leaves_the_policy_unchanged() -> None:
    policy = policy_for("dfo")
    images = dot_batch(2)["image"]
    a, hist = policy.select_action(images, optimizer=SMALL["langevin"], return_history=True)
    assert a.shape == (2, 2) and len(hist.samples) == SMALL["langevin"].chain.steps + 1
    assert policy.config.optimizer == SMALL["dfo"] and policy.optimizer.kind == "dfo"
    with pytest.raises(ValueError, match="needs a model trained with loss 'autoregressive'"):
        policy.select_action(images, optimizer=AutoregressiveDFOConfig())
    with pytest.raises(ValueError, match="needs a model trained with loss 'autoregressive'"):
        ImplicitPolicyConfig(optimizer=AutoregressiveDFOConfig())


@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_optimizer_round_trips_through_a_checkpoint(
    method: str, tmp_path: Path
) -> None:
    policy = policy_for(method, seed=1).eval()
    save_checkpoint(tmp_path / "p.pt", policy)
    loaded = load_policy(tmp_path / "p.pt")
    assert loaded.config == policy.config and isinstance(
        loaded.config.loss, type(policy.config.loss)
    )
    images = dot_batch(3)["image"]
    same = [
        p.select_action(images, generator=torch.Generator().manual_seed(4))
        for p in (policy, loaded)
    ]
    assert torch.equal(*same)
    for other in SMALL.values():  # any optimizer this model can use, chosen at load
        if other.kind == "autoregressive_dfo" and method != "autoregressive_dfo":
            with pytest.raises(
                CheckpointError, match="needs a model trained with loss 'autoregressive'"
            ):
                load_policy(tmp_path / "p.pt", optimizer=other)
            continue
        chosen = load_policy(tmp_path / "p.pt", optimizer=other)
        assert chosen.config.optimizer == other and chosen.config.loss == policy.config.loss


def test_a_checkpoint_with_an_unknown_kind_is_a_clear_error(tmp_path: Path) -> None:
    payload = checkpoint_dict(policy_for("dfo"))
    payload["config"]["optimizer"]["kind"] = "simulated_annealing"
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(
        CheckpointError,
        match="optimizer: unknown kind 'simulated_annealing'; choose one of dfo, langevin, autoregressive_dfo",
    ):
        load_policy(tmp_path / "x.pt")


def test_a_checkpoint_from_before_the_optimizer_seam_loads_and_acts_the_same() -> None:
    """``legacy_dfo_v1.pt`` was written by the code before the seam (``dfo``/``infonce``
    sections, CNN directly in ``model``) with the actions it chose for fixed images and seed."""
    policy = load_policy(DATA / "legacy_dfo_v1.pt")
    expected = torch.load(DATA / "legacy_dfo_v1_expected.pt")
    assert policy.config.optimizer == DFOConfig(
        num_samples=256, iterations=3, resampling="multinomial"
    )
    assert isinstance(policy.config.loss, type(ImplicitPolicyConfig().loss))
    actions = policy.select_action(expected["images"], generator=torch.Generator().manual_seed(7))
    assert torch.equal(actions, expected["actions"])
    energies = policy.energy(expected["images"], expected["grid_actions"][:, None])
    assert torch.allclose(
        energies, expected["energies"], atol=1e-6
    )  # summation order varies with threads


def test_methods_have_their_papers_defaults() -> None:
    langevin = ImplicitPolicyConfig.for_method("langevin")
    assert (
        isinstance(langevin.loss, LangevinInfoNCEConfig) and langevin.loss.num_counter_examples == 8
    )
    assert (langevin.loss.penalty_weight, langevin.loss.penalty_margin) == (1.0, 1.0)
    chain = langevin.optimizer.chain
    assert (
        chain.step_size_init,
        chain.step_size_final,
        chain.step_size_power,
        chain.noise_scale,
        chain.delta_clip,
    ) == (0.1, 1e-5, 2.0, 1.0, 0.1)
    auto = ImplicitPolicyConfig.for_method("autoregressive_dfo")
    assert isinstance(auto.loss, AutoregressiveInfoNCEConfig) and auto.prefix_energies
    assert not ImplicitPolicyConfig().prefix_energies
    with pytest.raises(
        ValueError, match="unknown method 'mcmc'; choose one of dfo, langevin, autoregressive_dfo"
    ):
        ImplicitPolicyConfig.for_method("mcmc")  # type: ignore[arg-type]


def test_prefix_energies_make_a_larger_first_layer_only() -> None:
    plain, prefix = policy_for("dfo"), policy_for("autoregressive_dfo")
    n_plain = sum(p.numel() for p in plain.parameters())
    n_prefix = sum(p.numel() for p in prefix.parameters())
    assert n_prefix - n_plain == 2 * 64  # A mask inputs x H hidden units
    assert np.isclose(n_prefix / n_plain, 1, atol=0.05)


def test_autoregressive_conditional_counter_examples_keep_the_expert_prefix() -> None:
    """Term j's conditional counter-examples are the expert's first j - 1 dimensions with a
    uniform j-th: recorded by a model that logs what it scores."""
    policy = policy_for(
        "autoregressive_dfo",
        loss=AutoregressiveInfoNCEConfig(num_counter_examples=8, conditional_fraction=0.5),
    )
    seen: list[torch.Tensor] = []
    energy = policy.model.energy
    policy.model.energy = lambda f, a: (seen.append(a.detach().clone()), energy(f, a))[1]  # type: ignore[method-assign]
    batch = dot_batch(3)
    policy.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    positives = policy._actions(batch["action"])
    first, second = seen  # j = 1, 2: candidates (B, 9, j)
    matches = (second[..., 0] == positives[:, None, 0]).sum(dim=1)  # the positive + 4 conditional
    assert (matches == 5).all()
    assert (
        first.shape == (3, 9, 1)
        and not (first[..., 0] == positives[:, None, 0]).sum(dim=1).gt(1).any()
    )
