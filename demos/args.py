"""Typed, validated command-line options from frozen dataclasses (cleanrl style).

Each command declares one dataclass; every field becomes ``--field-name`` with its type, default
and the field's ``metadata["help"]``. ``Literal`` fields become choices, ``bool`` fields get
``--flag/--no-flag``, ``tuple[int, ...]`` fields take several values, given at once or over repeats
(``--ckpt A B`` = ``--ckpt A --ckpt B``).

Each field declares the values it accepts next to it: ``help_field(2000, "...", min=1)``,
``above=0`` (exclusive), ``max=``, ``check=registered_env`` (any ``value -> None`` that raises
``ValueError``); a float must also be finite unless ``finite=False``. The parser applies the rule
to every value given, so a bad one stops the command with exit code 2 and one line naming the
option and what it accepts, before anything is read or written; ``check_options(cfg)`` applies
the same rules to a config built in code.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")
Check = Callable[[Any], None]


@dataclasses.dataclass(frozen=True)
class Rule:
    """The values an option accepts (numeric bounds are inclusive, ``above`` is exclusive)."""

    min: float | None = None
    max: float | None = None
    above: float | None = None
    finite: bool = True  # floats only
    check: Check | None = None  # raises ValueError("must be ..., got ...")

    def describe(self, tp: type) -> str:
        """What the rule accepts, e.g. ``an integer >= 1`` or ``a finite number > 0``."""
        noun = "an integer" if tp is int else "a finite number" if self.finite else "a number"
        if self.max is not None and self.min is not None:
            return f"{noun} in [{self.min:g}, {self.max:g}]"
        if self.max is not None and self.above is not None:
            return f"{noun} in ({self.above:g}, {self.max:g}]"
        if self.min is not None:
            return f"{noun} >= {self.min:g}"
        if self.above is not None:
            return f"{noun} > {self.above:g}"
        if self.max is not None:
            return f"{noun} <= {self.max:g}"
        return noun

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (``"must be an integer >= 1, got 0"``), or ``None``."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bad = isinstance(value, float) and self.finite and not math.isfinite(value)
            bad |= self.min is not None and not value >= self.min
            bad |= self.max is not None and not value <= self.max
            bad |= self.above is not None and not value > self.above
            if bad:
                return f"must be {self.describe(type(value))}, got {value}"
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as e:
                return str(e)
        return None


def help_field(
    default: Any,
    help: str,
    *,
    positional: bool = False,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    finite: bool = True,
    check: Check | None = None,
    **kwargs: Any,
) -> Any:
    """A dataclass field with a help string and the rule its values follow (see the module).

    ``positional=True`` makes it an optional positional argument (``ibc-gym report RUN_DIR``)
    that the ``--name`` option can also set.
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    rule = Rule(min=min, max=max, above=above, finite=finite, check=check)
    metadata = {"help": help, "positional": positional, "rule": rule}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def registered_env_ids() -> tuple[str, ...]:
    """The ibc-gym env ids registered with Gymnasium (``ibc/...``)."""
    from gymnasium.envs.registration import registry

    import envs  # noqa: F401  (registers the ibc/ ids)

    return tuple(sorted(k for k in registry if k.startswith("ibc/")))


def registered_env(value: str) -> None:
    """``check=`` for env ids: a registered ``ibc/`` env."""
    ids = registered_env_ids()
    if value not in ids:
        raise ValueError(f"must be a registered env id ({', '.join(ids)}), got {value!r}")


def torch_device(value: str) -> None:
    """``check=`` for torch device names (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    import torch

    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"must be a torch device (cpu, cuda, cuda:1, ...), got {value!r}"
        ) from None


def one_of(*choices: str) -> Check:
    """``check=`` for the items of a ``tuple[str, ...]`` option."""

    def check(value: str) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")

    return check


def check_options(cfg: Any) -> None:
    """Apply every field's rule to ``cfg``: ``ValueError`` naming the first bad option."""
    for f in dataclasses.fields(cfg):
        rule = f.metadata.get("rule")
        value = getattr(cfg, f.name)
        if rule is None or value is None:
            continue
        for item in value if isinstance(value, tuple) else (value,):
            problem = rule.problem(item)
            if problem:
                raise ValueError(f"--{f.name.replace('_', '-')} {problem}")


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of the dataclass ``cls`` to ``parser``."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        name = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        rule: Rule = f.metadata.get("rule") or Rule()
        item_tp = get_args(tp)[0] if get_origin(tp) is tuple else tp
        accepts = rule.describe(item_tp) if item_tp in (int, float) else ""
        accepts = "" if accepts in ("", "an integer", "a finite number") else f"; {accepts}"
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "help": f"{help_text} (default: {default}{accepts})",
        }
        if required:
            kwargs["required"] = True
            kwargs["help"] = help_text
        else:
            kwargs["default"] = default
        origin = get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            choices = get_args(tp)
            kwargs["choices"] = choices
            kwargs["type"] = type(choices[0])
        elif origin is tuple:
            kwargs["action"] = "extend"  # repeats add up; the default is never extended into:
            kwargs["nargs"] = "+"  # argparse leaves the field out, and the dataclass fills it in
            kwargs["type"] = get_args(tp)[0]
            if not required:
                kwargs["default"] = argparse.SUPPRESS
        elif tp in (int, float, str, Path):
            kwargs["type"] = tp
        else:
            raise TypeError(f"unsupported option type {tp!r} for field {f.name!r}")
        if optional and tp is not bool:
            kwargs["type"] = _optional(kwargs["type"])
        if "type" in kwargs:
            kwargs["type"] = _checked(kwargs["type"], rule)
        parser.add_argument(name, **kwargs)
        if f.metadata.get("positional"):
            pos_kwargs = {k: v for k, v in kwargs.items() if k not in ("dest", "required", "default")}
            parser.add_argument(
                f"_{f.name}_positional", metavar=f.name.upper(), nargs="?", default=None, **pos_kwargs
            )


def _optional(conv: typing.Callable[[str], Any]) -> typing.Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "") else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def _checked(conv: typing.Callable[[str], Any], rule: Rule) -> typing.Callable[[str], Any]:
    """``conv`` followed by ``rule`` (argparse turns the error into one line naming the option)."""

    def parse(text: str) -> Any:
        value = conv(text)
        problem = None if value is None else rule.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = getattr(conv, "__name__", "value")  # argparse's "invalid int value: 'x'"
    return parse


def dataclass_from_namespace(cls: type[T], ns: argparse.Namespace) -> T:
    """Build ``cls`` from the parsed options (sequences become tuples)."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or not hasattr(ns, f.name):
            continue
        v = getattr(ns, f.name)
        positional = getattr(ns, f"_{f.name}_positional", None)
        if positional is not None:
            v = positional
        values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)
