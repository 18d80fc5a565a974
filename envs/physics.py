"""pybullet building blocks: a per-instance client, a top-down camera and the planar scene.

Everything here is independent of the Gym API. Each scene owns its own
``BulletClient(connection_mode=pybullet.DIRECT)`` (never the global connection), so any number
of scenes can live in one process, and releases it in ``close()`` (idempotent).

Coordinates: the *normalized workspace* is ``[-1, 1]^2``. Images look straight down the ``-z``
axis with ``+y`` up, so image column increases with workspace ``x`` and image row increases with
``-y`` (row 0 is the ``+y`` edge): pixel ``(row, col)`` of an ``S x S`` image shows the point
``x = (2 (col + 0.5) / S - 1) * VIEW_HALF_EXTENT``, ``y = -(2 (row + 0.5) / S - 1) * VIEW_HALF_EXTENT``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

RGBA = tuple[float, float, float, float]

CONTROL_HZ = 10  # one env step = one control step
VIEW_HALF_EXTENT = 1.15  # the camera sees [-1.15, 1.15]^2 normalized: the workspace plus a border
TARGET_RADIUS = 0.1  # normalized; success radius and drawn radius of the target markers
AGENT_RADIUS = 0.06  # normalized; drawn radius of the planar agent

AGENT_COLOR: RGBA = (0.12, 0.32, 0.92, 1.0)  # blue
RED: RGBA = (0.90, 0.12, 0.12, 1.0)
GREEN: RGBA = (0.10, 0.70, 0.15, 1.0)
REACHED_COLOR: RGBA = (0.35, 0.35, 0.35, 1.0)  # dark grey: a target already reached in a sequence
FRAME_COLOR: RGBA = (0.45, 0.45, 0.45, 1.0)  # the line around the workspace
OBSTACLE_COLOR: RGBA = (0.10, 0.10, 0.10, 1.0)  # near black: a wall the disc collides with
OBSTACLE_HEIGHT = 0.06  # the wall spans z in [0, 0.06], the disc's z range [0.02, 0.04] inside it
FRAME_WIDTH = 0.03  # normalized
# The floor is TinyRenderer's white background: drawing a floor would cost more than the rest of
# the scene, as its cost grows with the pixels each face covers.


@contextlib.contextmanager
def _silenced_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null: pybullet's C code prints ``argv[0]=`` on connecting.

    Output other threads write to stdout meanwhile (a few ms) is lost too.
    """
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no usable fd 1: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def new_client() -> BulletClient:
    """A fresh headless pybullet client with gravity off (all motion is in the horizontal plane)."""
    with _silenced_stdout():
        client = BulletClient(connection_mode=pybullet.DIRECT)
    client.setGravity(0, 0, 0)
    return client


def visual_body(
    client: BulletClient, shape: int, position: Sequence[float], **shape_kwargs: object
) -> int:
    """A static, collision-free body that is only drawn (outline bars, target markers)."""
    visual = client.createVisualShape(shape, **shape_kwargs)
    return client.createMultiBody(
        baseMass=0,
        baseCollisionShapeIndex=-1,
        baseVisualShapeIndex=visual,
        basePosition=list(position),
    )


def workspace_frame(
    client: BulletClient, center: tuple[float, float], half: float, width: float
) -> list[int]:
    """Four flat grey bars just outside the square ``center +- half`` (a thin outline)."""
    cx, cy = center
    bars = []
    for axis in (0, 1):
        for sign in (-1.0, 1.0):
            offset = sign * (half + width / 2)
            position = (cx + offset, cy, -0.001) if axis == 0 else (cx, cy + offset, -0.001)
            extents = (
                [width / 2, half + width, 0.001] if axis == 0 else [half + width, width / 2, 0.001]
            )
            bars.append(
                visual_body(
                    client, pybullet.GEOM_BOX, position, halfExtents=extents, rgbaColor=FRAME_COLOR
                )
            )
    return bars


