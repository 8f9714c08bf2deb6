"""The real command line, in a subprocess, reading the files it wrote."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from labeling_helpers import refused

FAST = ["--initial", "20", "--query-size", "10", "--samples", "8"]


def alab(*args: str, cwd: Path, check: bool = False, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-m", "alab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def fast_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text("[backend]\nepochs = 1\nmin_steps = 40\n")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--strategy", "nope"], "unknown strategy 'nope'; choose one of: badge, bald, "),
        (["run", "--backend", "nope"], "unknown backend 'nope'; choose one of: "),
        (["run", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["run", "--query-size", "0"], "query_size must be at least 1"),
        (["run", "--initial", "100000"], "larger than the pool"),
        (["run", "--rounds", "1000"], "lower --rounds or --query-size"),
        (["run", "--dataset", "mnist", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["run", "--config", "/nonexistent.toml"], "does not exist"),
        (["resume", "/nonexistent"], "not a directory"),
    ],
)
def test_user_mistakes_are_one_line_exit_2_and_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    """In this process (a real process's exit code: test_bad_input.test_real_process); nothing under tmp_path changes."""
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / "run")] if args[0] == "run" else []
    refused(tmp_path, [*args, *out], re.escape(message))
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("command", ["strategies", "backends", "datasets"])
def test_listings_are_one_line_each(tmp_path: Path, command: str) -> None:
    result = alab(command, cwd=tmp_path, check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 1 and all(len(line.split(maxsplit=1)) == 2 for line in lines)


def test_run_then_sigkill_mid_round_then_resume_gives_the_uninterrupted_curve(tmp_path: Path, fast_recipe: Path) -> None:
    args = ["run", "--strategy", "bald", "--rounds", "4", *FAST, "--config", str(fast_recipe)]
    # Every process on one core, so one thread: the curves are compared bit for bit, which a
    # multi-threaded BLAS does not promise run to run (tests/test_compare.py says more).
    core = {min(os.sched_getaffinity(0))}
    one_core = lambda: os.sched_setaffinity(0, core)  # noqa: E731
    alab(*args, "--out", str(tmp_path / "reference"), cwd=tmp_path, check=True, preexec_fn=one_core)

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "alab", *args, "--out", str(run_dir)], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=one_core)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        curve = run_dir / "curve.csv"
        if curve.exists() and len(curve.read_text().splitlines()) >= 3:  # two rounds recorded: now inside round 2
            break
        time.sleep(0.02)
    if process.poll() is not None:
        pytest.fail("the run finished before it could be killed; make it longer")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert '"status": "running"' in (run_dir / "run.json").read_text()

    result = alab("resume", str(run_dir), cwd=tmp_path, check=True, preexec_fn=one_core)
    assert "finished" in result.stdout
    reference = pd.read_csv(tmp_path / "reference" / "curve.csv")
    resumed = pd.read_csv(run_dir / "curve.csv")
    columns = ["round", "n_labeled", "accuracy", "nll", "brier", "ece", "mean_bald"]
    pd.testing.assert_frame_equal(resumed[columns], reference[columns], check_exact=True)
    assert (run_dir / "labels.csv").read_text() == (tmp_path / "reference" / "labels.csv").read_text()
    assert '"status": "finished"' in (run_dir / "run.json").read_text()
