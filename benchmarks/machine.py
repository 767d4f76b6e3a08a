"""Machine facts printed beside benchmark results: CPU model, load, CPU busy counters."""

from __future__ import annotations

import platform

__all__ = ["cpu_model", "loadavg", "cpu_counters", "proc_status_mb"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def cpu_counters():
    """``(busy, total)`` jiffies over all CPUs from /proc/stat (None if unavailable)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # user..steal (guest time is already inside user)
    return total - idle, total


def proc_status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB (nan if /proc is unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError):
        pass
    return float("nan")
