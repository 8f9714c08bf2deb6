"""The web labeler: token, refusals, binding, labels journaled before they are acknowledged, SIGKILL and resume."""

from __future__ import annotations

import contextlib
import csv
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="the web tests talk HTTP through httpx")

from alab.data import load_dataset  # noqa: E402
from alab.errors import AlabError  # noqa: E402
from alab.loop import _ask  # noqa: E402
from alab.oracles import OracleContext, Query  # noqa: E402
from alab.oracles.web import WebOracle  # noqa: E402
from alab.storage import LabelsJournal  # noqa: E402
from alab.tasks import Classification  # noqa: E402
from labeling_helpers import Run, fast_config  # noqa: E402

DIGITS = load_dataset("digits")
ASKED = [3, 14, 15, 92]


def journal_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[WebOracle, httpx.Client, LabelsJournal, threading.Thread]]:
    """A web oracle asked for ASKED in round 2, with the loop's `_ask` journaling on a thread."""
    oracle = WebOracle(OracleContext(DIGITS, tmp_path, DIGITS.classes, rounds=3, echo=lambda line: None))
    journal = LabelsJournal(tmp_path / "labels.csv")
    queries = [Query(i, DIGITS.x_pool[i], {"probs": [0.1] * 10, "score": 0.5}, round=2) for i in ASKED]

    def ask() -> None:
        with contextlib.suppress(AlabError):  # the page closed at the test's end
            _ask(oracle, journal, queries, 2, Classification(DIGITS), lambda line: None)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    base = oracle.url.split("/?")[0]
    with httpx.Client(base_url=base, headers={"X-Alab-Token": oracle.token}, timeout=30) as client:
        for _ in range(100):  # until the loop's request has reached the page
            if client.get("/api/state").json()["status"] == "labeling":
                break
        yield oracle, client, journal, asker
    oracle.close()
    asker.join(timeout=10)


def test_binds_to_loopback_by_default(served) -> None:
    oracle, *_ = served
    assert oracle.url.startswith("http://127.0.0.1:")
    assert oracle._server.servers[0].sockets[0].getsockname()[0] == "127.0.0.1"


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
@pytest.mark.parametrize("path", ["/", "/api/state", f"/api/items/{ASKED[0]}.png"])
def test_refuses_missing_or_wrong_token(served, token: str | None, path: str) -> None:
    oracle, *_ = served
    base = oracle.url.split("/?")[0]
    params = {} if token is None else {"token": token}
    response = httpx.get(base + path, params=params)
    assert response.status_code == 403
    assert httpx.post(base + "/api/label", params=params, json={"index": ASKED[0], "label": 1}).status_code == 403


def test_page_and_state_with_the_token(served) -> None:
    oracle, client, *_ = served
    assert "alab" in httpx.get(oracle.url).text
    state = client.get("/api/state").json()
    assert state["round"] == 2 and state["rounds"] == 3 and state["status"] == "labeling"
    assert [item["index"] for item in state["items"]] == ASKED
    png = client.get(f"/api/items/{ASKED[0]}.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_refuses_labels_outside_classes_items_not_pending_and_other_paths(served) -> None:
    oracle, client, journal, _ = served
    for bad in (10, -1, "3", 2.0, None, True):
        response = client.post("/api/label", json={"index": ASKED[0], "label": bad})
        assert response.status_code == 400 and "class" in response.json()["error"]
    assert client.post("/api/label", json={"index": 999, "label": 1}).status_code == 409  # never asked
    assert client.post("/api/label", json={"index": ASKED[0], "label": 1}).status_code == 200
    assert client.post("/api/label", json={"index": ASKED[0], "label": 2}).status_code == 409  # labeled already
    assert client.post("/api/undo", json={"index": ASKED[1]}).status_code == 409  # nothing to undo
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/items/..%2F..%2Fetc%2Fpasswd.png",
                 "/api/items/999.png", "/alab/oracles/web.py", "/web_page.html"):  # fmt: skip
        assert client.get(path).status_code == 404, path
    assert [e.index for e in journal.entries] == [ASKED[0]]


