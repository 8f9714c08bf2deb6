"""`--oracle labelstudio` against a real Label Studio server (PyPI `label-studio`), not a mock.

The server runs from its own environment: `ALAB_LABEL_STUDIO` names its `label-studio` executable
(`.ci/run` makes one), else `label-studio` on PATH; without either these tests skip. A fresh data
folder costs the server its database migrations (minutes on 2 cores), so `ALAB_LABEL_STUDIO_DATA`
may name one made by `label-studio init` with the user token in `ALAB_LABEL_STUDIO_TOKEN`: each
test module starts the server on a copy of it. Annotations are made through Label Studio's REST
API (the SDK's `annotations.create` and `update`), the calls its labeling page makes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from alab.data import load_dataset
from alab.loop import load_checkpoint
from alab.oracles import Label, OracleContext, Query
from alab.errors import AlabError
from alab.oracles.labelstudio import Interface, label_config, make_labelstudio, parse_interface
from labeling_helpers import REPO

pytest.importorskip("label_studio_sdk", reason="the Label Studio SDK is not installed: pip install -e '.[labelstudio]'")
from label_studio_sdk import LabelStudio  # noqa: E402

EXECUTABLE = os.environ.get("ALAB_LABEL_STUDIO") or shutil.which("label-studio")
STARTUP_SECONDS = 900  # a fresh database's migrations on 2 busy cores


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """(url, token) of a Label Studio server on 127.0.0.1 with its SQLite store in a temporary folder."""
    if EXECUTABLE is None:
        pytest.skip("no Label Studio server to test against: set ALAB_LABEL_STUDIO to a `label-studio` executable (.ci/run makes one)")
    data = tmp_path_factory.mktemp("label-studio")
    template, token = os.environ.get("ALAB_LABEL_STUDIO_DATA"), os.environ.get("ALAB_LABEL_STUDIO_TOKEN")
    flags: list[str] = []
    if template and token:
        shutil.copytree(template, data, dirs_exist_ok=True)
    else:
        token = secrets.token_hex(20)
        flags = ["--username", "alab@example.com", "--password", secrets.token_hex(8), "--user-token", token]
    port = _free_port()
    env = {
        **os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "SSRF_PROTECTION_ENABLED": "false", "ML_BLOCK_LOCAL_IP": "false",  # it calls alab on 127.0.0.1
    }  # fmt: skip
    log = open(data / "server.log", "w")
    proc = subprocess.Popen(
        [EXECUTABLE, "start", "--no-browser", "--host", "127.0.0.1", "-p", str(port), "--data-dir", str(data),
         "--enable-legacy-api-token", *flags],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    import httpx

    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() - started > STARTUP_SECONDS:
            proc.kill()
            raise AssertionError(f"Label Studio did not start: {(data / 'server.log').read_text()[-2000:]}")
        time.sleep(1)
    print(f"Label Studio started in {time.monotonic() - started:.0f} s")
    yield url, token
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


DIGITS = load_dataset("digits", seed=0)


def start_run(tmp_path: Path, url: str, token: str, *args: str, poll: float = 600.0) -> tuple[subprocess.Popen[str], Path]:
    """`alab run --oracle labelstudio` on digits in a subprocess; annotations must come by webhook (poll: 10 min)."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'strategy = "bald"\ninitial = 10\nquery_size = 5\nrounds = 1\nsamples = 4\n'
        f'oracle = {{ name = "labelstudio", url = "{url}", poll_seconds = {poll} }}\n'
        '[backend]\nname = "mc_dropout"\nepochs = 1\nmin_steps = 5\n'
    )
    run_dir = tmp_path / "run"
    return alab(token, tmp_path, "run", "--config", str(recipe), "--out", str(run_dir), *args), run_dir


