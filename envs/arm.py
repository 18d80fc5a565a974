"""``ibc/ArmReach-v0``: a UFactory xArm6 moves its end effector over a table to a target marker.

The arm is the xArm6 of ``pybullet_data`` (``xarm/xarm6_robot.urdf``), picked over the Franka
Panda for render speed: its visual meshes are swapped for the URDF's own low-poly convex
collision meshes at load time, which renders several times faster with TinyRenderer (the README
gives the measured render times; ``ibc-gym bench env`` measures them).
"""

from __future__ import annotations

import atexit
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from envs.base import ReachEnv, ReachTask, Scene
from envs.physics import (
    AGENT_COLOR,
    CONTROL_HZ,
    FRAME_WIDTH,
    RED,
    RGBA,
    TARGET_RADIUS,
    VIEW_HALF_EXTENT,
    TopDownCamera,
    new_client,
    visual_body,
    workspace_frame,
)

ARM_COLOR: RGBA = (0.55, 0.55, 0.58, 1.0)  # grey links; wrist and flange in the agent's blue


def annulus_body(
    client: BulletClient, inner: float, outer: float, height: float, color: RGBA, segments: int = 32
) -> int:
    """A flat, upward-facing, visual-only ring at ``height`` (a goal marker nothing can hide).

    The mesh is read from an OBJ file written once per process (``mesh_file``), not passed as
    in-memory ``vertices``: pybullet never frees an in-memory visual mesh with ``normals``
    (~13 KB per client, even after ``disconnect``), while file meshes go to its process-wide
    cache, keyed by path, and are parsed once. Both draw the same pixels.
    """
    name = f"ring_{inner!r}_{outer!r}_{segments}.obj"
    path = mesh_file(name, lambda: annulus_obj(inner, outer, segments))
    visual = client.createVisualShape(pybullet.GEOM_MESH, fileName=str(path), rgbaColor=color)
    return client.createMultiBody(
        baseMass=0, baseVisualShapeIndex=visual, basePosition=[0.0, 0.0, height]
    )


_MESH_DIR: list[Path] = []  # this process's mesh folder, created on first use


def mesh_file(name: str, text: Callable[[], str]) -> Path:
    """``name`` in a folder that lives as long as the process, written with ``text()`` if absent.

    One path per mesh matters: pybullet caches every mesh file it reads, by path, until the
    process exits, so a fresh temporary path per env would grow that cache instead.
    """
    if not _MESH_DIR:
        folder = Path(tempfile.mkdtemp(prefix="ibc-gym-meshes-"))
        owner = os.getpid()  # forked workers share the folder; only its creator removes it

        def remove() -> None:
            if os.getpid() == owner:
                shutil.rmtree(folder, ignore_errors=True)

        atexit.register(remove)
        _MESH_DIR.append(folder)
    path = _MESH_DIR[0] / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_text(text())
        os.replace(tmp, path)
    return path


def annulus_obj(inner: float, outer: float, segments: int) -> str:
    """Wavefront OBJ text of a flat ring in the ``z = 0`` plane, normals ``+z``."""
    angles = np.linspace(0.0, 2.0 * math.pi, segments, endpoint=False)
    vertices = [(r * math.cos(a), r * math.sin(a)) for a in angles for r in (inner, outer)]
    n = len(vertices)  # inner and outer vertices alternate
    lines = [f"v {x!r} {y!r} 0.0" for x, y in vertices] + ["vn 0.0 0.0 1.0"]
    for k in range(0, n, 2):
        inner0, outer0, inner1, outer1 = k + 1, k + 2, (k + 2) % n + 1, (k + 3) % n + 1
        lines.append(f"f {inner0}//1 {outer0}//1 {outer1}//1")  # 1-based, normal 1
        lines.append(f"f {inner0}//1 {outer1}//1 {inner1}//1")
    return "\n".join(lines) + "\n"


