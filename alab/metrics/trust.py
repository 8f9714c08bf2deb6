"""Can a prediction be trusted: uncertainty decomposition, retention curves, out-of-distribution detection. No I/O.

Uncertainty of the posterior predictive p(y|x) = E_w p(y|x,w), in nats (Depeweg et al. 2018;
Smith & Gal 2018):

    total      H[E_w p(y|x,w)]                      (predictive entropy)
    aleatoric  E_w H[p(y|x,w)]                      (expected entropy: noise the model believes in)
    epistemic  H[E_w p(y|x,w)] - E_w H[p(y|x,w)]    (BALD, the mutual information I[y; w | x])

so total = aleatoric + epistemic, exactly (epistemic is not clamped here).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor

from alab.acquisition.scores import entropy, predictive_log_probs
from alab.errors import AlabError

UNCERTAINTIES = ("total", "aleatoric", "epistemic")
RETENTION_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 5%, 10%, ..., 100% of the items kept


def decompose(log_probs_K_N_C: Tensor) -> dict[str, Tensor]:
    """{"total", "aleatoric", "epistemic"}: each item's uncertainty [N] in nats, total = aleatoric + epistemic.

    Shapes: [K, N, C] -> three [N]. With K = 1 the epistemic part is 0.
    """
    if log_probs_K_N_C.ndim != 3:
        raise AlabError(f"the decomposition takes log-probabilities [K, N, C]; got shape {list(log_probs_K_N_C.shape)}")
    total_N = entropy(predictive_log_probs(log_probs_K_N_C))
    aleatoric_N = entropy(log_probs_K_N_C).mean(dim=0)  # [K, N] -> [N]
    return {"total": total_N, "aleatoric": aleatoric_N, "epistemic": total_N - aleatoric_N}


def _order(correct_N: Tensor, uncertainty_N: Tensor) -> Tensor:
    """Correctness sorted from the most certain item to the least (ties: lower index first)."""
    if correct_N.shape != uncertainty_N.shape or correct_N.ndim != 1 or not len(correct_N):
        raise AlabError(
            f"a retention curve takes one correctness and one uncertainty per item, [N] each; got shapes"
            f" {list(correct_N.shape)} and {list(uncertainty_N.shape)}"
        )
    if not bool(torch.isfinite(uncertainty_N).all()):
        raise AlabError("non-finite uncertainties in a retention curve")
    order_N = torch.sort(uncertainty_N.double(), stable=True).indices
    return correct_N.double()[order_N]


def retention_curve(correct_N: Tensor, uncertainty_N: Tensor, fractions: tuple[float, ...] = RETENTION_FRACTIONS) -> list[float]:
    """Accuracy on the items kept when the most uncertain are set aside, at each kept fraction.

    accuracy(f) = mean of correct_n over the ceil(f N) items of lowest uncertainty (f in (0, 1]).
    Selective prediction: El-Yaniv & Wiener (2010); Filos et al. (2019), "A Systematic Comparison of
    Bayesian Deep Learning Robustness in Diabetic Retinopathy Tasks" (retention curves).
    """
    sorted_N = _order(correct_N, uncertainty_N)
    N = len(sorted_N)
    cumulative_N = sorted_N.cumsum(0)
    out = []
    for f in fractions:
        if not 0 < f <= 1:
            raise AlabError(f"a kept fraction must lie in (0, 1]; got {f}")
        k = max(1, int(np.ceil(f * N - 1e-9)))
        out.append(float(cumulative_N[k - 1] / k))
    return out


def aurc(correct_N: Tensor, uncertainty_N: Tensor) -> float:
    """Area under the risk-coverage curve: AURC = (1/N) sum_{k=1..N} (errors among the k most certain) / k.

    Lower is better; ordering the errors last gives its minimum, a random ordering about the error
    rate. Geifman, Uziel & El-Yaniv (2019), "Bias-Reduced Uncertainty Estimation for Deep Neural
    Classifiers" (ICLR).
    """
    errors_N = 1.0 - _order(correct_N, uncertainty_N)
    k_N = torch.arange(1, len(errors_N) + 1, dtype=torch.float64)
    return float((errors_N.cumsum(0) / k_N).mean())


def ood_detection(in_scores_N: Tensor, out_scores_M: Tensor) -> dict[str, float]:
    """How well a score (higher: more likely out of distribution) tells out-of-distribution inputs from the test set's.

    {"auroc": P(score_out > score_in) + P(tie)/2, "fpr95": the fraction of out-of-distribution
    inputs still accepted when the threshold accepts 95% of the test set's}. AUROC 0.5 is chance;
    FPR95 lower is better. Hendrycks & Gimpel (2017), "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples"; FPR at 95% TPR with the test set as positives, as Liang et al.
    (2018, ODIN) report it.
    """
    if in_scores_N.ndim != 1 or out_scores_M.ndim != 1 or not len(in_scores_N) or not len(out_scores_M):
        raise AlabError("out-of-distribution detection needs one score per item of two non-empty sets")
    scores = torch.cat([in_scores_N, out_scores_M]).double().numpy()
    if not np.isfinite(scores).all():
        raise AlabError("non-finite scores in out-of-distribution detection")
    is_out = np.r_[np.zeros(len(in_scores_N)), np.ones(len(out_scores_M))]
    auroc = float(roc_auc_score(is_out, scores))
    # the test set positive, accepted below the threshold: scored by -score
    fpr, tpr, _ = roc_curve(1 - is_out, -scores)
    fpr95 = float(fpr[np.searchsorted(tpr, 0.95, side="left")])
    return {"auroc": auroc, "fpr95": fpr95}


def ood_scores(log_probs_K_N_C: Tensor) -> dict[str, Tensor]:
    """The scores that flag an input as out of distribution (higher: more likely), [N] each.

    "max_prob": 1 - max_c p(c|x) (Hendrycks & Gimpel 2017), "entropy": the total uncertainty,
    "bald": the epistemic part.
    """
    parts = decompose(log_probs_K_N_C)
    max_prob_N = predictive_log_probs(log_probs_K_N_C).amax(dim=1).exp()
    return {"max_prob": 1.0 - max_prob_N, "entropy": parts["total"], "bald": parts["epistemic"]}
