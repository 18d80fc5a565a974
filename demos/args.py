"""Typed, validated command-line options from frozen dataclasses (cleanrl/tyro style).

Each command declares one config dataclass. ``add_dataclass_arguments(parser, cls)`` turns its
fields into options; ``dataclass_from_namespace(cls, ns, parser=parser)`` builds the config back
from the parsed options; ``parse_config(parser, cls, argv)`` does both.

Option names (underscores become hyphens in every part of a name):

* a field ``batch_size`` is ``--batch-size``; ``Literal`` fields take one of their values,
  ``bool`` fields are ``--flag/--no-flag``, ``tuple[int, ...]`` fields take several values, given
  at once or over repeats (``--ckpt A B`` = ``--ckpt A --ckpt B``), ``int | None`` fields also
  take ``none``; ``positional=True`` (top level only) also accepts the value as a positional
  argument (``ibc-gym report RUN_DIR``);
* a field whose type is a dataclass (``optim: OptimConfig``) is no option itself: each of its
  fields is one, named by its dotted path, recursively: ``--optim.lr``,
  ``--model.cnn.out-channels``; a nested ``bool`` is ``--optim.amsgrad/--optim.no-amsgrad``;
* a tagged union of dataclasses that each declare ``kind: ClassVar[str]`` (``optimizer: DFOConfig
  | LangevinConfig = param(factory=DFOConfig, help=...)``) is ``--optimizer KIND`` plus
  ``--optimizer.<field>`` for the fields of all its members (a name several members share is one
  option and must have one type; where their rules differ, the chosen kind's rule is applied
  after parsing); ``X | None`` of one dataclass is a union of ``X.kind`` (else the class name,
  lower case, less a ``Config`` suffix: ``--ema ema``) and ``none``. Declare the classes at
  module level (their annotations are resolved with ``typing.get_type_hints``);
* ``param(..., flatten=True)`` on a nested config names its options without the field's prefix
  (``train: TrainConfig`` gives ``--steps``, not ``--train.steps``); ``presets={name: factory}``
  adds ``--field NAME``, the instance the other ``--field.*`` options then change (``--implicit
  langevin``); ``hide=("model.backbone",)`` leaves those paths inside the field off the command
  line (the command sets them another way); ``cli=False`` leaves one field off.

Defaults: every option's default is the value in its field's default instance (the field's
``default``, or ``default_factory()``: a preset may differ from the nested class's own defaults),
and a nested config is rebuilt as ``dataclasses.replace(default_instance, **given)``, so what is
not given keeps the preset's value. A union builds the given kind, else the default's: from the
default instance if it has that kind, else from the member class's own defaults; an option given
that the chosen kind lacks is an error. ``add_dataclass_arguments``, ``dataclass_from_namespace`` and
``parse_config`` also take a ``default`` instance of the top-level class (a command's preset).

Each field declares the values it accepts next to it (``ebm_policy.params.param``, also exported
here as ``help_field``): ``help_field(2000, "...", min=1)``, ``above=0`` (exclusive), ``max=``,
``check=registered_env`` (any ``value -> None`` that raises ``ValueError``); a float must also be
finite unless ``finite=False``. The parser applies the rule to every value given, so a bad one
stops the command with exit code 2 and one line naming the option and what it accepts, before
anything is read or written; a ``ValueError`` raised while building the config (a
``__post_init__`` relating two fields) is reported the same way when the parser is passed.
``check_options(cfg)`` applies the rules to a config built in code.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, Union, get_args, get_origin, get_type_hints

from ebm_policy.params import Check, Rule, one_of, param, value_problem

__all__ = [
    "Check",
    "OneLineParser",
    "Rule",
    "add_dataclass_arguments",
    "check_options",
    "dataclass_from_namespace",
    "help_field",
    "iter_options",
    "one_of",
    "param",
    "parse_config",
    "registered_env",
    "registered_env_ids",
    "torch_device",
]

T = TypeVar("T")
_MISSING: Any = dataclasses.MISSING

help_field = param  # the name the command modules use


# ---- checks for string options ------------------------------------------------------------------


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


def check_options(cfg: Any) -> None:
    """Apply every field's rule to ``cfg``, nested configs included: ``ValueError`` naming the
    first bad option (``--episodes must be ...``, ``--optim.lr must be ...``)."""
    _check_options(cfg, "")


def _check_options(cfg: Any, path: str) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        dest = _join(path, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_options(value, path if f.metadata.get("flatten") else dest)
            continue
        problem = value_problem(f.metadata.get("rule"), value)
        if problem:
            raise ValueError(f"{_flag(dest)} {problem}")


# ---- the walk over a config class: one _Spec per option -----------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A field as the walk over a config class meets it (a union's options once per member)."""

    role: Literal["leaf", "struct", "union"]  # an option, a nested config, a tagged union
    dest: str  # the field's dotted path (``optim.lr``): the namespace attribute
    field: dataclasses.Field[Any]
    hint: Any
    default: Any  # the value in the default instance; MISSING when there is none
    owner: tuple[str, str] | None  # (dest, kind) of the innermost union member it belongs to
    members: dict[str, type | None] | None = None  # a union's kinds (``none``: None)

    @property
    def flag(self) -> str:
        return _flag(self.dest)

    @property
    def parent(self) -> str:
        return self.dest.rpartition(".")[0]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _flag(dest: str) -> str:
    """``optim.step_size`` -> ``--optim.step-size``."""
    return "--" + dest.replace("_", "-")


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _field_default(f: dataclasses.Field[Any], base: Any) -> Any:
    """The value of field ``f`` in the default instance ``base``, else the field's own default."""
    if base is not _MISSING:
        return getattr(base, f.name)
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _union_members(hint: Any) -> dict[str, type | None] | None:
    """``{kind: class}`` of a union of configs (``none``: ``None``); ``None`` for other types."""
    if get_origin(hint) not in (Union, types.UnionType):
        return None
    args = get_args(hint)
    classes = [a for a in args if a is not type(None)]
    if not any(_is_config(c) for c in classes):
        return None
    if not all(_is_config(c) for c in classes):
        raise TypeError(f"{hint}: a union of configs cannot hold other types")
    members: dict[str, type | None] = {}
    for c in classes:
        kind = getattr(c, "kind", None)
        if any(f.name == "kind" for f in dataclasses.fields(c)) or not isinstance(kind, str):
            if len(classes) > 1:
                raise TypeError(
                    f"{c.__name__} is in a union of configs: declare kind: ClassVar[str]"
                )
            kind = c.__name__.removesuffix("Config").lower() or c.__name__.lower()
        if kind in members or kind == "none":
            raise TypeError(f"{hint}: kind {kind!r} is taken")
        members[kind] = c
    if type(None) in args:
        members["none"] = None
    return members


