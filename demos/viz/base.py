"""Options every figure command shares, and writing a figure where they say."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from matplotlib.figure import Figure

from demos.args import help_field, registered_env
from demos.viz.plotting import save_figure

C = TypeVar("C", bound="FigureConfig")
DEFAULT_ENV = "ibc/ReachAnyTarget-v0"
BLOCKS = "blocks"  # pseudo env id: the coordinate-regression marker images


def env_or_blocks(value: str) -> None:
    """``check=`` of ``--env``: a registered env id or ``blocks``."""
    if value != BLOCKS:
        try:
            registered_env(value)
        except ValueError as e:
            raise ValueError(f"{e} (or {BLOCKS!r})") from None


@dataclass(frozen=True)
class FigureConfig:
    """Options of every ``ibc-gym viz`` command."""

    out: Path = help_field(Path("out/viz"), "output folder; the figure is <out>/<command>.png")
    seed: int = help_field(0, "random seed (data, training and sampling)", min=0)
    dpi: int = help_field(100, "PNG resolution in dots per inch", min=1)
    quick: bool = help_field(False, "tiny settings (seconds; for tests and smoke runs)")
    threads: int = help_field(
        1, "torch CPU threads (the small models here train fastest on one)", min=1
    )


@dataclass(frozen=True)
class ModelFigureConfig(FigureConfig):
    """Options of the figures that look inside a trained ``ImplicitPolicy``."""

    ckpt: Path | None = help_field(
        None,
        "implicit-policy checkpoint; without one a small model is trained here and cached in <out>/models",
    )
    env: str | None = help_field(
        None,
        f"where observations come from: an env id, or '{BLOCKS}' for coordinate-regression marker "
        f"images (None: the checkpoint's env, else {DEFAULT_ENV})",
        check=env_or_blocks,
    )
    env_seed: int = help_field(0, "reset seed of the observation shown", min=0)
    train_steps: int | None = help_field(
        None,
        "training steps of the model trained without --ckpt (None: 900, 300 for blocks, 15 with --quick)",
        min=1,
    )
    cache: bool = help_field(
        True, "reuse a model trained earlier with the same settings from <out>/models"
    )


def run_figure(cfg: C, name: str, build: Callable[[C], Figure]) -> Path:
    """Build a figure with ``cfg.threads`` torch threads, save it as ``<cfg.out>/<name>.png``
    (atomically), print and return the path."""
    with torch_threads(cfg.threads):
        fig = build(cfg)
    path = save_figure(fig, Path(cfg.out) / f"{name}.png", dpi=cfg.dpi)
    print(path)
    return path


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
