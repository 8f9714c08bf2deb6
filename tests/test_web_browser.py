"""The web labeler in real headless Chromium: a round by clicks, one by key presses; "None of these", SIGKILL and resume."""

from __future__ import annotations

import contextlib
import csv
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
httpx = pytest.importorskip("httpx", reason="the resume check talks HTTP through httpx")

from labeling_helpers import Run, fast_config  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium (apt-get install -y chromium)")


@contextlib.contextmanager
def labeling_page(tmp_path: Path, run_dir: Path) -> Iterator[tuple[Run, Any]]:
    """`alab run --oracle web` (4 initial labels, one round of 3) and its page open in headless Chromium."""
    args = ["--oracle", "web", "--initial", "4", "--query-size", "3", "--rounds", "1", "--out", str(run_dir)]
    run = Run("run", "--config", str(fast_config(tmp_path)), *args)
    try:
        url = run.url()
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(url)
                yield run, page
            finally:
                browser.close()
    finally:
        run.stop()


def label_initial_set_by_clicks(page: Any) -> None:
    """Class n for the n-th item of the initial set, by clicks; returns once round 1's batch is on the page."""
    page.wait_for_selector("text=Initial set")
    for n in range(4):
        page.wait_for_selector(f"text={n} / 4 labeled")
        page.click(f"button.class[data-class='{n}']")
    page.wait_for_selector("text=Round 1 of 1", timeout=120_000)  # retrained; the next batch by itself


def test_a_round_by_clicks_and_a_round_by_keys(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with labeling_page(tmp_path, run_dir) as (run, page):
        label_initial_set_by_clicks(page)
        page.wait_for_selector("text=What the model thinks")
        for n in range(3):  # round 1, by key presses: digits' class names are their own keys
            page.wait_for_selector(f"text={n} / 3 labeled")
            page.keyboard.press(str(7 + n))
        run.proc.wait(timeout=120)
    assert run.proc.returncode == 0
    with open(run_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["round"], r["source"]) for r in rows] == [
        ("0", "0", "web"), ("1", "0", "web"), ("2", "0", "web"), ("3", "0", "web"),
        ("7", "1", "web"), ("8", "1", "web"), ("9", "1", "web"),
    ]  # fmt: skip


def test_none_of_these_through_the_page_survives_sigkill_and_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with labeling_page(tmp_path, run_dir) as (run, page):
        label_initial_set_by_clicks(page)
        page.wait_for_selector("button#none")
        page.click("button#none")
        page.wait_for_selector("text=as none of these")  # the toast: shown once the answer is journaled
        page.wait_for_selector("text=1 / 3 labeled")
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(timeout=30)
    with open(run_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["round"]) for r in rows] == [("0", "0"), ("1", "0"), ("2", "0"), ("3", "0"), ("none", "1")]
    none_index = int(rows[-1]["index"])

    resumed = Run("resume", str(run_dir))
    try:
        base, token = resumed.url().split("/?token=")
        with httpx.Client(base_url=base, headers={"X-Alab-Token": token}, timeout=60) as client:
            items = [item["index"] for item in client.get("/api/state").json()["items"]]
            assert len(items) == 2 and none_index not in items  # never asked again
            for index in items:
                assert client.post("/api/label", json={"index": index, "label": 5}).status_code == 200
        resumed.proc.wait(timeout=120)
    finally:
        resumed.stop()
    assert resumed.proc.returncode == 0
    with open(run_dir / "curve.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert (last["n_labeled"], last["n_none"]) == ("7", "1")
