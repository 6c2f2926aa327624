"""Shared fixtures: the `mdr` executable of this environment, and isolated settings per test."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

MDR = str(Path(sys.executable).parent / "mdr")


def mdr(*args, env=None, cwd=None, timeout=1800) -> subprocess.CompletedProcess:
    "Run the real `mdr` command; returns the completed process (output captured as text)."
    return subprocess.run([MDR, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    "Runs and caches in a temporary folder; the tiny model is rebuilt there in about a second."
    env = {**os.environ, "MDR_RUNS_DIR": str(tmp_path / "runs"), "MDR_MODEL_CACHE": str(tmp_path / "models")}
    for key in ("MDR_RUNS_DIR", "MDR_MODEL_CACHE"):
        monkeypatch.setenv(key, env[key])
    return env