def alab(token: str, log_dir: Path, *args: str) -> subprocess.Popen[str]:
    """`python -m alab ARGS` with the token in LABEL_STUDIO_API_KEY; its output to log_dir/alab-N.log."""
    env = {**os.environ, "LABEL_STUDIO_API_KEY": token, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    log = open(log_dir / f"alab-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "alab", *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, what: str, proc: subprocess.Popen[str] | None = None, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def round_tasks(client: LabelStudio, project: int, round_: int) -> list:
    return [t for t in client.tasks.list(project=project, fields="all") if (t.data or {}).get("alab_round") == round_]


def choose(name: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "item", "type": "choices", "value": {"choices": [name]}}]


def journal(run_dir: Path) -> list[list[str]]:
    path = run_dir / "labels.csv"
    return [line.split(",") for line in path.read_text().splitlines()[1:]] if path.exists() else []


def true_class(task) -> str:
    return DIGITS.classes[int(DIGITS.y_pool[int(task.data["index"])])]


def project_of(run_dir: Path, proc: subprocess.Popen[str]) -> int:
    """The run's project, once its webhook and ML backend are registered (labelstudio.json)."""

    def registered() -> int | None:
        path = run_dir / "labelstudio.json"
        state = json.loads(path.read_text()) if path.exists() else {}
        return state["project"] if "ml_backend" in state else None

    return wait_for(registered, "the run's project", proc)


def test_a_webhook_is_answered_only_once_the_loop_has_journaled_its_label(server, tmp_path: Path, monkeypatch) -> None:
    import httpx

    url, token = server
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    said: list[str] = []
    oracle = make_labelstudio(OracleContext(DIGITS, tmp_path, DIGITS.classes, {"url": url, "poll_seconds": 600.0}, 1, said.append))
    try:
        oracle.request([Query(i, DIGITS.x_pool[i], round=0) for i in (3, 5)])
        task = next(t for t in round_tasks(LabelStudio(base_url=url, api_key=token), oracle.project, 0) if t.data["index"] == 3)
        event = {"action": "ANNOTATION_CREATED", "annotation": {"task": task.id, "result": choose(true_class(task))}}
        assert httpx.post(f"{oracle.server_url}/webhook", json=event, timeout=10).status_code == 403  # no token
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(httpx.post, f"{oracle.server_url}/webhook", json=event, headers={"X-Alab-Token": oracle.token}, timeout=60)
            labels = oracle.collect(timeout=10)
            assert labels == [Label(3, int(DIGITS.y_pool[3]), "labelstudio")]
            time.sleep(1.0)
            assert not answer.done()  # the loop has the label but has not journaled it: Label Studio waits
            oracle.acknowledge(labels)
            assert answer.result().status_code == 200
    finally:
        oracle.close()


def test_a_run_labeled_in_label_studio_journals_each_webhook_before_answering_it(server, tmp_path: Path) -> None:
    url, token = server
    client = LabelStudio(base_url=url, api_key=token)
    proc, run_dir = start_run(tmp_path, url, token)
    try:
        project = project_of(run_dir, proc)
        state = json.loads((run_dir / "labelstudio.json").read_text())
        assert state["webhook"] and state["ml_backend"]  # both registered: labels come by webhook, not by the 10-minute poll
        initial = wait_for(lambda: len(round_tasks(client, project, 0)) == 10 and round_tasks(client, project, 0), "round 0's tasks", proc)
        assert all(t.data["item"].startswith("data:image/png;base64,") for t in initial)
        for n, task in enumerate(initial):
            client.annotations.create(id=task.id, result=choose(true_class(task)))
            assert len(journal(run_dir)) == n + 1  # on disk when Label Studio's save returned
        queried = wait_for(lambda: len(round_tasks(client, project, 1)) == 5 and round_tasks(client, project, 1), "round 1's tasks", proc)

        # the predictions Label Studio shows: the model's guess, scored by the acquisition score of the checkpointed query
        views = {q["index"]: q["view"] for q in load_checkpoint(run_dir / "checkpoint.pt")["queries"]}
        for task in queried:
            (prediction,) = client.predictions.list(task=task.id)
            view = views[task.data["index"]]
            guess = DIGITS.classes[max(range(len(view["probs"])), key=lambda c: view["probs"][c])]
            assert prediction.result[0]["value"]["choices"] == [guess] and prediction.model_version == "alab-round-1"
            assert prediction.score == pytest.approx(view["score"])

        changed, none, outside, *rest = queried
        wrong = next(c for c in DIGITS.classes if c != true_class(changed))
        first = client.annotations.create(id=changed.id, result=choose(wrong))
        client.annotations.update(id=first.id, result=choose(true_class(changed)))  # changed while the round is open
        client.annotations.create(id=none.id, result=choose("none of these"))
        banana = client.annotations.create(id=outside.id, result=choose("banana"))
        assert not any(row[0] == str(outside.data["index"]) for row in journal(run_dir))  # refused, not journaled
        client.annotations.update(id=banana.id, result=choose(true_class(outside)))
        for task in rest:
            client.annotations.create(id=task.id, result=choose(true_class(task)))
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
    log = "".join(p.read_text() for p in tmp_path.glob("alab-*.log"))
    assert "label 'banana' is not a class" in log
    rows = journal(run_dir)
    by_item = {}
    for index, label, round_, source in rows:
        by_item.setdefault(int(index), []).append((label, source))
    assert by_item[changed.data["index"]] == [(str(DIGITS.classes.index(wrong)), "labelstudio"),
                                             (str(DIGITS.classes.index(wrong)), "undo"),
                                             (str(DIGITS.classes.index(true_class(changed))), "labelstudio")]  # fmt: skip
    assert by_item[none.data["index"]] == [("none", "labelstudio")]
    for task in [*initial, outside, *rest]:
        assert by_item[task.data["index"]] == [(str(DIGITS.classes.index(true_class(task))), "labelstudio")]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert not client.webhooks.list(project=project)  # this run's webhook is removed when it ends


def test_a_sigkill_while_annotations_arrive_loses_none_and_resume_asks_for_the_rest(server, tmp_path: Path) -> None:
    url, token = server
    client = LabelStudio(base_url=url, api_key=token)
    proc, run_dir = start_run(tmp_path, url, token)
    try:
        project = project_of(run_dir, proc)
        initial = wait_for(lambda: len(round_tasks(client, project, 0)) == 10 and round_tasks(client, project, 0), "round 0's tasks", proc)
        for task in initial[:4]:
            client.annotations.create(id=task.id, result=choose(true_class(task)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for task in initial[4:7]:  # saved in Label Studio while alab is down: its webhook fails
            client.annotations.create(id=task.id, result=choose(true_class(task)))
        assert len(journal(run_dir)) == 4
        resumed = alab(token, tmp_path, "resume", str(run_dir))
        wait_for(lambda: len(journal(run_dir)) == 7, "the annotations made while alab was down", resumed, timeout=120)
        for task in initial[7:]:
            client.annotations.create(id=task.id, result=choose(true_class(task)))
        queried = wait_for(lambda: len(round_tasks(client, project, 1)) == 5 and round_tasks(client, project, 1), "round 1's tasks", resumed)
        for task in queried:
            client.annotations.create(id=task.id, result=choose(true_class(task)))
        assert resumed.wait(timeout=300) == 0
    finally:
        proc.kill()
    log = "".join(p.read_text() for p in sorted(tmp_path.glob("alab-*.log")))
    assert "round 0: 6 of 10 items still to label" in log  # resume asks only for the rest
    rows = journal(run_dir)
    assert sorted(int(r[0]) for r in rows) == sorted(t.data["index"] for t in [*initial, *queried])  # each once, none lost
    assert all(r[1] == str(DIGITS.classes.index(true_class(t))) for r, t in zip(sorted(rows, key=lambda r: int(r[0])), sorted([*initial, *queried], key=lambda t: t.data["index"])))
    assert len(round_tasks(client, project, 0)) == 10  # resume found its tasks again: none imported twice


def test_an_unreachable_server_or_a_missing_token_is_one_line(tmp_path: Path) -> None:
    proc, _ = start_run(tmp_path, f"http://127.0.0.1:{_free_port()}", "some-token")
    assert proc.wait(timeout=120) == 2
    (tmp_path / "nothing").mkdir()
    missing = subprocess.run(
        [sys.executable, "-m", "alab", "run", "--oracle", "labelstudio", "--out", str(tmp_path / "nothing" / "run")],
        cwd=REPO, env={k: v for k, v in os.environ.items() if k != "LABEL_STUDIO_API_KEY"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("alab: error: set LABEL_STUDIO_API_KEY")
    log = "".join(p.read_text() for p in tmp_path.glob("alab-*.log")).strip().splitlines()
    assert log[-1].startswith("alab: error: cannot reach Label Studio at http://127.0.0.1:") and "fix oracle.url" in log[-1]
    assert "Traceback" not in "".join(log) + missing.stderr


def test_a_wrong_token_is_one_line(server, tmp_path: Path) -> None:
    url, _ = server
    proc, run_dir = start_run(tmp_path, url, "not-a-token")
    assert proc.wait(timeout=120) == 2
    log = "".join(p.read_text() for p in tmp_path.glob("alab-*.log")).strip().splitlines()
    assert log[-1].startswith("alab: error: Label Studio at") and "refused the token in LABEL_STUDIO_API_KEY" in log[-1]


def test_a_project_interface_must_offer_every_class() -> None:
    ours = parse_interface(label_config(("cat", "dog"), "image"), ("cat", "dog"))
    assert ours == Interface("label", "item", "item", ("cat", "dog", "none of these"))
    theirs = '<View><Text name="t" value="$ticket"/><Choices name="c" toName="t"><Choice value="cat"/></Choices></View>'
    assert parse_interface(theirs, ("cat",)).data_key == "ticket"
    with pytest.raises(AlabError, match="^the project's Choices control lacks the classes dog; add them as choices$"):
        parse_interface(theirs, ("cat", "dog"))
    with pytest.raises(AlabError, match="no Choices control"):
        parse_interface('<View><Text name="t" value="$x"/></View>', ("cat",))
    with pytest.raises(AlabError, match="shows no task data"):
        parse_interface('<View><Header name="t" value="hi"/><Choices name="c" toName="t"><Choice value="cat"/></Choices></View>', ("cat",))
    with pytest.raises(AlabError, match="not valid XML"):
        parse_interface("<View>", ("cat",))


def test_text_items_become_text_tasks_that_show_the_text(server, tmp_path: Path, monkeypatch) -> None:
    url, token = server
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    tickets = load_dataset(f"csv:{REPO / 'tests' / 'data' / 'tickets.csv'}", text="message", target="topic")
    context = OracleContext(tickets, tmp_path, tickets.classes, {"url": url, "poll_seconds": 600.0}, 1, lambda line: None)
    oracle = make_labelstudio(context)
    try:
        oracle.request([Query(i, None, round=0, text=tickets.text_pool[i]) for i in (2, 7)])
        client = LabelStudio(base_url=url, api_key=token)
        config = client.projects.get(id=oracle.project).label_config
        assert "<Text " in config and "<Image" not in config
        shown = {t.data["index"]: t.data[parse_interface(config, tickets.classes).data_key] for t in round_tasks(client, oracle.project, 0)}
        assert shown == {2: tickets.text_pool[2], 7: tickets.text_pool[7]}  # what the annotator reads is the text itself
    finally:
        oracle.close()
