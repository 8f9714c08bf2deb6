"""The step every label-efficiency benchmark repeats: one run from scratch, quietly, timed."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from alab.config import RunConfig
from alab.loop import start_run


def fresh_run(config: RunConfig, run_dir: Path) -> float:
    """Run `config` into `run_dir` (emptied first, so a benchmark can be rerun); its wall-clock seconds."""
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    start_run(config, run_dir, echo=lambda line: None)
    return time.perf_counter() - t0
