"""Every inference optimizer behind the seam: finds the minima of analytic energies, respects the
bounds, is deterministic under a generator; the gradient penalty; the prefix-energy model."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ebm_policy import (
    AnalyticEnergy,
    AutoregressiveDFOConfig,
    BackboneConfig,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    EBMConvMLP,
    LangevinChainConfig,
    LangevinConfig,
    build_optimizer,
    optimizer_config,
)
from ebm_policy.losses import gradient_penalty

pytestmark = pytest.mark.usefixtures("one_thread")

# (config, dim, tolerance): the largest distance to the minimum over 8 problems x 3 seeds.
# Plain DFO and autoregressive DFO need more rounds in 8-D to shrink their noise far enough.
SETTINGS = [
    (DFOConfig(), 2, 0.02),
    (LangevinConfig(), 2, 0.02),
    (AutoregressiveDFOConfig(), 2, 0.02),
    (DFOConfig(iterations=8), 8, 0.1),
    (LangevinConfig(), 8, 0.02),
    (AutoregressiveDFOConfig(iterations=6), 8, 0.1),
]
IDS = [f"{c.kind}-{d}d" for c, d, _ in SETTINGS]


def centers(dim: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(dim, generator=g) * 1.6 - 0.8, torch.rand(dim, generator=g) * 1.6 - 0.8


def bowl(c: Tensor, scale: float = 50.0):
    """``scale * |a - c|^2`` over a prefix of any length: ``(B, M, j) -> (B, M)``."""
    return lambda s: scale * (s - c[: s.shape[-1]]).square().sum(-1)


def two_wells(deep: Tensor, shallow: Tensor, scale: float = 50.0, offset: float = 1.0):
    """Two quadratic wells, the one at ``deep`` ``offset`` lower; prefixes score their prefix."""
    return lambda s: torch.minimum(bowl(deep, scale)(s) - offset, bowl(shallow, scale)(s))


def solve(cfg, fn, dim: int, seed: int, batch: int = 8) -> Tensor:
    low, high = -torch.ones(dim), torch.ones(dim)
    energy = AnalyticEnergy(fn, batch, dim, prefix_fn=fn)
    out = build_optimizer(cfg).infer(
        energy, low, high, generator=torch.Generator().manual_seed(seed)
    )
    assert isinstance(out, Tensor) and out.shape == (batch, dim)
    assert (out >= low).all() and (out <= high).all()
    return out


@pytest.mark.parametrize(("cfg", "dim", "tol"), SETTINGS, ids=IDS)
def test_finds_the_bottom_of_a_bowl(cfg, dim: int, tol: float) -> None:
    for seed in range(3):
        c, _ = centers(dim, seed)
        assert (solve(cfg, bowl(c), dim, seed) - c).norm(dim=-1).max() < tol


@pytest.mark.parametrize(("cfg", "dim", "tol"), SETTINGS, ids=IDS)
def test_two_wells(cfg, dim: int, tol: float) -> None:
    """Every optimizer lands in a well. In 2-D each finds the deeper one; in 8-D only Langevin
    does reliably: 512 chains started everywhere end in both wells and the lower one wins, while
    the resampling populations of DFO and autoregressive DFO commit to one well early (each well
    is a tiny fraction of the 8-D box) and pick the deeper one about half the time."""
    for seed in range(3):
        deep, _ = centers(dim, seed)
        shallow = -deep
        best = solve(cfg, two_wells(deep, shallow), dim, seed)
        to_deep, to_shallow = (best - deep).norm(dim=-1), (best - shallow).norm(dim=-1)
        assert torch.minimum(to_deep, to_shallow).max() < tol
        if dim == 2 or cfg.kind == "langevin":
            assert to_deep.max() < tol


@pytest.mark.parametrize(
    "cfg",
    [
        DFOConfig(num_samples=64),
        LangevinConfig(num_samples=16),
        AutoregressiveDFOConfig(num_samples=64),
    ],
    ids=lambda c: c.kind,
)
def test_same_generator_same_answer_and_history(cfg) -> None:
    fn = two_wells(torch.tensor([0.3, 0.3]), torch.tensor([-0.3, -0.3]), scale=5.0)
    energy = AnalyticEnergy(fn, 5, 2, prefix_fn=fn)
    opt, low, high = build_optimizer(cfg), -torch.ones(2), torch.ones(2)
    runs = [
        opt.infer(energy, low, high, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    best, hist = opt.infer(
        energy, low, high, generator=torch.Generator().manual_seed(7), return_history=True
    )
    assert torch.equal(best, runs[0])
    assert (
        hist.samples[-1].shape == (5, cfg.num_samples, 2)
        and len(hist.samples) == len(hist.energies) >= 2
    )
    final = hist.samples[-1][torch.arange(5), hist.energies[-1].argmin(-1)]
    assert torch.equal(best, final)  # the lowest-energy final sample


def test_langevin_moves_are_clipped_and_the_schedule_decays() -> None:
    chain = LangevinChainConfig(steps=5, step_size_init=0.1, step_size_final=1e-5, noise_scale=0.0)
    sizes = chain.schedule(5, 0.1)
    assert sizes[0] == pytest.approx(0.1) and sizes[-1] == pytest.approx(1e-5)
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[2] == pytest.approx((0.1 - 1e-5) * 0.5**2 + 1e-5)  # power 2
    # A steep slope: every step moves by the clip, 0.1 x half-range, not by step * gradient.
    fn = lambda s: 1e6 * s.sum(-1)  # noqa: E731
    energy = AnalyticEnergy(fn, 1, 1)
    cfg = LangevinConfig(num_samples=4, chain=chain)
    _, hist = build_optimizer(cfg).infer(energy, -torch.ones(1), torch.ones(1), return_history=True)
    moves = [(hist.samples[i] - hist.samples[i + 1]) for i in range(len(hist.samples) - 2)]
    inside = hist.samples[-1] > -1.0
    for move in moves:
        assert torch.allclose(move[inside], torch.full_like(move[inside], 0.1))


def test_autoregressive_dfo_refuses_an_energy_without_prefixes() -> None:
    energy = AnalyticEnergy(bowl(torch.zeros(2)), 2, 2)
    with pytest.raises(ValueError, match="needs an energy model trained with prefix energies"):
        build_optimizer(AutoregressiveDFOConfig()).infer(energy, -torch.ones(2), torch.ones(2))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: optimizer_config("simulated_annealing"),
            r"unknown optimizer kind 'simulated_annealing'; choose one of dfo, langevin, autoregressive_dfo",
        ),
        (
            lambda: LangevinChainConfig(steps=-1),
            r"LangevinChainConfig.steps must be an integer >= 1, got -1",
        ),
        (lambda: DFOConfig(iterations=-2), r"DFOConfig.iterations must be an integer >= 0, got -2"),
        (
            lambda: LangevinChainConfig(step_size_init=1e-6),
            r"step_size_final 1e-05 exceeds step_size_init",
        ),
        (lambda: optimizer_config("dfo", steps=3), r"unexpected keyword argument 'steps'"),
        (
            lambda: build_optimizer(object()),
            r"unknown inference optimizer config object; choose one of dfo",
        ),
    ],
)
def test_bad_optimizer_settings_are_clear_errors(make, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize(
    ("grads", "expected"),
    [
        ([[0.5, -0.9], [1.0, 0.0]], 0.0),  # inside the margin (inf-norm <= 1): no penalty
        ([[2.0, 0.5], [0.0, 0.0]], 0.5),  # (2 - 1)^2 / 2 rows
        ([[0.1, -3.0], [1.5, 1.2]], (4.0 + 0.25) / 2),
    ],
)
def test_gradient_penalty_value(grads: list[list[float]], expected: float) -> None:
    assert gradient_penalty(torch.tensor([grads]), margin=1.0).item() == pytest.approx(expected)


def test_gradient_penalty_gradient() -> None:
    """d/dg mean(max(0, |g|_inf - m)^2) = 2 (|g|_inf - m) sign(g) / N on the largest component
    of rows outside the margin, 0 elsewhere."""
    g = torch.tensor([[[2.0, 0.5], [0.3, -0.2], [-1.5, 1.0]]], requires_grad=True)  # N = 3 rows
    gradient_penalty(g, margin=1.0).backward()
    expected = torch.tensor([[[2 * 1.0 / 3, 0.0], [0.0, 0.0], [-2 * 0.5 / 3, 0.0]]])
    assert torch.allclose(g.grad, expected)


def tiny_model(prefix: bool, action_dim: int = 3) -> EBMConvMLP:
    cnn = CNNConfig(channels=(4,), strides=(2,), pools=(1,), out_channels=2)
    torch.manual_seed(0)
    return EBMConvMLP(
        EBMConfig(action_dim=action_dim, backbone=BackboneConfig(cnn=cnn), hidden_dims=(8,)),
        prefix_energies=prefix,
    )


def test_prefix_model_scores_every_prefix_and_the_whole_action() -> None:
    model = tiny_model(prefix=True)
    features = model.encode(torch.rand(2, 3, 8, 8))
    actions = torch.rand(2, 5, 3)
    full = model.energy(features, actions)
    assert full.shape == (2, 5)
    for j in (1, 2):
        e = model.energy(features, actions[..., :j])
        assert e.shape == (2, 5) and not torch.allclose(e, full)
        changed = actions.clone()
        changed[..., j:] += 0.5  # dimensions after the prefix do not matter
        assert torch.equal(model.energy(features, changed[..., :j]), e)
    chunked = model.energy_chunked(features, actions[..., :2], max_rows=3)
    assert torch.allclose(chunked, model.energy(features, actions[..., :2]), atol=1e-6)
    with pytest.raises(ValueError, match="prefix of 4 dims for a 3-dim action"):
        model.energy(features, torch.rand(2, 5, 4))


def test_plain_model_refuses_prefixes() -> None:
    model = tiny_model(prefix=False)
    features = model.encode(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="prefix energies need a model trained with them"):
        model.energy(features, torch.rand(1, 4, 2))


@pytest.mark.parametrize("prefix", [False, True])
@pytest.mark.parametrize("hidden", [(8,), (8, 4)], ids=["one-hidden-layer", "deeper"])
def test_action_gradient_matches_autograd(prefix: bool, hidden: tuple[int, ...]) -> None:
    """The written-out gradient of the default head (and autograd for deeper ones) equals
    autograd's dE/da, for whole actions and for prefixes."""
    cnn = CNNConfig(channels=(4,), strides=(2,), pools=(1,), out_channels=2)
    torch.manual_seed(1)
    model = EBMConvMLP(
        EBMConfig(action_dim=3, backbone=BackboneConfig(cnn=cnn), hidden_dims=hidden),
        prefix_energies=prefix,
    )
    features = model.encode(torch.rand(2, 3, 8, 8)).detach()
    for j in (1, 2, 3) if prefix else (3,):
        a = (torch.rand(2, 6, j) * 2 - 1).requires_grad_(True)
        e = model.energy(features, a)
        (g,) = torch.autograd.grad(e.sum(), a)
        e2, g2 = model.energy_and_grad(features, a.detach())
        assert torch.allclose(e2, e.detach(), atol=1e-6) and torch.allclose(g2, g, atol=1e-6)
