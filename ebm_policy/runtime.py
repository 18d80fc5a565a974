"""Process settings that keep CPU inference latency steady.

Encoding an image allocates a few megabytes of activation maps and frees them again. With
glibc's default malloc settings, freed memory at the top of the heap beyond a dynamic threshold
is handed back to the operating system, so the next call faults the same pages in again, one by
one: thousands of page faults per call, some processes paying them on every call and others
never, depending on where earlier allocations happened to land. ``retain_freed_memory`` sets
glibc to keep freed memory for reuse (``M_TRIM_THRESHOLD``) and to serve allocations of up to 32 MB
from the heap rather than from fresh ``mmap`` regions (``M_MMAP_THRESHOLD``). The process then
keeps its peak heap size instead of shrinking between calls.

``ImplicitPolicy.select_action`` calls it on its first CPU call; call
``retain_freed_memory(False)`` before that to keep the allocator's defaults. On a C library
other than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1 << 30

_state: dict[str, bool | None] = {"wanted": None, "applied": False}


def _mallopt() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # musl and others have no mallopt
        return None


def retain_freed_memory(enabled: bool = True) -> bool:
    """Keep freed heap memory in the process (``enabled``), or leave glibc's defaults
    (``False``, only effective before the first call that enabled it). Returns whether the
    setting is in effect; idempotent."""
    if not enabled:
        if not _state["applied"]:
            _state["wanted"] = False
        return bool(_state["applied"])
    if _state["applied"]:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    _state["applied"] = ok
    return ok


def retain_freed_memory_by_default() -> None:
    """What ``select_action`` calls: ``retain_freed_memory()`` unless the user declined."""
    if _state["wanted"] is None and not _state["applied"]:
        retain_freed_memory(True)
