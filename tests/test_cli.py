"""The typed command line: options from dataclass fields, --help for every command."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from demos.args import add_dataclass_arguments, dataclass_from_namespace, help_field
from demos.cli import build_parser


@dataclass(frozen=True)
class Example:
    name: str = help_field("a", "a name")
    count: int = help_field(3, "a count")
    rate: float = help_field(0.5, "a rate")
    out: Path = help_field(Path("x"), "a path")
    mode: Literal["fast", "slow"] = help_field("fast", "a mode")
    sizes: tuple[int, ...] = help_field((1, 2), "sizes")
    flag: bool = help_field(True, "a flag")
    limit: int | None = help_field(None, "optional limit")


def parse(argv: list[str]) -> Example:
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, Example)
    return dataclass_from_namespace(Example, p.parse_args(argv))


def test_defaults() -> None:
    assert parse([]) == Example()


def test_typed_values() -> None:
    cfg = parse(["--count", "7", "--rate", "0.25", "--out", "o/p", "--mode", "slow", "--sizes", "4", "5", "6",
                 "--no-flag", "--limit", "9", "--name", "b"])
    assert cfg == Example("b", 7, 0.25, Path("o/p"), "slow", (4, 5, 6), False, 9)
    assert parse(["--limit", "none"]).limit is None


@pytest.mark.parametrize(
    ("argv", "sizes"),
    [([], (1, 2)), (["--sizes", "7"], (7,)), (["--sizes", "4", "--sizes", "5", "6"], (4, 5, 6))],
)
def test_sequence_option_repeats_add_up_without_the_default(argv: list[str], sizes: tuple[int, ...]) -> None:
    assert parse(argv).sizes == sizes


@pytest.mark.parametrize("argv", [["--count", "x"], ["--mode", "medium"]])
def test_bad_values_exit(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(argv)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"collect", "video"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, "--help"])
        assert e.value.code == 0
    assert "usage: ibc-gym" in capsys.readouterr().out


@dataclass(frozen=True)
class WithPositional:
    run_dir: Path = help_field(Path("runs/x"), "a run", positional=True)
    frames: int = help_field(2, "frames")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], Path("runs/x")), (["a/b"], Path("a/b")), (["--run-dir", "c"], Path("c")), (["d", "--frames", "3"], Path("d"))],
)
def test_positional_field(argv: list[str], expected: Path) -> None:
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, WithPositional)
    assert dataclass_from_namespace(WithPositional, p.parse_args(argv)).run_dir == expected
