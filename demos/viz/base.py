"""Options every figure command shares, and writing a figure where they say."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from matplotlib.figure import Figure

from demos.args import help_field
from demos.viz.plotting import save_figure

C = TypeVar("C", bound="FigureConfig")
DEFAULT_ENV = "ibc/ReachAnyTarget-v0"
BLOCKS = "blocks"  # pseudo env id: the coordinate-regression marker images


@dataclass(frozen=True)
class FigureConfig:
    """Options of every ``ibc-gym viz`` command."""

    out: Path = help_field(Path("out/viz"), "output folder; the figure is <out>/<command>.png")
    seed: int = help_field(0, "random seed (data, training and sampling)")
    dpi: int = help_field(100, "PNG resolution in dots per inch")
    quick: bool = help_field(False, "tiny settings (seconds; for tests and smoke runs)")
    threads: int = help_field(1, "torch CPU threads (the small models here train fastest on one)")


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
    )
    env_seed: int = help_field(0, "reset seed of the observation shown")
    train_steps: int | None = help_field(
        None,
        "training steps of the model trained without --ckpt (None: 900, 300 for blocks, 15 with --quick)",
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
