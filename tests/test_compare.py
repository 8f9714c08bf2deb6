"""Comparisons: grid expansion, recipe errors, resume of a killed compare, the CLI, and the Ray executor."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from alab.compare import CellTask, LocalExecutor, RayExecutor, load_comparison, run_comparison
from alab.errors import AlabError
from alab.loop import start_run
from labeling_helpers import refused

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "strategies").glob("*.toml"))
# Fast cells: digits, tiny training, few samples.
FAST = 'dataset = "digits"\ninitial = 20\nquery_size = 10\nsamples = 4\n[backend]\nepochs = 1\nmin_steps = 20\n'


def recipe(tmp_path: Path, compare: str, run: str = FAST) -> Path:
    path = tmp_path / "recipe.toml"
    run_keys, _, backend = run.partition("[backend]")
    path.write_text(f"{run_keys}[backend]{backend}[compare]\n{compare}\n")
    return path


def alab(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "alab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def test_grid_expands_strategies_seeds_backends_and_datasets(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'strategies = ["bald", "random"]\nseeds = [3, 5]\nbackends = ["mc_dropout"]\ndatasets = ["digits", "csv:a/b.csv"]')
    comparison = load_comparison(path, {"rounds": 2})
    cells = comparison.cells()
    assert [c.name for c in cells[:4]] == ["digits-mc_dropout-bald-s3", "digits-mc_dropout-bald-s5",
                                           "digits-mc_dropout-random-s3", "digits-mc_dropout-random-s5"]  # fmt: skip
    assert cells[-1].name == "csv_a_b.csv-mc_dropout-random-s5"
    assert len(cells) == len({c.name for c in cells}) == 2 * 2 * 1 * 2
    assert {(c.config.strategy, c.config.seed, c.config.dataset) for c in cells} == {
        (s, seed, d) for s in ("bald", "random") for seed in (3, 5) for d in ("digits", "csv:a/b.csv")
    }
    assert all(c.config.rounds == 2 and c.config.backend.params == {"epochs": 1, "min_steps": 20} for c in cells)
    assert comparison.out == Path("results/recipe")


def test_flags_override_the_recipe(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'strategies = ["bald", "random"]\nseeds = 3\ndatasets = ["digits", "mnist"]\nworkers = 3')
    comparison = load_comparison(
        path, {"seeds": 2, "strategies": ["max_entropy"], "dataset": "digits", "workers": 1}, settings=["backend.min_steps=7", "samples=2"]
    )
    assert [c.name for c in comparison.cells()] == ["max_entropy-s0", "max_entropy-s1"]  # one data set: no axis
    assert comparison.base.backend.params["min_steps"] == 7 and comparison.base.samples == 2
    assert comparison.table.workers == 1


def test_flag_form_without_a_recipe() -> None:
    comparison = load_comparison(None, {"strategies": ["bald", "random"], "seeds": 1})
    assert [c.name for c in comparison.cells()] == ["bald-s0", "random-s0"]
    assert comparison.out == Path("results/bald-random-digits")


@pytest.mark.parametrize(
    ("compare", "settings", "message"),
    [
        ('strategies = ["bald"]\nbogus = 1', [], "unknown key compare.bogus; valid keys: strategies, seeds"),
        ('strategies = ["bald"]\nseeds = 0', [], "compare.seeds must be at least 1"),
        ('strategies = "bald"', [], "compare.strategies must be list"),
        ('strategies = ["bald", "bald"]', [], "distinct"),
        ('targets = [90]', [], "compare.targets are accuracies in (0, 1]"),
        ("workers = 0", [], "compare.workers must be at least 1"),
        ('paper = { unit = "total", statistic = "median", labels_to_reach = { "ninety" = { bald = 1 } } }', [], "target accuracies like"),
        ('paper = { labels_to_reach = { "0.90" = { bald = 1 } } }', [], "compare.paper.unit must be one of total, acquired"),
        ('paper = { unit = "acquired", statistic = "mean", labels_to_reach = {} }', [], "compare.paper.statistic must be one of mean_curve, median"),
        ('paper = { unit = "total", statistic = "median", labels_to_reach = { "0.9" = { bald = { value = 5, low = 9, high = 2 } } } }', [], "0 <= low <= high"),
        ("seeds = 1", ["backend.min_steps"], "--set takes KEY=VALUE"),
        ("seeds = 1", ["bogus=1"], "unknown key config.bogus"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path: Path, compare: str, settings: list[str], message: str) -> None:
    with pytest.raises(AlabError) as err:
        load_comparison(recipe(tmp_path, compare), settings=settings)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_run_keys_strategy_and_seed_belong_in_the_compare_table(tmp_path: Path) -> None:
    with pytest.raises(AlabError, match="not `strategy`"):
        load_comparison(recipe(tmp_path, "seeds = 1", run='strategy = "bald"\n' + FAST))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_load(path: Path) -> None:
    from alab.acquisition.auto import AUTO
    from alab.acquisition.strategies import STRATEGIES

    comparison = load_comparison(path)
    assert comparison.cells()
    assert not [s for s in comparison.table.strategies if s not in STRATEGIES and s != AUTO]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "--strategies", "bald,nope", "--seeds", "1"], "unknown strategy 'nope'"),
        (["compare", "--seeds", "0"], "compare.seeds must be at least 1"),
        (["compare", "--executor", "dask"], "unknown executor 'dask'"),
        (["compare", "/nonexistent.toml"], "does not exist"),
        (["compare", "--dataset", "mnist", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["compare", "--strategies", "bald,batchbald", "--seeds", "1", "--dataset", "diabetes", "--rounds", "1"],
         "strategy 'batchbald' selects its batch jointly from the candidates' class log-probabilities, which a regression data set does not support"),
        (["compare", "--dataset", "digits,diabetes", "--seeds", "1", "--rounds", "1"], "compare.datasets mixes classification and regression"),
        (["report", "/nonexistent"], "not a directory"),
    ],
)
def test_cli_errors_exit_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    """In this process (a real process's exit code: test_bad_input.test_real_process); nothing under tmp_path changes."""
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / "cmp")] if args[0] == "compare" else []
    refused(tmp_path, [*args, *out], re.escape(message))
    assert not (tmp_path / "cmp").exists()


