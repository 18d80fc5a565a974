"""Nested configs (dotted options) and tagged unions on the command line (``demos/args.py``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import pytest

from demos.args import (
    OneLineParser,
    add_dataclass_arguments,
    check_options,
    dataclass_from_namespace,
    iter_options,
    param,
    parse_config,
)


@dataclass(frozen=True)
class Net:
    """A toy network."""

    hidden: tuple[int, ...] = param((64,), "hidden widths", min=1)
    dropout: float = param(0.0, "dropout rate", min=0, max=1)
    activation: Literal["relu", "tanh"] = param("relu", "activation")
    layer_norm: bool = param(False, "layer norm")


@dataclass(frozen=True)
class Schedule:
    warmup_steps: int = param(0, "warmup steps", min=0)
    decay: float | None = param(None, "decay per step (none: constant)", above=0, max=1)


@dataclass(frozen=True)
class Optim:
    lr: float = param(1e-3, "learning rate", above=0)
    min_lr: float = param(0.0, "final learning rate", min=0)
    schedule: Schedule = param(factory=Schedule, help="learning-rate schedule")

    def __post_init__(self) -> None:
        if self.min_lr > self.lr:
            raise ValueError(f"--optim.min-lr ({self.min_lr}) must be <= --optim.lr ({self.lr})")


@dataclass(frozen=True)
class Grid:
    kind: ClassVar[str] = "grid"
    num_samples: int = param(256, "samples", min=1)
    iterations: int = param(3, "iterations", min=0)


@dataclass(frozen=True)
class Walk:
    kind: ClassVar[str] = "walk"
    num_samples: int = param(64, "samples", min=2)  # shared with Grid, another rule
    step_size: float = param(0.1, "step size", above=0)
    net: Net = param(factory=Net, help="the proposal network")


@dataclass(frozen=True)
class Exact:
    kind: ClassVar[str] = "exact"


@dataclass(frozen=True)
class Ema:
    decay: float = param(0.99, "EMA decay", above=0, max=1)


@dataclass(frozen=True)
class Job:
    name: str = param("job", "run name")
    steps: int = param(100, "steps", min=1)
    net: Net = param(factory=lambda: Net(hidden=(32, 32), dropout=0.1), help="the network")
    optim: Optim = param(factory=Optim, help="optimizer")
    search: Grid | Walk | Exact = param(factory=lambda: Grid(num_samples=512), help="action search")
    ema: Ema | None = param(None, "weight averaging")


PRESET_NET = Net(hidden=(32, 32), dropout=0.1)


def parse(argv: list[str], default: Job | None = None) -> Job:
    return parse_config(OneLineParser(prog="toy"), Job, argv, default)


def test_defaults_come_from_the_presets() -> None:
    cfg = parse([])
    assert cfg == Job() and cfg.net == PRESET_NET and cfg.search == Grid(num_samples=512)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--net.dropout", "0.5"], Job(net=replace(PRESET_NET, dropout=0.5))),  # hidden kept
        (
            ["--net.hidden", "8", "--net.hidden", "4", "2"],
            Job(net=replace(PRESET_NET, hidden=(8, 4, 2))),
        ),
        (["--net.activation", "tanh"], Job(net=replace(PRESET_NET, activation="tanh"))),
        (["--net.layer-norm"], Job(net=replace(PRESET_NET, layer_norm=True))),
        (["--net.layer-norm", "--net.no-layer-norm"], Job()),
        (
            ["--optim.schedule.warmup-steps", "5"],
            Job(optim=Optim(schedule=Schedule(warmup_steps=5))),
        ),
        (["--optim.schedule.decay", "0.5"], Job(optim=Optim(schedule=Schedule(decay=0.5)))),
        (["--optim.schedule.decay", "none"], Job()),
        (["--optim.lr", "0.1", "--optim.min-lr", "0.01"], Job(optim=Optim(lr=0.1, min_lr=0.01))),
        (["--steps", "7", "--name", "x"], Job(steps=7, name="x")),
        # the default kind: from the preset; another kind: from its class's defaults
        (["--search.iterations", "9"], Job(search=Grid(num_samples=512, iterations=9))),
        (["--search", "grid", "--search.num-samples", "8"], Job(search=Grid(num_samples=8))),
        (["--search", "walk"], Job(search=Walk())),
        (["--search", "walk", "--search.num-samples", "9"], Job(search=Walk(num_samples=9))),
        (["--search.step-size", "0.5", "--search", "walk"], Job(search=Walk(step_size=0.5))),
        (["--search", "walk", "--search.net.hidden", "3"], Job(search=Walk(net=Net(hidden=(3,))))),
        (["--search", "exact"], Job(search=Exact())),
        (["--ema", "ema"], Job(ema=Ema())),
        (["--ema", "ema", "--ema.decay", "0.5"], Job(ema=Ema(decay=0.5))),
        (["--ema", "none"], Job()),
    ],
)
def test_round_trip(argv: list[str], expected: Job) -> None:
    assert parse(argv) == expected


def test_options_not_given_keep_the_default_instance() -> None:
    preset = Job(steps=5, optim=Optim(lr=0.5), search=Walk(step_size=0.2), ema=Ema(decay=0.9))
    assert parse([], preset) is preset
    cfg = parse(
        ["--optim.min-lr", "0.1", "--search.num-samples", "3", "--ema.decay", "0.8"], preset
    )
    assert cfg == replace(
        preset,
        optim=Optim(lr=0.5, min_lr=0.1),
        search=Walk(num_samples=3, step_size=0.2),
        ema=Ema(decay=0.8),
    )
    assert cfg.net is preset.net  # untouched parts are the preset's own objects
    assert parse(["--ema", "none", "--search", "grid"], preset) == replace(
        preset, ema=None, search=Grid()
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--net.dropout", "2"],
            "argument --net.dropout: must be a finite number in [0, 1], got 2.0",
        ),
        (
            ["--optim.schedule.warmup-steps", "-1"],
            "argument --optim.schedule.warmup-steps: must be an integer >= 0",
        ),
        (["--net.hidden", "4", "0"], "argument --net.hidden: must be an integer >= 1, got 0"),
        (["--net.activation", "gelu"], "argument --net.activation: invalid choice: 'gelu'"),
        (["--search", "random"], "argument --search: invalid choice: 'random'"),
        (
            ["--search.step-size", "0.5"],
            "--search.step-size is not an option of --search grid "
            "(its options: --search.num-samples, --search.iterations)",
        ),
        (
            ["--search", "walk", "--search.iterations", "2"],
            "--search.iterations is not an option of --search walk (its options: --search.num-samples, "
            "--search.step-size, --search.net.hidden, --search.net.dropout, --search.net.activation, "
            "--search.net.layer-norm)",
        ),
        (
            ["--search", "exact", "--search.num-samples", "2"],
            "--search.num-samples is not an option of --search exact (it has no options)",
        ),
        (["--ema.decay", "0.5"], "--ema.decay is not an option of --ema none (it has no options)"),
        # a rule the members disagree on: the chosen kind's, after parsing
        (
            ["--search", "walk", "--search.num-samples", "1"],
            "argument --search.num-samples: must be an integer >= 2, got 1",
        ),
        (
            ["--search.num-samples", "0"],
            "argument --search.num-samples: must be an integer >= 1, got 0",
        ),
        (
            ["--optim.lr", "0.1", "--optim.min-lr", "0.5"],
            "--optim.min-lr (0.5) must be <= --optim.lr (0.1)",
        ),
    ],
)
def test_bad_options_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("toy: error: ") and err[0].endswith("(see toy --help)")
    ), err
    assert message in err[0], err


def test_without_a_parser_build_errors_are_value_errors() -> None:
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, Job)
    ns = p.parse_args(["--search.step-size", "1"])
    with pytest.raises(ValueError, match=r"^--search.step-size is not an option of --search grid"):
        dataclass_from_namespace(Job, ns)
    with pytest.raises(ValueError, match="must be <="):
        dataclass_from_namespace(Job, p.parse_args(["--optim.min-lr", "1"]))


def test_help_lists_the_dotted_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        parse(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for line in [
        "--net.hidden HIDDEN [HIDDEN ...]",
        "hidden widths (default: (32, 32); an integer >= 1)",
        "dropout rate (default: 0.1; a finite number in [0, 1])",
        "--net.layer-norm, --net.no-layer-norm",
        "--optim.schedule.decay DECAY",
        "decay per step (none: constant) (default: None; a finite number in (0, 1])",
        "--search {grid,walk,exact}",
        "action search (default: grid)",
        "samples (grid, walk; default: 512 (grid), 64 (walk); an integer >= 1 (grid), an integer >= 2 (walk))",
        "step size (walk; default: 0.1; a finite number > 0)",
        "--search.net.dropout DROPOUT",
        "--ema {ema,none}",
        "--net.*:",
        "--search KIND, --search.*:",
    ]:
        assert line in out, line


def test_iter_options_walks_every_leaf_once() -> None:
    names = [name for name, _, _ in iter_options(Job)]
    assert names == [
        "--name", "--steps",
        "--net.hidden", "--net.dropout", "--net.activation", "--net.layer-norm",
        "--optim.lr", "--optim.min-lr", "--optim.schedule.warmup-steps", "--optim.schedule.decay",
        "--search.num-samples", "--search.iterations", "--search.step-size",
        "--search.net.hidden", "--search.net.dropout", "--search.net.activation", "--search.net.layer-norm",
        "--ema.decay",
    ]  # fmt: skip
    hints = {name: (f.name, hint) for name, f, hint in iter_options(Job)}
    assert hints["--optim.schedule.decay"] == ("decay", float | None)


def test_check_options_names_nested_options() -> None:
    check_options(Job())
    with pytest.raises(
        ValueError, match=r"^--search\.net\.dropout must be a finite number in \[0, 1\], got 3.0"
    ):
        check_options(Job(search=Walk(net=Net(dropout=3.0))))


@dataclass(frozen=True)
class NoKindA:
    x: int = param(1, "x", min=0)


@dataclass(frozen=True)
class NoKindB:
    y: int = param(1, "y", min=0)


@dataclass(frozen=True)
class IntX:
    kind: ClassVar[str] = "a"
    x: int = param(1, "x", min=0)


@dataclass(frozen=True)
class StrX:
    kind: ClassVar[str] = "b"
    x: str = param("1", "x")


@dataclass(frozen=True)
class Untagged:
    u: NoKindA | NoKindB = param(factory=NoKindA, help="u")


@dataclass(frozen=True)
class Clashing:
    u: IntX | StrX = param(factory=IntX, help="u")


@dataclass(frozen=True)
class NestedPositional:
    net: Net = param(factory=Net, help="net", positional=True)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (Untagged, "declare kind: ClassVar"),
        (Clashing, "--u.x: union members declare it differently"),
        (NestedPositional, "only top-level options can be positional"),
    ],
)
def test_bad_declarations_fail_when_the_parser_is_built(cls: type, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        add_dataclass_arguments(argparse.ArgumentParser(), cls)


# ---- flatten, presets, hide, cli=False ------------------------------------------------------------


@dataclass(frozen=True)
class Loop:
    steps: int = param(10, "steps", min=1)
    seed: int = param(0, "seed", min=0)
    secret: int = param(7, "set by the command", cli=False)


@dataclass(frozen=True)
class Model:
    net: Net = param(factory=Net, help="network")
    optim: Optim = param(factory=Optim, help="optimizer")


PRESETS = {
    "small": lambda: Model(net=Net(hidden=(8,))),
    "big": lambda: Model(net=Net(hidden=(512, 512))),
}


@dataclass(frozen=True)
class Shaped:
    loop: Loop = param(factory=Loop, flatten=True, help="the loop")
    model: Model = param(
        factory=PRESETS["small"], presets=PRESETS, hide=("optim.schedule",), help="the model"
    )


def parse_shaped(argv: list[str]) -> Shaped:
    return parse_config(OneLineParser(prog="shaped"), Shaped, argv)


def test_flattened_options_have_no_prefix_and_cli_false_fields_none() -> None:
    cfg = parse_shaped(["--steps", "5", "--seed", "2"])
    assert cfg.loop == Loop(steps=5, seed=2)
    options = [name for name, _, _ in iter_options(Shaped)]
    assert "--steps" in options and "--loop.steps" not in options
    assert (
        "--secret" not in options and "--model.optim.schedule.warmup-steps" not in options
    )  # hidden
    with pytest.raises(SystemExit):
        parse_shaped(["--secret", "3"])


@pytest.mark.parametrize(
    ("argv", "hidden"),
    [
        ([], (8,)),
        (["--model", "big"], (512, 512)),
        (["--model", "big", "--model.net.hidden", "4"], (4,)),
    ],
)
def test_a_preset_is_the_base_its_options_change(argv: list[str], hidden: tuple[int, ...]) -> None:
    cfg = parse_shaped([*argv, "--model.optim.lr", "0.5"])
    assert cfg.model.net.hidden == hidden and cfg.model.optim.lr == 0.5
    assert cfg.model.net.dropout == 0.0  # untouched fields keep the preset's values


def test_an_unknown_preset_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse_shaped(["--model", "huge"])
    assert e.value.code == 2
    assert (
        "argument --model: invalid choice: 'huge' (choose from 'small', 'big')"
        in capsys.readouterr().err
    )
