"""Crash injection: SIGKILL runs at random moments, resume them, and check that nothing is lost or torn.

    python tests/crash_harness.py --kills 500            # the full check (2.5 min on 2 idle cores)
    python tests/crash_harness.py --kills 50 --seed 3    # what CI runs (tests/test_crash_injection.py)

Each trial starts a small run in a forked child and kills it with SIGKILL at one moment, resumes it
in a new child (killing that one too, at another moment), and so on until a child finishes. One
case is a lockstep batch (`alab.lockstep.run_lockstep`): two cells in one process, their fits
trained as one stack; every kill takes both, and each cell must resume to the curve of an
uninterrupted lockstep batch. A kill
lands at one of these moments, drawn at random, with a random n:

    timed    the harness kills the child after a random delay within an uninterrupted run's duration
    fit      inside training, before the n-th optimizer step
    score    inside scoring, in the n-th chunk of the pool
    journal  after the n-th append to labels.csv returned (the label is on disk; not acknowledged,
             no checkpoint yet)
    rename   inside the n-th atomic write, its temporary file complete, before the rename
    torn     inside the n-th atomic write, half of its temporary file written
    report   while writing the run's report (the curve plot), after rendering, before the file

After every kill the files on disk are checked: labels.csv ends with a whole line and is a prefix
of the uninterrupted run's journal (no torn line, no duplicate, nothing lost that was written);
config.toml equals the uninterrupted run's; run.json parses; checkpoint.pt loads; curve.csv is a
prefix of the uninterrupted curve; curve.png, if there, is a whole PNG. After the last resume the run
is finished, its curve equals the uninterrupted one (timing columns aside) and its journal is
byte-identical, and no temporary file is left behind.

The harness process itself never runs torch: every run, the uninterrupted reference runs included,
is a child forked from it with one torch thread, so forking is safe and all runs compute the same.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.figure
import sklearn.datasets  # noqa: F401  (the digits loader's; imported once here, not in every child)
import torch
import torch._dynamo  # noqa: F401  (what torch.optim imports on first use: 2 s a child otherwise)

import alab.report
import alab.scoring
import alab.storage
from alab.compare import CellTask
from alab.config import BackendConfig, RunConfig, ScheduleStep
from alab.lockstep import run_lockstep
from alab.loop import resume_run, start_run

KINDS = ("timed", "fit", "score", "journal", "rename", "torn", "report")
TIMING_COLUMNS = ("train_seconds", "score_seconds", "select_seconds")

# Small runs of several kinds: each a few seconds, each with rounds, checkpoints and a plot to kill.
CONFIGS = {
    "mc_dropout-bald": RunConfig(
        strategy="bald", dataset="digits", initial=10, query_size=5, rounds=4, samples=4, chunk_size=128,
        backend=BackendConfig("mc_dropout", {"epochs": 1, "min_steps": 30}),
    ),
    "ensemble-typiclust-badge": RunConfig(  # a schedule, and embedding rules: the inputs, then gradient embeddings
        strategy="badge", dataset="digits", initial=10, query_size=5, rounds=3, samples=3, chunk_size=128,
        schedule=(ScheduleStep(15, "typiclust"),), backend=BackendConfig("ensemble", {"members": 3, "epochs": 1, "min_steps": 30}),
    ),
    "vi-batchbald": RunConfig(
        strategy="batchbald", dataset="digits", initial=10, query_size=3, rounds=3, samples=4, chunk_size=128,
        backend=BackendConfig("vi", {"epochs": 1, "min_steps": 30}),
    ),
}  # fmt: skip
# A lockstep batch: these runs in one process, a thread each, in <trial>/cell-<i>/.
LOCKSTEP = {
    "lockstep-bald-random": (
        CONFIGS["mc_dropout-bald"], dataclasses.replace(CONFIGS["mc_dropout-bald"], strategy="random", seed=1),
    ),
}  # fmt: skip
CASES: dict[str, tuple[RunConfig, ...]] = {**{name: (config,) for name, config in CONFIGS.items()}, **LOCKSTEP}


def cell_dirs(name: str, run_dir: Path) -> list[Path]:
    """Where a case's runs are: the run directory itself, or one per cell of a lockstep batch."""
    return [run_dir / f"cell-{i}" for i in range(len(CASES[name]))] if name in LOCKSTEP else [run_dir]


# ------------------------------------------------------------------ the child: one run, killed at a moment


