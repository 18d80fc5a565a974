"""Typed command-line options from frozen dataclasses (cleanrl style, no extra dependency).

Each command declares one dataclass; every field becomes ``--field-name`` with its type, default
and the field's ``metadata["help"]``. ``Literal`` fields become choices, ``bool`` fields get
``--flag/--no-flag``, ``tuple[int, ...]`` fields take several values, given at once or over repeats
(``--ckpt A B`` = ``--ckpt A --ckpt B``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def help_field(default: Any, help: str, *, positional: bool = False, **kwargs: Any) -> Any:
    """A dataclass field with a help string for the command line.

    ``positional=True`` makes it an optional positional argument (``ibc-gym report RUN_DIR``)
    that the ``--name`` option can also set.
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return dataclasses.field(default=default, metadata={"help": help, "positional": positional}, **kwargs)


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
        kwargs: dict[str, Any] = {"dest": f.name, "help": f"{help_text} (default: {default})"}
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
