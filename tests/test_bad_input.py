"""The bad input catalogue: every user mistake is one line on stderr, exit code 2, no traceback, no partial files.

Each case runs the real command line in this process (so checksums can be patched onto synthetic
IDX files) and snapshots every file under the test's directory before and after: a refused command
changes nothing there. A few cases run `python -m alab` in a subprocess too (`test_real_process`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alab.cli import app
from alab.data.idx import IMAGES_MAGIC, idx_path, read_idx_bytes
from alab.oracles.base import ORACLES
from alab.oracles.simulated import SimulatedOracle
from labeling_helpers import FAST_TOML, refused
from test_data import mnist_folder, needs_mnist, write_idx_gz, write_synthetic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's directory, also the working directory: default run directories would land here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast.toml").write_text(FAST_TOML)
    return tmp_path


def toml(here: Path, text: str) -> list[str]:
    (here / "recipe.toml").write_text(text)
    return ["--config", str(here / "recipe.toml")]


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('strategy = "bald\n', r"recipe\.toml is not valid TOML"),
        ("[backend\n", r"is not valid TOML"),
        ('strateggy = "bald"\n', r"unknown key config\.strateggy; valid keys: strategy, "),
        ("[backend]\nlrr = 0.1\n", r"unknown key backend\.lrr"),
        ('[oracle]\nname = "simulated"\nport = 5\n', r"the simulated oracle takes no options, got oracle\.port"),
    ],
    ids=["malformed TOML", "unclosed table", "unknown key", "unknown backend key", "unknown oracle key"],
)
def test_malformed_toml_and_unknown_keys(here: Path, text: str, message: str) -> None:
    refused(here, ["run", *toml(here, text), "--out", "run"], message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('rounds = "ten"\n', r"config\.rounds must be int, got 'ten'"),
        ("initial = 2.5\n", r"config\.initial must be int, got 2\.5"),
        ("seed = true\n", r"config\.seed must be int, got True"),
        ('[backend]\nepochs = "many"\n', r"backend\.epochs must be int"),
        ('backend = "mc_dropout"\n', r"backend must be a table"),
        ('[oracle]\nname = "web"\nport = "80"\n', r"oracle\.port must be int"),
        ('autocast = "fp8"\n', r"autocast must be one of off, bfloat16, float16, got 'fp8'"),
    ],
    ids=["string for int", "float for int", "bool for int", "backend value", "table expected", "oracle value", "autocast dtype"],
)
def test_wrong_types(here: Path, text: str, message: str) -> None:
    refused(here, ["run", *toml(here, text), "--out", "run"], message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--query-size", "0"], r"query_size must be at least 1, got 0"),
        (["--initial", "-3"], r"initial must be at least 1, got -3"),
        (["--rounds", "-1"], r"rounds must not be negative, got -1"),
        (["--samples", "0"], r"samples must be at least 1"),
        (["--pool-subsample", "-5"], r"pool_subsample must not be negative"),
        (["--pool-subsample", "3"], r"pool_subsample \(3\) must be at least query_size \(10\)"),
        (["--seed", "-1"], r"seed must not be negative"),
    ],
    ids=["zero query", "negative initial", "negative rounds", "zero samples", "negative subsample", "subsample < query", "negative seed"],
)
def test_zero_or_negative_sizes(here: Path, args: list[str], message: str) -> None:
    refused(here, ["run", *args, "--out", "run"], message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[backend]\nbatch_size = 0\n", r"batch_size"),
        ("[backend]\nlr = -0.1\n", r"lr"),
        ('[backend]\nname = "ensemble"\nmembers = 0\n', r"members"),
        ('[backend]\nname = "vi"\nkl_weight = -1.0\n', r"kl_weight"),
    ],
    ids=["batch size 0", "negative lr", "no members", "negative kl weight"],
)
def test_zero_or_negative_backend_settings(here: Path, text: str, message: str) -> None:
    refused(here, ["run", *toml(here, text), "--out", "run"], message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('schedule = "typiclust"\n', r"schedule must be \[\[schedule\]\] tables, each with until = N labels and strategy = NAME"),
        ("[[schedule]]\nuntil = 50\n", r"schedule\[0\] needs strategy"),
        ('[[schedule]]\nuntil = "fifty"\nstrategy = "typiclust"\n', r"schedule\[0\]\.until must be int"),
        ('[[schedule]]\nuntil = 50\nstrategy = "typiclust"\ncolour = 1\n', r"unknown key schedule\[0\]\.colour"),
        ('[[schedule]]\nuntil = 20\nstrategy = "typiclust"\n', r"schedule step until = 20 never applies: .*initial = 20"),
        ('[[schedule]]\nuntil = 60\nstrategy = "typiclust"\n[[schedule]]\nuntil = 40\nstrategy = "probcover"\n', r"until = 40 never applies"),
        ('[[schedule]]\nuntil = 50\nstrategy = "typiclus"\n', r"unknown strategy 'typiclus'; choose one of: "),
        ("epig_targets = 0\n", r"epig_targets must be at least 1, got 0"),
        ('epig_target_inputs = "labels"\n', r"epig_target_inputs must be one of pool, validation, test or the path of a \.npy file"),
        ("target_classes = []\n", r"target_classes must be one or more distinct class indices"),
        ("target_classes = [1, 1]\n", r"target_classes must be one or more distinct class indices"),
        ("target_classes = [1, 12]\n", r"target_classes must be class indices of digits, 0\.\.9; got \[1, 12\]"),
    ],
    ids=["schedule not tables", "schedule step without strategy", "schedule until not int", "schedule unknown key",
         "schedule step at initial", "schedule not increasing", "schedule unknown strategy", "no EPIG targets",
         "unknown EPIG target set", "no target classes", "target class twice", "target class out of range"],
)  # fmt: skip
def test_strategy_settings(here: Path, text: str, message: str) -> None:
    refused(here, ["run", *toml(here, text), "--out", "run"], message)


def test_epig_target_sets_that_are_missing_or_not_inputs(here: Path) -> None:
    refused(here, ["run", "--strategy", "epig", *toml(here, 'epig_target_inputs = "validation"\n'), "--out", "run"],
            r"epig_target_inputs = 'validation', but digits has no validation set here; set validation = N")  # fmt: skip
    np.save(here / "targets.npy", np.zeros((4, 8, 8), dtype=np.float32))
    refused(here, ["run", "--strategy", "epig", *toml(here, f'epig_target_inputs = "{here / "targets.npy"}"\n'), "--out", "run"],
            r"targets\.npy must hold numbers of shape \[M, 64\] like the pool's items; got float32 \[4, 8, 8\]")  # fmt: skip
    np.save(here / "targets.npy", np.full((4, 64), np.nan, dtype=np.float32))
    refused(here, ["run", "--strategy", "epig", *toml(here, f'epig_target_inputs = "{here / "targets.npy"}"\n'), "--out", "run"], r"NaN or infinite")
    refused(here, ["run", "--strategy", "epig", *toml(here, 'epig_target_inputs = "nowhere.npy"\n'), "--out", "run"], r"nowhere\.npy: cannot read it")


class PlainBackend:
    """The Backend protocol and nothing more: MC dropout without its embeddings."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def fit(self, x, y, *, generator):  # type: ignore[no-untyped-def]
        self.inner.fit(x, y, generator=generator)
        return self

    def sample_networks(self, k, *, generator):  # type: ignore[no-untyped-def]
        return self.inner.sample_networks(k, generator=generator)

    def state_dict(self):  # type: ignore[no-untyped-def]
        return self.inner.state_dict()

    def load_state_dict(self, state):  # type: ignore[no-untyped-def]
        self.inner.load_state_dict(state)


