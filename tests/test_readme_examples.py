"""Every ```python block of the README runs as written, in a fresh namespace, in an empty folder.

Only durations shrink, through ``SHORTER`` (each entry must still match the README, so a changed
example cannot silently run at full length or lose its substitution), and the files a block reads
are made first, small (``FILES``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)

SHORTER = {  # README text -> what the test runs instead (durations only)
    "TrainConfig(steps=2000)": "TrainConfig(steps=2, progress=False, tensorboard=False)",
    "seeds=range(1000, 1100)": "seeds=range(1000, 1002)",
}


def tiny_implicit_run(path: Path) -> None:
    """A 2-step tiny implicit policy on 2 ReachTarget demos at 24 px, as ``path``."""
    from demos.collect import CollectConfig, collect
    from demos.train import TrainJobConfig, run_train, tiny_policies
    from ebm_policy import TrainConfig

    data = collect(
        CollectConfig(
            env="ibc/ReachTarget-v0", episodes=2, image_size=24, out=path.parents[2] / "d.h5"
        )
    )
    quick = TrainConfig(steps=2, batch_size=4, progress=False, energy_snapshots=0)
    ckpt = run_train(
        TrainJobConfig(data=data, out=path.parent, policies=tiny_policies(), train=quick)
    )
    assert ckpt == path


FILES: dict[str, Callable[[Path], None]] = {  # a file a block reads -> how to make it
    "runs/any_implicit/ckpt_last.pt": tiny_implicit_run,
}


def block_id(block: str) -> str:
    first = next(line for line in block.splitlines() if line and not line.startswith("import"))
    return first[:40]


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("old", list(SHORTER) + list(FILES))
def test_every_substitution_and_file_is_still_in_the_readme(old: str) -> None:
    assert any(old in block for block in BLOCKS), f"no README python block holds {old!r}"


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(b) for b in BLOCKS])
def test_the_readme_block_runs(block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for old, new in SHORTER.items():
        block = block.replace(old, new)
    for name, make in FILES.items():
        if name in block:
            make(tmp_path / name)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    try:
        exec(compile(block, str(README), "exec"), namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, (gym.Env, gym.vector.VectorEnv)):
                value.close()