def _kind_of(members: dict[str, type | None], value: Any, dest: str) -> str:
    for kind, cls in members.items():
        if type(value) is cls or (cls is None and value is None):
            return kind
    raise TypeError(f"{_flag(dest)}: the default {value!r} is none of {', '.join(members)}")


def _walk(
    cls: type,
    base: Any,
    path: str = "",
    owner: tuple[str, str] | None = None,
    hidden: frozenset[str] = frozenset(),
) -> Iterator[_Spec]:
    """The specs of ``cls``'s fields under ``path``, depth first, with defaults from ``base``;
    fields whose dotted path is in ``hidden`` (``param(hide=...)`` of an outer field) have none."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dest, hint = _join(path, f.name), hints[f.name]
        if not f.init or f.metadata.get("cli") is False or dest in hidden:
            continue
        members = _union_members(hint)
        flat = members is None and _is_config(hint) and f.metadata.get("flatten")
        # a flattened field's options keep the parent's prefix, and so do the paths it hides
        hidden = hidden | {_join(path if flat else dest, h) for h in f.metadata.get("hide") or ()}
        default = _field_default(f, base)
        if (members is not None or _is_config(hint) or path) and f.metadata.get("positional"):
            raise TypeError(f"{_flag(dest)}: only top-level options can be positional")
        if members is not None:
            if default is not _MISSING:
                _kind_of(members, default, dest)  # the default must be a member
            yield _Spec("union", dest, f, hint, default, owner, members)
            for kind, member in members.items():
                if member is not None:
                    member_base = default if type(default) is member else _MISSING
                    yield from _walk(member, member_base, dest, (dest, kind), hidden)
        elif _is_config(hint) and f.metadata.get("flatten"):
            if f.metadata.get("presets"):
                raise TypeError(f"{_flag(dest)}: a flattened config cannot have presets")
            yield from _walk(
                hint, default, path, owner, hidden
            )  # its options keep the parent's prefix
        elif _is_config(hint):
            yield _Spec("struct", dest, f, hint, default, owner)
            yield from _walk(hint, default, dest, owner, hidden)
        else:
            yield _Spec("leaf", dest, f, hint, default, owner)


def _merged(cls: type, default: Any) -> list[list[_Spec]]:
    """The walk's specs grouped by option (union members sharing a field name share its option)."""
    by_dest: dict[str, list[_Spec]] = {}
    for s in _walk(cls, _MISSING if default is None else default):
        same = by_dest.setdefault(s.dest, [])
        if same and (same[0].role, same[0].hint) != (s.role, s.hint):
            raise TypeError(
                f"{s.flag}: union members declare it differently ({same[0].hint}, {s.hint})"
            )
        same.append(s)
    return list(by_dest.values())