def lowpoly_xarm6_urdf() -> str:
    """The text of ``xarm6_robot.urdf`` with absolute mesh paths and low-poly visual meshes."""
    root = Path(pybullet_data.getDataPath()) / "xarm"
    text = (root / "xarm6_robot.urdf").read_text()
    text = re.sub(r"meshes/xarm6/visual/(\w+)\.stl", r"meshes/xarm6/collision/\1_vhacd.obj", text)
    return text.replace("package://xarm_description", str(root / "xarm_description"))


class ArmScene:
    """An xArm6 (fixed base at the world origin, gravity off) whose flange moves in a horizontal plane.

    The normalized workspace ``[-1, 1]^2`` is the square of half-width ``HALF_EXTENT`` around
    ``CENTER`` (world metres) at flange height ``EE_HEIGHT``, the flange pointing down. Each
    control step moves a Cartesian waypoint from the current flange position toward the
    set-point by at most ``MAX_SPEED / CONTROL_HZ`` (``0.25 m/s``, 1.25 normalized units/s, as the
    planar disc), solves inverse kinematics for it and lets the joint position motors track the
    joint solution for ``SUBSTEPS`` physics steps.
    """

    CENTER = (0.40, 0.0)
    HALF_EXTENT = 0.20
    EE_HEIGHT = 0.15
    EE_LINK = 6  # link6, the flange
    # link5 and link6 (wrist and flange) are drawn blue: seen from above, link5 hides the flange.
    WRIST_LINK = 5
    RING_HEIGHT = 0.7  # the target's ring floats above the arm (at most ~0.64 m high here)
    JOINTS = (1, 2, 3, 4, 5, 6)
    HOME = (0.0, -0.3, -0.9, 0.0, 1.2, 0.0)  # IK start: flange down at (0.32, 0, 0.27), elbow up
    MAX_SPEED = 0.25  # m/s
    GAIN = 30.0  # 1/s, joint motors
    SUBSTEPS = 12  # 120 Hz physics
    MOTOR_FORCE = 500.0

    def __init__(self, target_colors: Sequence[RGBA]) -> None:
        self.client = new_client()
        c = self.client
        self._dt = 1.0 / (CONTROL_HZ * self.SUBSTEPS)
        c.setPhysicsEngineParameter(fixedTimeStep=self._dt)
        cx, cy = self.CENTER
        half = self.HALF_EXTENT
        workspace_frame(c, self.CENTER, half, FRAME_WIDTH * half)
        radius = TARGET_RADIUS * half
        self.targets = [
            (
                visual_body(
                    c,
                    pybullet.GEOM_CYLINDER,
                    (cx, cy, 0.002),
                    radius=radius,
                    length=0.004,
                    rgbaColor=color,
                ),
                annulus_body(c, radius, 1.6 * radius, self.RING_HEIGHT, color),
            )
            for color in target_colors
        ]
        with tempfile.TemporaryDirectory() as tmp:  # meshes are read at load time
            urdf = Path(tmp) / "xarm6_lowpoly.urdf"
            urdf.write_text(lowpoly_xarm6_urdf())
            self.arm = c.loadURDF(str(urdf), useFixedBase=True)
        for link in range(-1, c.getNumJoints(self.arm)):
            color = AGENT_COLOR if link >= self.WRIST_LINK else ARM_COLOR
            c.changeVisualShape(self.arm, link, rgbaColor=color)
        self._down = c.getQuaternionFromEuler([math.pi, 0.0, 0.0])
        # Far away so that the ring 0.7 m up projects onto its disc within a third of a pixel.
        self.camera = TopDownCamera(
            c,
            self.CENTER,
            VIEW_HALF_EXTENT * half,
            height=100.0,
            depth_range=(-0.1, 0.8),
            ambient=0.75,
            diffuse=0.6,
        )
        self._pos = np.zeros(2)
        self._closed = False

    # ---- coordinates --------------------------------------------------------------------------

    def to_world(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(self.CENTER) + self.HALF_EXTENT * np.asarray(p, np.float64)

    def to_normalized(self, w: np.ndarray) -> np.ndarray:
        return (np.asarray(w[:2], np.float64) - np.asarray(self.CENTER)) / self.HALF_EXTENT

    # ---- scene API ----------------------------------------------------------------------------

    def reset(
        self, agent_pos: np.ndarray, targets: np.ndarray, target_colors: Sequence[RGBA]
    ) -> None:
        """Put the arm (at rest) with its flange above ``agent_pos``; place the targets."""
        c = self.client
        for (disc, ring), t, color in zip(self.targets, targets, target_colors, strict=True):
            x, y = self.to_world(t)
            c.resetBasePositionAndOrientation(disc, [x, y, 0.002], [0, 0, 0, 1])
            c.resetBasePositionAndOrientation(ring, [x, y, self.RING_HEIGHT], [0, 0, 0, 1])
            for body in (disc, ring):
                c.changeVisualShape(body, -1, rgbaColor=color)
        # The same IK start every reset: the solution depends on nothing else.
        self._set_joints(self.HOME)
        for _ in range(3):
            self._set_joints(self._ik(self.to_world(agent_pos), iterations=100))
        q = [s[0] for s in c.getJointStates(self.arm, self.JOINTS)]
        self._command(q)
        self._pos = self._read_position()

    def step(self, setpoint: np.ndarray) -> None:
        """Move toward ``setpoint`` (normalized) for one control step."""
        here, goal = self.to_world(self._pos), self.to_world(setpoint)
        delta = goal - here
        max_step = self.MAX_SPEED / CONTROL_HZ
        norm = float(math.hypot(delta[0], delta[1]))
        if norm > max_step:
            delta *= max_step / norm
        self._command(self._ik(here + delta, iterations=100))
        for _ in range(self.SUBSTEPS):
            self.client.stepSimulation()
        self._pos = self._read_position()

    def set_target_color(self, k: int, color: RGBA) -> None:
        for body in self.targets[k]:
            self.client.changeVisualShape(body, -1, rgbaColor=color)

    @property
    def agent_pos(self) -> np.ndarray:
        """Normalized ``(x, y)`` of the flange centre (float64)."""
        return self._pos.copy()

    @property
    def ee_height(self) -> float:
        """World height of the flange (metres); ``EE_HEIGHT`` up to IK and tracking errors."""
        return float(
            self.client.getLinkState(self.arm, self.EE_LINK, computeForwardKinematics=True)[4][2]
        )

    def render(self, size: int) -> np.ndarray:
        return self.camera.render(size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.disconnect()

    # ---- helpers ------------------------------------------------------------------------------

    def _ik(self, xy: np.ndarray, iterations: int) -> Sequence[float]:
        return self.client.calculateInverseKinematics(
            self.arm,
            self.EE_LINK,
            [float(xy[0]), float(xy[1]), self.EE_HEIGHT],
            self._down,
            maxNumIterations=iterations,
            residualThreshold=1e-4 * self.HALF_EXTENT,
        )

    def _set_joints(self, q: Sequence[float]) -> None:
        for j, qj in zip(self.JOINTS, q, strict=True):
            self.client.resetJointState(self.arm, j, qj, 0.0)

    def _command(self, q: Sequence[float]) -> None:
        n = len(self.JOINTS)
        self.client.setJointMotorControlArray(
            self.arm,
            list(self.JOINTS),
            pybullet.POSITION_CONTROL,
            targetPositions=list(q),
            targetVelocities=[0.0] * n,
            forces=[self.MOTOR_FORCE] * n,
            positionGains=[self.GAIN * self._dt] * n,
            velocityGains=[1.0] * n,
        )

    def _read_position(self) -> np.ndarray:
        state = self.client.getLinkState(self.arm, self.EE_LINK, computeForwardKinematics=True)
        return self.to_normalized(np.asarray(state[4]))


class ArmReachEnv(ReachEnv):
    """Move the flange of a 6-DOF arm over a red target marker on a table, seen from above.

    ## Description

    A UFactory xArm6 (``pybullet_data/xarm/xarm6_robot.urdf``, drawn with its low-poly collision
    meshes; grey links, blue wrist and flange) stands at the world origin next to a white table.
    Its flange points down at a fixed height of 0.15 m and moves in the horizontal plane: the
    normalized workspace ``[-1, 1]^2`` is the 0.4 m x 0.4 m square centred 0.4 m in front of the
    base (``x`` away from the base, ``y`` to its left). Each 10 Hz control step moves a Cartesian
    waypoint toward the commanded set-point by at most 0.025 m (0.25 m/s, i.e. 1.25 normalized
    units/s, 1.6 s across the workspace), solves inverse kinematics for it and runs 12 physics
    substeps of the joint position motors (gravity off: a gravity-compensated arm). A red target
    marker (radius 0.1 normalized = 2 cm) lies on the table, and a red ring of the same inner
    radius floats above it at 0.7 m, higher than any part of the arm, so that the target stays
    visible from above even when the arm passes over it. A thin grey outline marks the workspace.

    ## Action Space

    ``Box(-1, 1, (2,), float32)``: an absolute set-point for the flange in the normalized
    workspace (``action_type="position"``, the default) or a displacement of it from the flange
    (``"delta"``, 0.2 normalized units per unit action), clipped to ``[-1, 1]``; invalid actions
    (NaN/inf, shape, dtype) raise ``ValueError``.

    | Num | Action                      | Min | Max |
    |-----|-----------------------------|-----|-----|
    | 0   | flange set-point ``x``      | -1  | 1   |
    | 1   | flange set-point ``y``      | -1  | 1   |

    ## Observation Space

    ``"pixels"`` (default): ``Box(0, 255, (image_size, image_size, 3), uint8)``, a top-down view
    of the workspace plus a 15 % border (column grows with ``x``, row grows with ``-y``).
    ``"pixels_agent_pos"``: ``Dict(pixels=..., agent_pos=Box(-1, 1, (2,), float32))`` with the
    flange position. ``"state"``: ``Box(-1, 1, (5,), float32)``:

    | Num | Observation                                | Min | Max |
    |-----|--------------------------------------------|-----|-----|
    | 0-1 | flange position ``x, y`` (normalized)      | -1  | 1   |
    | 2-3 | target position ``x, y``                   | -1  | 1   |
    | 4   | target reached flag (0 or 1)               | 0   | 1   |

    ## Rewards

    ``"dense"`` (default): ``-distance`` (normalized, horizontal) from the flange centre to the
    target centre. ``"sparse"``: ``1.0`` on success, else ``0.0``.

    ## Starting State

    Target centre uniform in ``[-0.8, 0.8]^2``; the arm at rest with its flange above a point
    uniform in ``[-0.9, 0.9]^2`` at least 0.4 from the target (joint angles from inverse kinematics
    started at a fixed home pose, so they depend only on that point).

    ## Episode End

    Terminated when the flange centre is within 0.1 (normalized, horizontally) of the target
    centre. Truncated after 50 steps.

    ## Info

    ``is_success``, ``distance``, ``agent_pos`` (flange, float32 ``(2,)``), ``targets`` (float32
    ``(1, 2)``), ``reached`` (bool ``(1,)``), ``phase`` (always 0).

    ## Arguments

    ``obs_type``, ``image_size``, ``reward_type``, ``action_type``, ``render_mode``,
    ``render_size``: as in ``ibc/ReachTarget-v0``.

    ## Version History

    - v0: initial version.
    """

    task: ClassVar[ReachTask] = ReachTask(n_targets=1, sequential=False, target_colors=(RED,))

    def _make_scene(self) -> Scene:
        return ArmScene(self.task.target_colors)
