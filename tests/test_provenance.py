"""Provenance: the commit of a copied tree and the card of a CUDA run are named beside each result."""

from __future__ import annotations

import subprocess

import pytest
import torch

from malleability import provenance as P


def test_a_tree_outside_git_takes_its_commit_from_the_environment(monkeypatch):
    def no_git(*args, **kwargs):
        raise OSError("git is not installed")

    monkeypatch.setattr(subprocess, "run", no_git)
    monkeypatch.setenv("MALLEABILITY_GIT_COMMIT", "0123abc")
    assert P.git_commit.__wrapped__() == "0123abc"
    monkeypatch.delenv("MALLEABILITY_GIT_COMMIT")
    assert P.git_commit.__wrapped__() is None


def test_the_environment_names_the_commit_over_a_stale_checkout(monkeypatch):
    # a copied tree can carry an old .git: only the copier knows which commit was copied
    monkeypatch.setenv("MALLEABILITY_GIT_COMMIT", "the-copied-one")
    assert P.git_commit.__wrapped__() == "the-copied-one"
    monkeypatch.delenv("MALLEABILITY_GIT_COMMIT")
    commit = P.git_commit.__wrapped__()
    if commit is None:
        pytest.skip("not a git checkout")
    assert len(commit.split("-")[0]) == 40


def test_a_cpu_run_names_no_card_and_a_cuda_run_names_its_card():
    assert "device_name" not in P.provenance("cpu") and "device_name" not in P.provenance(None)
    if not torch.cuda.is_available():
        assert "device_name" not in P.provenance("cuda")
        return
    prov = P.provenance("cuda")
    assert prov["device_name"] == torch.cuda.get_device_name(0) and prov["cuda"] == torch.version.cuda
