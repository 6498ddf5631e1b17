"""Memory checked before a large allocation: a measurement that would need more than the machine has available
fails up front, in one line, with its estimate and what reduces it, instead of being killed by the kernel after
minutes of work (or swapping the machine to a standstill)."""

from __future__ import annotations

from pathlib import Path

from mechclaims.errors import MechclaimsError

MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")
GIB = float(1 << 30)


def available_bytes(meminfo: Path = MEMINFO, cgroup: Path = CGROUP) -> int | None:
    """What the process can still allocate: the kernel's MemAvailable, capped by a cgroup v2 limit
    (memory.max - memory.current) where one is set; None where neither can be read (not Linux)."""
    limits = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        ceiling = (cgroup / "memory.max").read_text().strip()
        if ceiling != "max":
            limits.append(int(ceiling) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def require(needed: int, what: str, reduce: str, available: int | None = None) -> None:
    """Raise a MechclaimsError when `what` needs more than `available` bytes (by default `available_bytes()`),
    naming both in GiB and `reduce`, the way to need less."""
    free = available_bytes() if available is None else available
    if free is not None and needed > free:
        raise MechclaimsError(f"{what} needs about {needed / GIB:.1f} GiB, more than the {free / GIB:.1f} GiB this "
                              f"machine has available: {reduce}")
