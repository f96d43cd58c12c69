"""Relative input, output and representation stability (Agarwal et al., 2022): how much an
explanation changes, relative to itself, per relative change of the input, of the model's output
or of its internal representation, at the worst of
several small perturbations that keep the prediction."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..core import (
    Explainer,
    ModelInputs,
    TargetLike,
    check_number,
    class_scores,
    evaluation,
    forward_hooks,
    mixes_samples,
    resolve_layer,
    uniform_draws,
)
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
    def denominator(x: torch.Tensor, copies: torch.Tensor, _logits: Any, _moved_logits: Any, _change: Any
                    ) -> torch.Tensor:
        return _relative(x.unsqueeze(0), copies, eps)

    return _stability("relative_input_stability", denominator, explainer, inputs, target, samples, low, high, eps,
                      seed, perturb, max_batch)


def relative_output_stability(explainer: Explainer, inputs: torch.Tensor, target: TargetLike = None, *,
                              samples: int = 200, low: float = 0.02, high: float = 0.2, eps: float = 1e-6,
                              seed: int = 0, perturb: Perturb | None = None, max_batch: int | None = None
                              ) -> MetricResult:
    """As ``relative_input_stability`` with the denominator ``max(||h(x) - h(x')||, eps)``, h the
    model's class scores (logits). Lower is better."""
    def denominator(_x: Any, _copies: Any, logits: torch.Tensor, moved_logits: torch.Tensor, _change: Any
                    ) -> torch.Tensor:
        return (logits.unsqueeze(0) - moved_logits).flatten(2).double().norm(dim=2)

    return _stability("relative_output_stability", denominator, explainer, inputs, target, samples, low, high, eps,
                      seed, perturb, max_batch)


def relative_representation_stability(explainer: Explainer, inputs: torch.Tensor, target: TargetLike = None, *,
                                      layers: Sequence[str] | None = None, samples: int = 200, low: float = 0.02,
                                      high: float = 0.2, eps: float = 1e-6, seed: int = 0,
                                      perturb: Perturb | None = None, max_batch: int | None = None) -> MetricResult:
    """As ``relative_input_stability`` with the denominator ``max(||(L_x - L_x') / L_x||, eps)``,
    L the model's internal representation: the outputs of ``layers`` (dotted names), every call's
    output flattened and joined, or by default of every module but the model itself and its
    Sequential containers (Quantus' ``RelativeRepresentationStability`` default). The norm is
    accumulated layer by layer, so no representation is held whole. Lower is better."""
    chosen = _representation_modules(explainer.model, layers)

    def denominator(_x: Any, _copies: Any, _logits: Any, _moved_logits: Any, change: torch.Tensor) -> torch.Tensor:
        return change

    return _stability("relative_representation_stability", denominator, explainer, inputs, target, samples, low, high,
                      eps, seed, perturb, max_batch, chosen)


def _representation_modules(model: torch.nn.Module, layers: Sequence[str] | None) -> list[torch.nn.Module]:
    if layers is None:
        return [m for m in model.modules() if m is not model and not isinstance(m, torch.nn.Sequential)]
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise InputError(f"layers must be a non-empty list of dotted layer names, not {layers!r}")
    return [resolve_layer(model, name)[1] for name in layers]


def _relative(before: torch.Tensor, after: torch.Tensor, eps: float) -> torch.Tensor:
    """``||(before - after) / before||`` over every dimension after the first two, a zero element
    of ``before`` dividing by ``eps``."""
    before, after = before.double(), after.double()
    return ((before - after) / torch.where(before == 0, eps, before)).flatten(2).norm(dim=2)


def _stability(name: str, denominator: Any, explainer: Explainer, inputs: torch.Tensor, target: TargetLike,
               samples: int, low: float, high: float, eps: float, seed: int, perturb: Perturb | None,
               max_batch: int | None, representation: Sequence[torch.nn.Module] = ()) -> MetricResult:
    check_number("eps", eps)
    if eps == 0:
        raise InputError("eps must be positive: it bounds the denominators")
    if not check_number("low", low) <= check_number("high", high):
        raise InputError(f"the noise's low bound {low} exceeds its high bound {high}")

    def shifted(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x + low + (high - low) * uniform_draws((1, *x.shape[1:]), g, x)

    clean, moved, copies = perturbed_explanations(name, explainer, inputs, target, samples, seed, perturb or shifted,
                                                  max_batch)
    logits, moved_logits, change = _forwards(explainer, inputs, copies, max_batch, representation, eps)
    ratios = _relative(clean, moved, eps) / denominator(inputs, copies, logits, moved_logits, change).clamp_min(eps)
    kept = moved_logits.argmax(dim=2) == logits.argmax(dim=1).unsqueeze(0)  # the prediction holds
    ratios = torch.where(kept, ratios, torch.nan)
    best = torch.where(kept.any(dim=0), ratios.nan_to_num(-torch.inf).amax(dim=0), torch.nan)
    return MetricResult(name, best.float())


def _forwards(explainer: Explainer, inputs: torch.Tensor, copies: torch.Tensor, max_batch: int | None,
              modules: Sequence[torch.nn.Module], eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The model's class scores for the inputs (N, K) and the copies (samples, N, K), and, from
    the same forwards, ``||(L_x - L_x') / L_x||`` (samples, N) accumulated over every call of
    ``modules`` (None without modules)."""
    model, flat = explainer.model, copies.flatten(0, 1)
    samples, n = copies.shape[:2]
    sample_of = torch.arange(n, device=inputs.device).repeat(samples)  # copy-major
    state: dict[str, Any] = {}

    def keep(_module: Any, _args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            state["kept"].append(output.detach().flatten(1).double())

    def add(_module: Any, _args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            before = next(state["calls"])[sample_of[state["part"]]]
            after = output.detach().flatten(1).double()
            state["total"].add_(_relative(before[:, None], after[:, None], eps).square()[:, 0])

    squares, moved, clean_parts = [], [], []
    step = 1 if mixes_samples(model) else max_batch or n  # a mixing model: each copy alone, as explainers run it
    with evaluation(model), torch.no_grad():
        for part in chunks(n, step):
            state["kept"] = []  # this part's layer outputs, one per call
            with forward_hooks(modules, keep):
                clean_parts.append((class_scores(ModelInputs(args=(inputs[part],)).run(model)), state["kept"]))
        clean = torch.cat([scores for scores, _ in clean_parts])
        clean_calls = [torch.cat(calls) for calls in zip(*(kept for _, kept in clean_parts))]
        if modules and not clean_calls:
            raise InputError("relative_representation_stability: none of the layers returned a tensor in the forward")
        for part in chunks(len(flat), step):
            state.update(part=part, calls=iter(clean_calls),
                         total=torch.zeros(part.stop - part.start, dtype=torch.float64, device=inputs.device))
            with forward_hooks(modules, add):
                moved.append(class_scores(ModelInputs(args=(flat[part],)).run(model)))
            squares.append(state["total"])
    change = torch.cat(squares).sqrt().reshape(samples, n) if modules else None
    return clean, torch.cat(moved).reshape(samples, n, -1), change
