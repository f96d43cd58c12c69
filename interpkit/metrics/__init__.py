"""Metrics that say which explanation is faithful to the model, built on one contract
(``Metric`` returning a ``MetricResult``) and registered like any plugin's."""

from .axiomatic import Completeness, input_invariance
from .base import Metric, MetricResult, aligned_saliency, scored_maps
from .complexity import Complexity, EffectiveComplexity, MapMetric, Sparseness
from .continuity import continuity
from .faithfulness import (
    FaithfulnessCorrelation,
    FaithfulnessEstimate,
    FeatureRemoval,
    Monotonicity,
    MonotonicityCorrelation,
    NonSensitivity,
    PixelFlipping,
)
from .infidelity import Infidelity, gaussian
from .irof import IROF
from .localisation import (
    AttributionLocalisation,
    LocalisationAUC,
    MaskMetric,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    TopKIntersection,
)
from .perturbation import AverageDrop, Deletion, IncreaseInConfidence, Insertion, baseline_of
from .pointing import PointingGame
from .random_logit import random_logit
from .regions import RegionPerturbation, Selectivity
from .road import ROAD, linear_imputation
from .sanity import RandomisationResult, efficient_randomisation_check, histogram_entropy, randomisation_check
from .sensitivity import avg_sensitivity, local_lipschitz_estimate, max_sensitivity
from .sensitivity_n import SensitivityN
from .stability import relative_input_stability, relative_output_stability, relative_representation_stability
from .sufficiency import Sufficiency

BUILTIN_METRICS = (Deletion, Insertion, AverageDrop, IncreaseInConfidence, Infidelity, RegionPerturbation,
                   PointingGame, ROAD, AttributionLocalisation, RelevanceMassAccuracy, RelevanceRankAccuracy,
                   TopKIntersection, LocalisationAUC, Sparseness, Complexity, EffectiveComplexity, Completeness,
                   PixelFlipping, FaithfulnessEstimate, FaithfulnessCorrelation, Monotonicity, NonSensitivity,
                   Selectivity, MonotonicityCorrelation, IROF, Sufficiency, SensitivityN)

__all__ = ["AttributionLocalisation", "AverageDrop", "BUILTIN_METRICS", "Completeness", "Complexity", "Deletion",
           "EffectiveComplexity", "FaithfulnessCorrelation", "FaithfulnessEstimate", "FeatureRemoval", "Monotonicity",
           "IROF", "MonotonicityCorrelation", "NonSensitivity",
           "PixelFlipping",
           "LocalisationAUC", "MapMetric", "MaskMetric", "RelevanceMassAccuracy", "RelevanceRankAccuracy", "Sparseness",
           "Sufficiency", "TopKIntersection", "IncreaseInConfidence", "Infidelity", "Insertion", "Metric",
           "MetricResult", "PointingGame", "ROAD", "RandomisationResult", "RegionPerturbation", "Selectivity",
           "SensitivityN", "aligned_saliency",
           "avg_sensitivity", "baseline_of", "continuity", "efficient_randomisation_check",
           "histogram_entropy", "gaussian", "input_invariance",
           "linear_imputation", "local_lipschitz_estimate", "max_sensitivity",
           "random_logit", "relative_input_stability", "relative_output_stability",
           "relative_representation_stability",
           "randomisation_check",
           "scored_maps"]
