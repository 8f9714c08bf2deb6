"""How good is each approximate posterior? Test metrics, and BALD over the pool against HMC's.

    python benchmarks/posterior_quality.py                          # digits, 100 and 300 labels, 3 seeds, every backend
    python benchmarks/posterior_quality.py --labels 100 --seeds 1 --backends laplace,hmc

For each labeled-set size and seed: a balanced labeled set drawn by the seed from the digits pool;
every backend fit once on it with its defaults (`swag-head` is SWAG with weights = "head");
K = 20 samples; on the test set the accuracy, NLL, ECE and Brier score of the K-sample predictive;
on the rest of the pool the BALD scores, their Spearman rank correlation with HMC's BALD, and the
overlap of the ten items each ranks highest (|top-10 ∩ HMC's top-10| / 10). HMC (full-batch, 4 chains)
is the reference posterior: `hmc (rerun)` is HMC again from another generator, the ceiling
that the MCMC noise of 20 draws leaves for any backend's agreement with it. Prints a Markdown
table of mean ± std over seeds; per-seed rows go to --out/rows-<backends>.csv, and HMC's fits to
--out/hmc_reference.pt, which a rerun (say, of one backend: --backends swag) reuses.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr

from alab.acquisition.scores import bald, predictive_log_probs
from alab.backends import BACKENDS
from alab.data import balanced_initial, load_dataset
from alab.loop import round_generator
from alab.metrics import evaluate

VARIANTS = {"swag-head": ("swag", {"weights": "head"}), "hmc (rerun)": ("hmc", {})}
DEFAULT = "mc_dropout,ensemble,vi,laplace,swag,swag-head,sgmcmc,hmc,hmc (rerun)"


def fit_and_score(name: str, dataset, labeled_L: torch.Tensor, seed: int, samples: int) -> tuple[dict[str, float], torch.Tensor]:
    """Fit backend `name` on the labeled set; test metrics and the BALD scores of the unlabeled pool."""
    backend_name, params = VARIANTS.get(name, (name, {}))
    backend = BACKENDS.get(backend_name)(params, input_shape=dataset.input_shape, num_classes=len(dataset.classes), device=torch.device("cpu"))
    purpose = "fit-rerun" if name == "hmc (rerun)" else "fit"
    start = time.perf_counter()
    backend.fit(dataset.x_pool[labeled_L], dataset.y_pool[labeled_L], generator=round_generator(seed, len(labeled_L), purpose))
    seconds = time.perf_counter() - start
    networks = backend.sample_networks(samples, generator=round_generator(seed, len(labeled_L), "score"))
    unlabeled = torch.ones(len(dataset.y_pool), dtype=torch.bool)
    unlabeled[labeled_L] = False
    with torch.no_grad():
        metrics = evaluate(predictive_log_probs(networks(dataset.x_test)), dataset.y_test)
        bald_U = bald(networks(dataset.x_pool[unlabeled]))
    return {**metrics, "fit_seconds": seconds}, bald_U


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", default="100,300")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--backends", default=DEFAULT, help="comma-separated; hmc is the reference and always runs")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/benchmarks/posterior_quality")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = load_dataset("digits", seed=0)
    names = [n for n in args.backends.split(",") if n != "hmc"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "hmc_reference.pt"
    cache = torch.load(cache_path, weights_only=True) if cache_path.exists() else {}
    rows = []
    for n_labels in (int(n) for n in args.labels.split(",")):
        for seed in range(args.seeds):
            labeled_L = balanced_initial(dataset.y_pool, n_labels, torch.Generator().manual_seed(seed))
            key = f"hmc-{n_labels}-{seed}-k{args.samples}"
            if key in cache:  # HMC's fits are the slow part; they are deterministic given the seed, so reruns reuse them
                reference, reference_bald_U = cache[key]
            else:
                reference, reference_bald_U = cache[key] = fit_and_score("hmc", dataset, labeled_L, seed, args.samples)
                torch.save(cache, cache_path)
            top_hmc = set(reference_bald_U.topk(10).indices.tolist())
            rows.append({"backend": "hmc", "labels": n_labels, "seed": seed, **reference, "spearman": 1.0, "top10": 1.0})
            for name in names:
                metrics, bald_U = fit_and_score(name, dataset, labeled_L, seed, args.samples)
                spearman = float(spearmanr(bald_U.numpy(), reference_bald_U.numpy()).statistic)
                top10 = len(top_hmc & set(bald_U.topk(10).indices.tolist())) / 10
                rows.append({"backend": name, "labels": n_labels, "seed": seed, **metrics, "spearman": spearman, "top10": top10})
                print(f"{n_labels} labels, seed {seed}, {name:>12}: acc {metrics['accuracy']:.3f} nll {metrics['nll']:.3f} "
                      f"spearman {spearman:.3f} top10 {top10:.1f} ({metrics['fit_seconds']:.0f} s)", flush=True)  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.to_csv(out / f"rows-{args.backends.replace(',', '_').replace(' ', '')}.csv", index=False)
    print(markdown_table(frame, ["hmc", *names]))


def markdown_table(frame: pd.DataFrame, order: list[str]) -> str:
    """One row per (labels, backend): mean ± std over seeds of each column."""
    columns = ["accuracy", "nll", "ece", "brier", "spearman", "top10", "fit_seconds"]
    lines = ["| labels | backend | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for n_labels, group in frame.groupby("labels"):
        for name in order:
            cell = group[group.backend == name]
            values = [f"{cell[c].mean():.3f} ± {cell[c].std(ddof=1) if len(cell) > 1 else 0:.3f}" for c in columns[:-1]]
            values.append(f"{cell['fit_seconds'].mean():.0f}")
            lines.append(f"| {n_labels} | {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
