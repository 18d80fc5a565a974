"""Image-based pybullet reach tasks for implicit behavioral cloning, registered on import.

| id                       | task                                                  | steps |
|--------------------------|-------------------------------------------------------|-------|
| ``ibc/ReachTarget-v0``     | drive a disc onto a target                            | 50    |
| ``ibc/ReachAnyTarget-v0``  | drive a disc onto either of two identical targets     | 50    |
| ``ibc/ReachSequence-v0``   | drive a disc onto the red target, then the green one  | 80    |
| ``ibc/ArmReach-v0``        | move an xArm6's flange over a target                  | 50    |
| ``ibc/ReachAroundObstacle-v0`` | drive a disc around a wall (either side) to a target | 40 |
| ``ibc/ReachAllTargets-v0`` | drive a disc onto three identical targets, any order  | 80    |

All run at 10 Hz with an action in ``[-1, 1]^2``: an absolute position set-point
(``action_type="position"``, the default) or a displacement of it (``"delta"``); see each
class's docstring for its spec.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from envs.arm import ArmReachEnv
from envs.base import ACTION_TYPES, DELTA_SCALE, ReachEnv, ReachTask, validate_action
from envs.obstacle import ReachAroundObstacleEnv, obstacle_waypoints
from envs.reach import ReachAllTargetsEnv, ReachAnyTargetEnv, ReachSequenceEnv, ReachTargetEnv

MAX_EPISODE_STEPS: dict[str, int] = {
    "ibc/ReachTarget-v0": 50,
    "ibc/ReachAnyTarget-v0": 50,
    "ibc/ReachSequence-v0": 80,
    "ibc/ArmReach-v0": 50,
    "ibc/ReachAroundObstacle-v0": 40,
    "ibc/ReachAllTargets-v0": 80,
}
ENV_IDS: tuple[str, ...] = tuple(MAX_EPISODE_STEPS)

_ENTRY_POINTS = {
    "ibc/ReachTarget-v0": "envs.reach:ReachTargetEnv",
    "ibc/ReachAnyTarget-v0": "envs.reach:ReachAnyTargetEnv",
    "ibc/ReachSequence-v0": "envs.reach:ReachSequenceEnv",
    "ibc/ArmReach-v0": "envs.arm:ArmReachEnv",
    "ibc/ReachAroundObstacle-v0": "envs.obstacle:ReachAroundObstacleEnv",
    "ibc/ReachAllTargets-v0": "envs.reach:ReachAllTargetsEnv",
}

for _env_id, _entry_point in _ENTRY_POINTS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, max_episode_steps=MAX_EPISODE_STEPS[_env_id])

__all__ = [
    "ACTION_TYPES",
    "DELTA_SCALE",
    "ENV_IDS",
    "MAX_EPISODE_STEPS",
    "ArmReachEnv",
    "ReachAllTargetsEnv",
    "ReachAroundObstacleEnv",
    "ReachAnyTargetEnv",
    "ReachEnv",
    "ReachSequenceEnv",
    "ReachTargetEnv",
    "ReachTask",
    "obstacle_waypoints",
    "validate_action",
]
