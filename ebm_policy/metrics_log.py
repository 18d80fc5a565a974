"""Named scalar logs: one strict JSON object per line in ``metrics.jsonl`` (a non-finite value is
``null``), and TensorBoard if installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ebm_policy.fileio import strict_json


class MetricsLogger:
    """Appends ``{"step": s, name: value, ...}`` lines to ``out_dir/metrics.jsonl``.

    ``start_step > 0`` (a resumed run) first drops the lines an interrupted run wrote after its
    last checkpoint, so the file reads like one uninterrupted run. With ``tensorboard=True`` and
    the ``tensorboard`` package installed, scalars also go to ``out_dir/tb``.
    """

    def __init__(self, out_dir: Path, *, start_step: int = 0, tensorboard: bool = True) -> None:
        self.path = out_dir / "metrics.jsonl"
        self._truncate_after(start_step)
        self._file = self.path.open("a")
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self._tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step or None)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        if step <= 0:
            self.path.write_text("")
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:  # a line cut by the interruption
                continue
        self.path.write_text("".join(k + "\n" for k in keep))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Write one line (and one TensorBoard scalar per name)."""
        self._file.write(strict_json({"step": step, **scalars}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (or of ``<dir>/metrics.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
