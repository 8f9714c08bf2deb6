"""The terminal labeler through a pseudo-terminal: half-block images, typed labels, skip, undo, quit, resume."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect", reason="the terminal test drives a pseudo-terminal with pexpect")

from labeling_helpers import REPO, fast_config  # noqa: E402

PROMPT = r"label \(.*\) > "


def spawn(*args: str) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "alab", *args], cwd=str(REPO), encoding="utf-8", timeout=120)


def test_label_skip_undo_quit_and_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    child = spawn("run", "--oracle", "terminal", "--config", str(fast_config(tmp_path)),
                  "--initial", "4", "--query-size", "2", "--rounds", "1", "--out", str(run_dir))  # fmt: skip
    try:
        child.expect(r"initial set · item 1 of 4 · pool item (\d+)")
        first = int(child.match.group(1))
        child.expect("▀")  # the image, in half-blocks
        child.expect(PROMPT)
        child.sendline("3")
        child.expect(f"saved: item {first} is 3")
        child.expect(PROMPT)
        child.sendline("u")
        child.expect(f"undone: item {first} is to label again")
        child.expect(f"item 1 of 4 · pool item {first}")
        child.expect(PROMPT)
        child.sendline("x")
        child.expect("'x' is not a class")
        child.expect(PROMPT)
        child.sendline("5")
        child.expect(f"saved: item {first} is 5")
        child.expect(r"pool item (\d+)")
        skipped = int(child.match.group(1))
        child.expect(PROMPT)
        child.sendline("s")
        child.expect(r"pool item (\d+)")
        assert int(child.match.group(1)) != skipped
        child.expect(PROMPT)
        child.sendline("q")
        child.expect("labeling stopped with 3 items of round 0 left")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    with open(run_dir / "labels.csv", newline="") as f:
        rows = [(int(r["index"]), r["label"], r["source"]) for r in csv.DictReader(f)]
    assert rows == [(first, "3", "terminal"), (first, "3", "undo"), (first, "5", "terminal")]

    child = spawn("resume", str(run_dir))
    try:
        child.expect("round 0: 3 of 4 items still to label")
        for _ in range(3):  # the rest of the initial set, then round 1's two queries with the model's view
            child.expect(PROMPT)
            child.sendline("1")
        child.expect("round 1 of 1")
        child.expect(r"model: .*acquisition score")
        child.expect(PROMPT)
        child.sendline("-")  # none of these
        child.expect(r"saved: item \d+ is none of these")
        child.expect(PROMPT)
        child.sendline("2")
        child.expect("finished")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    with open(run_dir / "labels.csv", newline="") as f:
        round_1 = [r["label"] for r in csv.DictReader(f) if r["round"] == "1"]
    assert round_1 == ["none", "2"]


def test_a_text_item_is_shown_as_its_text(tmp_path: Path) -> None:
    from alab.data import load_dataset

    tickets = REPO / "tests" / "data" / "tickets.csv"
    texts = load_dataset(f"csv:{tickets}", text="message", target="topic").text_pool
    child = spawn("run", "--oracle", "terminal", "--config", str(fast_config(tmp_path)), "--dataset", f"csv:{tickets}",
                  "--text", "message", "--target", "topic", "--initial", "4", "--rounds", "0", "--out", str(tmp_path / "run"))  # fmt: skip
    try:
        child.expect(r"pool item (\d+)")
        index = int(child.match.group(1))
        child.expect(PROMPT)
        shown = " ".join(child.before.split())  # the text, wrapped to the terminal: compare its words
        assert " ".join(texts[index].split()) in shown and "▀" not in shown
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
