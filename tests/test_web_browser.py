"""The web labeler in real headless Chromium: a round by clicks, one by key presses; "None of these", SIGKILL and resume;
a batch in the grid view by key presses, each tile saved only once its own POST has answered; text items, read in full."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
httpx = pytest.importorskip("httpx", reason="the resume check talks HTTP through httpx")

from labeling_helpers import REPO, Run, fast_config, journaled, watch_saved  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium (apt-get install -y chromium)")


@contextlib.contextmanager
def labeling_page(tmp_path: Path, run_dir: Path, initial: int = 4, rounds: int = 1, data: tuple[str, ...] = ()) -> Iterator[tuple[Run, Any]]:
    """`alab run --oracle web` (4 initial labels, one round of 3; digits unless `data` names other) and its page open in headless Chromium."""
    args = [*data, "--oracle", "web", "--initial", str(initial), "--query-size", "3", "--rounds", str(rounds), "--out", str(run_dir)]
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


def test_a_batch_in_the_grid_by_keys_each_tile_saved_only_after_its_own_answer(tmp_path: Path) -> None:
    n, n_held = 20, 4
    run_dir = tmp_path / "run"
    journal = run_dir / "labels.csv"
    with labeling_page(tmp_path, run_dir, initial=n, rounds=0) as (run, page):
        page.wait_for_selector("text=Initial set")
        page.keyboard.press("g")  # the grid; remembered: the address without ?view=grid opens it again
        plain = page.url.replace("&view=grid", "")
        assert plain != page.url
        page.goto(plain)
        page.wait_for_function(f"document.querySelectorAll('#gridbox.on .tile').length === {n}")
        order = [int(i) for i in page.eval_on_selector_all(".tile", "tiles => tiles.map((t) => t.dataset.index)")]
        seen = watch_saved(page, journal)

        def states(indices: list[int]) -> list[str | None]:
            return [page.get_attribute(f".tile[data-index='{i}']", "data-state") for i in indices]

        # Hold the answers to the first POSTs: the server has journaled those labels, the page has not heard yet.
        held: list[tuple[Any, Any]] = []
        page.route("**/api/label", lambda route: held.append((route, route.fetch())))
        for k in range(n_held):  # the cursor moves on by itself: the next label goes without waiting (pipelined)
            page.keyboard.press(str(k))
        for _ in range(600):
            if len(held) == n_held:
                break
            page.wait_for_timeout(50)
        waiting = [json.loads(route.request.post_data)["index"] for route, _ in held]
        assert {i: journaled(journal).get(i) for i in waiting} == {order[k]: str(k) for k in range(n_held)}
        base, token = plain.split("/?token=")[0], page.url.split("token=")[1].split("&")[0]
        version = httpx.get(f"{base}/api/state", headers={"X-Alab-Token": token}).json()["version"]
        page.wait_for_function(f"Number(document.body.dataset.version) >= {version}")  # the page has read that state
        assert states(waiting) == ["saving"] * n_held  # ... and still shows none of them saved
        assert page.text_content("#count") == f"0 / {n} labeled"
        for route, answer in reversed(held):  # answered one at a time, last first: each tile by its own answer
            index = waiting.pop()
            route.fulfill(response=answer)
            page.wait_for_selector(f".tile[data-index='{index}'][data-state='saved']")
            assert states(waiting) == ["saving"] * len(waiting)
        page.unroute("**/api/label")

        page.keyboard.press("u")  # undoes the last saved label (the first tile's): the cursor goes back to it
        page.wait_for_selector(f".tile.focused[data-index='{order[0]}'][data-state='pending']")
        page.keyboard.press("9")  # relabels it, and the cursor moves on to the next pending tile
        page.wait_for_selector(f".tile.focused[data-index='{order[n_held]}']")
        for k in range(n_held, n):  # the rest of the batch as fast as the page takes keys
            page.keyboard.press(str(k % 10))
        page.wait_for_function(f"document.querySelectorAll('.tile[data-state=saved]').length === {n}")
        run.proc.wait(timeout=120)  # --rounds 0: the batch labeled, the run trains, evaluates and ends
        shown = sorted((index, label) for index, _, label in seen)
    assert run.proc.returncode == 0
    expected = {order[k]: str(k % 10) for k in range(n)} | {order[0]: "9"}
    assert journaled(journal) == expected  # the keys pressed, for the tiles they were pressed on
    assert shown == sorted([*expected.items(), (order[0], "0")])  # each in labels.csv by the time it showed saved


def test_text_items_are_shown_as_their_text_one_at_a_time_and_in_the_grid(tmp_path: Path) -> None:
    from alab.data import load_dataset

    tickets = REPO / "tests" / "data" / "tickets.csv"
    texts = load_dataset(f"csv:{tickets}", text="message", target="topic").text_pool
    data = ("--dataset", f"csv:{tickets}", "--text", "message", "--target", "topic")
    with labeling_page(tmp_path, tmp_path / "run", initial=4, rounds=0, data=data) as (run, page):
        page.wait_for_selector(".passage")
        index = int(page.text_content(".meta b:has-text('#')").lstrip("#"))  # "Pool item #N", as a person reads it
        assert page.text_content(".passage") == texts[index]
        assert page.query_selector("img") is None  # no picture of a TF-IDF vector
        page.keyboard.press("g")
        page.wait_for_function("document.querySelectorAll('#gridbox.on .tile').length === 4")
        for tile in page.query_selector_all(".tile"):
            assert tile.query_selector(".text").text_content() == texts[int(tile.get_attribute("data-index"))]
