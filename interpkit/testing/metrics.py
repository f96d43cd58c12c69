"""``check_metric``: the metric contract, checked for any metric class."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch

from ..core import Explanation, MapKind
from ..errors import InputError, InterpkitError
from ..explainers import Saliency
from ..metrics import ExplainerCheck, Metric, MetricResult
from .conformance import wrong_options
from .fingerprint import ModelFingerprint
from .models import ConvStack


def check_metric(metric_cls: type[Any], options: Mapping[str, Any] | None = None, batch: int = 3, seed: int = 0) -> None:
    """Check ``metric_cls(**options)`` on a small model: a ``MetricResult`` with per-sample
    scores (N,) (and curves (N, steps) when given) on the model's device; the model exactly
    restored; no forward larger than ``max_batch``; the same result twice; the batch in another
    order scored in that order; ``score_each`` scoring every explanation as a call does; other
    maps (one peaked, inverted, flipped, or the masks) scored otherwise, in scores or curves;
    ``InputError`` for maps that do not align with the inputs; an ``InterpkitError`` for options
    of the wrong kind (each option annotated bool, int or float given ``"no"``, ``1.5``, ``"0.1"``
    or NaN). Raises AssertionError naming the first failure. A check that re-runs the explainer
    (an ``ExplainerCheck``) is given the factory of saliency instead of maps, and must refuse an
    explainer instance or anything that is not a factory."""
    if issubclass(metric_cls, ExplainerCheck):
        return _check_explainer_check(metric_cls, options, batch, seed)
    torch.manual_seed(seed)
    model = ConvStack().train()
    inputs = torch.randn(batch, 3, 12, 10, generator=torch.Generator().manual_seed(seed))
    maps = torch.rand(batch, 12, 10, generator=torch.Generator().manual_seed(seed + 1))
    batched = "max_batch" in inspect.signature(metric_cls).parameters
    metric = metric_cls(**{**({"max_batch": 4} if batched else {}), **dict(options or {})})
    extra = {}
    if "masks" in inspect.signature(metric.__call__).parameters:  # metrics scored against ground truth
        extra["masks"] = torch.rand(batch, 12, 10, generator=torch.Generator().manual_seed(seed + 2)) > 0.7
    sizes: list[int] = []
    before = ModelFingerprint.of(model)
    handle = model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        result = metric(model, inputs, maps, **extra)
        again = metric(model, inputs, maps, **extra)
    finally:
        handle.remove()
    changes = before.differences(ModelFingerprint.of(model))
    assert not changes, f"{metric_cls.__name__} changed the model: {'; '.join(changes)}"
    _check_result(result, batch)
    assert not batched or max(sizes, default=0) <= 4, f"a forward of {max(sizes)} inputs exceeds max_batch=4"
    assert torch.equal(result.scores.nan_to_num(), again.scores.nan_to_num()), "two identical calls differ"
    _follows_the_samples(metric, model, inputs, maps, extra, result)
    if not extra and isinstance(metric, Metric):  # a plain callable has no score_each; mask metrics refuse it
        _scores_each_as_alone(metric, model, inputs, maps, result)
    wrong = wrong_options(metric_cls, lambda **given: metric_cls(**{**dict(options or {}), **given})(
        model, inputs, maps, **extra))
    assert not wrong, f"{metric_cls.__name__} options of the wrong kind: {'; '.join(wrong)}"
    for bad in (maps[:, :6], maps[:1], torch.rand(batch, 2, 12, 10), maps.to(torch.complex64)):
        try:
            metric(model, inputs, bad, **extra)
        except InputError:
            continue
        raise AssertionError(f"{bad.dtype} maps of shape {tuple(bad.shape)} for inputs {tuple(inputs.shape)} did not "
                             "raise InputError")
    several = Explanation(torch.rand(batch, 2, 12, 10), torch.zeros(batch, 2, dtype=torch.long),
                          torch.zeros(batch, 2), "test", MapKind.INPUT_GRID)
    try:
        metric(model, inputs, several, **extra)
    except InputError:
        return
    raise AssertionError("an Explanation with two maps per sample did not raise InputError")


def _follows_the_samples(metric: Any, model: torch.nn.Module, inputs: torch.Tensor, maps: torch.Tensor,
                         extra: dict[str, Any], first: MetricResult) -> None:
    """The batch in another order scores in that order (a rotation: a reversal would not show
    scores given back reversed), and other maps score otherwise."""
    scores = first.scores
    order = torch.arange(len(inputs)).roll(1)
    reordered = {name: value[order] for name, value in extra.items()}
    rotated = metric(model, inputs[order], maps[order], **reordered).scores
    torch.testing.assert_close(rotated, scores[order], rtol=1e-4, atol=1e-5, equal_nan=True,
                               msg=lambda m: f"the batch in another order did not score in that order: {m}")
    peaked = torch.zeros_like(maps)
    peaked[:, 0, 0] = 1.0  # all attribution on one corner pixel
    others = [peaked, 1 - maps, maps.flip(-1)] + [mask.float() for mask in extra.values()]  # a mask: a perfect map
    assert any(_differs(metric(model, inputs, other, **extra), first) for other in others), (
        "other maps (peaked, inverted, flipped, the masks) scored as the maps did, curves too: the maps are not read "
        "(or the options make every map score alike at the kit's 12 x 10 grid: pass options that do not)")


def _scores_each_as_alone(metric: Any, model: torch.nn.Module, inputs: torch.Tensor, maps: torch.Tensor,
                          first: MetricResult) -> None:
    """``score_each`` gives every explanation what a call gives it (``first`` for ``maps``): work
    it shares between explanations (``score.shared``) must depend on nothing that differs between them."""
    given = [(maps, None), (1 - maps, None), (maps.flip(-1), None)]  # maps of the kind the metric already took
    together = metric.score_each(model, inputs, given)
    alone = [first] + [metric(model, inputs, other, targets) for other, targets in given[1:]]
    for i, (mine, call) in enumerate(zip(together, alone)):
        assert not _differs(mine, call), (
            f"score_each scored explanation {i} otherwise than a call: its shared work depends on the maps "
            "(give score.shared a key that holds everything the work reads)")


def _differs(result: MetricResult, other: MetricResult) -> bool:
    if not torch.equal(result.scores.nan_to_num(), other.scores.nan_to_num()):
        return True
    return result.curves is not None and other.curves is not None and not torch.equal(
        result.curves.nan_to_num(), other.curves.nan_to_num())


def _check_explainer_check(check_cls: type, options: Mapping[str, Any] | None, batch: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = ConvStack().train()
    inputs = torch.randn(batch, 3, 12, 10, generator=torch.Generator().manual_seed(seed))
    check = check_cls(**dict(options or {}))
    before = ModelFingerprint.of(model)
    result, again = check(Saliency, model, inputs), check(Saliency, model, inputs)
    changes = before.differences(ModelFingerprint.of(model))
    assert not changes, f"{check_cls.__name__} changed the model: {'; '.join(changes)}"
    _check_result(result, batch)
    assert torch.equal(result.scores.nan_to_num(), again.scores.nan_to_num()), "two identical calls differ"
    wrong = wrong_options(check_cls, lambda **given: check_cls(**{**dict(options or {}), **given})(
        Saliency, model, inputs))
    assert not wrong, f"{check_cls.__name__} options of the wrong kind: {'; '.join(wrong)}"
    for bad in (Saliency(model), "saliency"):
        try:
            check(bad, model, inputs)
        except InputError:
            continue
        raise AssertionError(f"{check_cls.__name__} accepted {bad!r} for a factory")
    try:
        check(Saliency, model, inputs[:, :, 0, 0])
    except InterpkitError:
        return
    raise AssertionError(f"{check_cls.__name__} accepted inputs without a grid")


def _check_result(result: Any, batch: int) -> None:
    """A ``MetricResult`` with one score per sample, and curves that match their fractions."""
    assert isinstance(result, MetricResult), f"returns {type(result).__name__}, not a MetricResult"
    assert result.scores.shape == (batch,), f"scores {tuple(result.scores.shape)} are not one per sample"
    if result.curves is not None:
        assert result.curves.shape[0] == batch and result.fractions is not None
        assert result.curves.shape[1] == len(result.fractions), "curves and fractions differ in length"
