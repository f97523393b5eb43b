"""Shared fixtures. Tests compare against independent references (numpy, closed forms,
finite differences), never against the code's own earlier output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"

# A per-run cache folder keeps tests off the user's cache (JAX kernels are still reused
# between the test processes of one run).
os.environ.setdefault("LANDSCAPE_CACHE_DIR", str(ROOT / ".cache" / "test"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save screenshots and files for a person to look at (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
