"""Shared by the audit tests: a cell result without the fields that differ between runs by design."""

from __future__ import annotations

VOLATILE = ("wall_time", "timing", "time_s", "elapsed", "seconds", "provenance", "timestamp", "finished_at")


def stable(value):
    """``value`` without its timing and provenance fields, recursively."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if not any(t in k for t in VOLATILE)}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value
