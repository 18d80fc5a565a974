"""``ibc-gym bench latency``: FLOP counting, the floor, and one tiny run end to end."""

from __future__ import annotations

import pytest
import torch

from demos.bench_latency import (
    BenchLatencyConfig,
    CountingEnergy,
    encoder_flops,
    policy_for,
    run_bench_latency,
)
from ebm_policy import BackboneConfig, CNNConfig, EBMConfig
from ebm_policy.models import EBMConvMLP


def test_encoder_flops_count_every_convolution_from_its_shape() -> None:
    cnn = CNNConfig(channels=(4, 8), strides=(2, 1), pools=(1, 1), out_channels=3)
    model = EBMConvMLP(EBMConfig(backbone=BackboneConfig(cnn=cnn), hidden_dims=(16,)))
    # 16 px: stage 1 at 8x8 (stride 2), stage 2 at 8x8; each stage = conv + 2-conv residual block
    per_pixel = 3 * 4 * 9 + 2 * 4 * 4 * 9 + 4 * 8 * 9 + 2 * 8 * 8 * 9 + 8 * 3  # + 1x1 project
    assert encoder_flops(model, torch.rand(1, 3, 16, 16)) == 2 * 64 * per_pixel


@pytest.mark.parametrize("row, rows_per_image", [("dfo", 2048 * 4), ("autoregressive_dfo", None)])
def test_counting_energy_counts_the_rows_the_optimizer_scores(
    row: str, rows_per_image: int | None
) -> None:
    policy = policy_for(row, action_dim=2, seed=0)
    images = torch.zeros(3, 16, 16, 3, dtype=torch.uint8)
    energy = CountingEnergy(policy.action_energy(images), policy.model)
    policy.resolve_optimizer().infer(energy, -torch.ones(2), torch.ones(2))
    if rows_per_image is not None:  # DFO: every iteration and the final population
        assert energy.rows == 3 * rows_per_image
    h = policy.model.cfg.hidden_dims[0]
    a_in = policy.model.head.first.in_features - policy.model.feature_dim
    assert energy.forward_flops == 2 * (a_in + 1) * h + 2 * h
    assert energy.flops == energy.rows * energy.forward_flops


def test_a_tiny_run_prints_one_row_per_setting(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = BenchLatencyConfig(
        rows=("dfo",), images=(1, 2), processes=1, calls=2, batch_calls=2, warmup=0, size=16
    )
    run_bench_latency(cfg)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| dfo |")]
    assert [r.split("|")[2].strip() for r in rows] == ["1", "2"]
    assert "per process, median/p95" in out
