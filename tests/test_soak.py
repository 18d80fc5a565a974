"""Soak: many make/reset/close cycles of every env in one process leak neither memory nor fds.

Resident memory (``VmRSS``) and open file descriptors are read after a warm-up (first-use caches,
allocator arenas) and again after the cycles. A leak of the size ArmReach had (13 KB per cycle,
from a pybullet mesh never freed) breaks both bounds. The 2,000-cycle run takes about a minute per
env, so it is marked ``slow`` and left out of the default run (``pytest -m slow`` or ``make soak``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from pathlib import Path

import gymnasium as gym
import pytest

import envs

STATUS = Path("/proc/self/status")
FDS = Path("/proc/self/fd")
WARMUP = 30


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


LIBC = _glibc()

pytestmark = pytest.mark.skipif(not STATUS.exists(), reason="reads /proc/self (Linux)")


def rss_kb() -> int:
    """This process's resident memory in KB, after returning freed heap memory to the system.

    Without the trim, glibc keeps tens of MB of freed blocks resident or not depending on the
    moment (RSS swings by ~28 MB between two reads here), which would hide or fake a leak.
    """
    gc.collect()
    if LIBC is not None:
        LIBC.malloc_trim(0)
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS line in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir(FDS))


def cycle(env_id: str, seed: int) -> None:
    env = gym.make(env_id, image_size=16)
    env.reset(seed=seed)
    env.close()


def soak(env_id: str, cycles: int) -> tuple[float, int]:
    """``cycles`` make/reset/close cycles: ``-> (RSS growth in KB per cycle, fd growth)``."""
    for i in range(WARMUP):
        cycle(env_id, i)
    rss0, fds0 = rss_kb(), open_fds()
    for i in range(cycles):
        cycle(env_id, i)
    return (rss_kb() - rss0) / cycles, open_fds() - fds0


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_short_soak(env_id: str) -> None:
    """100 cycles (a few seconds): under 5 KB per cycle, no fd left open."""
    per_cycle, fds = soak(env_id, 100)
    assert fds == 0
    assert per_cycle < 5.0, f"{env_id}: RSS grew {per_cycle:.2f} KB per make/reset/close cycle"


@pytest.mark.slow
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_soak_2000_cycles(env_id: str) -> None:
    """2,000 cycles: RSS grows under 1 KB per cycle (2 MB in all), no fd left open."""
    per_cycle, fds = soak(env_id, 2000)
    assert fds == 0
    assert per_cycle < 1.0, f"{env_id}: RSS grew {per_cycle:.2f} KB per make/reset/close cycle"
