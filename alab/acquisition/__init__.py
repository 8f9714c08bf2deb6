"""Acquisition: which pool items to ask for. One module per family, one registry.

    scores.py      scores on log-probabilities [K, N, C] -> [N]: BALD, entropy, margin, ... (ACQUISITIONS); EPIG
    joint.py       joint batch rules on the candidates' log-probabilities: BatchBALD
    stochastic.py  stochastic batch rules: power, softmax and soft-rank sampling of the scores
    embedding.py   embedding-based rules: BADGE, Coreset, Cluster-Margin; TypiClust, ProbCover (cold start)
    regression.py  scores on a heteroscedastic regression model's outputs [K, N, 2] (REGRESSION_ACQUISITIONS)
    base.py        what every rule shares: Selection, top-k, the strategy protocols
    strategies.py  STRATEGIES: every strategy by name, with its paper (`alab strategies`)

Higher score = acquire, always; samples first in every tensor.
"""
