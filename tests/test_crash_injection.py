"""Crash injection (tests/crash_harness.py): SIGKILL at random moments, resume, nothing lost, nothing torn.

CI runs 50 kills; the full check is 500:  python -m pytest -m slow tests/test_crash_injection.py
(or directly: python tests/crash_harness.py --kills 500).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("crash_harness.py")


def harness(kills: int, seed: int, root: Path, timeout: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(HARNESS.parents[1])}
    result = subprocess.run(
        [sys.executable, str(HARNESS), "--kills", str(kills), "--seed", str(seed), "--root", str(root)],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def check_summary(out: str, kills: int) -> None:
    assert f"{kills} of {kills} kills resumed to the uninterrupted curve and journal" in out, out[-2000:]
    counts = dict(re.findall(r"(timed|fit|score|journal|rename|torn|report) (\d+)[,)]", out.splitlines()[-2]))
    assert sum(map(int, counts.values())) == kills
    assert sum(int(v) > 0 for v in counts.values()) >= 5, counts  # the moments are spread over the kinds


def test_50_kills_at_random_moments_all_resume_to_the_uninterrupted_run(tmp_path: Path) -> None:
    check_summary(harness(50, seed=3, root=tmp_path, timeout=540), 50)


@pytest.mark.slow
def test_500_kills_at_random_moments_all_resume_to_the_uninterrupted_run(tmp_path: Path) -> None:
    check_summary(harness(500, seed=0, root=tmp_path, timeout=3600), 500)


def test_the_harness_catches_a_run_that_loses_a_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: a journal that is not a prefix of the uninterrupted one is reported."""
    sys.path.insert(0, str(HARNESS.parent))
    import crash_harness

    journal = b"index,label,round,source\n3,1,0,simulated\n7,2,0,simulated\n"
    reference = crash_harness.Reference(1.0, {}, journal, b"", [])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "labels.csv").write_bytes(b"index,label,round,source\n7,2,0,simulated\n")
    assert any("not a prefix" in p for p in crash_harness.check_after_kill(run_dir, reference))
    (run_dir / "labels.csv").write_bytes(b"index,label,round,source\n3,1,0,simu")
    assert any("torn line" in p for p in crash_harness.check_after_kill(run_dir, reference))
    (run_dir / "labels.csv").write_bytes(b"index,label,round,source\n3,1,0,simulated\n")
    (run_dir / "run.json").write_text('{"status": "runn')
    assert crash_harness.check_after_kill(run_dir, reference) == ["run.json is corrupt"]
