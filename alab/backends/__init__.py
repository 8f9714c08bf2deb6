"""Bayesian backends, one module each, registered by name in `BACKENDS`."""

from alab.backends import ensemble, mc_dropout, vi  # noqa: F401  (register "ensemble", "mc_dropout", "vi")
from alab.backends.base import BACKENDS, Backend, Embeds, GradientEmbeds, SampledNetworks, predict_log_probs

__all__ = ["BACKENDS", "Backend", "Embeds", "GradientEmbeds", "SampledNetworks", "predict_log_probs"]
