"""One writer per run directory: a second real `alab` process is refused, and a killed holder leaves no lock.

The holder is frozen with SIGSTOP while the second process tries, so the test does not depend on
timing: the holder is alive, holds its lock and has journaled labels, whatever the machine's load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alab.storage import LOCK_NAME, LabelsJournal

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
RUN = ["run", "--strategy", "bald", "--rounds", "6", "--initial", "20", "--query-size", "10", "--samples", "4"]


def alab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alab", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def start(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "alab", *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(process: subprocess.Popen[bytes], ready, what: str) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the first process ended (exit {process.returncode}) before {what}; make its run longer")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def curve_rows(run_dir: Path) -> int:
    curve = run_dir / "curve.csv"
    return len(curve.read_text().splitlines()) - 1 if curve.exists() else 0


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text("[backend]\nepochs = 1\nmin_steps = 200\n")
    return path


def assert_refused(result: subprocess.CompletedProcess[str], holder: int, run_dir: Path) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{run_dir} is being written by another alab process (pid {holder}: alab run" in result.stderr


def test_a_second_process_is_refused_and_the_journal_stays_whole(tmp_path: Path, recipe: Path) -> None:
    run_dir = tmp_path / "run"
    first = start(*RUN, "--config", str(recipe), "--out", str(run_dir), cwd=tmp_path)
    try:
        wait_for(first, lambda: curve_rows(run_dir) >= 1, "its first round was recorded")
        os.kill(first.pid, signal.SIGSTOP)  # alive, holding its lock, some labels journaled
        journal_before = (run_dir / "labels.csv").read_bytes()
        answers = tmp_path / "answers.csv"
        answers.write_text("index,label\n0,3\n")

        assert_refused(alab("resume", str(run_dir), cwd=tmp_path), first.pid, run_dir)
        assert_refused(alab(*RUN, "--out", str(run_dir), cwd=tmp_path), first.pid, run_dir)
        assert_refused(alab("label", "import", str(run_dir), str(answers), cwd=tmp_path), first.pid, run_dir)
        reading = alab("report", str(run_dir), cwd=tmp_path)  # a reader takes no lock
        assert reading.returncode == 0, reading.stderr
        assert (run_dir / "labels.csv").read_bytes() == journal_before
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=600) == 0

    journal = LabelsJournal(run_dir / "labels.csv")
    assert len(journal.entries) == 20 + 6 * 10 and len(journal.labeled) == 80  # no item twice
    again = alab("resume", str(run_dir), cwd=tmp_path)
    assert again.returncode == 0 and "already finished" in again.stderr, again.stderr


def test_a_killed_writer_leaves_no_stale_lock(tmp_path: Path, recipe: Path) -> None:
    run_dir = tmp_path / "run"
    first = start(*RUN, "--config", str(recipe), "--out", str(run_dir), cwd=tmp_path)
    wait_for(first, lambda: curve_rows(run_dir) >= 1, "its first round was recorded")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert (run_dir / LOCK_NAME).read_bytes() == b""  # the file stays, never written; the lock went with the process

    resumed = alab("resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(LabelsJournal(run_dir / "labels.csv").labeled) == 80


def test_a_second_comparison_on_the_same_directory_is_refused(tmp_path: Path, recipe: Path) -> None:
    out = tmp_path / "grid"
    args = ["compare", "--config", str(recipe), "--strategies", "bald,random", "--seeds", "1", "--rounds", "2",
            "--workers", "1", "--out", str(out)]  # fmt: skip
    first = start(*args, cwd=tmp_path)
    try:
        wait_for(first, lambda: (out / "compare.toml").exists(), "it wrote compare.toml")
        os.kill(first.pid, signal.SIGSTOP)
        second = alab(*args, cwd=tmp_path)
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert f"{out} is being written by another alab process (pid {first.pid}: alab compare" in second.stderr
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=600) == 0
    assert (out / "report.md").exists()
