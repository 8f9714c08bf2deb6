"""The strategy registry: every strategy by name, with its paper (what `alab strategies` lists).

A strategy is an acquisition function to score the pool with and a batch rule (`alab.acquisition.base`).
The families live in their own modules: scores on log-probabilities (`scores`: BALD and friends,
EPIG), joint batch rules (`joint`), stochastic batch rules (`stochastic`), embedding-based rules
(`embedding`), regression scores (`regression`).
"""

from __future__ import annotations

from alab.acquisition.base import Strategy, TopK, Uniform
from alab.acquisition.embedding import Badge, ClusterMargin, Coreset, ProbCover, TypiClust
from alab.acquisition.joint import BatchBALD
from alab.acquisition.scores import EPIG
from alab.acquisition.stochastic import Stochastic
from alab.registry import Registry

STRATEGIES: Registry[Strategy] = Registry("strategy")
STRATEGIES.add("random", Uniform(), "uniform random sampling from the pool (the baseline)")
for _name, _summary in {
    "bald": "top-k BALD, the mutual information between label and weights (Houlsby et al. 2011; Gal et al. 2017)",
    "max_entropy": "top-k predictive entropy (Shannon 1948; Gal et al. 2017)",
    "variance": "top-k mean standard deviation of the class probabilities (Kampffmeyer et al. 2016; Gal et al. 2017's Mean STD)",
    "var_ratios": "top-k variation ratio, 1 - the modal fraction across samples (Freeman 1965; Gal et al. 2017)",
    "margin": "top-k smallest margin between the two most probable classes (Scheffer et al. 2001)",
    "least_confidence": "top-k lowest probability of the most probable class (Lewis & Gale 1994)",
}.items():
    STRATEGIES.add(_name, TopK(_name), _summary)
STRATEGIES.add("batchbald", BatchBALD(), "BatchBALD: greedy joint mutual information of the batch and the weights (Kirsch et al. 2019)")
for _name, _acquisition, _mode in (
    ("powerbald", "bald", "power"),
    ("softmaxbald", "bald", "softmax"),
    ("softrankbald", "bald", "softrank"),
    ("powerentropy", "max_entropy", "power"),
):
    STRATEGIES.add(
        _name,
        Stochastic(_acquisition, _mode),
        f"{_acquisition} scores, batch sampled by {_mode} (beta = 1) without replacement (Kirsch et al. 2023)",
    )
STRATEGIES.add("epig", EPIG(), "top-k EPIG, the information gain about the predictions on target inputs (Bickford Smith et al. 2023)")
STRATEGIES.add("badge", Badge(), "BADGE: k-means++ seeding on last-layer gradient embeddings (Ash et al. 2020)")
STRATEGIES.add("coreset", Coreset(), "Coreset: greedy k-center on the penultimate features, from the labeled set (Sener & Savarese 2018)")
STRATEGIES.add("cluster_margin", ClusterMargin(), "Cluster-Margin: lowest-margin candidates, clustered, one per cluster (Citovsky et al. 2021)")
STRATEGIES.add("typiclust", TypiClust(), "TypiClust, cold start: the most typical item of each uncovered cluster (Hacohen et al. 2022)")
STRATEGIES.add("probcover", ProbCover(), "ProbCover, cold start: greedy coverage by purity-sized balls (Yehuda et al. 2022)")

# Regression strategies (`alab.acquisition.regression`; "bald" and "random" above serve regression data sets too).
STRATEGIES.add("epistemic_variance", TopK("epistemic_variance"), "regression: top-k variance of the predicted means, epistemic (Depeweg et al. 2018)")
STRATEGIES.add("total_variance", TopK("total_variance"), "regression: top-k predictive variance, epistemic + aleatoric (Kendall & Gal 2017)")
