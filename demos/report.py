"""``ibc-gym report``: one self-contained HTML page of a training run.

``<run_dir>/report.html`` holds the run's title (env, policy, step, dataset), the evaluation metrics
(from ``ibc-gym eval``), the training curves, for implicit policies the energy-landscape and
inference-optimizer (the checkpoint's DFO, Langevin or autoregressive DFO) figures of a few
evaluation observations and the InfoNCE snapshots, and the rollout videos. Images
and videos are embedded as base64 data URIs, so the one file can be opened or mailed on its own.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from agents.learned import load_agent
from demos.args import help_field
from demos.viz.base import torch_threads
from demos.viz.dfo import KIND_NAMES, DfoFigConfig, build_dfo
from demos.viz.energy_2d import Energy2DConfig, build_energy_2d
from demos.viz.infonce import SNAPSHOTS, InfoNCEFigConfig, build_infonce
from demos.viz.plotting import new_figure
from ebm_policy import load_checkpoint, read_metrics
from ebm_policy.fileio import write_text_atomic

DEFAULT_EVAL_SEED = 100_000  # EvalConfig.seed: used when there is no eval/metrics.json

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .3em .8em; text-align: left; }
th { background: #f3f3f3; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: .5em 1em; }
.videos { display: flex; flex-wrap: wrap; gap: 1em; } figure { margin: 0; }
figcaption { font-size: .85em; color: #555; font-family: monospace; }
"""


@dataclass(frozen=True)
class ReportConfig:
    run_dir: Path = help_field(
        Path("runs/implicit"),
        "run folder from `ibc-gym train` (and `ibc-gym eval`)",
        positional=True,
    )
    frames: int = help_field(
        2, "evaluation observations shown in the energy / inference figures (implicit)", min=0
    )
    max_videos: int = help_field(5, "rollout videos embedded at most", min=0)
    resolution: int = help_field(61, "energy grid points per action dimension", min=2)
    dpi: int = help_field(80, "resolution of the embedded figures", min=1)
    threads: int = help_field(1, "torch CPU threads for the figures", min=1)


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _png_uri(fig: Figure, dpi: int) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Figure, dpi: int, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="{_png_uri(fig, dpi)}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def training_curves(records: list[dict[str, Any]]) -> Figure | None:
    """Loss and learning rate vs step, or ``None`` without logged training records."""
    rows = [r for r in records if "step" in r and ("train/loss" in r or "train/lr" in r)]
    if not rows:
        return None
    fig = new_figure(11.0, 3.8)
    ax_l, ax_r = fig.subplots(1, 2)
    for ax, key, title in (
        (ax_l, "train/loss", "training loss"),
        (ax_r, "train/lr", "learning rate"),
    ):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-" if len(pts) < 30 else "-", ms=3)
        ax.set(xlabel="step", ylabel=key, title=title)
        ax.grid(alpha=0.3)
    return fig


def _eval_section(eval_metrics: dict[str, Any] | None) -> str:
    if eval_metrics is None:
        return (
            '<p class="note">No evaluation yet: run <code>ibc-gym eval --ckpt '
            "&lt;run_dir&gt;/ckpt_last.pt</code> for success rates and videos.</p>"
        )
    rows = []
    rate = eval_metrics.get("eval/success_rate")
    ci = eval_metrics.get("eval/success_ci95")
    if rate is not None:
        ci_txt = f" (95% CI {ci[0]:.1%} - {ci[1]:.1%})" if ci else ""
        rows.append(("success rate", f"{rate:.1%}{ci_txt}"))
    for key, label in (
        ("eval/episodes", "episodes"),
        ("eval/mean_episode_length", "mean episode length"),
        ("eval/mean_final_distance", "mean final distance"),
        ("eval/policy_ms_per_step", "policy ms / step"),
        ("env_id", "env"),
        ("policy", "policy"),
    ):
        if key in eval_metrics:
            rows.append((label, _fmt(eval_metrics[key])))
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _videos_section(run_dir: Path, eval_metrics: dict[str, Any] | None, max_videos: int) -> str:
    paths: list[Path] = []
    for p in (eval_metrics or {}).get("videos", []):
        p = Path(p)
        cands = [p, run_dir / "eval" / "videos" / p.name]
        found = next((c for c in cands if c.is_file()), None)
        if found is not None:
            paths.append(found)
    if not paths:
        paths = sorted((run_dir / "eval" / "videos").glob("*.mp4"))
    paths = paths[: max(0, max_videos)]
    if not paths:
        return "<p>No rollout videos.</p>"
    items = []
    for p in paths:
        b64 = base64.b64encode(p.read_bytes()).decode("ascii")
        items.append(
            f'<figure><video controls width="320" src="data:video/mp4;base64,{b64}"></video>'
            f"<figcaption>{_esc(p.name)}</figcaption></figure>"
        )
    return '<div class="videos">' + "".join(items) + "</div>"


