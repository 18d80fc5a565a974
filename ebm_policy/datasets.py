"""The dataset protocol the trainer and ``Policy.for_dataset`` read, and ``ArrayDataset``, a
dataset over arrays already in memory.

A dataset is anything with ``__len__`` and ``__getitem__(i)`` (a ``torch.utils.data.Dataset``)
whose items are ``{"image": uint8 (H, W, C) channels-last, "state": float32 (S,), "action":
float32 (A,)}`` (numpy arrays or tensors) with the observation keys it has: ``"image"``,
``"state"`` or both. Actions and states are in the data's own units (policies normalize them
with the dataset's bounds and statistics). Optional attributes make the statistics fast and
spare reading items: ``actions (N, A)`` and ``states (N, S)`` arrays (``action_bounds_from_dataset``,
``state_stats_from_dataset``), ``inputs`` (``"image"``, ``"state"`` or ``"image_state"``),
``state_dim`` and ``image_shape (H, W, C)`` (``observed_inputs``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

INPUT_KINDS = {(True, False): "image", (False, True): "state", (True, True): "image_state"}


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _vectors(name: str, x: Any, n: int | None) -> np.ndarray:
    """``x`` as finite float32 ``(N, D)``, ``ValueError`` naming ``name`` otherwise."""
    arr = _numpy(x)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D), one row per item, got {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} rows, actions have {n}: one row per item")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} has non-finite values in {bad.size} rows (first: row {bad[0]})")
    return arr


def _images(x: Any, n: int) -> np.ndarray:
    """``x`` as uint8 ``(N, H, W, C)``, ``ValueError`` otherwise."""
    arr = _numpy(x)
    if arr.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"images has {len(arr)} frames, actions have {n} rows: one per item")
    if arr.shape[1] <= 4 < arr.shape[-1]:
        raise ValueError(
            f"images look channels-first {arr.shape}; give (N, H, W, C), e.g. "
            f"images.transpose(0, 2, 3, 1)"
        )
    if arr.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 in [0, 255], got dtype {arr.dtype} (from floats in [0, 1]: "
            f"(images * 255).round().astype(np.uint8))"
        )
    return arr


class ArrayDataset(Dataset):
    """Items ``{"image": uint8 (H, W, C), "state": float32 (S,), "action": float32 (A,)}`` over
    arrays in memory (numpy or tensors): ``actions (N, A)``, ``images (N, H, W, C)`` uint8
    channels-last and/or ``states (N, S)``; items hold only the keys given.

    Checked on construction (``ValueError``, one line): at least one of images and states, one
    row per item in each, finite actions and states. The arrays are kept as numpy (float32
    actions and states; no copy when already so).
    """

    def __init__(self, actions: Any, *, images: Any = None, states: Any = None) -> None:
        if images is None and states is None:
            raise ValueError("ArrayDataset needs images=, states= or both (the observations)")
        self.actions = _vectors("actions", actions, None)
        n = len(self.actions)
        if n == 0:
            raise ValueError("ArrayDataset needs at least one item, got 0 actions")
        self.images: np.ndarray | None = None if images is None else _images(images, n)
        self.states: np.ndarray | None = None if states is None else _vectors("states", states, n)

    @property
    def inputs(self) -> str:
        """What an item observes: ``"image"``, ``"state"`` or ``"image_state"``."""
        return INPUT_KINDS[(self.images is not None, self.states is not None)]

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def state_dim(self) -> int:
        """Dimensions of an item's ``"state"`` (0: none)."""
        return 0 if self.states is None else int(self.states.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(H, W, C)`` of an item's ``"image"`` (None: none)."""
        return None if self.images is None else tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        item = {"action": self.actions[i]}
        if self.images is not None:
            item["image"] = self.images[i]
        if self.states is not None:
            item["state"] = self.states[i]
        return item

    def __repr__(self) -> str:
        parts = [f"{'x'.join(map(str, self.image_shape))} images" if self.image_shape else ""]
        parts += [f"{self.state_dim}-D states" if self.state_dim else ""]
        observed = " + ".join(p for p in parts if p)
        return f"ArrayDataset({len(self)} items: {observed}, {self.action_dim}-D actions)"


class ObservedInputs(NamedTuple):
    """What a dataset's items observe, as a model's config says it."""

    inputs: str  # "image", "state" or "image_state"
    state_dim: int  # 0: no state
    image_channels: int | None  # None: no image


def observed_inputs(dataset: Any) -> ObservedInputs:
    """The model inputs ``dataset`` calls for: from its ``inputs``, ``state_dim`` and
    ``image_shape`` attributes when it has them all, else from its first item's keys and
    shapes (``ValueError`` for an empty dataset or an item with neither image nor state)."""
    inputs = getattr(dataset, "inputs", None)
    state_dim = getattr(dataset, "state_dim", None)
    has_shape = hasattr(dataset, "image_shape")
    if isinstance(inputs, str) and isinstance(state_dim, int) and has_shape:
        shape = dataset.image_shape
        return ObservedInputs(inputs, state_dim, None if shape is None else int(shape[-1]))
    if len(dataset) == 0:
        raise ValueError("cannot tell the inputs of an empty dataset")
    item = dataset[0]
    image, state = item.get("image"), item.get("state")
    if image is None and state is None:
        raise ValueError(
            f"dataset items have keys {sorted(item)}; a policy needs 'image' and/or 'state'"
        )
    return ObservedInputs(
        INPUT_KINDS[(image is not None, state is not None)],
        0 if state is None else int(np.prod(np.shape(state))),
        None if image is None else int(np.shape(image)[-1]),
    )