def test_a_regression_compare_reports_rmse(tmp_path: Path) -> None:
    run = 'dataset = "diabetes"\ninitial = 20\nquery_size = 10\nsamples = 4\n[backend]\nepochs = 1\nmin_steps = 20\n'
    path = recipe(tmp_path, 'strategies = ["bald", "random"]\nseeds = 2\nworkers = 1', run=run)
    result = alab("compare", str(path), "--rounds", "1", "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "| data set | backend | strategy | seeds | AUC of RMSE (lower is better) | final RMSE | final NLL |" in report
    summary = pd.read_csv(tmp_path / "cmp" / "summary.csv")
    assert sorted(summary["strategy"]) == ["bald", "random"] and (summary["seeds"] == 2).all()
    assert {"rmse_auc_mean", "final_rmse_mean", "final_nll_mean", "final_coverage_90_mean", "final_coverage_95_mean"} <= set(summary.columns)
    ranked = summary.sort_values("rmse_auc_mean")["strategy"].tolist()  # lowest first, as report.md lists them
    assert report.index(f"| diabetes | mc_dropout | {ranked[0]} |") < report.index(f"| diabetes | mc_dropout | {ranked[1]} |")
    assert (tmp_path / "cmp" / "learning_curves.png").stat().st_size > 0


def test_a_killed_compare_resumes_and_keeps_finished_cells(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'strategies = ["bald", "random"]\nseeds = 1\nworkers = 1', run=FAST)
    # One cell after the other, each alone, as a run is: the lockstep executor's kills are the crash harness's
    args = ["compare", str(path), "--rounds", "4", "--executor", "local"]
    cells = {c.name: c for c in load_comparison(path, {"rounds": 4}).cells()}
    # One thread on one core, here and in the compare (its worker takes the cores it may use): the
    # curves are compared bit for bit, and a multi-threaded BLAS may split its sums by the cores it
    # finds free (CI once saw the NLL of one round differ in its 10th digit). The crash harness
    # compares its runs on one thread for the same reason.
    core = {min(os.sched_getaffinity(0))}
    one_core = lambda: os.sched_setaffinity(0, core)  # noqa: E731
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start_run(cells["random-s0"].config, tmp_path / "reference", echo=lambda line: None)  # a cell is a run
    finally:
        torch.set_num_threads(threads)

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "alab", *args, "--out", str(out)], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               preexec_fn=one_core)  # fmt: skip
    second = out / "cells" / "random-s0" / "curve.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if second.exists() and len(second.read_text().splitlines()) >= 3:  # the second cell is inside round 2
            break
        time.sleep(0.02)
    if process.poll() is not None:
        pytest.fail("the compare finished before it could be killed; make it longer")
    os.killpg(process.pid, signal.SIGKILL)  # the compare and its worker, mid-cell
    process.wait()
    first = out / "cells" / "bald-s0"
    assert '"status": "finished"' in (first / "run.json").read_text()
    assert '"status": "running"' in (out / "cells" / "random-s0" / "run.json").read_text()
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.iterdir()}

    result = alab(*args, "--out", str(out), cwd=tmp_path, preexec_fn=one_core)
    assert result.returncode == 0, result.stderr
    assert '"threads": 1' in (first / "timing.json").read_text()  # the worker saw the one core
    assert "1 of 2 cells already finished; kept" in result.stderr
    assert "random-s0: finished" in result.stderr
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.iterdir()} == kept
    columns = ["round", "n_labeled", "accuracy", "nll", "mean_bald"]
    curves = pd.read_csv(out / "curves.csv")
    resumed = curves[curves["strategy"] == "random"][columns].reset_index(drop=True)
    expected = pd.read_csv(tmp_path / "reference" / "curve.csv")[columns]
    pd.testing.assert_frame_equal(resumed, expected, check_exact=True)  # the uninterrupted run's curve
    assert len(curves[curves["strategy"] == "bald"]) == 5
    for name in ("summary.csv", "report.md", "learning_curves.png", "learning_curves.svg"):
        assert (out / name).exists()


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc's parent links."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie has ended; only its parent has not collected it
            alive.add(pid)
    return alive


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["kill", "kill -9"])
def test_a_killed_compare_leaves_no_worker_running(tmp_path: Path, how: int) -> None:
    path = recipe(tmp_path, 'strategies = ["bald", "random"]\nseeds = 1\nworkers = 2', run=FAST)
    out = tmp_path / "grid"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "alab", "compare", str(path), "--rounds", "30", "--out", str(out)],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not all((out / "cells" / c / "curve.csv").exists() for c in ("bald-s0", "random-s0")):
        assert process.poll() is None and time.monotonic() < deadline, "the cells never started"
        time.sleep(0.05)
    workers = _descendants(process.pid)
    assert workers
    os.kill(process.pid, how)  # the driver alone, not its process group
    process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers), "workers ran on after the comparison's process ended"
    if how == signal.SIGTERM:  # stopped as by Ctrl-C: the cells record it, and the compare says how to resume
        assert process.returncode == 130 and "run the same `alab compare` command to resume" in process.stderr.read()
        for cell in ("bald-s0", "random-s0"):
            assert '"status": "stopped"' in (out / "cells" / cell / "run.json").read_text()


