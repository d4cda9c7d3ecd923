"""scripts/gpu_paper_scale.sh on the CPU: the dry run prints the planner's counts and the cost
model's estimate and writes nothing; without a visible CUDA device the real run refuses."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from malleability.reports.audit import get_scale
from malleability.reports.audit.plan import estimate_seconds, plan_cells

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_paper_scale.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args, cuda_visible=None, timeout=120):
    env = dict(os.environ, PYTHON=os.environ.get("PYTHON", "python"))
    if cuda_visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def _expected(overrides=()):
    cells = plan_cells(get_scale("paper", tuple(overrides)), device="cuda").cells
    return collections.Counter(c.kind for c in cells), estimate_seconds(cells, 1), len(cells)


def _printed(stdout):
    kinds = {m[0]: int(m[1]) for m in re.findall(r"^  ([a-z-]+): (\d+) cells", stdout, re.M)}
    total = int(re.search(r"^plan: scale paper, device cuda, (\d+) cells$", stdout, re.M)[1])
    hours = float(re.search(r"^estimate: ([0-9.]+) h on 1 worker", stdout, re.M)[1])
    return kinds, hours, total


def test_dry_run_prints_the_plan_and_the_estimate_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu-out"
    proc = _run("--dry-run", "--out", str(out), cuda_visible="")
    assert proc.returncode == 0, proc.stderr
    kinds, hours, total = _printed(proc.stdout)
    counts, est, n = _expected()
    assert kinds == dict(counts) and total == n == sum(counts.values())
    assert hours == pytest.approx(est / 3600, abs=0.006)  # printed to 2 decimals
    assert not out.exists()


def test_dry_run_reads_the_audit_overrides(tmp_path):
    over = ("flip.seeds=1", "ntk.widths=4,8")
    args = [a for o in over for a in ("--override", o)]
    proc = _run("--dry-run", "--", *args, cuda_visible="")
    assert proc.returncode == 0, proc.stderr
    kinds, hours, total = _printed(proc.stdout)
    counts, est, n = _expected(over)
    assert kinds == dict(counts) and total == n
    assert n < _expected()[2]  # the overrides did shrink the plan
    assert hours == pytest.approx(est / 3600, abs=0.006)


def test_bad_override_in_the_dry_run_is_one_line():
    proc = _run("--dry-run", "--", "--override", "ntk.nonsense=1", cuda_visible="")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_without_cuda_the_run_refuses_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu-out"
    proc = _run("--out", str(out), cuda_visible="")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: no CUDA device visible")
    assert proc.stdout == "" and not out.exists()


@pytest.mark.parametrize("args", [["--bogus"], ["--out"], ["--out="], ["--data-root"]])
def test_bad_options_are_one_line_errors(args):
    proc = _run(*args, cuda_visible="", timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_help_exits_0():
    proc = _run("--help", timeout=30)
    assert proc.returncode == 0 and "--dry-run" in proc.stdout


SLICE_SCRIPT = SCRIPT.parent / "gpu_paper_slice.sh"


def _run_slice(*args, timeout=60):
    env = dict(os.environ, PYTHON=os.environ.get("PYTHON", "python"), CUDA_VISIBLE_DEVICES="")
    return subprocess.run(["bash", str(SLICE_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--budget", "0"], "--budget must be a whole number of seconds >= 1"),
    (["--budget", "ten"], "--budget must be a whole number of seconds >= 1"),
    (["--seeds", "0"], "--seeds must be a count >= 1"),
    (["--first-seed", "-1"], "--first-seed must be a seed >= 0"),
    (["--nonsense"], "unknown option --nonsense"),
])
def test_the_slice_refuses_bad_options_in_one_line(args, message):
    proc = _run_slice(*args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_the_slice_without_cuda_refuses_and_writes_nothing(tmp_path):
    out = tmp_path / "slice"
    proc = _run_slice("--out", str(out))
    assert proc.returncode == 2 and "no CUDA device visible" in proc.stderr and not out.exists()
