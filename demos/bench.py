"""``ibc-gym bench env|dfo``: speed benchmarks that print measured medians and ratios."""

from __future__ import annotations

from demos.bench_dfo import BenchDfoConfig, run_bench_dfo
from demos.bench_env import BenchEnvConfig, run_bench_env

COMMANDS = [
    (
        "bench",
        "Speed benchmarks (medians of repeated runs).",
        {
            "env": ("Control steps/s of every env, with and without rendering.", BenchEnvConfig, run_bench_env),
            "dfo": ("DFO latency and training throughput.", BenchDfoConfig, run_bench_dfo),
        },
        None,
    )
]
