"""Image-based pybullet reach tasks for implicit behavioral cloning, registered on import.

| id                       | task                                                  | steps |
|--------------------------|-------------------------------------------------------|-------|
| ``ibc/ReachTarget-v0``     | drive a disc onto a target                            | 50    |
| ``ibc/ReachAnyTarget-v0``  | drive a disc onto either of two identical targets     | 50    |
| ``ibc/ReachSequence-v0``   | drive a disc onto the red target, then the green one  | 80    |
| ``ibc/ArmReach-v0``        | move an xArm6's flange over a target                  | 50    |

All run at 10 Hz with an absolute position set-point action in ``[-1, 1]^2``; see each class's
docstring for its spec.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from envs.arm import ArmReachEnv
from envs.base import ReachEnv, ReachTask, validate_action
from envs.reach import ReachAnyTargetEnv, ReachSequenceEnv, ReachTargetEnv

MAX_EPISODE_STEPS: dict[str, int] = {
    "ibc/ReachTarget-v0": 50,
    "ibc/ReachAnyTarget-v0": 50,
    "ibc/ReachSequence-v0": 80,
    "ibc/ArmReach-v0": 50,
}
ENV_IDS: tuple[str, ...] = tuple(MAX_EPISODE_STEPS)

_ENTRY_POINTS = {
    "ibc/ReachTarget-v0": "envs.reach:ReachTargetEnv",
    "ibc/ReachAnyTarget-v0": "envs.reach:ReachAnyTargetEnv",
    "ibc/ReachSequence-v0": "envs.reach:ReachSequenceEnv",
    "ibc/ArmReach-v0": "envs.arm:ArmReachEnv",
}

for _env_id, _entry_point in _ENTRY_POINTS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, max_episode_steps=MAX_EPISODE_STEPS[_env_id])

__all__ = [
    "ENV_IDS",
    "MAX_EPISODE_STEPS",
    "ArmReachEnv",
    "ReachAnyTargetEnv",
    "ReachEnv",
    "ReachSequenceEnv",
    "ReachTargetEnv",
    "ReachTask",
    "validate_action",
]
