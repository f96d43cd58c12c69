"""The metric contract: how faithful an explanation is to the model, per sample, batched.

A metric takes the model, the inputs, the maps (an ``Explanation`` or a tensor aligned with
the inputs) and the targets, and returns a ``MetricResult`` of tensors on the model's
device: per-sample scores (N,), per-sample curves (N, steps) for curve metrics, and their mean.
The model is held in eval mode and restored afterwards; perturbed copies go through it in
batches of at most ``max_batch`` (by default the inputs' own batch size, which the user's
machine already runs); randomness comes from ``seed``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..core import (
    Explanation,
    MapKind,
    ModelInputs,
    check_finite,
    check_int,
    check_tensor,
    class_scores,
    evaluation,
    mixes_samples,
    upsample,
)
from ..core.options import CheckedOptions
from ..errors import InputError

Scores = Callable[[torch.Tensor], torch.Tensor]  # a batch of inputs -> (B,) scores of its targets


@dataclass
class MetricResult:
    """``scores`` (N,): one value per sample (NaN where the metric is undefined for it);
    ``curves`` (N, steps) and ``fractions`` (steps,) for curve metrics; ``mean`` over the
    defined samples."""

    name: str
    scores: torch.Tensor
    curves: torch.Tensor | None = None
    fractions: torch.Tensor | None = None

    @property
    def mean(self) -> torch.Tensor:
        """The mean over samples whose score is defined (NaN when none is)."""
        return self.scores.nanmean()


class Metric(CheckedOptions):
    """Base of every metric; subclasses set ``name`` and implement ``compute``."""

    name: ClassVar[str] = ""
    #: True when a larger score means a more faithful explanation
    higher_is_better: ClassVar[bool] = True
    #: True when the metric scores maps against ground-truth masks (``masks=``), which images alone do not give
    needs_masks: ClassVar[bool] = False

    def __init__(self, *, max_batch: int | None = None, score: str = "probability") -> None:
        check_int("max_batch", max_batch, none="the inputs' batch size")
        if score not in ("probability", "logit"):
            raise InputError(f"score must be 'probability' or 'logit', not {score!r}")
        self.max_batch = max_batch
        self.score = score

    def __call__(self, model: nn.Module, inputs: torch.Tensor, maps: Explanation | torch.Tensor,
                 targets: Any = None) -> MetricResult:
        """Score the explanation ``maps`` of ``inputs`` for ``targets`` (class indices (N,), an
        int, or None: the explanation's own targets, else the model's top class)."""
        return self._scored(model, inputs, maps, targets, [])

    def score_each(self, model: nn.Module, inputs: torch.Tensor,
                   explanations: Sequence[tuple[Explanation | torch.Tensor, Any]]) -> list[MetricResult]:
        """Several explanations of the same ``inputs``, given as ``(maps, targets)`` pairs, each
        scored exactly as a call would score it. Forwards that do not depend on the maps (the
        random subsets of faithfulness correlation and sensitivity-n, infidelity's noise) run
        once for all the explanations whose targets are equal; telling that costs one
        comparison (a host-device sync) per explanation and earlier distinct targets. A metric
        whose class scores by its own ``__call__`` is called on each explanation."""
        pairs = explanation_pairs(explanations)
        if type(self).__call__ is not Metric.__call__:  # a subclass's own scoring is never bypassed
            return [self(model, inputs, maps, targets) for maps, targets in pairs]
        scorers: list[TargetScores] = []
        return [self._scored(model, inputs, maps, targets, scorers) for maps, targets in pairs]

    def _scored(self, model: nn.Module, inputs: torch.Tensor, maps: Explanation | torch.Tensor, targets: Any,
                scorers: list[TargetScores]) -> MetricResult:
        """One explanation's result; ``scorers`` holds the target scorers of earlier explanations
        of the same inputs (one per distinct targets), whose shared work is reused."""
        check_model(model)
        inputs = check_tensor(inputs, model, finite=False)
        if inputs.dim() < 3:
            raise InputError(f"metrics perturb the input's grid: inputs {tuple(inputs.shape)} have none")
        saliency = self.prepare(maps, inputs)
        check_finite(inputs=inputs, maps=saliency)  # one sync for both
        with evaluation(model), torch.no_grad():
            # a model whose eval forward mixes samples scores every copy alone, as explainers do
            max_batch = 1 if mixes_samples(model) else self.max_batch or len(inputs)
            indices = self._targets(model, inputs, maps, targets, max_batch)
            scorer = next((s for s in scorers if torch.equal(s.indices, indices)), None)
            if scorer is None:
                check_range = targets is not None or isinstance(maps, Explanation)
                scorer = TargetScores(model, indices, max_batch, self.score, check_range)
                scorers.append(scorer)
            return self.compute(model, inputs, saliency, scorer)

    def prepare(self, maps: Explanation | torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The maps as the metric reads them: by default one saliency value per grid position."""
        return aligned_saliency(maps, inputs)

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor, score: TargetScores
                ) -> MetricResult:
        """The metric for validated ``inputs`` (N, C, *grid) and ``saliency`` (N, *grid);
        ``score(batch, sample_indices)`` gives the target scores of any batch of perturbed copies,
        and ``score.shared(key, work)`` runs work that does not depend on the maps once for every
        explanation that ``score_each`` scores with the same targets."""
        raise NotImplementedError

    def _targets(self, model: nn.Module, inputs: torch.Tensor, maps: Any, targets: Any, max_batch: int
                 ) -> torch.Tensor:
        n = len(inputs)
        if targets is None and isinstance(maps, Explanation):
            if not maps.class_targets:
                raise InputError("the explanation's targets are not classes (it explains a callable's scores or a "
                                 "Neuron), so the metric cannot know which class to score; pass targets=")
            targets = maps.targets[:, 0]
        if targets is None:
            return torch.cat([class_scores(_forward(model, inputs[part])).argmax(dim=1) for part in chunks(n, max_batch)])
        return class_indices(targets, n, inputs.device)


