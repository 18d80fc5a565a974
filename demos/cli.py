"""The ``ibc-gym`` console script: one sub-command per job.

Each job lives in its own module under ``demos/`` and declares ``COMMANDS``: a list of
``(name, help, ConfigDataclass, run_function)``. Options come from the config's fields.

Exit codes: 0 done; 2 bad options or input files (one line on stderr, nothing written);
1 the job failed (training diverged, the folder is in use by another process, another training
process died); 130 interrupted.

A job whose config has an ``nproc_per_node`` field (``ibc-gym train --nproc-per-node N``) runs
on N processes when N > 1: this process becomes torchrun's agent (``demos.launch``) and starts N
workers with the same options. In a worker (any torchrun-started process with ``WORLD_SIZE > 1``)
errors are printed as ``ibc-gym train (rank R of W): error: ...``; an error every rank raises
alike (``shared``: divergence, rank 0's refusal to start) only by each machine's first process.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from demos.args import OneLineParser, add_dataclass_arguments, dataclass_from_namespace
from demos.launch import in_torchrun, launch
from ebm_policy.distributed import DistributedError, env_rank
from ebm_policy.runlock import FolderInUseError
from ebm_policy.trainer import TrainingDivergedError

# Modules that contribute sub-commands, in the order they appear in --help.
COMMAND_MODULES = (
    "demos.collect",
    "demos.export",
    "demos.video",
    "demos.train",
    "demos.evaluate",
    "demos.rl",
    "demos.demo",
    "demos.coord_regression",
    "demos.bench",
    "demos.benchmark",
    "demos.viz",
    "demos.report",
)


def _available_commands() -> list[tuple[str, str, type, Callable[[Any], Any]]]:
    commands = []
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:  # module not written yet
                continue
            raise
        commands.extend(mod.COMMANDS)
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ibc-gym",
        description="Implicit behavioral cloning on image-based pybullet reaching tasks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, cfg_cls, run in _available_commands():
        if isinstance(cfg_cls, dict):  # a group of sub-sub-commands: {name: (help, cls, run)}
            p = sub.add_parser(name, help=help_text, description=help_text)
            inner = p.add_subparsers(dest="subcommand", required=True, metavar="WHAT")
            for sub_name, (sub_help, sub_cls, sub_run) in cfg_cls.items():
                sp = inner.add_parser(sub_name, help=sub_help, description=sub_help)
                add_dataclass_arguments(sp, sub_cls)
                sp.set_defaults(_cfg_cls=sub_cls, _run=sub_run, _parser=sp)
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_dataclass_arguments(p, cfg_cls)
        p.set_defaults(_cfg_cls=cfg_cls, _run=run, _parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad option: one line printed already (2)
        return e.code if isinstance(e.code, int) else 2
    name = " ".join(x for x in (ns.command, getattr(ns, "subcommand", None)) if x)
    try:  # a ValueError while building (a rule relating several options) is a one-line error
        cfg = dataclass_from_namespace(ns._cfg_cls, ns, parser=ns._parser)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    nproc = getattr(cfg, "nproc_per_node", 1)
    if nproc > 1 and not in_torchrun():
        return launch(
            nproc, list(sys.argv[1:] if argv is None else argv), name, getattr(cfg, "out", None)
        )
    try:
        ns._run(cfg)
    except (TrainingDivergedError, FolderInUseError, DistributedError) as e:
        return _fail(name, e, 1)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        return _fail(name, e, 2)
    except KeyboardInterrupt:
        rank = env_rank()
        if rank is None or rank.local_rank == 0:  # one line per machine
            print(f"ibc-gym {name}: interrupted", file=sys.stderr)
        return 130
    return 0


def _fail(name: str, error: BaseException, code: int) -> int:
    rank = env_rank()
    if rank is not None and rank.enabled:  # a torchrun worker
        if getattr(error, "shared", False) and rank.local_rank != 0:
            return code  # the same line comes from this machine's first process
        name = f"{name} ({rank})"
        message = _one_line(error).removeprefix(f"{rank}: ")
        print(f"ibc-gym {name}: error: {message}", file=sys.stderr)
        return code
    print(f"ibc-gym {name}: error: {_one_line(error)}", file=sys.stderr)
    return code


def _one_line(error: BaseException) -> str:
    """The error's message on one line (an error re-raised from a DataLoader worker carries the
    worker's traceback: its last line is the message)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught "):
        return lines[-1].split(": ", 1)[-1]
    return " ".join(lines) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
