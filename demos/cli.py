"""The ``ibc-gym`` console script: one sub-command per job.

Each job lives in its own module under ``demos/`` and declares ``COMMANDS``: a list of
``(name, help, ConfigDataclass, run_function)``. Options come from the config's fields.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from demos.args import add_dataclass_arguments, dataclass_from_namespace

# Modules that contribute sub-commands, in the order they appear in --help.
COMMAND_MODULES = (
    "demos.collect",
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
    parser = argparse.ArgumentParser(
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
                sp.set_defaults(_cfg_cls=sub_cls, _run=sub_run)
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_dataclass_arguments(p, cfg_cls)
        p.set_defaults(_cfg_cls=cfg_cls, _run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        cfg = dataclass_from_namespace(ns._cfg_cls, ns)  # may refuse bad options (ValueError)
        ns._run(cfg)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"ibc-gym {ns.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ibc-gym {ns.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
