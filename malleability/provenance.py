"""What produced a number: versions, git commit, host, device. Written next to every result."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata

_PACKAGES = ("malleability", "torch", "torchvision", "numpy", "scipy", "sympy", "mpmath", "hypothesis", "click", "threadpoolctl")


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
    """The commit of the source tree this package runs from.

    ``$MALLEABILITY_GIT_COMMIT``, where set, names it: a copied tree (say on a lent GPU machine) may
    carry no ``.git`` or a stale one, and only the copier knows what was copied. Else git's HEAD,
    and None outside a git checkout.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    named = os.environ.get("MALLEABILITY_GIT_COMMIT")
    if named:
        return named
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


def machine() -> dict:
    """The CPU model, the cores this process may use, and the memory: what a run time is measured on."""
    cpu = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": cores, "memory_gib": memory}


def provenance(device: str | None = None) -> dict:
    """A JSON-ready record of the environment, to be stored beside a result."""
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "machine": machine(),
        "python_executable": sys.executable,
        "device": device,
        **_accelerator(device),
    }


def _accelerator(device: str | None) -> dict:
    """The card a CUDA run used, by name, with the CUDA version torch was built with; {} otherwise."""
    if not (isinstance(device, str) and device.startswith("cuda")):
        return {}
    try:
        import torch

        if not torch.cuda.is_available():
            return {}
        return {"device_name": torch.cuda.get_device_name(torch.device(device)), "cuda": torch.version.cuda}
    except (ImportError, RuntimeError, AssertionError):
        return {}
