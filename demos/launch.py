"""Starting a command on several processes of this machine through torchrun.

``ibc-gym train --nproc-per-node N ...`` (N > 1) does not train itself: it runs
``torch.distributed.run`` (torchrun, in this process, as its elastic agent) with
``--standalone --nproc-per-node N -m demos.cli train ...`` (the same options), which starts N
workers; each sees ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment and trains as one
rank. When one worker fails or dies, torchrun stops the others; this module then prints one line
naming the rank and how it ended, and returns the exit code (1, or 2 when every failed rank
refused its input, 130 when interrupted).

Several machines: run torchrun yourself on each of them (see the README), e.g.
``torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500
--rdzv-id RUN -m demos.cli train ...``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path


def in_torchrun() -> bool:
    """Whether this process is a worker that torchrun started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or (
        "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ
    )


def torchrun_argv(nproc: int, argv: Sequence[str]) -> list[str]:
    """torchrun's arguments for ``ibc-gym <argv>`` on ``nproc`` processes of this machine."""
    return [
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "demos.cli",
        *argv,
    ]


def launch(nproc: int, argv: Sequence[str], name: str, out: Path | None = None) -> int:
    """Run ``ibc-gym <argv>`` on ``nproc`` local processes through torchrun; ``-> exit code``.
    ``out`` (the run folder) lets a failure say which checkpoint the run can resume from."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets anyway, without its banner
    try:
        torchrun.main(torchrun_argv(nproc, argv))
    except ChildFailedError as e:
        message, code = describe_failure(e, out)
        print(f"ibc-gym {name}: error: {message}", file=sys.stderr)
        return code
    except SignalException as e:
        print(f"ibc-gym {name}: interrupted ({e.sigval.name})", file=sys.stderr)
        return 130
    return 0


def describe_failure(error: object, out: Path | None = None) -> tuple[str, int]:
    """One line on torchrun's ``ChildFailedError`` (the first rank that failed) and the exit code."""
    rank, failure = error.get_first_failure()  # type: ignore[attr-defined]
    codes = {f.exitcode for f in error.failures.values()}  # type: ignore[attr-defined]
    codes = codes - {-signal.SIGTERM} or codes  # torchrun's own stopping of the other ranks
    others = "; the other processes stopped"
    resume = resume_hint(out)
    if failure.exitcode < 0:
        how = f"was killed by {failure.signal_name()}"
        return f"rank {rank} (pid {failure.pid}) {how}{others}. {resume}", 1
    if codes == {130}:
        return "interrupted", 130
    code = 2 if codes == {2} else 1
    return (
        f"rank {rank} (pid {failure.pid}) failed with exit code {failure.exitcode} (its error is above){others}. {resume}",
        code,
    )


def resume_hint(out: Path | None) -> str:
    """What the run in ``out`` can continue from."""
    last = None if out is None else out / "ckpt_last.pt"
    if last is None:
        return "Continue from the run's last checkpoint with --resume"
    if not last.exists():
        return f"No checkpoint was written in {out}"
    from ebm_policy.checkpoint import load_checkpoint

    try:
        step = load_checkpoint(last)["step"]
    except ValueError:
        return f"Continue from {last} with --resume"
    return f"The checkpoint of step {step} ({last}) stays: continue with --resume"
