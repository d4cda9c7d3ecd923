"""Wall-clock timings of a callable, shared by the backend probes and the benchmarks."""

from __future__ import annotations

import statistics
import time


def timings(fn, repeats: int) -> list[float]:
    """Seconds of each of ``max(1, repeats)`` calls of ``fn``."""
    out = []
    for _ in range(max(1, int(repeats))):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def best_time(fn, repeats: int = 3) -> float:
    """The least of ``repeats`` timings after one untimed warm-up call (for a one-time backend probe)."""
    fn()
    return min(timings(fn, repeats))


def median_time(fn, repeats: int) -> float:
    """The median of ``repeats`` timings (no warm-up: the caller decides what is warm)."""
    return statistics.median(timings(fn, repeats))


__all__ = ["best_time", "median_time", "timings"]
