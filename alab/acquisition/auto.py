"""`auto`: the strategy alab recommends, chosen from the stress-set measurements (docs/auto.md).

Today it is one rule, BatchBALD (Kirsch et al. 2019: the batch's joint mutual information with the
weights), from the first round. Measured on digits and its three stress sets (ambiguous, noisy,
imbalanced; 3 seeds, 20 -> 220 labels), it is the one candidate that beats random at 60, 120 and
220 labels on all four: top-k BALD picks redundant batches (and trails BatchBALD on three of the
four), PowerBALD (Kirsch et al. 2023) falls to random's level on the noisy and ambiguous pools, and
a TypiClust cold start below 5 labels per class (Hacohen et al. 2022) helps on clean digits but
leaves the ambiguous pool under random at 60 labels, since typical items are no guard against
blends. `auto` resolves into the run's schedule (`run_schedule`), as `[[schedule]]` tables do, so
each round's curve row names the rule that chose it (`selected_by`) and a later measurement may add
steps without changing how runs read it. It is for classification.
"""

from __future__ import annotations

from alab.config import ScheduleStep
from alab.errors import AlabError

AUTO = "auto"
RULE = "batchbald"
SUMMARY = f"the recommended strategy, measured on the stress sets: {RULE} from the first round (docs/auto.md)"


def strategy_names(name: str) -> list[str]:
    """The registered strategies a name stands for: auto's rule, else the name itself."""
    return [RULE] if name == AUTO else [name]


def run_schedule(strategy: str, schedule: tuple[ScheduleStep, ...], n_classes: int) -> tuple[tuple[ScheduleStep, ...], str]:
    """(steps, strategy after them) of a run: auto's, or the run's own `[[schedule]]` and strategy."""
    if strategy != AUTO:
        return schedule, strategy
    if schedule:
        raise AlabError("strategy = auto is a schedule of its own; remove the [[schedule]] tables or name another strategy")
    if n_classes < 2:
        raise AlabError(f"strategy auto is for classification ({RULE} needs class probabilities); for regression choose epistemic_variance")
    return (), RULE
