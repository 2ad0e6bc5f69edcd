"""Peak memory of one call: the resident-set growth at its high-water mark (Linux).

Shared by the micro-benchmarks (sequence scaling, training throughput), so that they measure
memory one way. Counts everything the call allocated, autograd's saved tensors included.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from pathlib import Path

STATUS = Path("/proc/self/status")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


def _status_kib(field: str) -> int | None:
    for line in STATUS.read_text().splitlines() if STATUS.is_file() else []:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_mib(step: Callable[[], object]) -> float | None:
    """Resident-set growth (MiB) at the peak of one call of ``step``; None where Linux's
    high-water-mark reset is unavailable. ``malloc_trim`` first releases the heap's free pages,
    so memory the call reuses from earlier calls is faulted in again and counted."""
    _LIBC.malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    except OSError:
        return None
    before = _status_kib("VmRSS")
    step()
    peak = _status_kib("VmHWM")
    return None if before is None or peak is None else round((peak - before) / 1024, 1)
