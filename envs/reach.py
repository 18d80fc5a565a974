"""The planar reach envs: a blue disc driven to red/green target markers on a floor."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from envs.base import ReachEnv, ReachTask
from envs.physics import GREEN, REACHED_COLOR, RED


class ReachTargetEnv(ReachEnv):
    """Drive a disc onto one target marker, seen from above.

    ## Description

    A blue disc (the agent, radius 0.06) moves over a white floor; a thin grey outline marks the
    normalized workspace ``[-1, 1]^2``. One red target marker (radius 0.1) lies on the floor. The disc is simulated in pybullet on two prismatic joints whose motors track the
    commanded position: motor velocity ``10/s * (set-point - position)``, capped at 1.25 units/s
    along the line to the set-point (1.6 s across the workspace), so the disc moves straight to
    the set-point and stops there without overshoot. Motion is first order: the image alone
    determines the state. The env runs at 10 Hz (``metadata["render_fps"] == 10``); each step
    runs 10 physics substeps of 10 ms.

    ## Action Space

    ``Box(-1, 1, (2,), float32)``, read according to ``action_type``:

    - ``"position"`` (default): an *absolute* position set-point in the normalized workspace.
    - ``"delta"``: a displacement of the set-point from the disc's current position, scaled by
      ``DELTA_SCALE`` (0.2 normalized units per unit action; the set-point is clipped to the
      workspace), as in the IBC paper's block-pushing tasks. A zero action holds the disc.

    Values outside ``[-1, 1]`` are clipped. NaN/inf, a shape other than ``(2,)`` or a non-float
    array dtype raise ``ValueError`` (float arrays and sequences of two numbers are accepted).

    | Num | Action (position / delta)            | Min | Max |
    |-----|--------------------------------------|-----|-----|
    | 0   | set-point ``x`` / its change in x    | -1  | 1   |
    | 1   | set-point ``y`` / its change in y    | -1  | 1   |

    ## Observation Space

    Chosen by ``obs_type``:

    - ``"pixels"`` (default): ``Box(0, 255, (image_size, image_size, 3), uint8)``, a top-down view
      of ``[-1.15, 1.15]^2``. Image column grows with ``x``, image row grows with ``-y`` (``+y``
      is up).
    - ``"pixels_agent_pos"``: ``Dict(pixels=<as above>, agent_pos=Box(-1, 1, (2,), float32))``.
    - ``"state"``: ``Box(-1, 1, (5,), float32)``:

    | Num | Observation                                | Min | Max |
    |-----|--------------------------------------------|-----|-----|
    | 0-1 | agent position ``x, y``                    | -1  | 1   |
    | 2-3 | target position ``x, y``                   | -1  | 1   |
    | 4   | target reached flag (0 or 1)               | 0   | 1   |

    ## Rewards

    ``reward_type="dense"`` (default): ``-distance`` from the disc centre to the target centre.
    ``reward_type="sparse"``: ``1.0`` on success, else ``0.0``.

    ## Starting State

    The target centre is uniform in ``[-0.8, 0.8]^2``; the disc starts at rest, uniform in
    ``[-0.9, 0.9]^2`` at least 0.4 from the target centre. Drawn from ``self.np_random`` only.

    ## Episode End

    Terminated on success: the disc centre is within 0.1 (the target radius) of the target centre.
    Truncated after 50 steps (5 s) by the ``TimeLimit`` of ``gymnasium.make``.

    ## Info

    On reset and every step: ``is_success`` (bool), ``distance`` (float, disc centre to target
    centre), ``agent_pos`` (float32 ``(2,)``), ``targets`` (float32 ``(1, 2)``), ``reached`` (bool
    ``(1,)``), ``phase`` (int, always 0).

    ## Arguments

    ```python
    gymnasium.make("ibc/ReachTarget-v0", obs_type="pixels", image_size=96, reward_type="dense",
                   action_type="position", render_mode=None, render_size=256)
    ```

    - ``obs_type``: ``"pixels"``, ``"pixels_agent_pos"`` or ``"state"``.
    - ``image_size``: side of the observation image in pixels (16 to 1024).
    - ``reward_type``: ``"dense"`` or ``"sparse"``.
    - ``action_type``: ``"position"`` or ``"delta"`` (see Action Space).
    - ``render_mode``: ``None`` or ``"rgb_array"`` (``render()`` returns a
      ``(render_size, render_size, 3)`` uint8 frame of the same view).
    - ``render_size``: side of the ``render()`` frame in pixels (16 to 1024).

    Invalid values or unknown arguments raise ``ValueError``.

    ## Version History

    - v0: initial version.
    """

    task: ClassVar[ReachTask] = ReachTask(n_targets=1, sequential=False, target_colors=(RED,))


class ReachAnyTargetEnv(ReachEnv):
    """Drive a disc onto either of two identical targets (a multimodal task), seen from above.

    ## Description

    As ``ibc/ReachTarget-v0`` (same disc, controller, floor, camera and 10 Hz control) but with
    two identical red target markers: reaching either one is success. Both choices are equally
    good, so demonstrations that pick one at random are multimodal.

    ## Action Space

    ``Box(-1, 1, (2,), float32)``: an absolute position set-point (``action_type="position"``,
    the default) or a displacement of it (``"delta"``), as in ``ibc/ReachTarget-v0``; clipped to
    ``[-1, 1]``; invalid actions (NaN/inf, shape, dtype) raise ``ValueError``.

    ## Observation Space

    ``"pixels"`` (default), ``"pixels_agent_pos"`` as in ``ibc/ReachTarget-v0``; ``"state"`` is
    ``Box(-1, 1, (8,), float32)``:

    | Num | Observation                                | Min | Max |
    |-----|--------------------------------------------|-----|-----|
    | 0-1 | agent position ``x, y``                    | -1  | 1   |
    | 2-3 | target 0 position ``x, y``                 | -1  | 1   |
    | 4-5 | target 1 position ``x, y``                 | -1  | 1   |
    | 6-7 | target 0 / target 1 reached flags (0 or 1) | 0   | 1   |

    ## Rewards

    ``"dense"`` (default): ``-distance`` to the nearest target centre. ``"sparse"``: ``1.0`` on
    success, else ``0.0``.

    ## Starting State

    Target centres uniform in ``[-0.8, 0.8]^2`` at least 0.5 apart; the disc at rest, uniform in
    ``[-0.9, 0.9]^2`` at least 0.4 from both targets.

    ## Episode End

    Terminated when the disc centre is within 0.1 of either target centre. Truncated after 50
    steps.

    ## Info

    ``is_success``, ``distance`` (to the nearest target), ``agent_pos`` (float32 ``(2,)``),
    ``targets`` (float32 ``(2, 2)``), ``reached`` (bool ``(2,)``), ``phase`` (always 0).

    ## Arguments

    ``obs_type``, ``image_size``, ``reward_type``, ``action_type``, ``render_mode``,
    ``render_size``: as in ``ibc/ReachTarget-v0``.

    ## Version History

    - v0: initial version.
    """

    task: ClassVar[ReachTask] = ReachTask(n_targets=2, sequential=False, target_colors=(RED, RED))


class ReachSequenceEnv(ReachEnv):
    """Drive a disc onto a red target, then onto a green one, seen from above.

    ## Description

    As ``ibc/ReachTarget-v0`` (same disc, controller, floor, camera and 10 Hz control) with two
    targets: first the red one (target 0), then the green one (target 1). A target turns dark grey
    once reached, so the image shows which phase the episode is in (the red one greys when the
    first phase ends). Touching the green target first does nothing.

    ## Action Space

    ``Box(-1, 1, (2,), float32)``: an absolute position set-point (``action_type="position"``,
    the default) or a displacement of it (``"delta"``), as in ``ibc/ReachTarget-v0``; clipped to
    ``[-1, 1]``; invalid actions (NaN/inf, shape, dtype) raise ``ValueError``.

    ## Observation Space

    ``"pixels"`` (default), ``"pixels_agent_pos"`` as in ``ibc/ReachTarget-v0``; ``"state"`` is
    ``Box(-1, 1, (8,), float32)``:

    | Num | Observation                                        | Min | Max |
    |-----|----------------------------------------------------|-----|-----|
    | 0-1 | agent position ``x, y``                            | -1  | 1   |
    | 2-3 | target 0 (red, first) position ``x, y``            | -1  | 1   |
    | 4-5 | target 1 (green, second) position ``x, y``         | -1  | 1   |
    | 6-7 | target 0 / target 1 reached flags (the phase)      | 0   | 1   |

    ## Rewards

    ``"dense"`` (default): minus the remaining path length: the distance to the current goal plus,
    in phase 0, the distance from target 0 to target 1 (so the reward does not jump when the first
    target is reached). ``"sparse"``: ``1.0`` on success, else ``0.0``.

    ## Starting State

    Target centres uniform in ``[-0.8, 0.8]^2`` at least 0.5 apart; the disc at rest, uniform in
    ``[-0.9, 0.9]^2`` at least 0.4 from both targets; phase 0.

    ## Episode End

    Terminated when the disc centre comes within 0.1 of target 1 after having come within 0.1 of
    target 0. Truncated after 80 steps.

    ## Info

    ``is_success``, ``distance`` (to the current goal, ``targets[min(phase, 1)]``), ``agent_pos``
    (float32 ``(2,)``), ``targets`` (float32 ``(2, 2)``), ``reached`` (bool ``(2,)``), ``phase``
    (int: index of the next target to reach; 2 once both are reached).

    ## Arguments

    ``obs_type``, ``image_size``, ``reward_type``, ``action_type``, ``render_mode``,
    ``render_size``: as in ``ibc/ReachTarget-v0``.

    ## Version History

    - v0: initial version.
    """

    task: ClassVar[ReachTask] = ReachTask(
        n_targets=2, sequential=True, target_colors=(RED, GREEN), reached_color=REACHED_COLOR
    )


class ReachAllTargetsEnv(ReachEnv):
    """Drive a disc onto each of three identical targets, in any order (a multimodal task).

    ## Description

    As ``ibc/ReachTarget-v0`` (same disc, controller, floor, camera and 10 Hz control) with three
    identical red target markers. A target turns dark grey once the disc centre comes within 0.1
    of it, so the image shows which targets are left. Success: all three reached.

    Why it is multimodal, over many steps: at the start and after each target the disc may head
    for any target still red, and the scripted expert picks one of them uniformly at random. The
    choice stands for the whole leg (several steps), and the average of the choices (the mean of
    the red targets) is not a target: at the start it is the centre, where the disc already is,
    and after the first target it is the midpoint of the other two, so a policy that regresses
    the mean action stays put or parks between targets.

    ## Action Space

    ``Box(-1, 1, (2,), float32)``: ``action_type="position"`` (default) an absolute set-point,
    ``"delta"`` a displacement of the set-point from the disc, as in ``ibc/ReachTarget-v0``.

    ## Observation Space

    ``"pixels"`` (default), ``"pixels_agent_pos"`` as in ``ibc/ReachTarget-v0``; ``"state"`` is
    ``Box(-1, 1, (11,), float32)``: agent ``x, y``, the three targets' ``x, y``, then the three
    reached flags (0 or 1).

    ## Rewards

    ``"dense"`` (default): minus the length of the shortest path from the disc through the targets
    not yet reached (in the best order). ``"sparse"``: ``1.0`` on success, else ``0.0``.

    ## Starting State

    The targets sit at the corners of an equilateral triangle centred on the workspace centre, at
    a distance uniform in ``[0.55, 0.7]`` from it and turned by a uniform angle; the disc starts
    at rest, uniform in the disc of radius 0.1 around the centre. A layout of few parameters is
    covered densely by a few hundred demos, so nearly identical images come with every order:
    no policy can memorize which way each demonstration went.

    ## Episode End

    Terminated when the last of the three targets is reached. Truncated after 80 steps.

    ## Info

    ``is_success``, ``distance`` (to the nearest target not yet reached), ``agent_pos`` (float32
    ``(2,)``), ``targets`` (float32 ``(3, 2)``), ``reached`` (bool ``(3,)``), ``phase`` (int: the
    number of targets reached).

    ## Arguments

    ``obs_type``, ``image_size``, ``reward_type``, ``action_type``, ``render_mode``,
    ``render_size``: as in ``ibc/ReachTarget-v0``.

    ## Version History

    - v0: initial version.
    """

    task: ClassVar[ReachTask] = ReachTask(
        n_targets=3,
        sequential=False,
        visit_all=True,
        target_colors=(RED, RED, RED),
        reached_color=REACHED_COLOR,
    )

    def _sample_start(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.np_random
        radius = rng.uniform(0.55, 0.7)
        angles = rng.uniform(0.0, 2.0 * math.pi) + 2.0 * math.pi * np.arange(3) / 3
        targets = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        r, phi = 0.1 * math.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * math.pi)
        return np.array([r * math.cos(phi), r * math.sin(phi)]), targets