class TopDownCamera:
    """A narrow-FOV camera far above a square of the horizontal plane (nearly orthographic).

    TinyRenderer (CPU, works headless), no shadows, light straight from above.

    Args:
        client: the scene's pybullet client.
        center: world ``(x, y)`` of the image centre.
        half_extent: world half-width of the square seen at ``z = 0``.
        height: camera height; large against the scene's height so parallax is sub-pixel.
        depth_range: world ``(z_min, z_max)`` of the scene, for the clipping planes.
        ambient, diffuse: light coefficients; ``(1, 0)`` draws every face in its plain colour.
    """

    def __init__(
        self,
        client: BulletClient,
        center: tuple[float, float],
        half_extent: float,
        height: float = 10.0,
        depth_range: tuple[float, float] = (-0.1, 0.6),
        ambient: float = 1.0,
        diffuse: float = 0.0,
    ) -> None:
        self._client = client
        self._light = {"lightAmbientCoeff": ambient, "lightDiffuseCoeff": diffuse}
        cx, cy = center
        self.view_matrix = client.computeViewMatrix(
            [cx, cy, height], [cx, cy, 0.0], [0.0, 1.0, 0.0]
        )
        fov = 2.0 * math.degrees(math.atan(half_extent / height))
        near, far = height - depth_range[1], height - depth_range[0]
        self.projection_matrix = client.computeProjectionMatrixFOV(fov, 1.0, near, far)

    def render(self, size: int) -> np.ndarray:
        """A ``(size, size, 3)`` uint8 RGB image."""
        _, _, rgba, _, _ = self._client.getCameraImage(
            size,
            size,
            viewMatrix=self.view_matrix,
            projectionMatrix=self.projection_matrix,
            renderer=pybullet.ER_TINY_RENDERER,
            shadow=0,
            lightDirection=[0.0, 0.0, 1.0],
            lightColor=[1.0, 1.0, 1.0],
            lightSpecularCoeff=0.0,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
            **self._light,
        )
        return np.ascontiguousarray(
            np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[:, :, :3]
        )


