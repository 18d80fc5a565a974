"""The derivative-free optimizer: finds minima of analytic energies, respects bounds, is
deterministic under a generator, and the fast path answers like the naive (reference) path."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ebm_policy import (
    AnalyticEnergy,
    BackboneConfig,
    CNNConfig,
    DerivativeFreeOptimizer,
    DFOConfig,
    EBMConfig,
    EBMConvMLP,
    ImplicitPolicyConfig,
    ModelEnergy,
)
from ebm_policy.energy import NaiveModelEnergy
from ebm_policy.optimizers import resample_indices

TOL = 0.02  # stated tolerance, in the units of [-1, 1] bounds
CFG = DFOConfig(num_samples=2048, iterations=5)  # the default; worst error over 20 seeds: 0.015
SCHEMES = ["stratified", "multinomial"]


pytestmark = pytest.mark.usefixtures("one_thread")


def box(dim: int) -> tuple[Tensor, Tensor]:
    return -torch.ones(dim), torch.ones(dim)


def run(dfo: DerivativeFreeOptimizer, fn, batch: int, low: Tensor, high: Tensor, **kw):
    """``dfo`` on the analytic energy ``fn`` for ``batch`` problems."""
    return dfo.infer(AnalyticEnergy(fn, batch, low.shape[0]), low, high, **kw)


def bowl(center: Tensor, scale: float = 50.0):
    """``E(a) = scale * |a - center|^2`` over a batch of problems: ``(B, M, A) -> (B, M)``."""
    return lambda s: scale * (s - center).square().sum(-1)


def two_wells(deep: Tensor, shallow: Tensor, scale: float = 50.0, offset: float = 1.0):
    """Two quadratic wells; the one at ``deep`` is ``offset`` lower: global minimum at ``deep``."""
    return lambda s: torch.minimum(
        scale * (s - deep).square().sum(-1) - offset, scale * (s - shallow).square().sum(-1)
    )


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    "center",
    [[0.3], [-0.5, 0.25], [0.9, -0.9], [0.1, 0.6, -0.4]],
    ids=["1d", "2d", "2d-corner", "3d"],
)
def test_finds_quadratic_minimum(center: list[float], scheme: str) -> None:
    c = torch.tensor(center)
    low, high = box(len(center))
    g = torch.Generator().manual_seed(0)
    cfg = DFOConfig(num_samples=2048, iterations=5, resampling=scheme)  # type: ignore[arg-type]
    best = run(DerivativeFreeOptimizer(cfg), bowl(c), 4, low, high, generator=g)
    assert best.shape == (4, len(center))
    assert (best - c).norm(dim=-1).max() < TOL


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("swap", [False, True])
def test_two_wells_finds_the_deeper_one(swap: bool, scheme: str) -> None:
    a, b = torch.tensor([-0.6, 0.5]), torch.tensor([0.55, -0.4])
    deep, shallow = (b, a) if swap else (a, b)
    low, high = box(2)
    g = torch.Generator().manual_seed(1)
    cfg = DFOConfig(num_samples=2048, iterations=5, resampling=scheme)  # type: ignore[arg-type]
    best = run(DerivativeFreeOptimizer(cfg), two_wells(deep, shallow), 8, low, high, generator=g)
    assert (best - deep).norm(dim=-1).max() < TOL


@pytest.mark.parametrize("scheme", SCHEMES)
def test_resampling_draws_in_proportion_to_softmax_of_minus_energy(scheme: str) -> None:
    """Each index is drawn ``M * softmax(-E)_i`` times on average; a huge energy is never drawn."""
    energies = torch.tensor([[0.0, 1.0, 2.0, 60.0, 0.5, 0.0, 3.0, 1.5]]).repeat(4000, 1)
    m = energies.shape[1]
    idx = resample_indices(energies, scheme, torch.Generator().manual_seed(0))
    assert idx.shape == energies.shape and idx.dtype == torch.int64
    counts = torch.nn.functional.one_hot(idx, m).sum(1).double()  # (rows, M) copies per sample
    expected = m * torch.softmax(-energies[0].double(), -1)
    assert torch.allclose(counts.mean(0), expected, atol=0.05)
    assert counts[:, 3].sum() == 0
    if scheme == "stratified":  # lower variance: counts stay within 2 of their expectation
        assert (counts - expected).abs().max() < 2
        assert (idx[:, 1:] >= idx[:, :-1]).all()  # drawn in order


@pytest.mark.parametrize("m", [2048, 16384])
def test_stratified_resampling_is_exact_at_large_m(m: int) -> None:
    """Equal energies give every index exactly once; a zero-weight last sample is never drawn
    (float32 arithmetic got both wrong at these sizes: ``i + u`` rounds up near ``i = M``)."""
    g = torch.Generator().manual_seed(0)
    idx = resample_indices(torch.zeros(8, m), "stratified", g)
    assert torch.equal(idx, torch.arange(m).expand(8, m))
    energies = torch.zeros(200, m)
    energies[:, -1] = 1e4  # weight exp(-1e4) == 0
    idx = resample_indices(energies, "stratified", g)
    assert int(idx.max()) == m - 2


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_nan_or_minus_inf_energy_is_a_clear_error(scheme: str, bad: float) -> None:
    calls = iter(range(100))

    def energy(s: Tensor) -> Tensor:
        e = s.square().sum(-1)
        if next(calls) == 1:  # the second evaluation goes wrong
            e[0, 5] = bad
        return e

    dfo = DerivativeFreeOptimizer(DFOConfig(num_samples=64, iterations=3, resampling=scheme))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN or -inf"):
        run(dfo, energy, 2, *box(2), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_plus_inf_marks_impossible_actions(scheme: str) -> None:
    """``+inf`` energies (e.g. a constraint) are never picked; a problem with no finite energy
    at all is an error."""

    def energy(s: Tensor) -> Tensor:  # the left half of the box is forbidden
        return torch.where(
            s[..., 0] < 0, torch.inf, 50 * (s - torch.tensor([0.5, 0.0])).square().sum(-1)
        )

    dfo = DerivativeFreeOptimizer(DFOConfig(num_samples=512, iterations=3, resampling=scheme))  # type: ignore[arg-type]
    best = run(dfo, energy, 3, *box(2), generator=torch.Generator().manual_seed(0))
    assert (best[:, 0] >= 0).all() and (best - torch.tensor([0.5, 0.0])).norm(dim=-1).max() < 0.05
    with pytest.raises(ValueError, match=r"\+inf for every sample"):
        run(dfo, lambda s: torch.full(s.shape[:2], torch.inf), 1, *box(2))


def test_no_images_no_actions(model: EBMConvMLP) -> None:
    out = DerivativeFreeOptimizer(CFG).infer(
        ModelEnergy.of_images(model, torch.rand(0, 3, 12, 12), 1 << 20), *box(2)
    )
    assert isinstance(out, Tensor) and out.shape == (0, 2)


def test_stratified_resampling_never_draws_out_of_range() -> None:
    """Extreme energies (one finite favourite, the rest far away) still give valid indices."""
    energies = torch.full((3, 1000), 1e4)
    energies[:, 999] = 0.0
    idx = resample_indices(energies, "stratified", torch.Generator().manual_seed(1))
    assert (idx == 999).all()
    with pytest.raises(ValueError, match="resampling must be one of"):
        DFOConfig(resampling="systematic")  # type: ignore[arg-type]


def test_minimum_outside_the_bounds_lands_on_the_boundary() -> None:
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.5])
    g = torch.Generator().manual_seed(2)
    best = run(
        DerivativeFreeOptimizer(CFG), bowl(torch.tensor([0.2, 2.0])), 2, low, high, generator=g
    )
    assert (best >= low).all() and (best <= high).all()
    assert torch.allclose(best[:, 1], torch.full((2,), 0.5), atol=TOL)
    assert (best[:, 0] - 0.2).abs().max() < TOL


def test_history_records_every_population() -> None:
    low, high = box(2)
    cfg = DFOConfig(num_samples=64, iterations=4)
    g = torch.Generator().manual_seed(3)
    best, hist = run(
        DerivativeFreeOptimizer(cfg),
        bowl(torch.zeros(2)),
        3,
        low,
        high,
        generator=g,
        return_history=True,
    )
    assert len(hist.samples) == len(hist.energies) == cfg.iterations + 1
    assert all(s.shape == (3, 64, 2) for s in hist.samples)
    assert all(e.shape == (3, 64) for e in hist.energies)
    final_best = hist.samples[-1][torch.arange(3), hist.energies[-1].argmin(-1)]
    assert torch.equal(best, final_best)  # returns the lowest-energy final sample
    spread = [s.std(dim=1).mean().item() for s in hist.samples]
    assert spread[-1] < spread[0] / 3  # the population contracts


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_same_generator_same_answer(iterations: int) -> None:
    low, high = box(2)
    dfo = DerivativeFreeOptimizer(DFOConfig(num_samples=128, iterations=iterations))
    fn = two_wells(torch.tensor([0.3, 0.3]), torch.tensor([-0.3, -0.3]), scale=5.0)
    out = [
        run(dfo, fn, 5, low, high, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)
    ]
    assert torch.equal(out[0], out[1])
    assert not torch.equal(out[0], out[2])


@pytest.fixture(scope="module")
def model() -> EBMConvMLP:
    torch.manual_seed(0)
    cnn = CNNConfig(channels=(4, 8), strides=(1, 1), pools=(1, 1), out_channels=4)
    return EBMConvMLP(
        EBMConfig(action_dim=2, backbone=BackboneConfig(cnn=cnn), hidden_dims=(32,))
    ).eval()


@pytest.mark.parametrize("num_samples, iterations", [(64, 3), (256, 2)])
def test_fast_path_matches_naive_path(model: EBMConvMLP, num_samples: int, iterations: int) -> None:
    images = torch.rand(3, 3, 12, 12)
    low, high = box(2)
    dfo = DerivativeFreeOptimizer(DFOConfig(num_samples=num_samples, iterations=iterations))
    fast = dfo.infer(
        ModelEnergy.of_images(model, images, 1 << 20),
        low,
        high,
        generator=torch.Generator().manual_seed(5),
    )
    naive = dfo.infer(
        NaiveModelEnergy(model, images), low, high, generator=torch.Generator().manual_seed(5)
    )
    # Same generator -> same draws -> the same answer. (The split and concatenated first layers
    # may differ by float rounding, ~1e-7, which changes no resampling decision here.)
    assert torch.equal(fast, naive)


@pytest.mark.parametrize("max_chunk_elements", [32, 32 * 40, 32 * 100, 32 * 250, 1 << 20, None])
def test_chunking_does_not_change_the_answer(
    model: EBMConvMLP, max_chunk_elements: int | None
) -> None:
    """Chunks within one image (32 x 40), exactly one image (32 x 100), two images per group,
    all at once, and the per-device default all give the answer of one unchunked pass."""
    images = torch.rand(4, 3, 12, 12)
    low, high = box(2)
    dfo = DerivativeFreeOptimizer(DFOConfig(num_samples=100, iterations=2))
    chunk = ImplicitPolicyConfig(max_chunk_elements=max_chunk_elements).chunk_elements("cpu")
    expected = dfo.infer(
        ModelEnergy.of_images(model, images, 1 << 30),
        low,
        high,
        generator=torch.Generator().manual_seed(9),
    )
    got = dfo.infer(
        ModelEnergy.of_images(model, images, chunk),
        low,
        high,
        generator=torch.Generator().manual_seed(9),
    )
    assert torch.allclose(got, expected, atol=1e-6)


def test_default_chunk_size_depends_on_the_device() -> None:
    assert ImplicitPolicyConfig().chunk_elements("cpu") == 1 << 18  # cache-sized
    assert ImplicitPolicyConfig().chunk_elements("cuda") == 1 << 26  # few large kernels
    assert ImplicitPolicyConfig(max_chunk_elements=500).chunk_elements("cuda") == 500


def test_bench_dfo_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from demos.bench_dfo import BenchDfoConfig, run_bench_dfo

    cfg = BenchDfoConfig(
        backbones=("faster",),
        train_backbones=("faster",),
        train_sizes=(32,),
        ref_samples=64,
        ref_iterations=1,
        repeats=1,
        batch_size=2,
        batch_repeats=1,
        train_steps=1,
        train_repeats=1,
        dfo_train_steps=1,
    )
    run_bench_dfo(cfg)
    out = capsys.readouterr().out
    assert "| faster |" in out and "64 x 1" in out and "2048 x 5" in out
    assert (
        out.count(" | 1/1 | 0.0e+00 |") == 2 and out.count(" | 2/2 | 0.0e+00 |") == 2
    )  # paths agree
