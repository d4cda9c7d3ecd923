"""Shared pytest configuration: Hypothesis profiles, one torch thread per xdist worker, data root.

Profiles (select with HYPOTHESIS_PROFILE=name; CI=true selects ``ci``):
    ci        derandomized, no example database, bounded examples, no deadline
    dev       the default for local runs
    thorough  many more examples, for an overnight audit of the properties
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci", derandomize=True, database=None, max_examples=25, deadline=None, suppress_health_check=_SLOW_OK
)
settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=_SLOW_OK)

_profile = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
if _profile in ("ci", "dev", "thorough"):
    settings.load_profile(_profile)


REPO_ROOT = Path(__file__).resolve().parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n auto` each worker uses one thread: the workers already fill the cores.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    except (ImportError, RuntimeError):
        pass


def _default_data_root() -> Path | None:
    env = os.environ.get("MALLEABILITY_DATA")
    if env:
        return Path(env)
    candidate = REPO_ROOT.parent / "shared" / "datasets"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The read-only offline data folder. Tests never download: without it they skip, loudly."""
    root = _default_data_root()
    if root is None or not root.is_dir():
        pytest.skip("no offline data: set MALLEABILITY_DATA to a folder laid out like ../shared/datasets")
    return root


def pytest_configure(config):
    # an unknown profile is one usage line from pytest, not hypothesis' traceback from inside the conftest
    if _profile not in ("ci", "dev", "thorough"):
        raise pytest.UsageError(f"HYPOTHESIS_PROFILE={_profile!r}: choose ci, dev or thorough")
    # before any fixture of any scope: no test process ever writes into the user's cell cache
    os.environ["MALLEABILITY_CACHE_DIR"] = tempfile.mkdtemp(prefix="malleability-test-cells-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.get("MALLEABILITY_CACHE_DIR", ""), ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_cell_cache(tmp_path_factory, monkeypatch):
    """Commands that cache their cells (audit, flip-rate, ntk-distance, k-layer) write into this test's own folder:
    never into the user's cache, and no test reads what another computed."""
    monkeypatch.setenv("MALLEABILITY_CACHE_DIR", str(tmp_path_factory.mktemp("cells")))


def pytest_collection_modifyitems(config, items):
    """Full-size `slow` twins run only with MALLEABILITY_SLOW=1; CI runs their scaled-down versions."""
    if os.environ.get("MALLEABILITY_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="full-size twin: set MALLEABILITY_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"hypothesis profile: {_profile}; data root: {_default_data_root()}"