def _implicit_sections(
    cfg: ReportConfig, ckpt: Path, env_id: str, seeds: list[int], optimizer: str
) -> str:
    parts = ["<h2>Energy landscapes</h2>"]
    for s in seeds:
        fig = build_energy_2d(
            Energy2DConfig(ckpt=ckpt, env=env_id, env_seed=s, resolution=cfg.resolution, seed=0)
        )
        parts.append(f"<h3>reset seed {s}</h3>" + _img(fig, cfg.dpi, f"energy landscape, seed {s}"))
    parts.append(f"<h2>{_esc(optimizer)} inference</h2>")
    for s in seeds:
        fig = build_dfo(DfoFigConfig(ckpt=ckpt, env=env_id, env_seed=s, seed=0))
        alt = f"{optimizer} populations, seed {s}"
        parts.append(f"<h3>reset seed {s}</h3>" + _img(fig, cfg.dpi, alt))
    if (ckpt.parent / SNAPSHOTS).is_file():
        fig = build_infonce(InfoNCEFigConfig(ckpt=ckpt))
        parts.append(
            "<h2>InfoNCE energies during training</h2>" + _img(fig, cfg.dpi, "InfoNCE snapshots")
        )
    return "".join(parts)


def write_report(cfg: ReportConfig) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) and return its path."""
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir}: no such run folder (train one with `ibc-gym train --out {run_dir}`)"
        )
    ckpt = run_dir / "ckpt_last.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no checkpoint in the run folder (is training finished?)")

    with torch_threads(cfg.threads):
        agent = load_agent(ckpt)
        step = load_checkpoint(ckpt).get("step", "?")
        meta = agent.metadata
        eval_path = run_dir / "eval" / "metrics.json"
        eval_metrics = json.loads(eval_path.read_text()) if eval_path.is_file() else None
        try:
            records = read_metrics(run_dir)
        except (FileNotFoundError, OSError, ValueError):
            records = []

        title = f"{agent.env_id} - {agent.kind} policy, step {step}"
        dataset = (
            f"{meta.get('num_episodes', '?')} episodes / {meta.get('num_samples', '?')} samples"
            + (f" from {meta['dataset']}" if meta.get("dataset") else "")
        )
        parts = [
            f"<h1>{_esc(title)}</h1>",
            "<table>",
            f"<tr><th>run folder</th><td>{_esc(run_dir)}</td></tr>",
            f"<tr><th>env</th><td>{_esc(agent.env_id)} {_esc(json.dumps(agent.env_kwargs))}</td></tr>",
            f"<tr><th>policy</th><td>{_esc(agent.kind)}</td></tr>",
            f"<tr><th>checkpoint step</th><td>{_esc(step)}</td></tr>",
            f"<tr><th>dataset</th><td>{_esc(dataset)}</td></tr>",
            "</table>",
            "<h2>Evaluation</h2>",
            _eval_section(eval_metrics),
            "<h2>Training curves</h2>",
        ]
        fig = training_curves(records)
        parts.append(
            _img(fig, cfg.dpi, "training curves") if fig else "<p>No training metrics logged.</p>"
        )
        if agent.kind == "implicit" and cfg.frames > 0:
            seeds = [int(s) for s in (eval_metrics or {}).get("seeds", [])][: cfg.frames]
            seeds += [DEFAULT_EVAL_SEED + i for i in range(len(seeds), cfg.frames)]
            kind = agent.policy.config.optimizer.kind  # type: ignore[union-attr]
            optimizer = KIND_NAMES.get(kind, kind)
            parts.append(_implicit_sections(cfg, ckpt, agent.env_id, seeds, optimizer))
        parts.append("<h2>Rollout videos</h2>")
        parts.append(_videos_section(run_dir, eval_metrics, cfg.max_videos))

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    out = write_text_atomic(run_dir / "report.html", page)
    print(out)
    return out


COMMANDS = [
    (
        "report",
        "Write <run_dir>/report.html: metrics, training curves, energy/inference figures and videos in one file.",
        ReportConfig,
        write_report,
    )
]