@pytest.mark.parametrize(("strategy", "what"), [("coreset", r"penultimate features \(embed\)"), ("badge", r"last-layer gradient embeddings \(gradient_embed\)")])
def test_an_embedding_strategy_on_a_backend_without_embeddings(here: Path, monkeypatch: pytest.MonkeyPatch, strategy: str, what: str) -> None:
    from alab.backends import BACKENDS
    from alab.backends.mc_dropout import make_mc_dropout

    monkeypatch.setitem(BACKENDS._items, "plain", lambda params, **kwargs: PlainBackend(make_mc_dropout(params, **kwargs)))
    refused(here, ["run", "--backend", "plain", "--strategy", strategy, "--out", "run"],
            rf"strategy '{strategy}' needs the fitted model's {what}, which backend 'plain' does not give; use another backend")  # fmt: skip
    schedule = '[[schedule]]\nuntil = 50\nstrategy = "typiclust"\n'  # the inputs need no backend: a schedule step is checked too
    refused(here, ["run", "--backend", "plain", "--strategy", "bald", *toml(here, schedule.replace("typiclust", strategy)), "--out", "run"], rf"strategy '{strategy}' needs")


def test_an_initial_set_larger_than_the_pool(here: Path) -> None:
    refused(here, ["run", "--initial", "100000", "--out", "run"], r"initial set of 100000 is larger than the pool \(\d+ items\); lower --initial")


