"""Action chunks: training windows at episode ends, chunked policies end to end, the agent that
executes part of each chunk, and the counter-example strategies made for long actions
(perturbations of the expert, ranking NCE with a learned proposal and its sampler)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.learned import IBCAgent, load_agent
from demos.benchmark_config import BenchmarkConfig, Cell
from demos.benchmark_summary import format_summary
from demos.cli import main
from demos.collect import CollectConfig, collect
from demos.evaluate import EvalConfig, action_change, evaluate
from demos.train import TrainJobConfig, run_train, tiny_policies
from ebm_policy import (
    ArrayDataset,
    ChunkConfig,
    ChunkedDataset,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicy,
    ExplicitPolicyConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    MixtureProposal,
    ModelEnergy,
    ProposalDFOConfig,
    TrainConfig,
    load_checkpoint,
    load_policy,
    save_checkpoint,
    window_indices,
)
from ebm_policy.losses import perturbed_negatives, ranking_nce_loss
from ebm_policy.objectives import ranking_nce
from ebm_policy.optimizers import DFOConfig, build_optimizer
from ebm_policy.trainer import _training_part

pytestmark = pytest.mark.usefixtures("one_thread")

S, A, H = 3, 2, 4


# ---- windows --------------------------------------------------------------------------------


def test_windows_stop_at_episode_ends_and_repeat_the_last_step() -> None:
    assert window_indices(np.array([3, 5]), 3).tolist() == [
        [0, 1, 2],
        [1, 2, 2],
        [2, 2, 2],  # the episode's last step, padded with itself
        [3, 4, 4],  # the next episode starts fresh
        [4, 4, 4],
    ]
    assert window_indices(np.array([2]), 1).tolist() == [[0], [1]]


@pytest.mark.parametrize("ends", [[3, 3], [0, 2], [4, 2]])
def test_bad_episode_ends_are_refused(ends: list[int]) -> None:
    with pytest.raises(ValueError, match="episode_ends must be increasing"):
        window_indices(np.array(ends), 2)


def test_chunked_dataset_items_hold_the_next_actions() -> None:
    actions = np.arange(10, dtype=np.float32).reshape(5, 2)  # step t: (2t, 2t + 1)
    base = ArrayDataset(actions, states=np.zeros((5, S), np.float32))
    data = ChunkedDataset(base, 3, episode_ends=np.array([3, 5]))
    assert len(data) == 5 and data.inputs == "state" and data.state_dim == S
    np.testing.assert_array_equal(data[1]["action"], [[2, 3], [4, 5], [4, 5]])
    np.testing.assert_array_equal(data[3]["action"], [[6, 7], [8, 9], [8, 9]])
    assert data.actions.shape == (5, 2)  # bounds stay those of one action
    with pytest.raises(ValueError, match="episode boundaries"):
        ChunkedDataset(base, 3)
    with pytest.raises(ValueError, match="cover 4 steps, the dataset has 5"):
        ChunkedDataset(base, 3, episode_ends=np.array([4]))


# ---- policies -------------------------------------------------------------------------------

SMALL = {
    "dfo": ImplicitPolicyConfig.for_method("dfo", optimizer=DFOConfig(num_samples=64)),
    "perturbed": ImplicitPolicyConfig.for_method("perturbed", optimizer=DFOConfig(num_samples=64)),
    "ranking": ImplicitPolicyConfig.for_method(
        "ranking", optimizer=ProposalDFOConfig(num_samples=64)
    ),
}


def chunk_policy(kind: str, horizon: int = H) -> ImplicitPolicy | ExplicitPolicy:
    stats = {"state_mean": np.zeros(S), "state_std": np.ones(S)}
    if kind == "explicit":
        cfg = ExplicitPolicyConfig(
            model=ExplicitConfig(inputs="state", state_dim=S, hidden_dims=(32,)),
            chunk=ChunkConfig(horizon=horizon),
        )
        return ExplicitPolicy(cfg, [-1.0, 0.0], [1.0, 4.0], seed=0, **stats)
    base = SMALL[kind]
    model = EBMConfig(inputs="state", state_dim=S, hidden_dims=(32,))
    cfg = ImplicitPolicyConfig(
        model=model, chunk=ChunkConfig(horizon=horizon), loss=base.loss, optimizer=base.optimizer
    )
    return ImplicitPolicy(cfg, [-1.0, 0.0], [1.0, 4.0], seed=0, **stats)


def chunk_batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    actions = np.stack([rng.uniform(-1, 1, (n, H)), rng.uniform(0, 4, (n, H))], axis=-1)
    return {
        "state": rng.normal(size=(n, S)).astype(np.float32),
        "action": actions.astype(np.float32),
    }


@pytest.mark.parametrize("kind", ["dfo", "perturbed", "ranking", "explicit"])
def test_a_chunked_policy_end_to_end(kind: str, tmp_path: Path) -> None:
    policy = chunk_policy(kind)
    assert policy.config.model.action_dim == H * A and policy.action_dim == A
    loss, metrics = policy(chunk_batch(8), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and metrics["train/loss"] == pytest.approx(loss.item())
    states = chunk_batch(5, seed=1)["state"]
    g = torch.Generator
    chunks = policy.predict_action_chunk(states, g().manual_seed(0))
    assert isinstance(chunks, np.ndarray) and chunks.shape == (5, H, A)
    pad = 0.05 * np.array([2.0, 4.0])
    assert (chunks >= np.array([-1.0, 0.0]) - pad - 1e-5).all()
    assert (chunks <= np.array([1.0, 4.0]) + pad + 1e-5).all()
    first = policy.select_action(states, g().manual_seed(0))
    np.testing.assert_array_equal(first, chunks[:, 0])
    one = policy.predict_action_chunk(states[2], g().manual_seed(0))
    assert one.shape == (H, A) and policy.select_action(states[2]).shape == (A,)
    with pytest.raises(ValueError, match=rf"chunks of {H} actions of {A} dims"):
        policy({"state": states, "action": np.zeros((5, A), np.float32)})
    path = save_checkpoint(tmp_path / "c.pt", policy.eval(), metadata={"env_id": "x"})
    assert load_checkpoint(path)["config"]["chunk"]["horizon"] == H
    loaded = load_policy(path)
    assert loaded.horizon == H and loaded.config == policy.config
    np.testing.assert_array_equal(
        loaded.predict_action_chunk(states, g().manual_seed(0)),
        policy.predict_action_chunk(states, g().manual_seed(0)),
    )


@pytest.mark.parametrize("kind", ["dfo", "explicit"])
def test_chunks_of_one_action_train_like_single_actions(kind: str) -> None:
    """``ChunkedDataset(data, 1)`` items hold ``(1, A)`` actions: the same loss as ``(A,)``."""
    policy = chunk_policy(kind, horizon=1)
    batch = chunk_batch(6)
    single = {"state": batch["state"], "action": batch["action"][:, 0]}
    window = {"state": batch["state"], "action": batch["action"][:, :1]}
    g = torch.Generator
    loss_single, _ = policy(single, generator=g().manual_seed(0))
    loss_window, _ = policy(window, generator=g().manual_seed(0))
    torch.testing.assert_close(loss_window, loss_single)


def test_execute_must_fit_in_the_chunk() -> None:
    assert ChunkConfig(horizon=8).steps_executed == 4
    assert ChunkConfig(horizon=1).steps_executed == 1
    assert ChunkConfig(horizon=8, execute=1).steps_executed == 1
    with pytest.raises(ValueError, match=r"execute \(5\) must not exceed horizon \(4\)"):
        ChunkConfig(horizon=4, execute=5)


def test_proposal_dfo_needs_a_model_with_a_proposal() -> None:
    with pytest.raises(ValueError, match="needs a model trained with loss 'ranking'"):
        ImplicitPolicyConfig(optimizer=ProposalDFOConfig())
    policy = chunk_policy("dfo")
    with pytest.raises(ValueError, match="needs a model trained with loss 'ranking'"):
        policy.select_action(np.zeros((1, S), np.float32), optimizer=ProposalDFOConfig())


# ---- the agent --------------------------------------------------------------------------------


STATE_AGENT = {
    "env_id": "ibc/ReachTarget-v0",
    "env_kwargs": {},
    "image_shape": None,
    "obs_type": "state",
}
"""Checkpoint metadata of a state policy for the agent tests."""


class CountingPolicy:
    """Stands in for a chunked policy: chunk ``i`` of call ``c`` is ``100 c + 10 t + i``."""

    kind = "implicit"
    source = None
    inputs = "state"
    state_dim = S

    def __init__(self, horizon: int, execute: int) -> None:
        self.config = ImplicitPolicyConfig(chunk=ChunkConfig(horizon=horizon, execute=execute))
        self.calls: list[int] = []

    def eval(self) -> CountingPolicy:
        return self

    def predict_action_chunk(self, obs: dict[str, np.ndarray], generator: object) -> np.ndarray:
        c = len(self.calls)
        self.calls.append(len(obs["state"]))
        t = np.arange(self.config.chunk.horizon)[None, :, None]
        rows = np.arange(len(obs["state"]))[:, None, None]
        return np.broadcast_to(100 * c + 10 * t + rows, (len(rows), len(t[0]), A)).astype(
            np.float32
        )


def test_the_agent_executes_k_actions_of_each_chunk_and_replans_after_a_reset() -> None:
    policy = CountingPolicy(horizon=4, execute=2)
    agent = IBCAgent(policy, STATE_AGENT)  # type: ignore[arg-type]
    obs = np.zeros((2, S), np.float32)
    got = [agent.select_action(obs)[:, 0].tolist() for _ in range(3)]
    # call 0 gives both envs their chunk (rows 0, 1); 2 actions each, then call 1
    assert got == [[0.0, 1.0], [10.0, 11.0], [100.0, 101.0]]
    assert policy.calls == [2, 2]
    agent.reset([1])  # env 1's episode ended: only it asks again
    assert agent.select_action(obs)[:, 0].tolist() == [110.0, 200.0]
    assert policy.calls == [2, 2, 1]
    agent.with_execute(4)
    with pytest.raises(ValueError, match="execute must be in 1..4"):
        agent.with_execute(5)


def test_temporal_ensembling_averages_the_plans_for_each_step() -> None:
    policy = CountingPolicy(horizon=3, execute=1)
    agent = IBCAgent(policy, STATE_AGENT).with_temporal_ensemble(0.0)  # type: ignore[arg-type]
    obs = np.zeros((1, S), np.float32)
    got = [float(agent.select_action(obs)[0, 0]) for _ in range(4)]
    # step 1: chunk 0's action 1 (10) and chunk 1's action 0 (100); step 3: chunks 1-3 only
    assert got == pytest.approx([0.0, 55.0, (20 + 110 + 200) / 3, (120 + 210 + 300) / 3])
    agent.with_temporal_ensemble(1.0).reset()
    agent.select_action(obs)
    w = np.exp(-np.arange(2.0))  # the older plan weighs more
    assert float(agent.select_action(obs)[0, 0]) == pytest.approx(
        (w[0] * 410 + w[1] * 500) / w.sum()
    )
    with pytest.raises(ValueError, match="decay must be a number >= 0"):
        agent.with_temporal_ensemble(-1.0)


def test_action_change_is_the_mean_absolute_step_difference() -> None:
    actions = np.array([[0.0, 0.0], [1.0, -1.0], [1.0, 1.0]])
    assert action_change(actions) == pytest.approx((1 + 1 + 0 + 2) / 4)
    assert action_change(actions[:1]) == 0.0


# ---- counter-examples -------------------------------------------------------------------------


def test_ranking_nce_loss_by_hand() -> None:
    energies = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    log_q = torch.tensor([[-1.0, 0.0, 0.5], [0.0, 2.0, -2.0]])
    labels = torch.tensor([0, 2])
    expected = 0.0
    for e, q, k in zip(energies.tolist(), log_q.tolist(), labels.tolist(), strict=True):
        logits = [-ei - qi for ei, qi in zip(e, q, strict=True)]
        expected += -(logits[k] - math.log(sum(math.exp(x) for x in logits)))
    got = ranking_nce_loss(energies, log_q, labels)
    assert got.item() == pytest.approx(expected / 2, rel=1e-6)
    # without the correction (log q = 0) it is plain InfoNCE
    plain = ranking_nce_loss(energies, torch.zeros_like(log_q), labels)
    assert plain.item() != pytest.approx(got.item())


def test_the_ranking_objective_adds_the_proposal_likelihood() -> None:
    policy = chunk_policy("ranking")
    assert isinstance(policy, ImplicitPolicy) and policy.model.proposal is not None
    batch = chunk_batch(6)
    loss, metrics = policy(batch, generator=torch.Generator().manual_seed(0))
    weight = policy.config.loss.proposal_weight  # type: ignore[union-attr]
    assert loss.item() == pytest.approx(
        metrics["train/ranking_nce"] + weight * metrics["train/proposal_nll"], rel=1e-5
    )
    # the proposal is trained by its likelihood only: the ranking term adds no gradient to it
    x, positives = policy._batch_input(batch), policy._actions(batch["action"])
    low, high = policy._unit_box()
    cfg = policy.config.loss
    total = ranking_nce(cfg, policy.model, x, positives, low, high, torch.Generator())[0]  # type: ignore[arg-type]
    proposal = policy.model.proposal
    nll = -proposal.log_prob(policy.model.encode(x), positives.unsqueeze(1)).mean()
    params = list(proposal.parameters())
    for g_total, g_nll in zip(
        torch.autograd.grad(total, params), torch.autograd.grad(weight * nll, params), strict=True
    ):
        torch.testing.assert_close(g_total, g_nll)


def test_mixture_density_integrates_to_one_and_samples_stay_in_the_box() -> None:
    torch.manual_seed(0)
    q = MixtureProposal(feature_dim=3, action_dim=1, components=3, hidden_dims=(8,))
    with torch.no_grad():
        q.out.bias.mul_(5)  # far-out means and wide stds: the tanh squashing still keeps the box
    features = torch.randn(2, 3)
    grid = torch.linspace(-1 + 1e-5, 1 - 1e-5, 40001)
    density = q.log_prob(features, grid.view(1, -1, 1).expand(2, -1, -1)).exp()
    mass = torch.trapezoid(density, grid, dim=-1)
    assert torch.allclose(mass, torch.ones(2), atol=2e-3), mass
    samples = q.sample(features, 5000, torch.Generator().manual_seed(0))
    assert samples.shape == (2, 5000, 1) and bool((samples.abs() <= 1).all())


def test_the_proposal_sampler_draws_inside_the_bounds() -> None:
    policy = chunk_policy("ranking")
    assert isinstance(policy, ImplicitPolicy)
    energy = policy.action_energy(np.random.default_rng(0).normal(size=(3, S)).astype(np.float32))
    assert isinstance(energy, ModelEnergy) and energy.has_proposal
    low, high = -0.5 * torch.ones(H * A), 0.25 * torch.ones(H * A)
    best, hist = build_optimizer(ProposalDFOConfig(num_samples=128, iterations=2)).infer(
        energy, low, high, generator=torch.Generator().manual_seed(0), return_history=True
    )
    for s in [*hist.samples, best]:
        assert bool((s >= low).all()) and bool((s <= high).all())
    # the first population is the proposal's draw (clamped), not a uniform one
    drawn = energy.propose(128, torch.Generator().manual_seed(0)).clamp(low, high)
    torch.testing.assert_close(hist.samples[0], drawn)
    plain = chunk_policy("dfo")
    assert isinstance(plain, ImplicitPolicy)
    with pytest.raises(ValueError, match="no learned proposal"):
        plain.action_energy(np.zeros((1, S), np.float32)).propose(4)


def test_perturbed_counter_examples_lie_near_the_expert() -> None:
    positives = torch.zeros(2, 16)
    low, high = -torch.ones(16), torch.ones(16)
    g = torch.Generator().manual_seed(0)
    neg = perturbed_negatives(positives, 100, (0.05, 0.4), 0.2, low, high, g)
    assert neg.shape == (2, 100, 16) and bool((neg.abs() <= 1).all())
    uniform, near = neg[:, :20], neg[:, 20:]
    assert float(uniform.std()) == pytest.approx(1 / math.sqrt(3), rel=0.1)  # U[-1, 1]
    assert float(near[:, 0::2].std()) == pytest.approx(0.05, rel=0.1)  # the scales in turn
    assert float(near[:, 1::2].std()) == pytest.approx(0.4, rel=0.1)


# ---- the command line and the benchmark -------------------------------------------------------


def test_train_with_chunks_and_act_in_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = collect(
        CollectConfig(
            env="ibc/ReachTarget-v0",
            episodes=2,
            obs_type="state",
            out=tmp_path / "d.h5",
        )
    )
    policies = tiny_policies()
    ckpt = run_train(
        TrainJobConfig(
            data=data,
            out=tmp_path / "run",
            policies=replace(policies, chunk=ChunkConfig(horizon=4, execute=3)),
            train=TrainConfig(
                steps=2, batch_size=4, log_interval=1, progress=False, energy_snapshots=0
            ),
        )
    )
    agent = load_agent(ckpt)
    assert (agent.horizon, agent.execute) == (4, 3)
    env = agent.make_env(max_episode_steps=7)
    obs, _ = env.reset(seed=0)
    calls = []
    predict = agent.policy.predict_action_chunk
    agent.policy.predict_action_chunk = lambda *a, **k: calls.append(1) or predict(*a, **k)  # type: ignore[method-assign]
    for _ in range(7):
        obs, *_ = env.step(agent.select_action(obs))
    assert len(calls) == 3  # steps 0, 3, 6
    env.close()
    # ibc-gym eval --execute / --temporal-ensemble: one prediction per step, their own folders
    counted: list[int] = []
    original = ImplicitPolicy.predict_action_chunk

    def counting(self: ImplicitPolicy, *args: object, **kwargs: object) -> object:
        counted.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ImplicitPolicy, "predict_action_chunk", counting)
    for option, folder in (
        ({"execute": 1}, "eval_execute1"),
        ({"temporal_ensemble": 0.0}, "eval_ensemble0"),
    ):
        counted.clear()
        metrics = evaluate(
            EvalConfig(
                ckpt=ckpt,
                episodes=2,
                num_envs=1,
                asynchronous=False,
                videos=0,
                progress=False,
                **option,  # type: ignore[arg-type]
            )
        )
        assert (ckpt.parent / folder / "metrics.json").is_file()
        assert len(counted) == round(2 * metrics["eval/mean_episode_length"])
        assert metrics["eval/mean_action_change"] > 0  # an untrained policy's commands move
    with pytest.raises(ValueError, match="execute must be in 1..4"):
        evaluate(EvalConfig(ckpt=ckpt, episodes=1, num_envs=1, videos=0, execute=5))


def test_benchmark_cells_span_horizons_and_the_summary_compares_them() -> None:
    cfg = BenchmarkConfig(horizons=(1, 4), policies=("implicit-ranking",), seeds=(0,), demos=(10,))
    cells = cfg.cells()
    assert [c.horizon for c in cells] == [1, 4]
    assert cells[0].name.endswith("_position_s0") and cells[1].name.endswith("_position_h4_s0")
    policy, configs = cfg.policy_configs("implicit-ranking", 4)
    assert policy == "implicit" and configs.chunk.horizon == 4
    assert (
        configs.implicit.loss.kind == "ranking"
        and configs.implicit.optimizer.kind == "proposal_dfo"
    )
    assert "horizons" not in BenchmarkConfig().grid_dict()  # grids from before read the same
    rows = []
    for c, rate, change in ((cells[0], 0.5, 0.2), (cells[1], 0.75, 0.05)):
        rows.append(
            {
                **c.settings(),
                "cell": c.name,
                "step": 2000,
                "episodes": 4,
                "successes": int(4 * rate),
                "success_rate": rate,
                "policy_ms_per_step": 2.0,
                "mean_action_change": change,
                "train_seconds": 1.0,
                "eval_seconds": 1.0,
            }
        )
    text = format_summary(rows, last=1)
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("| ibc/ReachAroundObstacle-v0 | position | pixels")
    )
    assert "| 50% ± 0 / 2.0 ms / 0.200 | 75% ± 0 / 2.0 ms / 0.050 |" in line
    assert "implicit-ranking H=4" in text
    assert Cell("e", 1, "position", 0, "implicit").horizon == 1


def test_a_proposal_model_is_a_residual_energy_model() -> None:
    """``E = E_head - log q`` everywhere (training, chunked inference, gradients)."""
    policy = chunk_policy("ranking")
    assert isinstance(policy, ImplicitPolicy)
    model = policy.model
    features = torch.randn(2, S)
    actions = (torch.rand(2, 5, H * A) * 1.6 - 0.8).requires_grad_(True)
    head = model.head(features, actions)
    log_q = model.proposal.log_prob(features, actions)  # type: ignore[union-attr]
    torch.testing.assert_close(model.energy(features, actions), head - log_q)
    torch.testing.assert_close(
        model.energy_chunked(features, actions.detach(), max_rows=3), (head - log_q).detach()
    )
    energies, grads = model.energy_and_grad(features, actions.detach())
    (expected,) = torch.autograd.grad((head - log_q).sum(), actions)
    torch.testing.assert_close(energies, (head - log_q).detach())
    torch.testing.assert_close(grads, expected, rtol=1e-4, atol=1e-5)


def test_sb3_predict_starts_new_episodes_on_episode_start() -> None:
    policy = CountingPolicy(horizon=4, execute=4)
    agent = IBCAgent(policy, STATE_AGENT)  # type: ignore[arg-type]
    obs = np.zeros((2, S), np.float32)
    agent.predict(obs, episode_start=np.array([True, True]))
    agent.predict(obs, episode_start=np.array([False, True]))  # sub-env 1 was reset
    assert policy.calls == [2, 1]


def test_a_resumed_run_may_change_only_inference_settings() -> None:
    config = {"chunk": {"horizon": 4, "execute": 2}, "encode_group": 4, "optimizer": {}, "loss": {}}
    assert _training_part(config) == {"chunk": {"horizon": 4}, "loss": {}}


def test_the_benchmark_sets_chunks_only_through_horizons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``chunk`` is hidden in the benchmark's flattened models: no ``--execute`` there."""
    assert main(["benchmark", "--out", str(tmp_path / "b"), "--execute", "2"]) == 2
    assert "unrecognized arguments: --execute 2" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
