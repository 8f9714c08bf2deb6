"""Fuzzing with Hypothesis: the config loader and the label import accept or refuse (AlabError), never crash.

The inputs mix pure noise (any bytes, any text) with near misses built from the valid shapes (the
run's keys and tables with values of every TOML type; queries.csv and Label Studio exports with
wrong types, missing fields and foreign items), which is where a parser's unchecked assumptions live.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alab.backends import BACKENDS
from alab.config import RunConfig, load_config
from alab.errors import AlabError
from alab.label_import import import_labels
from alab.loop import start_run
from alab.oracles.base import NONE_OF_THESE
from alab.storage import LabelsJournal
from labeling_helpers import FAST_TOML

# ALAB_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py   searches deeper than CI's 150 per test
FUZZ = settings(max_examples=int(os.environ.get("ALAB_FUZZ_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

RUN_KEYS = [f for f in RunConfig.__dataclass_fields__ if f not in ("backend", "oracle")]
BACKEND_KEYS = ["name", "epochs", "min_steps", "batch_size", "lr", "weight_decay", "model", "masks", "members", "kl_weight", "prior", "init_sigma", "warm_start"]  # fmt: skip
ORACLE_KEYS = ["name", "host", "port", "open_browser"]

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["bald", "random", "digits", "mc_dropout", "ensemble", "vi", "web", "auto", "cpu", "cuda:7", "mlp", "gal_cnn"]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), toml_values, max_size=5)


documents = st.fixed_dictionaries(
    {},
    optional={
        **{key: toml_values for key in RUN_KEYS},
        "backend": table(BACKEND_KEYS) | toml_scalars,
        "oracle": table(ORACLE_KEYS) | toml_scalars,
        "stray": toml_values,
    },
)


def refuses_cleanly(call: Any) -> None:
    try:
        call()
    except AlabError as err:
        assert str(err) and "\n" not in str(err), repr(err)


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_config_loader_on_any_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    refuses_cleanly(lambda: load_config(path))


@FUZZ
@given(document=documents, flags=st.dictionaries(st.sampled_from(["rounds", "initial", "strategy", "backend", "oracle", "classes"]), toml_values, max_size=2))
def test_config_loader_on_near_misses(tmp_path: Path, document: dict[str, Any], flags: dict[str, Any]) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(tomli_w.dumps(document))
    refuses_cleanly(lambda: load_config(path, flags))


@FUZZ
@given(name=st.sampled_from(["mc_dropout", "ensemble", "vi"]), params=table(BACKEND_KEYS[1:]))
def test_backend_settings_are_validated_when_the_backend_is_built(name: str, params: dict[str, Any]) -> None:
    refuses_cleanly(lambda: BACKENDS.get(name)(params, input_shape=(64,), num_classes=10, device=torch.device("cpu")))


# ------------------------------------------------------------------ label import


@pytest.fixture(scope="module")
def waiting_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A digits run with the files oracle, waiting on its initial set; and the queried pool indices."""
    root = tmp_path_factory.mktemp("waiting")
    (root / "fast.toml").write_text(FAST_TOML)
    config = load_config(root / "fast.toml", {"oracle": "files", "initial": 10, "rounds": 1, "query_size": 5})
    start_run(config, root / "run", echo=lambda line: None)
    lines = (root / "run" / "queries" / "round-0" / "queries.csv").read_text().splitlines()[1:]
    return root / "run", [int(line.split(",")[0]) for line in lines]


indices = st.integers(-3, 2000) | st.sampled_from(["", "x", "1.5", " 7 ", "1e3", "-0", "٣"])
labels = st.sampled_from([str(c) for c in range(10)]) | st.text(max_size=4) | st.integers(-2, 12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2000) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["index", "label", "data", "annotations", "result", "value", "choices", "type", "from_name", "was_cancelled"]) | st.text(max_size=4), inner, max_size=4),
    max_leaves=10,
)  # fmt: skip


@st.composite
def csv_answers(draw: st.DrawFn, queried: list[int]) -> bytes:
    header = draw(st.sampled_from(["index,label", "label,index", "index,label,extra", "index", "idx,label", ""]))
    rows = draw(st.lists(st.tuples(st.sampled_from(queried) | indices, labels), max_size=6))
    text = header + "\n" + "".join(f"{i},{y}\n" for i, y in rows)
    noise = draw(st.sampled_from([b"", b"\x00", b"\xff\xfe", b'"unclosed', b",,,\n", b"\r\n"]))
    return text.encode() + noise


@st.composite
def label_studio_answers(draw: st.DrawFn, queried: list[int]) -> bytes:
    def task() -> Any:
        index = draw(st.sampled_from(queried) | json_values)
        choice = draw(labels | json_values)
        return draw(st.sampled_from([
            {"index": index, "label": choice},
            {"data": {"index": index}, "annotations": [{"result": [{"type": "choices", "value": {"choices": [choice]}}]}]},
            {"data": draw(json_values), "annotations": draw(json_values)},
            draw(json_values),
        ]))  # fmt: skip

    return json.dumps([task() for _ in range(draw(st.integers(0, 4)))] if draw(st.booleans()) else draw(json_values)).encode()


@FUZZ
@given(data=st.data())
def test_label_import_accepts_or_refuses_and_refusing_changes_nothing(waiting_run: tuple[Path, list[int]], tmp_path: Path, data: st.DataObject) -> None:
    run_dir, queried = waiting_run
    suffix = data.draw(st.sampled_from([".csv", ".json"]))
    content = data.draw(
        st.binary(max_size=200)
        | (csv_answers(queried) if suffix == ".csv" else label_studio_answers(queried))
    )
    answers = tmp_path / f"answers{suffix}"
    answers.write_bytes(content)
    journal_path = run_dir / "labels.csv"
    before = journal_path.read_bytes()
    try:
        import_labels(run_dir, answers)
    except AlabError as err:
        assert "\n" not in str(err)
        assert journal_path.read_bytes() == before  # all or nothing
    else:
        journal = LabelsJournal(journal_path)  # whatever was accepted reads back: known items, classes 0..9 or "none of these"
        assert set(journal.labeled) <= set(queried)
        assert all(entry.label == NONE_OF_THESE or 0 <= entry.label <= 9 for entry in journal.labeled.values())
    finally:
        journal_path.write_bytes(before)