def test_a_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'strategies = ["random"]\nseeds = 1\nworkers = 1')
    comparison = load_comparison(path, {"rounds": 1}, out=tmp_path / "cmp")
    run_comparison(comparison, echo=lambda line: None)
    again = load_comparison(path, {"rounds": 2}, out=tmp_path / "cmp")
    with pytest.raises(AlabError, match="started with other settings"):
        run_comparison(again, echo=lambda line: None)


def test_ray_executor_runs_cells_on_a_local_ray(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (or '.[dev]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        comparison = load_comparison(recipe(tmp_path, 'strategies = ["bald", "random"]\nseeds = 1'), {"rounds": 1}, out=tmp_path / "cmp")
        results = run_comparison(comparison, RayExecutor(), echo=lambda line: None)
    finally:
        ray.shutdown()
    assert sorted((r.name, r.status) for r in results) == [("bald-s0", "finished"), ("random-s0", "finished")]
    summary = pd.read_csv(tmp_path / "cmp" / "summary.csv")
    assert sorted(summary["strategy"]) == ["bald", "random"]
    assert all(len(pd.read_csv(tmp_path / "cmp" / "cells" / c / "curve.csv")) == 2 for c in ("bald-s0", "random-s0"))


def test_a_stop_between_two_results_stops_the_running_cells_and_starts_no_queued_one(tmp_path: Path) -> None:
    """A Ctrl-C (or `kill`) that lands while the driver handles a finished cell, not while it waits.

    It is raised outside the executor's generator, which is then closed: the cells running must
    record "stopped" at once, and the cells queued to the workers must not start.
    """
    path = recipe(tmp_path, 'strategies = ["bald", "random"]\nseeds = 3\nworkers = 1', run=FAST)
    comparison = load_comparison(path, {"rounds": 30}, out=tmp_path / "cmp")
    first, *rest = comparison.cells()
    tasks = [CellTask(dataclasses.replace(first.config, rounds=1), tmp_path / "cmp" / "cells" / first.name)]
    tasks += [CellTask(c.config, tmp_path / "cmp" / "cells" / c.name) for c in rest]
    results = LocalExecutor(1, lockstep=False).run(tasks)
    assert next(results).status == "finished"  # the short cell; the next one is running, more are queued
    second = tasks[1].run_dir / "curve.csv"
    deadline = time.monotonic() + 120
    while not second.exists():
        assert time.monotonic() < deadline, "the second cell never started"
        time.sleep(0.05)
    start = time.monotonic()
    results.close()  # what an exception in the driver's loop body does to the generator
    assert time.monotonic() - start < 30, "closing the executor waited for the cells to run to the end"
    assert '"status": "stopped"' in (tasks[1].run_dir / "run.json").read_text()
    assert len(pd.read_csv(second)) < 31
    started = [t.run_dir.name for t in tasks[2:] if (t.run_dir / "run.json").exists()]
    assert started == [], f"queued cells started after the stop: {started}"
