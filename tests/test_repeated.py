"""Repeated data sets: three noisy copies of every pool item at j * N + i, the test set untouched;
and BatchBALD through the real loop and command line on repeated-digits."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alab.acquisition.joint import BatchBALD, batchbald
from alab.acquisition.scores import bald
from alab.data import load_dataset
from alab.data.repeated import NOISE_STD, REPETITIONS, original_index
from alab.label_import import import_labels
from alab.loop import build_parts, load_run_config, round_generator
from alab.scoring import candidate_log_probs, score_pool

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def test_repeated_digits_copies_each_item_with_noise() -> None:
    original = load_dataset("digits")
    repeated = load_dataset("repeated-digits")
    N = len(original.y_pool)
    assert len(repeated.y_pool) == REPETITIONS * N
    pool_P = torch.arange(REPETITIONS * N)
    assert torch.equal(repeated.y_pool, original.y_pool[original_index(pool_P, N)])
    noise = repeated.x_pool - original.x_pool[original_index(pool_P, N)]
    torch.testing.assert_close(noise.std().item(), NOISE_STD, rtol=0.02, atol=0)
    torch.testing.assert_close(noise.mean().item(), 0.0, rtol=0, atol=2e-3)
    assert torch.equal(repeated.x_test, original.x_test) and torch.equal(repeated.y_test, original.y_test)
    assert repeated.checksum != original.checksum
    assert torch.equal(load_dataset("repeated-digits", seed=5).x_pool, repeated.x_pool)  # fixed noise


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST files not found at {SHARED_MNIST}")
def test_repeated_mnist_shapes() -> None:
    repeated = load_dataset("repeated-mnist", data_dir=SHARED_MNIST)
    assert repeated.x_pool.shape == (180_000, 1, 28, 28) and repeated.x_test.shape == (10_000, 1, 28, 28)
    assert torch.equal(repeated.y_pool[:60_000], repeated.y_pool[120_000:])


def alab(*args: str) -> None:
    """`python -m alab ARGS` in a subprocess, from the repository root; its stderr if it fails."""
    done = subprocess.run([sys.executable, "-m", "alab", *args], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


def queried(run_dir: Path, round_: int) -> list[int]:
    with open(run_dir / "queries" / f"round-{round_}" / "queries.csv", newline="") as f:
        return [int(row["index"]) for row in csv.DictReader(f)]


def test_batchbald_from_a_recipe_asks_for_the_batch_batchbald_picks(tmp_path: Path) -> None:
    """The command line's round-1 queries are BatchBALD's batch under the K networks of its checkpoint.

    The files oracle stops the run once round 1's queries are chosen, with the round-0 model that chose
    them in checkpoint.pt. From it the test rebuilds the loop's inputs, drawn as the loop draws them
    (`round_generator(seed, round, purpose)`): the subsample of the unlabeled pool, the K sampled
    networks, the candidates by BALD. BatchBALD on those must give the same batch with the same gains.
    """
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        'strategy = "batchbald"\ndataset = "repeated-digits"\noracle = "files"\ninitial = 10\nquery_size = 5\n'
        'rounds = 1\nsamples = 20\npool_subsample = 300\n[backend]\nmin_steps = 100\nepochs = 1\n'
    )
    run_dir = tmp_path / "run"
    alab("run", "--config", str(recipe), "--out", str(run_dir))  # stops for the initial labels
    parts = build_parts(load_run_config(run_dir))
    config, dataset = parts.config, parts.dataset
    _, strategy = parts.strategy_at(config.initial)
    initial = queried(run_dir, 0)
    answers = tmp_path / "answers.csv"
    answers.write_text("index,label\n" + "".join(f"{i},{dataset.classes[int(dataset.y_pool[i])]}\n" for i in initial))
    import_labels(run_dir, answers)  # what `alab label import` calls (in this process: 3 s less)
    alab("resume", str(run_dir))  # fits round 0, chooses round 1's queries, stops for their labels

    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["round"] == 0 and isinstance(strategy, BatchBALD)
    parts.backend.load_state_dict(checkpoint["backend"])
    unlabeled_mask = torch.ones(len(dataset.y_pool), dtype=torch.bool)
    unlabeled_mask[initial] = False
    unlabeled_U = unlabeled_mask.nonzero().squeeze(1)
    pick_U = torch.randperm(len(unlabeled_U), generator=round_generator(config.seed, 0, "subsample"))
    candidates_N = unlabeled_U[pick_U[: config.pool_subsample].sort().values]
    networks = parts.backend.sample_networks(config.samples, generator=round_generator(config.seed, 0, "score"))
    scored = score_pool(networks, dataset.x_pool, candidates_N, bald, chunk_size=config.chunk_size, top_k=strategy.candidates)
    assert scored.top is not None
    top_M = candidates_N[scored.top.indices]  # pool indices, best BALD first
    log_probs_K_M_C = candidate_log_probs(networks, dataset.x_pool, top_M, chunk_size=config.chunk_size)
    picks_B, gains_B = batchbald(
        log_probs_K_M_C, config.query_size, num_samples=strategy.num_samples, generator=round_generator(config.seed, 0, "select")
    )
    expected = top_M[picks_B].tolist()
    assert [q["index"] for q in checkpoint["queries"]] == expected == queried(run_dir, 1)
    torch.testing.assert_close(torch.tensor([q["view"]["score"] for q in checkpoint["queries"]]), gains_B.float())
    # top-k BALD would have asked for another batch: the test tells the two rules apart
    assert set(top_M[: config.query_size].tolist()) != set(expected)