class TargetScores:
    """The target scores of perturbed copies, for the explanations of one set of inputs with the
    same targets, called as ``scores(batch, samples)``: the (B,) scores of copies of samples ``samples``
    (B,); ``shared(key, work)`` runs map-independent work once for all of those explanations."""

    def __init__(self, model: nn.Module, indices: torch.Tensor, max_batch: int, score: str, check_range: bool
                 ) -> None:
        self.model, self.indices, self.max_batch, self.score = model, indices, max_batch, score
        self.check_range = check_range  # given classes are checked once (the model's own top classes need none)
        self.done: dict[Any, Any] = {}

    def __call__(self, batch: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        parts = []
        for part in chunks(len(batch), self.max_batch):
            logits = class_scores(_forward(self.model, batch[part]))
            # half-precision models: scores in float32; float64 ones keep their digits
            logits = logits.double() if logits.dtype == torch.float64 else logits.float()
            if self.check_range:
                self.check_range = False
                check_classes(self.indices, logits.shape[1])
            if self.score == "probability" and logits.shape[1] == 1:
                raise InputError("the model gives one score per sample, whose softmax is always 1, so every "
                                 "copy would score the same; use score='logit'")
            values = logits.softmax(dim=1) if self.score == "probability" else logits
            parts.append(values.gather(1, self.indices[samples[part]].unsqueeze(1))[:, 0])
        return torch.cat(parts)

    def shared(self, key: Any, work: Callable[[], Any]) -> Any:
        """``work()``, run the first time ``key`` is asked for and remembered: for results that do
        not depend on the maps, only on the inputs, the targets and ``key``."""
        if key not in self.done:
            self.done[key] = work()
        return self.done[key]


def explanation_pairs(explanations: Any) -> list[tuple[Any, Any]]:
    """``explanations`` as a list of ``(maps, targets)`` pairs, or an InputError."""
    if isinstance(explanations, (torch.Tensor, Explanation, str, bytes, dict)) or not isinstance(explanations, Iterable):
        raise InputError(f"explanations must be a list of (maps, targets) pairs, not {type(explanations).__name__}")
    pairs = list(explanations)
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            got = f"{len(pair)} items" if isinstance(pair, (tuple, list)) else type(pair).__name__
            raise InputError(f"explanations[{i}] must be a (maps, targets) pair (targets None: the explanation's own, "
                             f"else the top class), got {got}")
    return [tuple(pair) for pair in pairs]


def check_classes(indices: torch.Tensor, classes: int) -> None:
    """An InputError unless every class index lies in [0, classes) (one sync)."""
    if bool((indices.min() < 0) | (indices.max() >= classes)):
        raise InputError(f"target classes must lie in [0, {classes}); got {sorted(set(indices.tolist()))}")


def check_model(model: Any) -> None:
    """An InputError unless ``model`` is a torch module."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")


def class_indices(targets: Any, n: int, device: torch.device) -> torch.Tensor:
    """``targets`` (an int, or one class index per sample) as a LongTensor (N,), or an InputError."""
    try:
        indices = torch.as_tensor(targets, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"targets must be class indices (an int, or one per sample), not {targets!r}") from None
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise InputError(f"targets must be class indices, not {indices.dtype}")
    indices = indices.long().expand(n) if indices.dim() == 0 else indices.long()
    if indices.shape != (n,):
        raise InputError(f"targets must be one class index per sample (N = {n}), got shape {tuple(indices.shape)}")
    return indices


def _forward(model: nn.Module, batch: torch.Tensor) -> Any:
    """The model's output, its own failure reported as bad input (as the explainers do)."""
    return ModelInputs(args=(batch,)).run(model)


def one_map_per_sample(maps: Explanation | torch.Tensor) -> torch.Tensor:
    """An Explanation's maps of its one target (N, ...), or a tensor of real values as given."""
    tensor = maps.maps if isinstance(maps, Explanation) else maps
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"maps must be an Explanation or a tensor, not {type(maps).__name__}")
    if tensor.is_complex():  # torch would drop the imaginary part with only a warning
        raise InputError("maps must hold real values, not complex; give their .abs() or .real")
    if isinstance(maps, Explanation):
        if tensor.shape[1] != 1:
            raise InputError(f"the explanation has {tensor.shape[1]} maps per sample; score one target at a time "
                             "(explain with one target, or select a column)")
        tensor = tensor[:, 0]
    return tensor


