"""Relative input and output stability (Agarwal et al., 2022): how much an explanation changes,
relative to itself, per relative change of the input or of the model's output, at the worst of
several small perturbations that keep the prediction."""

from __future__ import annotations

from typing import Any

import torch

from ..core import Explainer, ModelInputs, TargetLike, check_number, class_scores, evaluation
from ..errors import InputError
from .base import MetricResult, chunks
from .sensitivity import Perturb, perturbed_explanations


def relative_input_stability(explainer: Explainer, inputs: torch.Tensor, target: TargetLike = None, *,
                             samples: int = 200, low: float = 0.02, high: float = 0.2, eps: float = 1e-6,
                             seed: int = 0, perturb: Perturb | None = None, max_batch: int | None = None
                             ) -> MetricResult:
    """max over x' of ``||(e_x - e_x') / e_x|| / max(||(x - x') / x||, eps)`` (L2 norms; a zero
    element of e_x or x divides by ``eps``), over ``samples`` copies x' = x + d, d uniform in
    [``low``, ``high``] per element (Quantus' ``RelativeInputStability`` defaults), one draw per
    sample shared by the batch's images; copies whose predicted class changes are left out (NaN
    when all are). Lower is better."""
    def denominator(x: torch.Tensor, copies: torch.Tensor, _logits: Any, _moved_logits: Any) -> torch.Tensor:
        return _relative(x.unsqueeze(0), copies, eps)

    return _stability("relative_input_stability", denominator, explainer, inputs, target, samples, low, high, eps,
                      seed, perturb, max_batch)


def relative_output_stability(explainer: Explainer, inputs: torch.Tensor, target: TargetLike = None, *,
                              samples: int = 200, low: float = 0.02, high: float = 0.2, eps: float = 1e-6,
                              seed: int = 0, perturb: Perturb | None = None, max_batch: int | None = None
                              ) -> MetricResult:
    """As ``relative_input_stability`` with the denominator ``max(||h(x) - h(x')||, eps)``, h the
    model's class scores (logits). Lower is better."""
    def denominator(_x: Any, _copies: Any, logits: torch.Tensor, moved_logits: torch.Tensor) -> torch.Tensor:
        return (logits.unsqueeze(0) - moved_logits).flatten(2).double().norm(dim=2)

    return _stability("relative_output_stability", denominator, explainer, inputs, target, samples, low, high, eps,
                      seed, perturb, max_batch)


def _relative(before: torch.Tensor, after: torch.Tensor, eps: float) -> torch.Tensor:
    """``||(before - after) / before||`` over every dimension after the first two, a zero element
    of ``before`` dividing by ``eps``."""
    before, after = before.double(), after.double()
    return ((before - after) / torch.where(before == 0, eps, before)).flatten(2).norm(dim=2)


def _stability(name: str, denominator: Any, explainer: Explainer, inputs: torch.Tensor, target: TargetLike,
               samples: int, low: float, high: float, eps: float, seed: int, perturb: Perturb | None,
               max_batch: int | None) -> MetricResult:
    check_number("eps", eps)
    if eps == 0:
        raise InputError("eps must be positive: it bounds the denominators")
    if not check_number("low", low) <= check_number("high", high):
        raise InputError(f"the noise's low bound {low} exceeds its high bound {high}")

    def uniform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x + low + (high - low) * torch.rand((1, *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype)

    clean, moved, copies = perturbed_explanations(name, explainer, inputs, target, samples, seed, perturb or uniform,
                                                  max_batch)
    logits, moved_logits = _logits(explainer, inputs, copies, max_batch)
    ratios = _relative(clean, moved, eps) / denominator(inputs, copies, logits, moved_logits).clamp_min(eps)
    kept = moved_logits.argmax(dim=2) == logits.argmax(dim=1).unsqueeze(0)  # the prediction holds
    ratios = torch.where(kept, ratios, torch.nan)
    best = torch.where(kept.any(dim=0), ratios.nan_to_num(-torch.inf).amax(dim=0), torch.nan)
    return MetricResult(name, best.float())


def _logits(explainer: Explainer, inputs: torch.Tensor, copies: torch.Tensor, max_batch: int | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's class scores for the inputs (N, K) and the copies (samples, N, K)."""
    model, flat = explainer.model, copies.flatten(0, 1)
    with evaluation(model), torch.no_grad():
        clean = class_scores(ModelInputs(args=(inputs,)).run(model))
        moved = torch.cat([class_scores(ModelInputs(args=(flat[part],)).run(model))
                           for part in chunks(len(flat), max_batch or len(inputs))])
    return clean, moved.reshape(*copies.shape[:2], -1)
