"""``ibc-gym bench env|dfo|latency|optimizers|train``: benchmarks that print measured medians, ratios and
errors."""

from __future__ import annotations

from demos.bench_dfo import BenchDfoConfig, run_bench_dfo
from demos.bench_env import BenchEnvConfig, run_bench_env
from demos.bench_latency import BenchLatencyConfig, run_bench_latency
from demos.bench_optimizers import BenchOptimizersConfig, run_bench_optimizers
from demos.bench_train import BenchTrainConfig, run_bench_train

COMMANDS = [
    (
        "bench",
        "Speed benchmarks (medians of repeated runs).",
        {
            "env": (
                "Control steps/s of every env, with and without rendering.",
                BenchEnvConfig,
                run_bench_env,
            ),
            "dfo": ("DFO latency and training throughput.", BenchDfoConfig, run_bench_dfo),
            "latency": (
                "Action-selection latency in fresh processes: percentiles and the compute floor.",
                BenchLatencyConfig,
                run_bench_latency,
            ),
            "optimizers": (
                "DFO, Langevin and autoregressive DFO on N-D coordinate regression (N = 2..16).",
                BenchOptimizersConfig,
                run_bench_optimizers,
            ),
            "train": (
                "Training samples/s on 1 and 2 processes (torchrun), env-job and reference settings.",
                BenchTrainConfig,
                run_bench_train,
            ),
        },
        None,
    )
]
