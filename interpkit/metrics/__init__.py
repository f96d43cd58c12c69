"""Metrics that say which explanation is faithful to the model, built on one contract
(``Metric`` returning a ``MetricResult``) and registered like any plugin's."""

from .base import Metric, MetricResult, aligned_saliency, scored_maps
from .infidelity import Infidelity, gaussian
from .perturbation import AverageDrop, Deletion, IncreaseInConfidence, Insertion, baseline_of
from .pointing import PointingGame
from .regions import RegionPerturbation
from .road import ROAD, linear_imputation
from .sanity import RandomisationResult, randomisation_check
from .sensitivity import max_sensitivity

BUILTIN_METRICS = (Deletion, Insertion, AverageDrop, IncreaseInConfidence, Infidelity, RegionPerturbation,
                   PointingGame, ROAD)

__all__ = ["AverageDrop", "BUILTIN_METRICS", "Deletion", "IncreaseInConfidence", "Infidelity", "Insertion", "Metric",
           "MetricResult", "PointingGame", "ROAD", "RandomisationResult", "RegionPerturbation", "aligned_saliency",
           "baseline_of", "gaussian", "linear_imputation", "max_sensitivity", "randomisation_check", "scored_maps"]
