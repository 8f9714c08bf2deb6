"""`auto`: the strategy alab recommends, chosen from the stress-set measurements (docs/auto.md).

For classification it is one rule today, BatchBALD (Kirsch et al. 2019: the batch's joint mutual information with the
weights), from the first round. Measured on digits and its three stress sets (ambiguous, noisy,
imbalanced; 3 seeds, 20 -> 220 labels), it is the one candidate that beats random at 60, 120 and
220 labels on all four: top-k BALD picks redundant batches (and trails BatchBALD on three of the
four), PowerBALD (Kirsch et al. 2023) falls to random's level on the noisy and ambiguous pools, and
a TypiClust cold start below 5 labels per class (Hacohen et al. 2022) helps on clean digits but
leaves the ambiguous pool under random at 60 labels, since typical items are no guard against
blends. For regression it is the epistemic variance Var_k[mu_k] of the K predicted means, which beat
random on all 3 seeds of the diabetes comparison (docs/regression.md). `auto` is what `alab run`
uses when no strategy is named. It resolves into the run's schedule (`run_schedule`), as
`[[schedule]]` tables do, so each round's curve row names the rule that chose it (`selected_by`);
a run's own `[[schedule]]` steps come first and `auto` chooses the rounds after them.
"""

from __future__ import annotations

from alab.config import ScheduleStep

AUTO = "auto"
RULES = {"classification": "batchbald", "regression": "epistemic_variance"}  # the task's rule, from the first round
SUMMARY = (
    f"the recommended strategy and the default: {RULES['classification']} for classification, "
    f"{RULES['regression']} for regression, from the first round (docs/auto.md)"
)


def rule_for(n_classes: int) -> str:
    """auto's rule for a data set with `n_classes` classes (0: a regression target)."""
    return RULES["classification" if n_classes >= 2 else "regression"]


def strategy_names(name: str, task: str) -> list[str]:
    """The registered strategies a name stands for on a task ("classification" or "regression")."""
    return [RULES[task]] if name == AUTO else [name]


def run_schedule(strategy: str, schedule: tuple[ScheduleStep, ...], n_classes: int) -> tuple[tuple[ScheduleStep, ...], str]:
    """(steps, strategy after them) of a run: its own `[[schedule]]` steps, then its strategy or auto's rule."""
    return schedule, rule_for(n_classes) if strategy == AUTO else strategy