def test_labels_are_journaled_before_acknowledged_and_undo_reopens_the_item(served, tmp_path: Path) -> None:
    oracle, client, journal, asker = served
    assert client.post("/api/label", json={"index": ASKED[0], "label": 7}).json() == {"saved": ASKED[0], "undone": False}
    assert journal_rows(tmp_path)[-1] == {"index": str(ASKED[0]), "label": "7", "round": "2", "source": "web"}
    assert client.post("/api/undo", json={"index": ASKED[0]}).status_code == 200
    assert journal_rows(tmp_path)[-1]["source"] == "undo"
    pending = [item["index"] for item in client.get("/api/state").json()["items"] if item["label"] is None]
    assert pending == ASKED
    for i, index in enumerate(ASKED):
        assert client.post("/api/label", json={"index": index, "label": i}).status_code == 200
    asker.join(timeout=10)
    assert not asker.is_alive()  # the round is complete: `_ask` returned
    assert {e.index: e.label for e in journal.labeled.values()} == {index: i for i, index in enumerate(ASKED)}
    state = client.get("/api/state").json()
    assert state["status"] == "training"
    assert client.post("/api/undo", json={"index": ASKED[-1]}).status_code == 409  # the round is closed


def test_options_are_validated(tmp_path: Path) -> None:
    for options, message in (({"port": 70000}, "oracle.port"), ({"colour": 1}, "unknown key oracle.colour")):
        with pytest.raises(AlabError, match=message):
            WebOracle(OracleContext(DIGITS, tmp_path, DIGITS.classes, options=options))


def test_sigkill_loses_no_acknowledged_label_and_resume_shows_the_rest(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["--oracle", "web", "--initial", "6", "--query-size", "3", "--rounds", "1", "--out", str(run_dir)]
    run = Run("run", "--config", str(fast_config(tmp_path)), *args)
    try:
        url = run.url()
        base, token = url.split("/?token=")
        with httpx.Client(base_url=base, headers={"X-Alab-Token": token}, timeout=30) as client:
            items = [item["index"] for item in client.get("/api/state").json()["items"]]
            assert len(items) == 6
            given = {index: n % 10 for n, index in enumerate(items[:4])}
            for index, label in given.items():
                assert client.post("/api/label", json={"index": index, "label": label}).status_code == 200
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(timeout=30)
    finally:
        run.stop()
    assert {int(r["index"]): int(r["label"]) for r in journal_rows(run_dir)} == given

    resumed = Run("resume", str(run_dir))
    try:
        base, token = resumed.url().split("/?token=")
        state = httpx.get(base + "/api/state", params={"token": token}, timeout=30).json()
        assert [item["index"] for item in state["items"]] == items[4:]
        assert all(item["label"] is None for item in state["items"])
    finally:
        resumed.stop()


def test_none_of_these_is_an_answer_and_an_outside_mark_reaches_the_page(tmp_path: Path) -> None:
    oracle = WebOracle(OracleContext(DIGITS, tmp_path, DIGITS.classes, rounds=3, echo=lambda line: None))
    journal = LabelsJournal(tmp_path / "labels.csv")
    views = [{"probs": [0.1] * 10, "score": 0.5, "outside": i == ASKED[1]} for i in ASKED]
    queries = [Query(i, DIGITS.x_pool[i], view, round=2) for i, view in zip(ASKED, views)]
    asker = threading.Thread(target=lambda: _ask(oracle, journal, queries, 2, Classification(DIGITS), lambda line: None), daemon=True)
    asker.start()
    try:
        with httpx.Client(base_url=oracle.url.split("/?")[0], headers={"X-Alab-Token": oracle.token}, timeout=30) as client:
            for _ in range(100):
                state = client.get("/api/state").json()
                if state["status"] == "labeling":
                    break
            assert [item["outside"] for item in state["items"]] == [False, True, False, False]
            assert client.post("/api/label", json={"index": ASKED[1], "label": "nothing"}).status_code == 400
            assert client.post("/api/label", json={"index": ASKED[1], "label": "none"}).status_code == 200
            assert journal_rows(tmp_path)[-1] == {"index": str(ASKED[1]), "label": "none", "round": "2", "source": "web"}
            for i in (ASKED[0], *ASKED[2:]):
                assert client.post("/api/label", json={"index": i, "label": 1}).status_code == 200
        asker.join(timeout=10)
        assert not asker.is_alive()
        assert LabelsJournal(tmp_path / "labels.csv").labeled[ASKED[1]].label == "none"  # read back from disk
    finally:
        oracle.close()