def iter_options(
    cls: type, default: Any = None
) -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """``(option, field, type hint)`` of every value option the parser makes for ``cls``: nested
    configs' and union members' fields included (a field several members share: once, with the
    first member's field), union selectors (``--optimizer KIND``) not. ``default``: the instance
    the defaults come from (any gives the same options)."""
    for specs in _merged(cls, default):
        if specs[0].role == "leaf":
            yield specs[0].flag, specs[0].field, specs[0].hint


# ---- the parser ---------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _NestedFlag(argparse.Action):
    """A nested ``bool``: ``--optim.amsgrad`` sets it, ``--optim.no-amsgrad`` clears it."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self, parser: Any, namespace: Any, values: Any, option_string: str | None = None
    ) -> None:
        setattr(namespace, self.dest, option_string == self.option_strings[0])


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, default: Any = None
) -> None:
    """Add the options of config class ``cls`` (named as in the module docstring) to ``parser``.

    ``default``: an instance of ``cls`` whose values are the defaults (else the fields' own);
    pass the same one to ``dataclass_from_namespace``. Nested configs' and unions' options go to
    one argument group each, titled ``--optim.*``.
    """
    groups: dict[str, Any] = {"": parser}
    for specs in _merged(cls, default):
        s = specs[0]
        if s.role == "leaf":
            _add_leaf(groups[s.parent], specs, top=not s.parent)
            continue
        help_text = s.field.metadata.get("help", "")
        if s.role == "struct":
            doc = s.hint.__doc__ or ""
            doc = "" if doc.startswith(s.hint.__name__ + "(") else doc.strip().split("\n")[0]
            presets = s.field.metadata.get("presets")
            title = f"{s.flag} PRESET, {s.flag}.*" if presets else f"{s.flag}.*"
            groups[s.dest] = parser.add_argument_group(title, help_text or doc or None)
            if presets:
                _add_preset_selector(groups[s.dest], s, presets)
        else:
            groups[s.dest] = parser.add_argument_group(f"{s.flag} KIND, {s.flag}.*")
            _add_selector(groups[s.dest], s, top=not s.parent)


def _preset_name(presets: dict[str, Any], value: Any) -> str | None:
    """The name of the preset equal to ``value``, if any."""
    return next((name for name, make in presets.items() if make() == value), None)


def _add_preset_selector(target: Any, s: _Spec, presets: dict[str, Any]) -> None:
    default = _preset_name(presets, s.default)
    help_text = s.field.metadata.get("help", "")
    target.add_argument(
        s.flag,
        dest=s.dest,
        choices=list(presets),
        default=argparse.SUPPRESS,
        help=f"{help_text}: the preset its options change (default: {default or 'none of them'})",
    )


def _add_selector(target: Any, s: _Spec, top: bool) -> None:
    assert s.members is not None
    help_text = s.field.metadata.get("help", "")
    kwargs: dict[str, Any] = {
        "dest": s.dest,
        "choices": list(s.members),
        "default": argparse.SUPPRESS,
    }
    if s.default is _MISSING:
        kwargs["help"] = f"{help_text} (required)"
        kwargs["required"] = top
    else:
        kwargs["help"] = f"{help_text} (default: {_kind_of(s.members, s.default, s.dest)})"
    target.add_argument(s.flag, **kwargs)


def _add_leaf(target: Any, specs: list[_Spec], top: bool) -> None:
    """One value option from the specs of one field (several: union members sharing it)."""
    s, f = specs[0], specs[0].field
    tp, optional = _unwrap_optional(s.hint)
    rules = [spec.field.metadata.get("rule") or Rule() for spec in specs]
    # members with different rules: each kind's own rule is applied when the config is built
    rule = rules[0] if all(r == rules[0] for r in rules) else Rule(finite=False)
    kwargs: dict[str, Any] = {"dest": s.dest, "help": _leaf_help(specs, tp)}
    required = top and s.default is _MISSING
    if required:
        kwargs["required"] = True
    else:
        kwargs["default"] = s.default if top else argparse.SUPPRESS
    names = [s.flag]
    origin = get_origin(tp)
    if tp is bool and top:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif tp is bool:
        head, _, name = s.flag.rpartition(".")
        names.append(f"{head}.no-{name}")
        kwargs["action"] = _NestedFlag
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
        raise TypeError(f"unsupported option type {tp!r} for field {s.dest!r}")
    if "type" in kwargs:
        kwargs["type"] = _checked(_optional(kwargs["type"]) if optional else kwargs["type"], rule)
    if not top and "choices" not in kwargs and tp is not bool:
        kwargs["metavar"] = f.name.upper()
    target.add_argument(*names, **kwargs)
    if f.metadata.get("positional"):
        pos_kwargs = {k: v for k, v in kwargs.items() if k not in ("dest", "required", "default")}
        target.add_argument(
            f"_{f.name}_positional", metavar=f.name.upper(), nargs="?", default=None, **pos_kwargs
        )


def _leaf_help(specs: list[_Spec], tp: Any) -> str:
    """``help (default: 3; an integer >= 1)``; in a union ``help (dfo, langevin; default: ...)``,
    with one default or range per kind where the kinds differ."""
    help_text = next((h for h in (s.field.metadata.get("help", "") for s in specs) if h), "")
    if specs[0].owner is None and specs[0].default is _MISSING:
        return help_text if not specs[0].parent else f"{help_text} (required)"
    item_tp = get_args(tp)[0] if get_origin(tp) is tuple else tp

    def accepts(s: _Spec) -> str:
        rule = s.field.metadata.get("rule") or Rule()
        text = rule.describe(item_tp) if item_tp in (int, float) else ""
        return "" if text in ("an integer", "a finite number") else text

    defaults = ["required" if s.default is _MISSING else str(s.default) for s in specs]
    ranges = [accepts(s) for s in specs]
    if specs[0].owner is None:
        text = f"default: {defaults[0]}" + (f"; {ranges[0]}" if ranges[0] else "")
        return f"{help_text} ({text.replace('%', '%%')})"
    kinds = [s.owner[1] for s in specs if s.owner]

    def per_kind(values: list[str]) -> str:
        if len(set(values)) == 1:
            return values[0]
        return ", ".join(f"{v or 'any'} ({k})" for v, k in zip(values, kinds, strict=True))

    text = f"{', '.join(kinds)}; default: {per_kind(defaults)}"
    text += f"; {per_kind(ranges)}" if any(ranges) else ""
    return f"{help_text} ({text.replace('%', '%%')})"


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


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


# ---- building the config back -------------------------------------------------------------------


def dataclass_from_namespace(
    cls: type[T],
    ns: argparse.Namespace,
    parser: argparse.ArgumentParser | None = None,
    default: T | None = None,
) -> T:
    """Build ``cls`` from the parsed options (sequences become tuples), nested configs as
    ``replace(default instance, **given)`` (see the module). A ``ValueError`` while building (an
    option the chosen kind of a union lacks, a ``__post_init__`` check) becomes
    ``parser.error(one line)`` (exit code 2) when ``parser`` is given, else propagates.
    ``default``: the instance passed to ``add_dataclass_arguments``, if any."""
    try:
        return _build(cls, _MISSING if default is None else default, "", ns)
    except ValueError as e:
        if parser is None:
            raise
        parser.error(" ".join(line.strip() for line in str(e).splitlines() if line.strip()))


def parse_config(
    parser: argparse.ArgumentParser,
    cls: type[T],
    argv: list[str] | None = None,
    default: T | None = None,
) -> T:
    """Add ``cls``'s options to ``parser``, parse ``argv`` (``None``: ``sys.argv[1:]``) and build
    the config; every error is ``parser.error`` (a ``OneLineParser``: one line, exit code 2)."""
    add_dataclass_arguments(parser, cls, default)
    return dataclass_from_namespace(cls, parser.parse_args(argv), parser, default)


def _build(cls: type[T], base: Any, path: str, ns: argparse.Namespace) -> T:
    """``cls`` from ``base`` (an instance, or MISSING: the class's defaults) and the options
    under ``path`` given in ``ns``; ``base`` itself when none is."""
    hints = get_type_hints(cls)
    given: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init:
            continue
        dest, hint = _join(path, f.name), hints[f.name]
        default = _field_default(f, base)
        members = _union_members(hint)
        if members is not None:
            value = _build_union(members, default, dest, ns)
        elif _is_config(hint) and f.metadata.get("flatten"):
            value = _build(hint, default, path, ns)
        elif _is_config(hint):
            presets = f.metadata.get("presets")
            if presets and getattr(ns, dest, None) is not None:
                default = presets[getattr(ns, dest)]()
                value = _build(hint, default, dest, ns)
                given[f.name] = value
                continue
            value = _build(hint, default, dest, ns)
        elif hasattr(ns, dest):
            value = getattr(ns, dest)
            positional = getattr(ns, f"_{f.name}_positional", None) if not path else None
            value = tuple(value) if isinstance(value, list) else value
            value = value if positional is None else positional
            problem = value_problem(f.metadata.get("rule"), value) if path else None
            if problem:  # a rule that union members disagree on, checked for the chosen kind
                raise ValueError(f"argument {_flag(dest)}: {problem}")
        elif path and default is _MISSING:
            raise ValueError(f"{_flag(dest)} is required")
        else:
            continue
        if base is _MISSING or value is not default:
            given[f.name] = value
    if base is _MISSING:
        return cls(**given)
    return dataclasses.replace(base, **given) if given else base


def _build_union(
    members: dict[str, type | None], default: Any, dest: str, ns: argparse.Namespace
) -> Any:
    """The chosen kind (given, else the default's) built from the options given for it."""
    kind = getattr(ns, dest, None)
    if kind is None and default is not _MISSING:
        kind = _kind_of(members, default, dest)
    if kind is None:
        raise ValueError(f"{_flag(dest)} is required (one of {', '.join(members)})")
    member = members[kind]
    own = [] if member is None else [s for s in _walk(member, _MISSING, dest) if s.role != "struct"]
    own_dests = {s.dest for s in own}
    for key in vars(ns):
        if key.startswith(dest + ".") and key not in own_dests:
            flags = list(dict.fromkeys(s.flag for s in own))
            listed = f"its options: {', '.join(flags)}" if flags else "it has no options"
            raise ValueError(f"{_flag(key)} is not an option of {_flag(dest)} {kind} ({listed})")
    if member is None:
        return None
    return _build(member, default if type(default) is member else _MISSING, dest, ns)
