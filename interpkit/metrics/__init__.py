"""Metrics that say which explanation is faithful to the model, built on one contract
(``Metric`` returning a ``MetricResult``) and registered like any plugin's; the checks that
re-run the explainer (``ExplainerCheck``) are registered beside them."""

from .axiomatic import Completeness, input_invariance
from .base import Metric, MetricResult, TargetScores, aligned_saliency, scored_maps
from .checks import (
    BUILTIN_CHECKS,
    MPRT,
    AvgSensitivity,
    Continuity,
    EfficientMPRT,
    ExplainerCheck,
    InputInvariance,
    LocalLipschitzEstimate,
    MaxSensitivity,
    RandomLogit,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
    SmoothMPRT,
)
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

__all__ = ["AttributionLocalisation", "AverageDrop", "AvgSensitivity", "BUILTIN_CHECKS", "BUILTIN_METRICS", "Completeness",
           "Complexity", "Continuity", "Deletion", "EffectiveComplexity", "EfficientMPRT", "ExplainerCheck",
           "FaithfulnessCorrelation", "FaithfulnessEstimate", "FeatureRemoval", "IROF", "IncreaseInConfidence", "Infidelity",
           "InputInvariance", "Insertion", "LocalLipschitzEstimate", "LocalisationAUC", "MPRT", "MapMetric", "MaskMetric",
           "MaxSensitivity", "Metric", "MetricResult", "Monotonicity", "MonotonicityCorrelation", "NonSensitivity",
           "PixelFlipping", "PointingGame", "ROAD", "RandomLogit", "RandomisationResult", "RegionPerturbation",
           "RelativeInputStability", "RelativeOutputStability", "RelativeRepresentationStability", "RelevanceMassAccuracy",
           "RelevanceRankAccuracy", "Selectivity", "SensitivityN", "SmoothMPRT", "Sparseness", "Sufficiency", "TargetScores",
           "TopKIntersection",
           "aligned_saliency", "avg_sensitivity", "baseline_of", "continuity", "efficient_randomisation_check", "gaussian",
           "histogram_entropy", "input_invariance", "linear_imputation", "local_lipschitz_estimate", "max_sensitivity",
           "random_logit", "randomisation_check", "relative_input_stability", "relative_output_stability",
           "relative_representation_stability", "scored_maps"]
