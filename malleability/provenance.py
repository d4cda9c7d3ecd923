"""What produced a number: versions, git commit, host, device. Written next to every result."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata

_PACKAGES = ("malleability", "torch", "torchvision", "numpy", "scipy", "sympy", "mpmath", "hypothesis", "click")


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages whose behaviour can change our numbers."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the source tree this package runs from (None outside a git checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, check=False
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def provenance(device: str | None = None) -> dict:
    """A JSON-ready record of the environment, to be stored beside a result."""
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "python_executable": sys.executable,
        "device": device,
    }
