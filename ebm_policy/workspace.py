"""``Workspace``: scratch tensors that inference reuses from call to call.

Action selection on a CPU evaluates the energy head on tens of thousands of candidate actions per
call; allocating its megabytes of hidden activations and the optimizer's populations afresh in
every call hands them back to the operating system and faults them in again, page by page, which
costs as much as the arithmetic and makes the latency swing between calls and processes. A
``Workspace`` keeps one flat buffer per name (and dtype, device) that only grows, so after the
first call of a given size no large allocation happens at all.

Buffers are per thread: two threads acting with the same policy never share scratch memory.
A tensor from ``get`` is valid until the next ``get`` of the same name in the same thread; never
return one to a caller.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor


class Workspace:
    """Named scratch buffers that grow and are reused (see the module docstring)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _buffers(self) -> dict[tuple[str, torch.dtype, torch.device], Tensor]:
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        return buffers

    def get(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """An uninitialised contiguous tensor of ``shape``, a view of the buffer ``name``."""
        device = torch.device(device)
        key = (name, dtype, device)
        n = math.prod(shape)
        buffers = self._buffers()
        buf = buffers.get(key)
        if buf is None or buf.numel() < n:
            buf = buffers[key] = torch.empty(max(n, 1), dtype=dtype, device=device)
        return buf[:n].view(shape)

    def nbytes(self) -> int:
        """Bytes held by this thread's buffers."""
        return sum(b.numel() * b.element_size() for b in self._buffers().values())

    def clear(self) -> None:
        """Release this thread's buffers."""
        self._buffers().clear()

    def __getstate__(self) -> dict[str, object]:
        return {}  # scratch memory is never pickled or copied

    def __setstate__(self, state: dict[str, object]) -> None:
        self._local = threading.local()

    def __deepcopy__(self, memo: dict[int, object]) -> Workspace:
        return Workspace()