class Moments:
    """Counts the events of each kind in this process; SIGKILLs it at the planned one."""

    def __init__(self, kind: str | None, n: int) -> None:
        self.kind, self.n, self.counts = kind, n, Counter()

    def tick(self, kind: str) -> bool:
        """Count one event; True if this is the planned moment (the caller then kills at the right point)."""
        self.counts[kind] += 1
        return kind == self.kind and self.counts[kind] == self.n

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def install(moments: Moments) -> None:
    """Patch the points where the moments are (this child only: it is a forked copy)."""
    adam_step = torch.optim.Adam.step

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        if moments.tick("fit"):
            moments.die()
        return adam_step(self, *args, **kwargs)

    torch.optim.Adam.step = step  # type: ignore[method-assign]

    bald = alab.scoring.bald

    def scoring_bald(log_probs_K_N_C: torch.Tensor) -> torch.Tensor:
        if moments.tick("score"):
            moments.die()
        return bald(log_probs_K_N_C)

    alab.scoring.bald = scoring_bald  # type: ignore[assignment]

    append = alab.storage.LabelsJournal.append

    def journal_append(self: Any, labels: Any, round_: int) -> Any:
        entries = append(self, labels, round_)
        if entries and moments.tick("journal"):
            moments.die()
        return entries

    alab.storage.LabelsJournal.append = journal_append  # type: ignore[method-assign]

    replace = os.replace

    def rename(src: Any, dst: Any) -> None:
        if moments.tick("rename"):
            moments.die()
        replace(src, dst)

    os.replace = rename  # type: ignore[assignment]

    atomic_write_bytes = alab.storage.atomic_write_bytes

    def torn_write(path: Path, data: bytes) -> None:
        if moments.tick("torn"):
            with open(alab.storage.temporary_path(Path(path)), "wb") as f:
                f.write(data[: len(data) // 2])
            moments.die()
        atomic_write_bytes(path, data)

    alab.storage.atomic_write_bytes = torn_write  # type: ignore[assignment]
    alab.report.atomic_write_bytes = torn_write  # type: ignore[attr-defined]

    savefig = matplotlib.figure.Figure.savefig

    def report_savefig(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = savefig(self, *args, **kwargs)
        if moments.tick("report"):
            moments.die()
        return result

    matplotlib.figure.Figure.savefig = report_savefig  # type: ignore[method-assign]


def child(name: str, run_dir: Path, kind: str | None, n: int, counts_path: Path | None) -> None:
    """Start or resume the case's runs in `run_dir`; exit 0 when they finish, 3 on an exception (never returns)."""
    code = 0
    try:
        log = os.open(run_dir.parent / f"{run_dir.name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 2)
        torch.set_num_threads(1)
        moments = Moments(kind, n)
        install(moments)
        quiet = lambda line: None  # noqa: E731
        if name in LOCKSTEP:
            tasks = [CellTask(config, cell) for config, cell in zip(CASES[name], cell_dirs(name, run_dir))]
            failed = [r for r in run_lockstep(tasks, 1) if r.status != "finished"]
            if failed:
                raise RuntimeError(f"lockstep cells did not finish: {failed}")
        elif (run_dir / "config.toml").exists():
            resume_run(run_dir, echo=quiet)
        else:  # killed before config.toml was whole: what a person does is run it again
            start_run(CASES[name][0], run_dir, echo=quiet)
        if counts_path is not None:
            counts_path.write_text(json.dumps(moments.counts))
    except BaseException:
        traceback.print_exc()
        code = 3
    finally:
        sys.stderr.flush()
        os._exit(code)


def fork_run(name: str, run_dir: Path, kind: str | None = None, n: int = 0, *, kill_after: float | None = None,
             counts_path: Path | None = None) -> str:  # fmt: skip
    """Run one child to its end; 'finished', 'killed' or 'failed'."""
    pid = os.fork()
    if pid == 0:
        child(name, run_dir, kind, n, counts_path)
    if kill_after is not None:
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.005)
        else:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    else:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    return "finished" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "failed"


# ------------------------------------------------------------------ checks


def curve_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


@dataclass
class Reference:
    """An uninterrupted run of one config: its files, duration and event counts (of its whole case)."""

    seconds: float
    counts: dict[str, int]
    journal: bytes
    config_toml: bytes
    curve: list[dict[str, str]]


def check_after_kill(run_dir: Path, ref: Reference) -> list[str]:
    """What is wrong with the files a killed run left; [] when nothing is."""
    problems = []
    journal = run_dir / "labels.csv"
    if journal.exists():
        data = journal.read_bytes()
        if data and not data.endswith(b"\n"):
            problems.append("labels.csv ends with a torn line")
        if not ref.journal.startswith(data):
            problems.append("labels.csv is not a prefix of the uninterrupted journal (lost, duplicated or altered rows)")
        indices = [row[0] for row in csv.reader(io.StringIO(data.decode()))][1:]
        if len(indices) != len(set(indices)):
            problems.append("labels.csv labels an item twice")
    if (run_dir / "config.toml").exists() and (run_dir / "config.toml").read_bytes() != ref.config_toml:
        problems.append("config.toml differs from the uninterrupted run's")
    if (run_dir / "run.json").exists():
        try:
            json.loads((run_dir / "run.json").read_text())
        except ValueError:
            problems.append("run.json is corrupt")
    if (run_dir / "checkpoint.pt").exists():
        try:
            torch.load(run_dir / "checkpoint.pt", weights_only=True)
        except Exception as err:  # noqa: BLE001 (any failure to load is the finding)
            problems.append(f"checkpoint.pt does not load: {type(err).__name__}")
    if (run_dir / "curve.csv").exists():
        rows = curve_rows(run_dir / "curve.csv")
        if rows != ref.curve[: len(rows)]:
            problems.append("curve.csv is not a prefix of the uninterrupted curve")
    if (run_dir / "curve.png").exists():
        from PIL import Image

        try:
            with Image.open(run_dir / "curve.png") as image:
                image.load()
        except Exception as err:  # noqa: BLE001
            problems.append(f"curve.png is not a whole PNG: {type(err).__name__}")
    return problems


def check_finished(run_dir: Path, ref: Reference) -> list[str]:
    problems = check_after_kill(run_dir, ref)
    if json.loads((run_dir / "run.json").read_text()).get("status") != "finished":
        problems.append("the resumed run did not finish")
    if curve_rows(run_dir / "curve.csv") != ref.curve:
        problems.append("the resumed run's curve differs from the uninterrupted one")
    if (run_dir / "labels.csv").read_bytes() != ref.journal:
        problems.append("the resumed run's labels.csv differs from the uninterrupted one")
    leftovers = sorted(p.name for p in run_dir.rglob(".*.tmp"))
    if leftovers:
        problems.append(f"temporary files left behind: {', '.join(leftovers)}")
    return problems


# ------------------------------------------------------------------ the harness


def reference(name: str, root: Path) -> list[Reference]:
    """The uninterrupted runs of a case, one Reference per run directory."""
    run_dir = root / f"reference-{name}"
    counts_path = root / f"reference-{name}.counts.json"
    start = time.perf_counter()
    outcome = fork_run(name, run_dir, counts_path=counts_path)
    seconds = time.perf_counter() - start
    if outcome != "finished":
        raise SystemExit(f"the uninterrupted {name} run {outcome}; see {run_dir}.log")
    return [
        Reference(
            seconds, json.loads(counts_path.read_text()), (cell / "labels.csv").read_bytes(),
            (cell / "config.toml").read_bytes(), curve_rows(cell / "curve.csv"),
        )
        for cell in cell_dirs(name, run_dir)
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs to inject, over as many trials as that takes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # the children's progress bars: inherited when they fork
    with tempfile.TemporaryDirectory(prefix="alab-crash-") as tmp:
        root = args.root or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        return harness(args.kills, args.seed, root)


def trial(name: str, refs: list[Reference], run_dir: Path, rng: random.Random, budget: int) -> tuple[list[str], list[str]]:
    """Kill one case's runs at random moments (at most `budget` kills), resume them to the end; (moments killed at, problems)."""
    kills: list[str] = []
    cells = cell_dirs(name, run_dir)
    ref = refs[0]  # the case's duration and event counts

    def checked(check: Any) -> list[str]:
        return [f"{cell.name}: {p}" if len(cells) > 1 else p for cell, r in zip(cells, refs) for p in check(cell, r)]

    while len(kills) < budget:
        kind = rng.choice(KINDS)
        n = rng.randint(1, max(1, ref.counts.get(kind, 1)))
        kill_after = rng.uniform(0, ref.seconds) if kind == "timed" else None
        outcome = fork_run(name, run_dir, None if kind == "timed" else kind, n, kill_after=kill_after)
        if outcome == "failed":
            return kills, [f"a run failed; see {run_dir}.log"]
        if outcome == "finished":  # the moment did not come before the end
            return kills, checked(check_finished)
        kills.append(f"timed@{kill_after:.2f}s" if kill_after is not None else f"{kind}#{n}")
        problems = checked(check_after_kill)
        if problems:
            return kills, problems
    if fork_run(name, run_dir) != "finished":
        return kills, [f"the last resume failed; see {run_dir}.log"]
    return kills, checked(check_finished)


def harness(kills: int, seed: int, root: Path) -> int:
    rng = random.Random(seed)
    start = time.perf_counter()
    refs = {name: reference(name, root) for name in CASES}
    for name, (ref, *_) in refs.items():
        events = ", ".join(f"{kind} {ref.counts.get(kind, 0)}" for kind in KINDS[1:])
        print(f"uninterrupted {name}: {ref.seconds:.1f} s; events {events}", flush=True)
    killed: Counter[str] = Counter()
    failures: list[str] = []
    n_trials = 0
    while sum(killed.values()) < kills and len(failures) < 5:
        n_trials += 1
        name = rng.choice(list(CASES))
        moments, problems = trial(name, refs[name], root / f"trial-{n_trials:04d}-{name}", rng, kills - sum(killed.values()))
        killed.update(moment.split("#")[0].split("@")[0] for moment in moments)
        where = f"trial {n_trials} ({name}, --seed {seed}), killed at {' '.join(moments) or 'no moment'}"
        failures += [f"{where}: {problem}" for problem in problems]
        print(f"trial {n_trials:>3} {name:<24} killed at {' '.join(moments) or '-'}{'  FAIL' if problems else ''}", flush=True)
    total = sum(killed.values())
    print(f"\n{total} kills in {n_trials} trials ({', '.join(f'{kind} {killed[kind]}' for kind in KINDS)}); "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    for failure in failures:
        print(f"FAIL {failure}")
    if failures:
        return 1
    print(f"{total} of {total} kills resumed to the uninterrupted curve and journal, no file torn or corrupt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
