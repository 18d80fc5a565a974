"""Config fields that carry their help text and the values they accept.

Every config field of the library is declared with ``param``: its one default, a help string and
its rule (``min``/``max`` inclusive, ``above`` exclusive, ``check``: any ``value -> None`` that
raises ``ValueError("must be ..., got ...")``; floats must be finite unless ``finite=False``).
``check_params(cfg)`` (called by each config's ``__post_init__``) applies the rules, so a bad
value fails where the config is built, from Python or from the command line, and the command
line (``demos/args.py``) reads the same help and rule to validate options at parse time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], None]


@dataclasses.dataclass(frozen=True)
class Rule:
    """The values a field accepts (numeric bounds are inclusive, ``above`` is exclusive)."""

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


def param(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    positional: bool = False,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    finite: bool = True,
    check: Check | None = None,
    flatten: bool = False,
    cli: bool = True,
    hide: tuple[str, ...] = (),
    presets: dict[str, Callable[[], Any]] | None = None,
    **kwargs: Any,
) -> Any:
    """A dataclass field with a help string and the rule its values follow (see the module).

    ``factory`` gives a default built per instance (nested configs); ``positional=True`` makes it
    an optional positional command-line argument that ``--name`` can also set. For a nested
    config on the command line: ``flatten=True`` names its options without the field's prefix
    (``--steps``, not ``--train.steps``); ``presets`` (name -> factory) lets ``--field NAME``
    pick the instance its options then change; ``cli=False`` keeps a field off the command line
    (a value the command sets itself, e.g. the action dimension of the dataset); ``hide`` names
    dotted paths inside a nested config that the command line leaves out (set elsewhere).
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    rule = Rule(min=min, max=max, above=above, finite=finite, check=check)
    metadata = {
        "help": help,
        "positional": positional,
        "rule": rule,
        "flatten": flatten,
        "presets": presets,
        "cli": cli,
        "hide": hide,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def one_of(*choices: str) -> Check:
    """``check=`` for string values (or the items of a ``tuple[str, ...]``) from a fixed set."""

    def check(value: str) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")

    return check


def value_problem(rule: Rule | None, value: Any) -> str | None:
    """Why ``value`` (a tuple: item by item) breaks ``rule``, or ``None``."""
    if rule is None or value is None:
        return None
    for item in value if isinstance(value, tuple) else (value,):
        problem = rule.problem(item)
        if problem:
            return problem
    return None


def field_problem(cfg: Any, name: str) -> str | None:
    """Why field ``name`` of dataclass ``cfg`` breaks its rule, or ``None``."""
    f = next(f for f in dataclasses.fields(cfg) if f.name == name)
    return value_problem(f.metadata.get("rule"), getattr(cfg, name))


def check_params(cfg: Any) -> None:
    """Apply every field's rule to ``cfg``: ``ValueError("Cls.field must be ..., got ...")``."""
    for f in dataclasses.fields(cfg):
        problem = field_problem(cfg, f.name)
        if problem:
            raise ValueError(f"{type(cfg).__name__}.{f.name} {problem}")
