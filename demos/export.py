"""``ibc-gym export``: write a demo dataset in another tool's format.

``ibc-gym export --format lerobot DATA.h5 OUT_DIR`` writes a LeRobotDataset v3.0 folder (Parquet
+ MP4 + ``meta/``) that ``ibc-gym train --data OUT_DIR`` and LeRobot's own ``LeRobotDataset``
read; see ``agents.lerobot_export`` for the feature names and ``--video.*`` for the encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agents.lerobot_export import VideoConfig, export_lerobot
from demos.args import check_options, help_field


@dataclass(frozen=True)
class ExportConfig:
    """Options of ``ibc-gym export``."""

    data: Path = help_field(
        Path("data/demos.h5"), "demo dataset (HDF5) from `ibc-gym collect`", positional=True
    )
    out: Path = help_field(Path("data/demos_lerobot"), "output folder", positional=True)
    format: Literal["lerobot"] = help_field("lerobot", "output format (LeRobotDataset v3.0)")
    task: str | None = help_field(None, "task string of every frame (none: the env id)")
    video: VideoConfig = help_field(factory=VideoConfig, help="image encoding")
    overwrite: bool = help_field(False, "replace an existing output folder")

    def __post_init__(self) -> None:
        check_options(self)


def run_export(cfg: ExportConfig) -> Path:
    out = export_lerobot(cfg.data, cfg.out, video=cfg.video, task=cfg.task, overwrite=cfg.overwrite)
    print(f"wrote {cfg.data} as a LeRobotDataset v3.0 folder -> {out}")
    return out


COMMANDS = [
    (
        "export",
        "Write a demo dataset as a LeRobotDataset v3.0 folder (Parquet + MP4).",
        ExportConfig,
        run_export,
    )
]
