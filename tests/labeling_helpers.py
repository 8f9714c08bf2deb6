"""Shared test helpers: a fast run configuration, a run in a subprocess, and the one-line refusal check."""

from __future__ import annotations

import csv
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from alab.cli import app

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


def journaled(journal: Path) -> dict[int, str]:
    """The standing labels of a `labels.csv`, index -> label: its rows replayed in order, an undo withdrawing one."""
    standing: dict[int, str] = {}
    if not journal.exists():
        return standing
    with open(journal, newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] == "undo":
                standing.pop(int(row["index"]), None)
            else:
                standing[int(row["index"])] = row["label"]
    return standing


SAVED_WATCH = """() => new MutationObserver((records) => {
  for (const r of records) {
    const tile = r.target;
    if (tile.dataset.state === "saved" && r.oldValue !== "saved") window.alabSaved(Number(tile.dataset.index), performance.now());
  }
}).observe(document.getElementById("tiles"), {subtree: true, attributes: true, attributeFilter: ["data-state"], attributeOldValue: true})"""


def watch_saved(page: Any, journal: Path) -> list[tuple[int, float, str | None]]:
    """Each grid tile of the open page (Playwright) as it turns saved: (index, the page's clock in ms, its label in
    `journal` when Python hears of it, None if absent). Python hears of it a moment after the page shows it: a tile
    shown saved too early may be journaled by then, so only holding the POSTs' answers proves the order."""
    seen: list[tuple[int, float, str | None]] = []
    page.expose_binding("alabSaved", lambda source, index, at: seen.append((index, at, journaled(journal).get(index))))
    page.evaluate(SAVED_WATCH)
    return seen


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(root: Path, args: list[str], message: str) -> str:
    """Run `alab ARGS` in `root`; assert the one-line refusal matching `message` and that no file changed."""
    before = snapshot(root)
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, SystemExit), f"not a clean exit: {result.exception!r}\n{result.output}"
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alab: error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(root) == before, "a refused command left or changed files"
    return lines[0]
