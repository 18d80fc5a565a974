"""The typed command line: options from dataclass fields, --help for every command."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin

import pytest

from demos.args import (
    Rule,
    add_dataclass_arguments,
    check_options,
    dataclass_from_namespace,
    help_field,
    iter_options,
    one_of,
)
from demos.cli import _available_commands, build_parser, main


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
    cfg = parse(
        [
            "--count",
            "7",
            "--rate",
            "0.25",
            "--out",
            "o/p",
            "--mode",
            "slow",
            "--sizes",
            "4",
            "5",
            "6",
            "--no-flag",
            "--limit",
            "9",
            "--name",
            "b",
        ]
    )
    assert cfg == Example("b", 7, 0.25, Path("o/p"), "slow", (4, 5, 6), False, 9)
    assert parse(["--limit", "none"]).limit is None


@pytest.mark.parametrize(
    ("argv", "sizes"),
    [([], (1, 2)), (["--sizes", "7"], (7,)), (["--sizes", "4", "--sizes", "5", "6"], (4, 5, 6))],
)
def test_sequence_option_repeats_add_up_without_the_default(
    argv: list[str], sizes: tuple[int, ...]
) -> None:
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
    [
        ([], Path("runs/x")),
        (["a/b"], Path("a/b")),
        (["--run-dir", "c"], Path("c")),
        (["d", "--frames", "3"], Path("d")),
    ],
)
def test_positional_field(argv: list[str], expected: Path) -> None:
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, WithPositional)
    assert dataclass_from_namespace(WithPositional, p.parse_args(argv)).run_dir == expected


# ---- validation: every option's rule, applied at parse time -----------------------------------


def all_configs() -> list[tuple[str, type]]:
    """``(command, config class)`` of every command, sub-commands included."""
    out = []
    for name, _, cls, _ in _available_commands():
        if isinstance(cls, dict):
            out += [(f"{name} {sub}", sub_cls) for sub, (_, sub_cls, _) in cls.items()]
        else:
            out.append((name, cls))
    return out


def numeric(tp: object) -> bool:
    tp = (
        next((a for a in get_args(tp) if a is not type(None)), tp)
        if get_origin(tp) in (Union, UnionType)
        else tp
    )
    if get_origin(tp) is tuple:
        tp = get_args(tp)[0]
    return tp in (int, float)


@pytest.mark.parametrize(("command", "cls"), all_configs(), ids=[c for c, _ in all_configs()])
def test_every_option_declares_its_valid_values(command: str, cls: type) -> None:
    """Numbers declare a range, env ids and devices a check (nested options included); every
    default follows its rule."""
    for option, f, hint in iter_options(cls):
        rule: Rule = f.metadata.get("rule") or Rule()
        if numeric(hint):
            assert (rule.min, rule.max, rule.above) != (None, None, None), (
                f"{command} {option}: no range"
            )
        if f.name in ("env", "envs", "device"):
            assert rule.check is not None, f"{command} {option}: no check"
    check_options(cls())  # the defaults are valid


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["eval", "--seed", "-10"], "argument --seed: must be an integer >= 0, got -10"),
        (["eval", "--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
        (["eval", "--episodes", "0"], "argument --episodes: must be an integer >= 1, got 0"),
        (["eval", "--episodes", "-3"], "argument --episodes: must be an integer >= 1, got -3"),
        (["collect", "--env", "ibc/Nope-v0"], "argument --env: must be a registered env id (ibc/"),
        (["collect", "--noise", "nan"], "argument --noise: must be a finite number >= 0, got nan"),
        (
            ["train", "--ckpt-interval", "0"],
            "argument --ckpt-interval: must be an integer >= 1, got 0",
        ),
        (
            ["train", "--cnn.out-channels", "0"],
            "argument --cnn.out-channels: must be an integer >= 1, got 0",
        ),
        (["train", "--steps", "-5"], "argument --steps: must be an integer >= 1, got -5"),
        (
            ["train", "--implicit.optim.lr", "inf"],
            "argument --implicit.optim.lr: must be a finite number > 0, got inf",
        ),
        (
            ["train", "--cnn.channels", "8", "8", "--cnn.strides", "2"],
            "channels, strides and pools need one entry per stage",
        ),
        (
            ["train", "--implicit.optimizer.steps", "50"],
            "--implicit.optimizer.steps is not an option of --implicit.optimizer dfo (its options: "
            "--implicit.optimizer.num-samples,",
        ),
        (
            ["train", "--implicit", "langevin", "--implicit.optimizer.steps", "-1"],
            "argument --implicit.optimizer.steps: must be an integer >= 1, got -1",
        ),
        (
            ["train", "--implicit.optimizer", "simulated_annealing"],
            "argument --implicit.optimizer: invalid choice: 'simulated_annealing' (choose from 'dfo', 'langevin', 'autoregressive_dfo', 'proposal_dfo')",
        ),
        (
            ["train", "--implicit.optimizer", "autoregressive_dfo"],
            "optimizer 'autoregressive_dfo' needs a model trained with loss 'autoregressive'",
        ),
        (
            ["eval", "--optimizer", "langevin", "--optimizer.resampling", "stratified"],
            "--optimizer.resampling is not an option of --optimizer langevin",
        ),
        (
            ["train", "--keep-every", "300"],
            "keep_every (300) must be a multiple of ckpt_interval (500)",
        ),
        (["train", "--steps", "many"], "argument --steps: invalid int value: 'many'"),
        (
            ["video", "--render-size", "5000"],
            "argument --render-size: must be an integer in [16, 1024]",
        ),
        (
            ["demo", "--policies", "diffusion"],
            "argument --policies: must be one of implicit, explicit",
        ),
        (["viz", "dfo", "--dpi", "0"], "argument --dpi: must be an integer >= 1, got 0"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(
    argv: list[str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # the default outputs (runs/, data/, out/, videos/) land here
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert err[0].startswith(
        f"ibc-gym {' '.join(a for a in argv[:2] if not a.startswith('-'))}: error: "
    )
    assert list(tmp_path.iterdir()) == []


def test_library_configs_apply_the_same_rules() -> None:
    from demos.evaluate import EvalConfig
    from demos.train import TrainJobConfig

    with pytest.raises(ValueError, match=r"--episodes must be an integer >= 1, got 0"):
        EvalConfig(episodes=0)
    from ebm_policy import OptimConfig, TrainConfig

    with pytest.raises(ValueError, match=r"OptimConfig.lr must be a finite number > 0, got nan"):
        OptimConfig(lr=float("nan"))
    with pytest.raises(ValueError, match=r"TrainConfig.steps must be an integer >= 1, got 0"):
        TrainJobConfig(train=TrainConfig(steps=0))


def test_rule_descriptions() -> None:
    assert Rule(min=16, max=1024).describe(int) == "an integer in [16, 1024]"
    assert Rule(above=0, max=1).describe(float) == "a finite number in (0, 1]"
    assert Rule(above=0).problem(0.0) == "must be a finite number > 0, got 0.0"
    assert Rule(min=0).problem(True) is None and Rule(min=1).problem(3) is None
    assert Rule(check=one_of("a", "b")).problem("c") == "must be one of a, b, got 'c'"


def test_a_checkpoint_of_an_unregistered_env_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ebm_policy import (
        BackboneConfig,
        CNNConfig,
        ExplicitConfig,
        ExplicitPolicy,
        ExplicitPolicyConfig,
        save_checkpoint,
    )

    cnn = CNNConfig(channels=(4,), strides=(1,), pools=(1,), out_channels=2)
    policy = ExplicitPolicy(
        ExplicitPolicyConfig(
            model=ExplicitConfig(backbone=BackboneConfig(cnn=cnn), hidden_dims=(4,))
        ),
        [-1, -1],
        [1, 1],
    )
    meta = {
        "env_id": "ibc/Gone-v0",
        "env_kwargs": {},
        "image_shape": [16, 16, 3],
        "train_seeds": [0],
    }
    ckpt = save_checkpoint(tmp_path / "run" / "ckpt_last.pt", policy, metadata=meta)
    assert main(["eval", "--ckpt", str(ckpt), "--episodes", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on 'ibc/Gone-v0', which is not a registered env" in err[0]
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt_last.pt"]  # no eval/ folder
