"""``ibc/ReachAroundObstacle-v0``: drive a disc around a wall, on either side, to a target."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from envs.base import ReachEnv, ReachTask, Scene
from envs.physics import RED, PlanarScene

WALL_HALF_LENGTH = 0.3  # half the wall's length, across the start-target direction
WALL_HALF_WIDTH = 0.05  # half its thickness, along the start-target direction
WAYPOINT_OFFSET = 0.55  # the waypoints lie this far from the wall centre along the wall ...
WAYPOINT_DEPTH = 0.1  # ... and this far beyond it, toward the target (behind the wall)
START_DISTANCE = (0.14, 0.2)  # the disc starts this far in front of the wall centre (close) ...
TARGET_DISTANCE = (0.6, 0.7)  # ... and the target lies this far behind it


def obstacle_waypoints(obstacle: np.ndarray) -> np.ndarray:
    """``(..., 5)`` obstacle rows ``(cx, cy, ux, uy, half_length)`` -> ``(..., 2, 2)`` waypoints.

    ``u`` is the unit start-to-target direction (the wall's normal); waypoint ``s`` lies
    ``WAYPOINT_DEPTH`` beyond the wall centre along ``u`` and ``WAYPOINT_OFFSET`` along
    ``(-uy, ux)`` (``s = 0``) or ``(uy, -ux)`` (``s = 1``), beside an end of the wall. Their mean
    lies just behind the wall centre: commanding it pushes the disc into the wall.
    """
    obstacle = np.asarray(obstacle, dtype=np.float64)
    center, u = obstacle[..., 0:2], obstacle[..., 2:4]
    w = np.stack([-u[..., 1], u[..., 0]], axis=-1)
    base = center + WAYPOINT_DEPTH * u
    return np.stack([base + WAYPOINT_OFFSET * w, base - WAYPOINT_OFFSET * w], axis=-2)


def distance_to_wall(points: np.ndarray, center: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points -> ``(N,)`` distance to the wall rectangle (0 inside it)."""
    rel = np.asarray(points, dtype=np.float64) - center
    w = np.array([-u[1], u[0]])
    along, across = np.abs(rel @ u) - WALL_HALF_WIDTH, np.abs(rel @ w) - WALL_HALF_LENGTH
    return np.hypot(np.maximum(along, 0.0), np.maximum(across, 0.0))


class ReachAroundObstacleEnv(ReachEnv):
    """Drive a disc around a wall to a target; either way around is right (a multimodal task).

    ## Description

    As ``ibc/ReachTarget-v0`` (same disc, floor, camera and 10 Hz control), with a near-black wall
    (0.6 long, 0.1 thick: a static pybullet box the disc collides with) between the disc and the
    red target. The disc has a collision cylinder of its radius and is driven by a force toward
    its set-point (the same straight, capped-speed motion as ``ibc/ReachTarget-v0`` in free
    space): driving into the wall stops it there. It slides along the wall only when the
    set-point pulls it sideways by more than friction holds (friction coefficient 0.5: a pull
    more than 27 degrees off the wall's normal).

    The disc starts close in front of the wall's centre. The scripted expert picks an end of the
    wall at random per episode and commands the waypoint beside that end, just behind the wall's
    line: the disc slides along the wall, rounds the end, and once past the wall's line the expert
    commands the target.

    Why it is multimodal: going around the left end and around the right end are equally good,
    and the two ways' set-points are mirror images across the start-target line. Their average
    lies just behind the wall's centre, so a policy that regresses the mean action pushes the
    disc head-on into the wall, where friction holds it against the small sideways pulls that
    would otherwise let it drift to one side. The expert's action also jumps where it switches
    from the waypoint to the target (a discontinuous policy).

    ## Action Space

    ``Box(-1, 1, (2,), float32)``. ``action_type="position"`` (default): an absolute set-point in
    the normalized workspace. ``action_type="delta"``: a displacement of the set-point from the
    disc's position, ``DELTA_SCALE`` (0.2) per unit. Clipped to ``[-1, 1]``; invalid actions
    (NaN/inf, a shape other than ``(2,)``, non-numeric) raise ``ValueError``.

    ## Observation Space

    ``"pixels"`` (default), ``"pixels_agent_pos"`` as in ``ibc/ReachTarget-v0``; ``"state"`` is
    ``Box(-1, 1, (9,), float32)``:

    | Num | Observation                                            | Min | Max |
    |-----|--------------------------------------------------------|-----|-----|
    | 0-1 | agent position ``x, y``                                | -1  | 1   |
    | 2-3 | target position ``x, y``                               | -1  | 1   |
    | 4   | target reached flag (0 or 1)                           | 0   | 1   |
    | 5-6 | wall centre ``x, y``                                   | -1  | 1   |
    | 7-8 | wall normal ``u`` (unit vector from the start side to the target side) | -1 | 1 |

    ## Rewards

    ``"dense"`` (default): ``-distance`` to the target centre (it does not see the wall).
    ``"sparse"``: ``1.0`` on success, else ``0.0``.

    ## Starting State

    The wall lies at the centre of the workspace with its normal ``u`` (pointing from the start to
    the target) at a uniform angle: the whole layout turns. The disc starts at rest at
    ``-d_s u`` and the target lies at ``d_t u``, with ``d_s`` uniform in ``[0.14, 0.2]`` (a gap of
    0.03 to 0.09 between disc and wall) and ``d_t`` uniform in ``[0.6, 0.7]``. Drawn from
    ``self.np_random`` only.

    Why little variety besides the angle: a policy that regresses the mean action fails only
    where it cannot memorize which way each demonstration went. A layout drawn from one angle and
    two short distances is covered densely by a few hundred demos, so nearly identical images
    come with both ways.

    ## Episode End

    Terminated when the disc centre is within 0.1 of the target centre. Truncated after 40 steps.

    ## Info

    ``is_success``, ``distance`` (to the target), ``agent_pos`` (float32 ``(2,)``), ``targets``
    (float32 ``(1, 2)``), ``reached`` (bool ``(1,)``), ``phase`` (always 0), ``obstacle``
    (float32 ``(5,)``: wall centre ``x, y``, normal ``ux, uy``, half length), ``waypoints``
    (float32 ``(2, 2)``: the set-points beside the wall's two ends, ``0.55`` along the wall and
    ``0.1`` behind it, that the expert commands first).

    ## Arguments

    ``obs_type``, ``image_size``, ``reward_type``, ``action_type``, ``render_mode``,
    ``render_size``: as in ``ibc/ReachTarget-v0``.

    ## Version History

    - v0: initial version.
    """

    task: ClassVar[ReachTask] = ReachTask(
        n_targets=1, sequential=False, target_colors=(RED,), min_agent_separation=0.7
    )
    extra_state_dim: ClassVar[int] = 4

    def __init__(self, **kwargs: Any) -> None:
        self._obstacle = np.zeros(5, np.float32)
        super().__init__(**kwargs)

    def _make_scene(self) -> Scene:
        return PlanarScene(
            self.task.n_targets,
            self.task.target_colors,
            obstacle_half_extents=(WALL_HALF_WIDTH, WALL_HALF_LENGTH),
        )

    def _sample_start(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.np_random
        angle = rng.uniform(0.0, 2.0 * math.pi)
        d_s, d_t = rng.uniform(*START_DISTANCE), rng.uniform(*TARGET_DISTANCE)
        u = np.array([math.cos(angle), math.sin(angle)])
        center = np.zeros(2)
        self._obstacle = np.array([*center, *u, WALL_HALF_LENGTH], np.float32)
        self._scene.set_obstacle(center, angle)  # type: ignore[attr-defined]
        return center - d_s * u, (center + d_t * u)[None]

    def _extra_state(self) -> np.ndarray:
        return self._obstacle[:4].copy()

    def _info(self) -> dict[str, Any]:
        info = super()._info()
        info["obstacle"] = self._obstacle.copy()
        info["waypoints"] = obstacle_waypoints(self._obstacle).astype(np.float32)
        return info
