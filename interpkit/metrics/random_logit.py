"""Random logit (Sixt et al., 2020; Quantus' ``RandomLogit``): an explanation of the target class
should differ from the explanation of another class chosen at random."""

from __future__ import annotations

from typing import Any

import torch

from ..core import Explainer, ModelInputs, check_int, check_seed, check_tensor, class_scores, evaluation
from ..errors import InputError
from .base import MetricResult, class_indices
from .sanity import _plane, _rank_correlations, _ssim

SIMILARITIES = ("ssim", "spearman", "pearson")


def random_logit(explainer: Explainer, inputs: torch.Tensor, targets: Any = None, *, classes: int | None = None,
                 similarity: str = "ssim", seed: int = 0, off_targets: Any = None) -> MetricResult:
    """The similarity (N,) of each input's explanation for its target with the explanation for
    a class other than the target: ``off_targets`` if given, else drawn uniformly from the other
    ``classes`` (default: the model's output width) by one draw from a generator seeded with
    ``seed``, shared by the images, so an image's off class depends on its target alone.
    ``similarity``: "ssim" (2-D maps scaled to [0, 1], Gaussian window, as ``randomisation_check``),
    "spearman" (rank correlation) or "pearson", of the first map of each explanation (channels
    summed). Lower is better: a class-sensitive explanation changes with the class."""
    if not isinstance(explainer, Explainer):
        raise InputError(f"random_logit takes an interpkit explainer instance, not {type(explainer).__name__}")
    if similarity not in SIMILARITIES:
        raise InputError(f"similarity must be one of {', '.join(SIMILARITIES)}, not {similarity!r}")
    check_seed(seed)
    inputs = check_tensor(inputs, explainer.model)
    explained = explainer(inputs, None if targets is None else class_indices(targets, len(inputs), inputs.device))
    if not explained.class_targets:
        raise InputError("random_logit needs class targets; the explanation explains a callable's scores or a Neuron")
    chosen = explained.targets[:, 0]
    if off_targets is None:
        count = check_int("classes", classes, minimum=2, none="the model's number of classes") or _classes(explainer,
                                                                                                          inputs)
        if count < 2:
            raise InputError("random_logit compares each target's explanation with another class's, and the model "
                             "has one output; explain a model with several classes")
        draw = torch.randint(count - 1, (1,), generator=torch.Generator().manual_seed(seed)).to(chosen.device)
        off = draw + (draw >= chosen).long()  # uniform over the classes other than the target
    else:
        off = class_indices(off_targets, len(inputs), inputs.device)
        if bool((off == chosen).any()):
            raise InputError("off_targets must differ from each input's target")
    other = explainer(inputs, off)
    reference, maps = _plane(explained), _plane(other)[None]
    if similarity == "ssim":
        if reference.dim() != 3:
            raise InputError(f"SSIM compares 2-D maps, and these are {reference.dim() - 1}-D; give "
                             "similarity='spearman' or 'pearson'")
        scores = _ssim(reference, maps)[:, 0]
    elif similarity == "spearman":
        scores = _rank_correlations(reference, maps)[1][:, 0]
    else:
        scores = _pearson(reference.flatten(1), maps[0].flatten(1))
    return MetricResult("random_logit", scores)


def _classes(explainer: Explainer, inputs: torch.Tensor) -> int:
    with evaluation(explainer.model), torch.no_grad():
        return class_scores(ModelInputs(args=(inputs[:1],)).run(explainer.model)).shape[1]  # on a copy


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double() - a.double().mean(1, keepdim=True), b.double() - b.double().mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).float()
