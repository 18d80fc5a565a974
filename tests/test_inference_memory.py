"""Inference reuses its scratch memory: workspaces, cached optimizers, the allocator setting."""

from __future__ import annotations

import copy
import pickle
import platform
import resource
import sys
import threading

import numpy as np
import pytest
import torch

from ebm_policy import (
    BackboneConfig,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    runtime,
)
from ebm_policy.energy import ModelEnergy
from ebm_policy.models import EBMConvMLP
from ebm_policy.optimizers import DerivativeFreeOptimizer
from ebm_policy.optimizers.dfo import resample_indices
from ebm_policy.workspace import Workspace


def test_workspace_reuses_and_grows_its_buffers() -> None:
    ws = Workspace()
    a = ws.get("x", (4, 8))
    b = ws.get("x", (2, 8))
    assert b.data_ptr() == a.data_ptr() and b.shape == (2, 8)
    c = ws.get("x", (10, 8))  # larger: a new buffer, kept from now on
    assert ws.get("x", (3, 3)).data_ptr() == c.data_ptr()
    assert ws.get("x", (3,), torch.int64).dtype == torch.int64  # one buffer per dtype
    assert ws.nbytes() == 80 * 4 + 3 * 8
    ws.clear()
    assert ws.nbytes() == 0


def test_workspace_is_per_thread_and_never_copied() -> None:
    ws = Workspace()
    mine = ws.get("x", (16,))
    other: list[int] = []
    t = threading.Thread(target=lambda: other.append(ws.get("x", (16,)).data_ptr()))
    t.start()
    t.join()
    assert other[0] != mine.data_ptr()
    assert copy.deepcopy(ws).nbytes() == 0
    assert pickle.loads(pickle.dumps(ws)).nbytes() == 0


@pytest.fixture(scope="module")
def model() -> EBMConvMLP:
    torch.manual_seed(0)
    cnn = CNNConfig(channels=(4, 8), strides=(1, 1), pools=(1, 1), out_channels=4)
    return EBMConvMLP(
        EBMConfig(action_dim=3, backbone=BackboneConfig(cnn=cnn), hidden_dims=(32,))
    ).eval()


@pytest.mark.parametrize("max_rows", [7, 50, 200, 10_000])
def test_chunked_head_with_a_shared_workspace_matches_forward(
    model: EBMConvMLP, max_rows: int
) -> None:
    """Chunks within an image, whole images per group; the workspace reused across calls."""
    features = torch.randn(3, model.feature_dim)
    ws = Workspace()
    for m in (100, 30):
        actions = torch.rand(3, m, 3) * 2 - 1
        expected = model.energy(features, actions)
        got = model.energy_chunked(features, actions, max_rows, ws)
        assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_resampling_into_a_workspace_draws_what_a_fresh_call_draws(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    energies = torch.randn(4, 300, generator=g) * 3
    energies[0, :10] = float("inf")  # impossible samples are never drawn
    ws = Workspace()
    resample_indices(energies, "stratified", torch.Generator().manual_seed(1), ws)  # dirty it
    fresh = resample_indices(energies, "stratified", torch.Generator().manual_seed(seed))
    reused = resample_indices(energies, "stratified", torch.Generator().manual_seed(seed), ws)
    assert torch.equal(fresh, reused)
    assert not bool((reused[0] < 10).any())


def test_dfo_answers_are_fresh_tensors_and_repeatable(model: EBMConvMLP) -> None:
    """The optimizer's populations live in its workspace; what it returns does not."""
    images = torch.rand(2, 3, 12, 12)
    dfo = DerivativeFreeOptimizer(DFOConfig(num_samples=64, iterations=2))
    low, high = -torch.ones(3), torch.ones(3)

    def run(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        energy = ModelEnergy.of_images(model, images, 1 << 20, Workspace())
        best, hist = dfo.infer(
            energy, low, high, generator=torch.Generator().manual_seed(seed), return_history=True
        )
        return best, hist.samples

    first, first_hist = run(0)
    kept = first.clone(), [s.clone() for s in first_hist]
    run(1)  # reuses the optimizer's workspace
    assert torch.equal(first, kept[0])
    assert all(torch.equal(a, b) for a, b in zip(first_hist, kept[1], strict=True))
    assert len({s.data_ptr() for s in first_hist}) == len(first_hist)
    assert torch.equal(run(0)[0], first)


@pytest.mark.parametrize("group", [1, 2, 5])
def test_encoding_in_groups_gives_the_same_features(model: EBMConvMLP, group: int) -> None:
    images = torch.rand(5, 3, 12, 12)
    whole = ModelEnergy.of_images(model, images, 1 << 20)
    grouped = ModelEnergy.of_images(model, images, 1 << 20, encode_group=group)
    assert torch.allclose(whole.features, grouped.features, atol=1e-6)


def policy(channels: int = 8, num_samples: int = 256) -> ImplicitPolicy:
    cnn = CNNConfig(channels=(channels, channels), strides=(1, 1), pools=(1, 1), out_channels=4)
    cfg = ImplicitPolicyConfig(
        model=EBMConfig(action_dim=2, backbone=BackboneConfig(cnn=cnn), hidden_dims=(32,)),
        optimizer=DFOConfig(num_samples=num_samples, iterations=2),
    )
    return ImplicitPolicy(cfg, np.zeros(2), np.ones(2), seed=0).eval()


def test_select_action_allocates_nothing_large_after_the_first_call() -> None:
    """After a warm-up call, repeated calls fault in (almost) no new pages: the energy head's
    activations, the populations and the encoder's maps reuse memory the process kept. (At
    these sizes the code before workspaces faulted in 0 to 1,300 pages per 20 calls, depending
    on the process.)"""
    p = policy(channels=16, num_samples=16384)
    images = torch.randint(0, 255, (1, 96, 96, 3), dtype=torch.uint8)
    for _ in range(3):
        p.select_action(images, torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        p.select_action(images, torch.Generator().manual_seed(0))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 20 * 16, f"{faults} page faults in 20 calls"  # 16 pages = 64 KB per call


def test_optimizers_chosen_per_call_are_built_once() -> None:
    p = policy()
    cfg = DFOConfig(num_samples=32, iterations=1)
    assert p.resolve_optimizer(cfg) is p.resolve_optimizer(DFOConfig(num_samples=32, iterations=1))
    assert p.resolve_optimizer() is p.optimizer


def test_retain_freed_memory_is_idempotent() -> None:
    policy().select_action(torch.zeros(1, 8, 8, 3, dtype=torch.uint8))  # sets it on a CPU
    first = runtime.retain_freed_memory()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert first
    assert runtime.retain_freed_memory() == first
    assert runtime.retain_freed_memory(False) == first  # too late to decline: still in effect
