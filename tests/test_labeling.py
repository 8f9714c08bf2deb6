"""Labels from people: journal undo rows, the [oracle] table, file exchange and import, a folder of one's own images."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from alab.config import config_from_dict, load_config
from alab.data import load_dataset
from alab.errors import AlabError
from alab.label_import import import_labels
from alab.loop import read_curve, resume_run, run_status, start_run
from alab.oracles import UNDO, Label
from alab.oracles.render import display_image
from alab.storage import LabelsJournal
from labeling_helpers import FAST_TOML

DIGITS = load_dataset("digits")


def fast(**overrides: object):
    import tomllib

    return config_from_dict({**tomllib.loads(FAST_TOML), "initial": 6, "query_size": 3, "rounds": 1, **overrides})


# ---------------------------------------------------------------- the journal


def test_undo_rows_withdraw_a_label_of_the_open_round_only(tmp_path: Path) -> None:
    journal = LabelsJournal(tmp_path / "labels.csv")
    journal.append([Label(1, 4, "web"), Label(2, 5, "web")], 0)
    journal.append([Label(1, 4, UNDO), Label(1, 6, "web")], 0)  # relabel within the round
    with pytest.raises(AlabError, match="round 0, which is closed"):
        journal.append([Label(2, 5, UNDO)], 1)
    with pytest.raises(AlabError, match="no label to undo"):
        journal.append([Label(3, 0, UNDO)], 1)
    with pytest.raises(AlabError, match="already labeled"):
        journal.append([Label(9, 1, "web"), Label(2, 1, "web")], 1)  # all or nothing: 9 is not written
    reread = LabelsJournal(tmp_path / "labels.csv")
    assert {i: (e.label, e.round) for i, e in reread.labeled.items()} == {1: (6, 0), 2: (5, 0)}
    assert [e.source for e in reread.entries] == ["web", "web", UNDO, "web"]


def test_oracle_table_and_plain_name_round_trip() -> None:
    table = config_from_dict({"oracle": {"name": "web", "port": 8765}})
    assert (table.oracle.name, table.oracle.params) == ("web", {"port": 8765})
    assert config_from_dict(table.to_dict()) == table
    plain = config_from_dict({"oracle": "files"})
    assert plain.oracle.name == "files" and plain.to_dict()["oracle"] == "files"
    assert load_config(None, {"oracle": "terminal"}).oracle.name == "terminal"
    with pytest.raises(AlabError, match="classes must be two or more"):
        config_from_dict({"classes": ["a"]})


# ---------------------------------------------------------------- rendering


def test_display_images_undo_each_data_sets_scaling() -> None:
    digit = display_image("digits", DIGITS.x_pool[0])
    assert digit.shape == (8, 8) and digit.dtype == np.uint8
    np.testing.assert_array_equal(digit, np.round((1 - DIGITS.x_pool[0].reshape(8, 8).double().numpy()) * 255))
    from alab.data.mnist import IDX_SOURCES

    raw = torch.rand(28, 28, generator=torch.Generator().manual_seed(0))
    standardized = ((raw - IDX_SOURCES["mnist"].mean) / IDX_SOURCES["mnist"].std)[None]
    np.testing.assert_allclose(display_image("mnist", standardized), np.round((1 - raw.double().numpy()) * 255), atol=1)
    generic = display_image("other", torch.tensor([[2.0, 4.0], [6.0, 10.0]]))
    np.testing.assert_array_equal(generic, [[0, 64], [128, 255]])
    assert display_image("other", torch.zeros(5)) is None


# ---------------------------------------------------------------- files oracle and import


def write_answers(queries_csv: Path, out: Path, labels: dict[int, str]) -> None:
    with open(queries_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["label"] = labels.get(int(row["index"]), "")
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def truth(indices: list[int]) -> dict[int, str]:
    return {i: DIGITS.classes[int(DIGITS.y_pool[i])] for i in indices}


def queried(run_dir: Path, round_: int) -> list[int]:
    with open(run_dir / "queries" / f"round-{round_}" / "queries.csv", newline="") as f:
        return [int(row["index"]) for row in csv.DictReader(f)]


def test_files_round_trip_with_partial_import_refusals_and_label_studio(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    start_run(fast(oracle="files"), run_dir, echo=lambda line: None)
    assert run_status(run_dir)["status"] == "waiting" and "alab label import" in run_status(run_dir)["waiting_for"]
    folder = run_dir / "queries" / "round-0"
    initial = queried(run_dir, 0)
    assert len(initial) == 6 and all((folder / f"item-{i}.png").exists() for i in initial)

    answers = tmp_path / "answers.csv"
    write_answers(folder / "queries.csv", answers, truth(initial[:2]))
    assert import_labels(run_dir, answers).pending == sorted(initial[2:])  # a partial answer is fine

    before = (run_dir / "labels.csv").read_bytes()
    bad_rows = [
        ("index,label\n" + f"{initial[2]},0\n424242,1\n", "not among round 0's queries"),
        ("index,label\n" + f"{initial[2]},0\n{initial[3]},cat\n", "'cat' is not a class"),
        ("index,label\n" + f"{initial[2]},0\n{initial[2]},1\n", "answered twice"),
        ("index,label\n" + f"{initial[0]},0\n", "already labeled"),
    ]
    for text, message in bad_rows:
        answers.write_text(text)
        with pytest.raises(AlabError, match=message) as err:
            import_labels(run_dir, answers)
        assert "\n" not in str(err.value)
        assert (run_dir / "labels.csv").read_bytes() == before  # nothing of the file half-applied

    answers.write_text("index,label\n" + f"{initial[2]},none\n")  # none of these classes: an answer like any
    assert import_labels(run_dir, answers).pending == sorted(initial[3:])
    assert (run_dir / "labels.csv").read_text().splitlines()[-1] == f"{initial[2]},none,0,files"
    write_answers(folder / "queries.csv", answers, truth(initial[3:]))
    assert import_labels(run_dir, answers).pending == []
    resume_run(run_dir, echo=lambda line: None)
    assert run_status(run_dir)["status"] == "waiting"

    # round 1 through Label Studio: its tasks carry the pool index and the model's guess
    tasks = json.loads((run_dir / "queries" / "round-1" / "tasks.json").read_text())
    assert len(tasks) == 3 and all(t["data"]["image"].startswith("data:image/png;base64,") for t in tasks)
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"][0] in DIGITS.classes
    labels = truth([t["data"]["index"] for t in tasks])
    export = [
        {"id": n, "data": t["data"], "annotations": [
            {"was_cancelled": True, "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["0"]}}]},
            {"was_cancelled": False, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                  "value": {"choices": [labels[t["data"]["index"]]]}}]},
        ]} for n, t in enumerate(tasks)
    ]  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps(export))
    assert import_labels(run_dir, tmp_path / "export.json").imported == 3
    resume_run(run_dir, echo=lambda line: None)
    assert run_status(run_dir)["status"] == "finished"
    journal = LabelsJournal(run_dir / "labels.csv")
    classes = {i: DIGITS.classes[e.label] for i, e in journal.labeled.items() if e.label != "none"}
    assert classes == truth(list(classes)) and journal.labeled[initial[2]].label == "none"
    assert {e.source for e in journal.entries if e.round == 1} == {"label-studio"}


# ---------------------------------------------------------------- a folder of one's own images


def make_folder(root: Path, n: int, test: bool) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(root / f"img{i:02d}.png")
    if test:
        (root / "test.csv").write_text("file,label\nimg00.png,cat\nimg01.png,dog\n")


def test_folder_data_set_reads_images_and_its_test_csv(tmp_path: Path) -> None:
    make_folder(tmp_path / "pics", 8, test=True)
    data = load_dataset(f"folder:{tmp_path / 'pics'}", classes=["cat", "dog"])
    assert data.x_pool.shape == (6, 1, 28, 28) and bool((data.y_pool == -1).all())
    assert data.y_test.tolist() == [0, 1] and data.classes == ("cat", "dog")
    with pytest.raises(AlabError, match="needs the class names"):
        load_dataset(f"folder:{tmp_path / 'pics'}")
    with pytest.raises(AlabError, match="does not match"):
        load_dataset("digits", classes=["a", "b"])


def test_folder_without_test_set_runs_with_nan_metrics(tmp_path: Path) -> None:
    make_folder(tmp_path / "pics", 12, test=False)
    run_dir = tmp_path / "run"
    config = fast(oracle="files", dataset=f"folder:{tmp_path / 'pics'}", classes=["cat", "dog"], initial=4, query_size=2)
    with pytest.raises(AlabError, match="unlabeled pool items"):
        start_run(fast(dataset=f"folder:{tmp_path / 'pics'}", classes=["cat", "dog"]), tmp_path / "sim", echo=lambda line: None)
    for round_ in (0, 1):
        start_run(config, run_dir, echo=lambda line: None) if round_ == 0 else resume_run(run_dir, echo=lambda line: None)
        answers = tmp_path / f"answers{round_}.csv"
        write_answers(run_dir / "queries" / f"round-{round_}" / "queries.csv", answers,
                      {i: ("cat" if i % 2 else "dog") for i in queried(run_dir, round_)})  # fmt: skip
        import_labels(run_dir, answers)
    resume_run(run_dir, echo=lambda line: None)
    curve = read_curve(run_dir / "curve.csv")
    assert [int(row["n_labeled"]) for row in curve] == [4, 6]
    assert all(math.isnan(float(row[m])) for row in curve for m in ("accuracy", "nll", "brier", "ece"))
    assert (run_dir / "curve.png").stat().st_size > 0