class PlanarScene:
    """A disc on two prismatic joints (x, y) above a floor, and ``n_targets`` flat target markers.

    World units equal normalized units. The disc is position-controlled by pybullet joint motors:
    each substep the motor velocity is ``K (setpoint - position)`` (``K = 10/s``: a 0.1 s time
    constant, like the ``k_p = 10`` of IBC's particle env) capped at ``MAX_SPEED`` along the line
    to the set-point, so the disc moves in a straight line at up to 1.25 units/s (1.6 s across
    the workspace) and settles on the set-point without overshoot. The motion is first order:
    the next position depends only on the position and the set-point, never on a hidden velocity.
    Targets are visual-only. With ``obstacle_half_extents``, the scene also holds a static box
    wall (a pybullet collision body, placed by ``set_obstacle``) and the disc gets a collision
    cylinder: the wall stops the disc, which slides along it only as far as the set-point pulls it
    sideways.
    """

    MAX_SPEED = 1.25  # normalized units per second
    GAIN = 10.0  # 1/s
    SUBSTEPS = 10  # physics steps per control step (100 Hz)
    MOTOR_FORCE = 1000.0
    DISC_MASS = 1.0  # kg, in units where the workspace is 2 m wide
    MAX_FORCE = 400.0  # N: force control (scenes with an obstacle)

    def __init__(
        self,
        n_targets: int,
        target_colors: Sequence[RGBA],
        obstacle_half_extents: tuple[float, float] | None = None,
    ) -> None:
        self.client = new_client()
        c = self.client
        self._dt = 1.0 / (CONTROL_HZ * self.SUBSTEPS)
        c.setPhysicsEngineParameter(fixedTimeStep=self._dt)
        workspace_frame(c, (0.0, 0.0), 1.0, FRAME_WIDTH)
        self.targets = [
            visual_body(
                c,
                pybullet.GEOM_CYLINDER,
                (0, 0, 0.005),
                radius=TARGET_RADIUS,
                length=0.01,
                rgbaColor=target_colors[k],
            )
            for k in range(n_targets)
        ]
        disc = c.createVisualShape(
            pybullet.GEOM_CYLINDER, radius=AGENT_RADIUS, length=0.02, rgbaColor=AGENT_COLOR
        )
        self.obstacle: int | None = None
        disc_collision = -1
        if obstacle_half_extents is not None:
            hx, hy = obstacle_half_extents
            extents = [hx, hy, OBSTACLE_HEIGHT / 2]
            self.obstacle = c.createMultiBody(
                baseMass=0,
                baseCollisionShapeIndex=c.createCollisionShape(
                    pybullet.GEOM_BOX, halfExtents=extents
                ),
                baseVisualShapeIndex=c.createVisualShape(
                    pybullet.GEOM_BOX, halfExtents=extents, rgbaColor=OBSTACLE_COLOR
                ),
                basePosition=[0.0, 0.0, OBSTACLE_HEIGHT / 2],
            )
            disc_collision = c.createCollisionShape(
                pybullet.GEOM_CYLINDER, radius=AGENT_RADIUS, height=0.02
            )
        self.agent = c.createMultiBody(
            baseMass=0,
            # With an obstacle the x carriage is nearly massless, so that the force commanded on
            # the disc (see _step_forces) is the force it exerts on the wall, in direction too.
            linkMasses=[1.0 if self.obstacle is None else 1e-3, 1.0],
            linkCollisionShapeIndices=[-1, disc_collision],
            linkVisualShapeIndices=[-1, disc],
            linkPositions=[[0, 0, 0], [0, 0, 0.03]],  # the disc's z: [0.02, 0.04], above targets
            linkOrientations=[[0, 0, 0, 1]] * 2,
            linkInertialFramePositions=[[0, 0, 0]] * 2,
            linkInertialFrameOrientations=[[0, 0, 0, 1]] * 2,
            linkParentIndices=[0, 1],
            linkJointTypes=[pybullet.JOINT_PRISMATIC] * 2,
            linkJointAxis=[[1, 0, 0], [0, 1, 0]],
        )
        self.camera = TopDownCamera(c, (0.0, 0.0), VIEW_HALF_EXTENT)
        if self.obstacle is not None:  # free the joints of their default motors: force control
            c.setJointMotorControlArray(
                self.agent, [0, 1], pybullet.VELOCITY_CONTROL, forces=[0, 0]
            )
        self._pos = np.zeros(2)
        self._closed = False

    def reset(
        self, agent_pos: np.ndarray, targets: np.ndarray, target_colors: Sequence[RGBA]
    ) -> None:
        """Place the disc (at rest) and the targets, and recolour the targets."""
        c = self.client
        for j in range(2):
            c.resetJointState(self.agent, j, float(agent_pos[j]), 0.0)
        for body, (x, y), color in zip(self.targets, targets, target_colors, strict=True):
            c.resetBasePositionAndOrientation(body, [float(x), float(y), 0.005], [0, 0, 0, 1])
            c.changeVisualShape(body, -1, rgbaColor=color)
        self._pos = self._read_position()

    def step(self, setpoint: np.ndarray) -> None:
        """Track ``setpoint`` (normalized, inside the workspace) for one control step."""
        if self.obstacle is not None:
            self._step_forces(setpoint)
            return
        c = self.client
        err = setpoint - self._pos
        dist = float(math.hypot(err[0], err[1]))
        for j in range(2):
            cap = self.MAX_SPEED * abs(float(err[j])) / dist if dist > 1e-12 else self.MAX_SPEED
            c.setJointMotorControl2(
                self.agent,
                j,
                pybullet.POSITION_CONTROL,
                targetPosition=float(setpoint[j]),
                positionGain=self.GAIN * self._dt,
                velocityGain=1.0,
                force=self.MOTOR_FORCE,
                maxVelocity=max(cap, 1e-9),
            )
        for _ in range(self.SUBSTEPS):
            c.stepSimulation()
        self._pos = self._read_position()

    def _step_forces(self, setpoint: np.ndarray) -> None:
        """The same motion as the joint motors in free space, by a force on the disc each substep.

        Velocity ``GAIN (setpoint - position)`` capped at ``MAX_SPEED`` along the line to the
        set-point, reached within a substep by a force of at most ``MAX_FORCE`` along the needed
        velocity change. Joint motors, each saturating at its own force limit, push a blocked disc
        along a diagonal of the axes rather than toward the set-point, which slides it around a
        wall it hits head-on; this force keeps the commanded direction.
        """
        c = self.client
        for _ in range(self.SUBSTEPS):
            states = c.getJointStates(self.agent, [0, 1])
            pos = np.array([states[0][0], states[1][0]])
            vel = np.array([states[0][1], states[1][1]])
            wanted = self.GAIN * (setpoint - pos)
            speed = float(math.hypot(wanted[0], wanted[1]))
            if speed > self.MAX_SPEED:
                wanted *= self.MAX_SPEED / speed
            force = self.DISC_MASS * (wanted - vel) / self._dt
            size = float(math.hypot(force[0], force[1]))
            if size > self.MAX_FORCE:
                force *= self.MAX_FORCE / size
            c.setJointMotorControlArray(
                self.agent, [0, 1], pybullet.TORQUE_CONTROL, forces=[float(f) for f in force]
            )
            c.stepSimulation()
        self._pos = self._read_position()

    def set_target_color(self, k: int, color: RGBA) -> None:
        self.client.changeVisualShape(self.targets[k], -1, rgbaColor=color)

    def set_obstacle(self, center: np.ndarray, angle: float) -> None:
        """Place the wall: centre ``(x, y)``, its local x axis at ``angle`` (radians) from world x."""
        if self.obstacle is None:
            raise RuntimeError("this scene was built without an obstacle")
        orientation = self.client.getQuaternionFromEuler([0.0, 0.0, float(angle)])
        position = [float(center[0]), float(center[1]), OBSTACLE_HEIGHT / 2]
        self.client.resetBasePositionAndOrientation(self.obstacle, position, orientation)

    @property
    def agent_pos(self) -> np.ndarray:
        """Normalized ``(x, y)`` of the disc centre (float64)."""
        return self._pos.copy()

    def render(self, size: int) -> np.ndarray:
        return self.camera.render(size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.disconnect()

    def _read_position(self) -> np.ndarray:
        states = self.client.getJointStates(self.agent, [0, 1])
        return np.array([states[0][0], states[1][0]], dtype=np.float64)
