"""Shared helpers for the labeling tests: a fast run configuration and a run in a subprocess."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

FAST_TOML = """samples = 4
[backend]
name = "mc_dropout"
epochs = 1
min_steps = 5
"""
REPO = Path(__file__).resolve().parents[1]


def fast_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(extra + FAST_TOML)
    return path


class Run:
    """`python -m alab ARGS` in a subprocess; its stderr lines are read on a thread."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alab", *args], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def url(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            found = re.search(r"http://\S+", line)
            if found:
                return found.group(0)
        raise AssertionError(f"no URL from the run; stderr so far: {''.join(self.seen)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
