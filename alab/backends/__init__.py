"""Bayesian backends, one module each, registered by name in `BACKENDS`."""

from alab.backends import ensemble, hmc, laplace, mc_dropout, sgmcmc, swag, vi  # noqa: F401  (register each backend)
from alab.backends.base import BACKENDS, Backend, Embeds, GradientEmbeds, SampledNetworks, predict_log_probs

__all__ = ["BACKENDS", "Backend", "Embeds", "GradientEmbeds", "SampledNetworks", "predict_log_probs"]
