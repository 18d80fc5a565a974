"""``ibc-gym report``: a tiny run -> one self-contained HTML page."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import torch

from demos.collect import CollectConfig, collect
from demos.evaluate import EvalConfig, evaluate
from demos.report import ReportConfig, write_report
from demos.train import TrainJobConfig, run_train, tiny_policies
from ebm_policy import TrainConfig


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("report")
    data = tmp / "d.h5"
    collect(
        CollectConfig(env="ibc/ReachTarget-v0", episodes=3, image_size=32, out=data, progress=False)
    )
    run = tmp / "run"
    run_train(
        TrainJobConfig(
            data=data,
            out=run,
            policies=tiny_policies(),
            train=TrainConfig(steps=3, batch_size=4, progress=False),
        )
    )
    metrics = evaluate(
        EvalConfig(
            ckpt=run / "ckpt_last.pt",
            episodes=2,
            num_envs=1,
            videos=1,
            render_size=64,
            progress=False,
            asynchronous=False,
        )
    )
    return run, metrics


def test_report_embeds_everything(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    run, metrics = tiny_run
    out = write_report(ReportConfig(run_dir=run, frames=1, resolution=21, dpi=40))
    assert out == run / "report.html" and out.is_file()
    assert not list(run.glob(".report.html.*"))  # no temp file left
    page = out.read_text()
    assert f"{metrics['eval/success_rate']:.1%}" in page
    assert "ibc/ReachTarget-v0" in page and "implicit" in page
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(pngs) >= 3  # training curves, energy landscape, inference populations (+ InfoNCE)
    assert "DFO inference</h2>" in page  # the checkpoint's optimizer
    for b64 in pngs:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    videos = re.findall(r'src="data:video/mp4;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(videos) == 1
    assert len(base64.b64decode(videos[0])) > 100
    assert Path(metrics["videos"][0]).name in page
    assert "http://" not in page and "https://" not in page  # self-contained
    (tmp_path / "curves.png").write_bytes(base64.b64decode(pngs[0]))


def test_report_without_eval_says_so(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    run, _ = tiny_run
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "ckpt_last.pt").write_bytes((run / "ckpt_last.pt").read_bytes())
    (bare / "metrics.jsonl").write_bytes((run / "metrics.jsonl").read_bytes())
    page = write_report(ReportConfig(run_dir=bare, frames=0)).read_text()
    assert "ibc-gym eval" in page
    assert "data:image/png;base64," in page
    assert "data:video/mp4" not in page


def test_report_missing_run_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        write_report(ReportConfig(run_dir=tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="ckpt_last.pt"):
        write_report(ReportConfig(run_dir=tmp_path))
