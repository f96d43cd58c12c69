"""Infidelity (Yeh et al., 2019): how far the explanation's linear prediction of a perturbation's
effect is from the effect itself."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..core import Explanation, check_int, normal_draws
from ..errors import InputError
from .base import Metric, MetricResult, TargetScores, chunks, drawn, one_map_per_sample

Perturbation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # inputs, generator -> I, same shape


def gaussian(std: float = 0.003) -> Perturbation:
    """I ~ N(0, std^2) per input element, the perturbation Yeh et al. use for infidelity; one draw
    shared by the images of a batch, so that no image's score depends on its batch."""
    def perturb(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draw = normal_draws((1, *inputs.shape[1:]), generator, inputs)
        return (draw * std).expand_as(inputs)

    return perturb


class Infidelity(Metric):
    """``E_I[(I . attribution - (f(x) - f(x - I)))^2]`` over ``samples`` perturbations I drawn by
    ``perturbation`` (default Gaussian, std 0.003) from a generator seeded with ``seed``; f is the
    target's score (``score="logit"`` by default, the model output as captum uses it). Lower is
    better. The maps are input attributions: (N, C, *grid), or (N, *grid) shared by the channels.
    ``score_each`` draws the perturbations once for all the explanations it scores, so a
    perturbation should draw only from the generator it is given."""

    name = "infidelity"
    higher_is_better = False

    def __init__(self, *, perturbation: Perturbation | None = None, samples: int = 10, seed: int = 0,
                 max_batch: int | None = None, score: str = "logit") -> None:
        super().__init__(max_batch=max_batch, score=score)
        check_int("samples", samples)
        check_int("seed", seed, minimum=0)
        if perturbation is not None and not callable(perturbation):
            raise InputError(f"perturbation must be a function such as interpkit.metrics.gaussian(), not {perturbation!r}")
        self.perturbation = perturbation or gaussian()
        self.samples, self.seed = samples, seed

    def prepare(self, maps: Explanation | torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        tensor = one_map_per_sample(maps)
        if tensor.dim() == inputs.dim() - 1:
            tensor = tensor.unsqueeze(1)
        if (tensor.dim() != inputs.dim() or len(tensor) != len(inputs) or tensor.shape[1] not in (1, inputs.shape[1])
                or tensor.shape[2:] != inputs.shape[2:]):
            raise InputError(f"attributions of shape {tuple(tensor.shape)} do not align with inputs "
                             f"{tuple(inputs.shape)}; give (N, C, *grid) or (N, *grid)")
        return tensor.expand(inputs.shape).detach().to(inputs.device, inputs.dtype)

    def compute(self, model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                score: TargetScores) -> MetricResult:
        perturbations, drops = score.shared("perturbations", lambda: self._drops(inputs, score))
        predicted = (perturbations * attributions.unsqueeze(0)).flatten(2).sum(-1).flatten()
        errors = (predicted - drops).square().reshape(self.samples, len(inputs))
        return MetricResult(self.name, errors.mean(dim=0))

    def _drops(self, inputs: torch.Tensor, score: TargetScores) -> tuple[torch.Tensor, torch.Tensor]:
        """The perturbations (S, N, ...) and the drops of the score they cause (S x N): the same for any maps."""
        n = len(inputs)
        generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        perturbations = drawn(self.perturbation, inputs, generator, self.samples, "the perturbation")  # (S, N, ...)
        samples = torch.arange(n, device=inputs.device).repeat(self.samples)
        perturbed = (inputs.unsqueeze(0) - perturbations).flatten(0, 1)
        after = torch.cat([score(perturbed[part], samples[part]) for part in chunks(len(perturbed), self.max_batch or n)])
        before = score(inputs, torch.arange(n, device=inputs.device)).repeat(self.samples)
        return perturbations, before - after