def aligned_saliency(maps: Explanation | torch.Tensor, inputs: torch.Tensor, keep_float64: bool = False) -> torch.Tensor:
    """One saliency value per input grid position (N, *grid): an Explanation with one map per
    sample, or a tensor (N, *grid) or (N, C, *grid) aligned with the inputs; several channels are
    summed in absolute value, a single one is the map itself, its sign kept (a CAM's (N, 1, *grid)
    maps score as its Explanation does); finiteness is the caller's to check (``check_finite``).
    With ``keep_float64`` float64 maps stay float64 (maps read without the model).
    Maps on a layer's grid are refused: upsample them first (GradCAM does by
    default; ``interpkit.explainers.gradcam.upsample`` for others)."""
    tensor = one_map_per_sample(maps)
    if tensor.dtype == torch.bool:  # a binary map: 1 where relevant
        tensor = tensor.float()
    grid = tuple(inputs.shape[2:])
    if tensor.dim() == inputs.dim():
        if tensor.shape[1] not in (1, inputs.shape[1]):
            raise InputError(f"maps of shape {tuple(tensor.shape)} have {tensor.shape[1]} channels for inputs with "
                             f"{inputs.shape[1]}; give one channel, the inputs' channels, or (N, *grid) maps")
        tensor = tensor[:, 0] if tensor.shape[1] == 1 else tensor.abs().sum(dim=1)
    if tensor.shape[0] != len(inputs) or tuple(tensor.shape[1:]) != grid:
        raise InputError(f"maps of shape {tuple(tensor.shape)} do not align with inputs {tuple(inputs.shape)}: "
                         f"give (N, *{grid}) maps; upsample layer maps to the input first (GradCAM(upsample=True))")
    dtype = torch.float64 if keep_float64 and tensor.dtype == torch.float64 else torch.float32
    return tensor.detach().to(inputs.device, dtype)


def scored_maps(explanation: Explanation, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first target's maps on the input's grid (layer-grid maps upsampled, explicitly) and
    its targets, as a metric scores them."""
    maps = explanation.maps
    if explanation.kind is MapKind.LAYER_GRID:
        maps = upsample(maps, tuple(inputs.shape[2:]))
    return maps[:, 0], explanation.targets[:, 0]


def drawn(perturb: Callable[[torch.Tensor, torch.Generator], Any], inputs: torch.Tensor, generator: torch.Generator,
          samples: int, name: str) -> torch.Tensor:
    """``samples`` results of ``perturb(inputs, generator)`` (the user's function, or a default),
    stacked (S, N, ...), each checked to be a tensor of the inputs' shape."""
    found = []
    for _ in range(samples):
        value = perturb(inputs, generator)
        if not isinstance(value, torch.Tensor) or value.shape != inputs.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(f"{name} must return a tensor of the inputs' shape {tuple(inputs.shape)}, got {got}")
        found.append(value)
    return torch.stack(found)


def model_copy(model: nn.Module, method: str) -> nn.Module:
    """A deep copy of ``model`` for a check that changes one (the user's stays as it was)."""
    try:
        return copy.deepcopy(model)
    except Exception as error:  # a tensor deepcopy cannot copy (a graph's, as the old weight norm keeps)
        raise InputError(f"{method} changes a copy of the model, and copy.deepcopy could not copy it "
                         f"({type(error).__name__}: {' '.join(str(error).split())[:200]}); give a model that deepcopy "
                         "can copy (the old torch.nn.utils.weight_norm: use torch.nn.utils.parametrizations.weight_norm)"
                         ) from None


def chunks(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` over ``range(total)``."""
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))
