"""Text and tabular items, and a user's own features: `csv:PATH --text COL` (TF-IDF, alab.data.text) and
`--features FILE` (.npy or Parquet), through the loaders, the command line and what a person is shown."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alab.cli import app
from alab.config import RunConfig
from alab.data import load_dataset
from alab.data.regression import random_split
from alab.errors import AlabError
from alab.label_import import import_labels
from alab.loop import read_curve, resume_run, start_run
from labeling_helpers import FAST_TOML
from labeling_helpers import refused

REPO = Path(__file__).resolve().parents[1]
TICKETS = REPO / "tests" / "data" / "tickets.csv"


def tickets_table() -> list[dict[str, str]]:
    with open(TICKETS, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_tickets_table_is_what_its_script_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_tickets", REPO / "tests" / "data" / "make_tickets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.tickets(np.random.default_rng(module.SEED))
    assert [(r["message"], r["topic"]) for r in tickets_table()] == rows
    assert {t: sum(1 for _, topic in rows if topic == t) for t in module.COUNTS} == module.COUNTS


def test_a_text_table_reads_its_texts_labels_and_tfidf_features_in_the_same_order() -> None:
    rows = tickets_table()
    data = load_dataset(f"csv:{TICKETS}", text="message", target="topic", seed=3, validation=20)
    assert data.classes == ("account", "billing", "delivery", "technical")  # sorted, as --classes is absent
    train, test = random_split(len(rows))
    assert len(data.y_pool) == len(train) - 20 and len(data.y_test) == len(test)
    topics_of = {}
    for row in rows:
        topics_of.setdefault(row["message"], set()).add(row["topic"])
    assert data.text_pool is not None and len(data.text_pool) == len(data.y_pool)
    for text, y in zip(data.text_pool, data.y_pool.tolist(), strict=True):
        assert data.classes[y] in topics_of[text]  # each pool item's text and label come from one row
    assert [data.classes[y] for y in data.y_test.tolist()] == [rows[i]["topic"] for i in test]
    norms = data.x_pool.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))  # TF-IDF rows, L2-normalized
    assert bool((data.x_pool >= 0).all())


def test_the_tfidf_vocabulary_is_fitted_on_the_training_rows_only(tmp_path: Path) -> None:
    n = 30
    _, test = random_split(n)
    texts = [f"zzqx{i} only here" if i in set(test.tolist()) else ("red apple pie" if i % 2 else "blue sky rain") for i in range(n)]
    labels = ["a" if i % 2 else "b" for i in range(n)]
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels, strict=True)))
    data = load_dataset(f"csv:{table}", text="text", target="label")
    # the test rows' words (zzqx..., only, here) are unseen in training: their features are all zero
    assert bool((data.x_test == 0).all()) and data.x_test.shape[1] == data.x_pool.shape[1]


def fast(tmp_path: Path, **overrides: object) -> RunConfig:
    from alab.config import load_config

    (tmp_path / "fast.toml").write_text(FAST_TOML)
    base = {"dataset": f"csv:{TICKETS}", "text": "message", "target": "topic", "initial": 8, "query_size": 4, "rounds": 1}
    return load_config(tmp_path / "fast.toml", {**base, **overrides})


def test_a_text_run_through_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "fast.toml").write_text(FAST_TOML)
    args = ["run", "--config", str(tmp_path / "fast.toml"), "--dataset", f"csv:{TICKETS}", "--text", "message", "--target", "topic",
            "--strategy", "bald", "--initial", "8", "--query-size", "4", "--rounds", "2", "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    curve = read_curve(tmp_path / "run" / "curve.csv")
    assert [int(r["n_labeled"]) for r in curve] == [8, 12, 16]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in curve)
    assert all(float(r["mean_bald"]) > 0 for r in curve[:-1])  # the pool was scored


def test_a_person_reads_the_text_in_the_answer_files_and_label_studio_tasks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    start_run(fast(tmp_path, oracle="files"), run_dir, echo=lambda line: None)
    folder = run_dir / "queries" / "round-0"
    with open(folder / "queries.csv", newline="", encoding="utf-8") as f:
        queries = list(csv.DictReader(f))
    data = load_dataset(f"csv:{TICKETS}", text="message", target="topic")
    assert len(queries) == 8 and all(q["text"] == data.text_pool[int(q["index"])] for q in queries)
    tasks = json.loads((folder / "tasks.json").read_text())
    assert [t["data"]["text"] for t in tasks] == [q["text"] for q in queries]
    assert 'value="$text"' in (folder / "label_config.xml").read_text()
    assert "<Image" not in (folder / "label_config.xml").read_text()
    answers = tmp_path / "answers.csv"
    answers.write_text("index,label\n" + "".join(f"{q['index']},{data.classes[int(data.y_pool[int(q['index'])])]}\n" for q in queries))
    import_labels(run_dir, answers)
    resume_run(run_dir, echo=lambda line: None)
    assert (run_dir / "queries" / "round-1" / "queries.csv").exists()  # the run trained on them and asked again


def test_an_unlabeled_text_pool_is_labeled_by_a_person_with_nan_metrics(tmp_path: Path) -> None:
    table = tmp_path / "inbox.csv"
    table.write_text("message\n" + "".join(f"message number {i} about {'money' if i % 2 else 'parcels'}\n" for i in range(12)))
    config = fast(tmp_path, dataset=f"csv:{table}", target=None, classes=["money", "parcels"], oracle="files", initial=4, query_size=2)
    run_dir = tmp_path / "run"
    for round_ in (0, 1):
        start_run(config, run_dir, echo=lambda line: None) if round_ == 0 else resume_run(run_dir, echo=lambda line: None)
        with open(run_dir / "queries" / f"round-{round_}" / "queries.csv", newline="") as f:
            asked = [(int(r["index"]), r["text"]) for r in csv.DictReader(f)]
        answers = tmp_path / f"answers{round_}.csv"
        answers.write_text("index,label\n" + "".join(f"{i},{'money' if 'money' in text else 'parcels'}\n" for i, text in asked))
        import_labels(run_dir, answers)
    resume_run(run_dir, echo=lambda line: None)
    curve = read_curve(run_dir / "curve.csv")
    assert [int(r["n_labeled"]) for r in curve] == [4, 6]
    assert all(math.isnan(float(r["accuracy"])) for r in curve)


# ------------------------------------------------------------------ your own features


def test_own_features_replace_what_the_model_reads_and_keep_what_a_person_sees(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    images_N_D = load_digits().data / 16.0  # the data set's own order: --features has one row per item in it
    features_N_D = np.random.default_rng(0).normal(size=(len(images_N_D), 7))
    np.save(tmp_path / "f.npy", features_N_D)
    plain = load_dataset("digits", seed=1, validation=50, pool_size=600)
    own = load_dataset("digits", seed=1, validation=50, pool_size=600, features=tmp_path / "f.npy")
    assert own.x_pool.shape == (600, 7) and own.x_test.shape == (len(plain.y_test), 7)
    assert own.x_shown_pool is not None and torch.equal(own.x_shown_pool, plain.x_pool)  # a person still sees the item
    assert torch.equal(own.y_pool, plain.y_pool) and torch.equal(own.y_test, plain.y_test)
    # each item's features are the row of its own image (found by the image, not by alab's bookkeeping)
    for x_shown, x_own in [*zip(plain.x_pool, own.x_pool, strict=True), *zip(plain.x_test, own.x_test, strict=True)]:
        rows = np.flatnonzero(np.abs(images_N_D - x_shown.double().numpy()).max(axis=1) < 1e-6)
        assert any(np.allclose(x_own.numpy(), features_N_D[i].astype(np.float32)) for i in rows)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="Parquet needs pyarrow: pip install -e '.[parquet]'")
def test_own_features_from_parquet_on_a_text_table(tmp_path: Path) -> None:
    import pandas as pd

    rows = tickets_table()
    features_N_D = np.random.default_rng(1).normal(size=(len(rows), 5))
    pd.DataFrame(features_N_D, columns=[f"e{i}" for i in range(5)]).to_parquet(tmp_path / "emb.parquet")
    data = load_dataset(f"csv:{TICKETS}", text="message", target="topic", features=tmp_path / "emb.parquet")
    train, test = random_split(len(rows))
    torch.testing.assert_close(data.x_pool, torch.from_numpy(features_N_D[train]).float())
    torch.testing.assert_close(data.x_test, torch.from_numpy(features_N_D[test]).float())
    assert data.text_pool == tuple(rows[i]["message"] for i in train)  # the person still reads the texts


# ------------------------------------------------------------------ mistakes


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("table", "args", "message"),
    [
        ("message,topic\nhi,a\n", ["--text", "body", "--target", "topic"], r"has no column 'body' for --text"),
        ("message,topic\n" + "hi there,a\n" * 5 + ",b\n", ["--text", "message", "--target", "topic"], r"empty on line 7"),
        ("message,topic\n" + "hi there,a\n" * 8, ["--text", "message", "--target", "topic"], r"holds one class"),
        ("message,topic\n" + "hi there,a\nho,b\n" * 4, ["--text", "message", "--target", "topic", "--classes", "a,c"], r"label 'b' .* is not one of --classes"),
        ("message\n" + "hi there\n" * 8, ["--text", "message"], r"needs the class names: add --classes"),
        ("message,topic\n" + "hi there,a\nho,b\n" * 4, ["--text", "message", "--target", "message"], r"--target and --text both name"),
        ("message,topic\n" + "...,a\n!!,b\n" * 4, ["--text", "message", "--target", "topic"], r"holds no words"),
    ],
    ids=["no such column", "an empty text", "one class", "a label outside --classes", "no labels and no classes", "target is the text", "no words"],
)
def test_text_table_mistakes(here: Path, table: str, args: list[str], message: str) -> None:
    (here / "t.csv").write_text(table)
    refused(here, ["run", "--dataset", f"csv:{here / 't.csv'}", *args, "--out", "run"], message)


def test_text_on_a_data_set_that_is_not_a_table(here: Path) -> None:
    refused(here, ["run", "--dataset", "digits", "--text", "message", "--out", "run"], r"--text names the text column of a table")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: np.save(d / "f.npy", np.zeros((10, 3))), r"has 10 rows but digits has 1797 items"),
        (lambda d: np.save(d / "f.npy", np.where(np.arange(1797 * 2).reshape(1797, 2) == 7, np.nan, 0.0)), r"row 3 column 1 is nan"),
        (lambda d: np.save(d / "f.npy", np.zeros(1797)), r"2-D array of numbers"),
        (lambda d: (d / "f.txt").write_text("1,2\n"), r"give a \.npy array or a \.parquet table"),
        (lambda d: (d / "f.npy").write_text("not numpy"), r"cannot read .* as a \.npy array"),
        (lambda d: None, r"no such file"),
    ],
    ids=["wrong row count", "NaN", "one column vector", "wrong suffix", "not a .npy file", "missing"],
)
def test_features_file_mistakes(here: Path, make, message: str) -> None:
    make(here)
    name = "f.txt" if "suffix" in message else "f.npy"
    refused(here, ["run", "--dataset", "digits", "--features", str(here / name), "--out", "run"], message)


def test_features_change_the_data_set_identity(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((1797, 2)))
    np.save(tmp_path / "b.npy", np.ones((1797, 2)))
    a = load_dataset("digits", features=tmp_path / "a.npy")
    b = load_dataset("digits", features=tmp_path / "b.npy")
    assert a.checksum != b.checksum != load_dataset("digits").checksum


def test_features_refused_at_load_name_the_fix() -> None:
    with pytest.raises(AlabError, match="one row per item"):
        load_dataset("digits", features=REPO / "tests" / "data" / "tickets.csv")


def test_a_table_with_a_column_of_class_names_is_classification_shown_by_its_column_names(tmp_path: Path) -> None:
    table = tmp_path / "flowers.csv"
    rng = np.random.default_rng(0)
    rows = [(float(a), float(b), "iris" if a > b else "rose") for a, b in rng.normal(size=(30, 2)).round(3)]
    table.write_text("petal,stem,kind\n" + "".join(f"{a},{b},{k}\n" for a, b, k in rows))
    data = load_dataset(f"csv:{table}", target="kind")
    assert data.classes == ("iris", "rose") and data.feature_names == ("petal", "stem")
    train, test = random_split(len(rows))
    assert [data.classes[y] for y in data.y_test.tolist()] == [rows[i][2] for i in test]
    x_train = np.array([rows[i][:2] for i in train])
    torch.testing.assert_close(data.x_pool, torch.from_numpy((x_train - x_train.mean(0)) / x_train.std(0)).float())  # standardized
    run_dir = tmp_path / "run"
    start_run(fast(tmp_path, dataset=f"csv:{table}", text=None, target="kind", oracle="files", initial=4), run_dir, echo=lambda line: None)
    with open(run_dir / "queries" / "round-0" / "queries.csv", newline="") as f:
        asked = list(csv.DictReader(f))
    for row in asked:  # the person reads the table's own values under its own column names, not standardized ones
        assert (float(row["petal"]), float(row["stem"])) == rows[train[int(row["index"])]][:2]


def test_a_table_without_a_target_is_a_pool_a_person_labels(tmp_path: Path) -> None:
    table = tmp_path / "rows.csv"
    table.write_text("a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(10)))
    data = load_dataset(f"csv:{table}", classes=["low", "high"])
    assert data.classes == ("low", "high") and len(data.y_pool) == 10 and bool((data.y_pool == -1).all()) and len(data.y_test) == 0


def test_a_run_on_own_features_through_the_command_line_asks_about_the_images(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    images_N_D = load_digits().data
    np.save(tmp_path / "pca.npy", (images_N_D - images_N_D.mean(0)) @ np.linalg.svd(images_N_D - images_N_D.mean(0), full_matrices=False)[2][:12].T)
    (tmp_path / "fast.toml").write_text(FAST_TOML)
    args = ["run", "--config", str(tmp_path / "fast.toml"), "--features", str(tmp_path / "pca.npy"), "--strategy", "bald",
            "--oracle", "files", "--initial", "6", "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run" / "queries" / "round-0"
    with open(folder / "queries.csv", newline="") as f:
        asked = [int(r["index"]) for r in csv.DictReader(f)]
    assert len(asked) == 6 and all((folder / f"item-{i}.png").exists() for i in asked)  # the person sees digits, not 12 numbers
    assert 'features = "' in (tmp_path / "run" / "config.toml").read_text()  # a resume reads the same features
