"""Shared fixtures: a small, fast run configuration and the path of the shared MNIST files."""

from __future__ import annotations

from pathlib import Path

import pytest

from alab.config import BackendConfig, RunConfig

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


@pytest.fixture
def small_config() -> RunConfig:
    """Digits, 3 short rounds: seconds per run, still a real loop with real training."""
    return RunConfig(
        strategy="bald",
        dataset="digits",
        initial=20,
        query_size=10,
        rounds=3,
        seed=0,
        samples=8,
        chunk_size=256,
        backend=BackendConfig("mc_dropout", {"epochs": 1, "min_steps": 40}),
    )