def test_a_query_larger_than_what_is_left(here: Path) -> None:
    refused(here, ["run", "--rounds", "1000", "--query-size", "10", "--out", "run"], r"need 10020 items, but the pool has \d+; lower --rounds or --query-size")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "bladd"], r"unknown strategy 'bladd'; choose one of: badge, bald, "),
        (["--backend", "gp"], r"unknown backend 'gp'; choose one of: ensemble, hmc, laplace, mc_dropout, sgmcmc, swag, vi"),
        (["--dataset", "cifar"], r"unknown dataset 'cifar'; choose one of: "),
        (["--oracle", "crowd"], r"unknown oracle 'crowd'; choose one of: files, labelstudio, simulated, terminal, web"),
        (["--device", "tpu"], r"device must be auto, cpu or cuda, got 'tpu'"),
    ],
    ids=["strategy", "backend", "data set", "oracle", "device"],
)
def test_unknown_names(here: Path, args: list[str], message: str) -> None:
    refused(here, ["run", *args, "--out", "run"], message)


def test_an_unknown_model_name(here: Path) -> None:
    refused(here, ["run", *toml(here, '[backend]\nmodel = "resnet"\n'), "--out", "run"], r"resnet")


def test_an_oracle_option_out_of_range_leaves_no_run_directory(here: Path) -> None:
    refused(here, ["run", *toml(here, '[oracle]\nname = "web"\nport = 70000\n'), "--out", "run"], r"oracle\.port must be in 0\.\.65535, got 70000")


def test_a_labeling_page_port_already_taken_leaves_no_run_directory(here: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["run", *toml(here, f'[oracle]\nname = "web"\nport = {port}\n'), "--out", "run"]
        refused(here, args, rf"cannot serve the labeling page on 127\.0\.0\.1:{port}")


def test_strategy_a_regression_task_cannot_use(here: Path) -> None:
    (here / "table.csv").write_text("a,y\n" + "".join(f"{i},{i * 0.5}\n" for i in range(20)))
    refused(here, ["run", "--dataset", f"csv:{here / 'table.csv'}", "--target", "y", "--strategy", "var_ratios", "--out", "run"],
            r"which a regression data set does not support")  # fmt: skip


# ------------------------------------------------------------------ data


def test_a_missing_data_directory(here: Path) -> None:
    refused(here, ["run", "--dataset", "mnist", "--data-dir", str(here / "nowhere"), "--out", "run"],
            r"mnist: no data directory .*nowhere.*alab datasets fetch mnist")  # fmt: skip


def test_missing_idx_files(here: Path) -> None:
    (here / "mnist").mkdir()
    refused(here, ["run", "--dataset", "mnist", "--data-dir", str(here / "mnist"), "--out", "run"], r"missing from .*mnist")


@pytest.fixture
def synthetic_mnist(here: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Small MNIST-layout IDX files, their checksums patched in as the official ones; the returned function, given a file, makes the IDX data a load reads for it official."""
    synthetic = write_synthetic(here / "mnist")

    def bless(file: str | None = None) -> Path:
        if file is not None:
            path = idx_path(synthetic.directory, file.removesuffix(".gz"))
            assert path is not None
            synthetic.idx_sha256[file] = hashlib.sha256(read_idx_bytes(path)).hexdigest()
        synthetic.official("mnist", monkeypatch)
        return synthetic.directory

    bless()
    return bless


@needs_mnist
def test_an_altered_idx_file(here: Path) -> None:
    # One byte of MNIST's training images flipped, compressed again: a sound gzip file, not the official data.
    directory = mnist_folder(here / "mnist", ("gz",), altered="train-images-idx3-ubyte.gz")
    refused(here, ["run", "--dataset", "mnist", "--data-dir", str(directory), "--out", "run"],
            r"train-images-idx3-ubyte\.gz in .*mnist is truncated or altered: sha256 \w{12}\.\.\. where the official IDX data has ba891046e650\.\.\.; ")  # fmt: skip


def test_a_corrupt_gzip_file(here: Path, synthetic_mnist: Callable[..., Path]) -> None:
    directory = synthetic_mnist()
    path = directory / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    refused(here, ["run", "--dataset", "mnist", "--data-dir", str(directory), "--out", "run"], r"train-images-idx3-ubyte\.gz in .*: not a complete gzip file .*; the file is truncated or corrupt")


def test_a_truncated_idx_file(here: Path, synthetic_mnist: Callable[..., Path]) -> None:
    directory = synthetic_mnist()
    path = directory / "train-labels-idx1-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(path.read_bytes()[:-12])
    refused(here, ["run", "--dataset", "mnist", "--data-dir", str(directory), "--out", "run"], r"train-labels-idx1-ubyte\.gz in .*: not a complete gzip file")
    (directory / "train-labels-idx1-ubyte").write_bytes(data[:-7])  # read before the .gz beside it
    synthetic_mnist("train-labels-idx1-ubyte.gz")  # its bytes made official: the parser refuses them
    refused(here, ["run", "--dataset", "mnist", "--data-dir", str(directory), "--out", "run"], r"train-labels-idx1-ubyte in .*: 41 bytes where its IDX header \(40,\) promises 48; the file is truncated")


def test_an_idx_file_with_the_wrong_magic_number(here: Path, synthetic_mnist: Callable[..., Path]) -> None:
    directory = synthetic_mnist()
    file = "t10k-labels-idx1-ubyte.gz"
    write_idx_gz(directory / file, np.zeros(20, dtype=np.uint8), magic=IMAGES_MAGIC)
    synthetic_mnist(file)
    refused(here, ["run", "--dataset", "mnist", "--data-dir", str(directory), "--out", "run"], r"t10k-labels-idx1-ubyte\.gz.*magic")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("a,b,y\n" + "".join(f"{i},{i % 3},{i}\n" for i in range(9)) + "9,nan,9\n", r"column 'b' is empty or not finite on line 11"),
        ("a,y\n" + "".join(f"{i},{i}\n" for i in range(9)) + "9,inf\n", r"column 'y' is empty or not finite on line 11"),
        ("a,y\n" + "".join(f"{i},{i}\n" for i in range(9)) + "9,-Infinity\n", r"not finite"),
        ("a,y\n" + "".join(f"{i},\n" for i in range(10)), r"column 'y' is empty or not finite"),
    ],
    ids=["NaN feature", "inf target", "-Infinity target", "empty target"],
)
def test_nan_or_infinite_values_in_user_data(here: Path, table: str, message: str) -> None:
    (here / "table.csv").write_text(table)
    refused(here, ["run", "--dataset", f"csv:{here / 'table.csv'}", "--target", "y", "--out", "run"], message)


def test_an_empty_image_folder(here: Path) -> None:
    (here / "pictures").mkdir()
    refused(here, ["run", "--dataset", f"folder:{here / 'pictures'}", "--classes", "cat,dog", "--oracle", "files", "--out", "run"],
            r"no images .* in .*pictures")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", "cat"], r"classes must be two or more distinct non-empty names, got \['cat'\]"),
        (["--classes", "cat,cat"], r"two or more distinct"),
    ],
    ids=["one class named", "one class twice"],
)
def test_a_data_set_with_one_class(here: Path, args: list[str], message: str) -> None:
    (here / "pictures").mkdir()
    refused(here, ["run", "--dataset", f"folder:{here / 'pictures'}", *args, "--oracle", "files", "--out", "run"], message)


def test_a_regression_table_whose_targets_are_all_equal(here: Path) -> None:
    (here / "table.csv").write_text("a,y\n" + "".join(f"{i},3.0\n" for i in range(12)))
    refused(here, ["run", "--dataset", f"csv:{here / 'table.csv'}", "--target", "y", "--out", "run"], r"targets are all equal")


def test_a_data_set_changed_under_a_run(here: Path) -> None:
    table = "a,y\n" + "".join(f"{i},{i * 0.5}\n" for i in range(30))
    (here / "table.csv").write_text(table)
    args = ["run", "--dataset", f"csv:{here / 'table.csv'}", "--target", "y", *toml(here, FAST_TOML), "--rounds", "1", "--initial", "6", "--query-size", "3"]
    assert CliRunner().invoke(app, [*args, "--out", "run"]).exit_code == 0
    (here / "run" / "run.json").write_text((here / "run" / "run.json").read_text().replace('"finished"', '"stopped"'))
    (here / "table.csv").write_text(table.replace("29,14.5", "29,99.0"))
    refused(here, ["resume", "run"], r"has changed since this run started")


# ------------------------------------------------------------------ labels


@pytest.fixture
def waiting(here: Path) -> Path:
    """A digits run with the files oracle, waiting for its initial labels."""
    args = ["run", "--oracle", "files", *toml(here, FAST_TOML), "--initial", "10", "--rounds", "1", "--query-size", "5", "--out", "run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "waiting for labels" in result.stdout, result.output
    return here / "run"


def queried(run_dir: Path) -> list[int]:
    lines = (run_dir / "queries" / "round-0" / "queries.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


@pytest.mark.parametrize(
    ("label", "message"),
    [("10", r"label '10' is not a class \(0, 1, .*9, or 'none' for none of these\); nothing imported"), ("-1", r"'-1' is not a class"), ("cat", r"'cat' is not a class")],
)
def test_a_label_outside_the_class_set_from_a_file(here: Path, waiting: Path, label: str, message: str) -> None:
    items = queried(waiting)
    (here / "answers.csv").write_text(f"index,label\n{items[0]},3\n{items[1]},{label}\n")
    refused(here, ["label", "import", str(waiting), str(here / "answers.csv")], message)


def test_a_label_outside_the_class_set_from_label_studio(here: Path, waiting: Path) -> None:
    item = queried(waiting)[0]
    (here / "export.json").write_text(f'[{{"index": {item}, "label": "banana"}}]')
    refused(here, ["label", "import", str(waiting), str(here / "export.json")], r"'banana' is not a class")


class LyingOracle(SimulatedOracle):
    """An oracle plugin that answers a class the data set does not have."""

    def collect(self, *, timeout: float | None = None):
        labels = super().collect(timeout=timeout)
        return [dataclasses.replace(labels[0], label=10), *labels[1:]]


def test_a_label_outside_the_class_set_from_an_oracle_plugin_is_never_journaled(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Refused at the first answer, before any label: the new run directory is not kept.
    monkeypatch.setitem(ORACLES._items, "lying", lambda context: LyingOracle(context.dataset.y_pool))
    refused(here, ["run", "--oracle", "lying", *toml(here, FAST_TOML), "--out", "run"], r"oracle gave label 10 for item \d+; classes are 0\.\.9")


def test_a_bad_label_after_good_ones_keeps_the_run_and_its_labels(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class LateLiar(SimulatedOracle):
        calls = 0

        def collect(self, *, timeout: float | None = None):
            labels = super().collect(timeout=timeout)
            LateLiar.calls += 1
            return labels if LateLiar.calls == 1 else [dataclasses.replace(labels[0], label=-1)]

    monkeypatch.setitem(ORACLES._items, "late-liar", lambda context: LateLiar(context.dataset.y_pool))
    result = CliRunner().invoke(app, ["run", "--oracle", "late-liar", *toml(here, FAST_TOML), "--out", "run"])
    assert result.exit_code == 2 and re.search(r"oracle gave label -1 for item \d+", result.stderr) and "Traceback" not in result.output
    rows = (here / "run" / "labels.csv").read_text().splitlines()
    assert len(rows) == 1 + 20 and all(",-1," not in row for row in rows)  # the initial set kept, the bad label not
    assert json.loads((here / "run" / "run.json").read_text())["status"] == "failed"
    assert (here / "run" / "checkpoint.pt").exists()  # round 0 was fitted: `alab resume` goes on from there


def test_a_second_label_for_an_item_already_labeled(here: Path, waiting: Path) -> None:
    items = queried(waiting)
    (here / "answers.csv").write_text(f"index,label\n{items[0]},3\n")
    assert CliRunner().invoke(app, ["label", "import", str(waiting), str(here / "answers.csv")]).exit_code == 0
    (here / "answers.csv").write_text(f"index,label\n{items[1]},4\n{items[0]},5\n")
    refused(here, ["label", "import", str(waiting), str(here / "answers.csv")], rf"pool item {items[0]} is already labeled; nothing imported")


def test_the_same_item_twice_in_one_file(here: Path, waiting: Path) -> None:
    items = queried(waiting)
    (here / "answers.csv").write_text(f"index,label\n{items[0]},3\n{items[0]},4\n")
    refused(here, ["label", "import", str(waiting), str(here / "answers.csv")], rf"pool item {items[0]} is answered twice")


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("idx,lbl\n1,2\n", ".csv", r"needs the columns index and label"),
        ("index,label\nseven,3\n", ".csv", r"index 'seven' is not a pool index"),
        ("[{", ".json", r"is not valid JSON"),
        ('{"a": 1}', ".json", r"not a Label Studio export"),
    ],
    ids=["wrong columns", "index not a number", "broken JSON", "JSON not a list"],
)
def test_malformed_answer_files(here: Path, waiting: Path, text: str, suffix: str, message: str) -> None:
    (here / f"answers{suffix}").write_text(text)
    refused(here, ["label", "import", str(waiting), str(here / f"answers{suffix}")], message)


def test_resume_of_something_that_is_not_a_run(here: Path) -> None:
    (here / "empty").mkdir()
    refused(here, ["resume", "empty"], r"empty is not a run directory \(no config\.toml\)")
    refused(here, ["resume", "nowhere"], r"nowhere is not a directory")


@pytest.mark.parametrize("text", ['{"status": "stopp', "[1, 2]\n", "\xff\xfe"], ids=["torn JSON", "not an object", "not UTF-8"])
def test_a_damaged_run_json_is_refused_not_read_as_empty(here: Path, waiting: Path, text: str) -> None:
    (waiting / "run.json").write_bytes(text.encode("latin-1"))  # an empty one would skip the data-set checksum guard
    refused(here, ["resume", str(waiting)], r"run\.json is damaged \(.*\); restore it, or delete it to resume without the data-set check")


def test_a_second_run_into_the_same_directory(here: Path, waiting: Path) -> None:
    refused(here, ["run", "--out", str(waiting)], r"already holds a run; continue it with `alab resume")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "missing.toml"], r"config file missing\.toml does not exist"),
        (["compare", "--strategies", "bald,nope", "--seeds", "1", "--out", "cmp"], r"unknown strategy 'nope'"),
        (["compare", "--set", "rounds", "--out", "cmp"], r"--set takes KEY=VALUE"),
        (["compare", "--set", "rounds=-3", "--out", "cmp"], r"rounds must not be negative, got -3"),
        (["compare", "--seeds", "0", "--out", "cmp"], r"compare\.seeds must be at least 1"),
        (["report", "nowhere"], r"nowhere is not a directory"),
        (["datasets", "fetch", "digits"], r"nothing to fetch for 'digits'"),
    ],
    ids=["missing recipe", "unknown strategy", "--set without =", "negative override", "no seeds", "report nowhere", "fetch embedded"],
)
def test_compare_report_and_fetch_mistakes(here: Path, args: list[str], message: str) -> None:
    refused(here, args, message)


# ------------------------------------------------------------------ a real process, and --debug


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--config", "recipe.toml"], "is not valid TOML"),
        (["label", "import", "nowhere", "answers.csv"], "not a run directory"),
        (["run", "--dataset", "diabetes", "--strategy", "batchbald"], "strategy 'batchbald' selects its batch jointly from the candidates' class log-probabilities, which a regression data set does not support"),
    ],
    ids=["malformed recipe", "not a run", "joint strategy on regression"],
)
def test_real_process(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "recipe.toml").write_text("rounds = = 3\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "alab", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.toml"]


def test_debug_shows_the_traceback(here: Path) -> None:
    result = CliRunner().invoke(app, ["--debug", "run", "--strategy", "bladd", "--out", "run"])
    assert result.exit_code != 0 and result.exception is not None and "unknown strategy 'bladd'" in str(result.exception)
    assert not (here / "run").exists()
