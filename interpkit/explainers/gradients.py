"""The plain-gradient family: Saliency (Simonyan et al., 2014), input times gradient (Shrikumar
et al., 2016) and GradientShap (Lundberg and Lee, 2017; captum's form), """

from __future__ import annotations

import torch
from torch import nn

from ..core import (
    BaselineLike,
    Call,
    Explainer,
    Explanation,
    MapKind,
    baseline_pools,
    check_flag,
    check_int,
    check_number,
    check_reference,
    check_seed,
    neurons_of,
    normal_draws,
    per_target_gradients,
    uniform_draws,
)
from ..errors import InputError


class Saliency(Explainer):
    """The input gradient of each target, its absolute value by default (``absolute=True``, as
    Simonyan et al. and captum's ``Saliency`` default), per channel: maps (N, K, C, *grid)."""

    name = "saliency"

    def __init__(self, model: nn.Module, absolute: bool = True) -> None:
        super().__init__(model)
        self.absolute = check_flag("absolute", absolute)

    def explain(self, call: Call) -> Explanation:
        """Every target's input gradient from one forward and one batched backward."""
        x = call.x.detach().clone().requires_grad_(True)
        selection, _ = self.forward_with_targets(call.with_(x))
        (gradients,) = per_target_gradients(selection.scores, [x], selection.graph_elements)
        return self.result(gradients.abs() if self.absolute else gradients, selection, MapKind.INPUT_CHANNELS)


class InputXGradient(Explainer):
    """The input times its gradient, ``x * df/dx``, per channel: maps (N, K, C, *grid)."""

    name = "input_x_gradient"

    def explain(self, call: Call) -> Explanation:
        """The inputs times every target's input gradient."""
        x = call.x.detach().clone().requires_grad_(True)
        selection, _ = self.forward_with_targets(call.with_(x))
        (gradients,) = per_target_gradients(selection.scores, [x], selection.graph_elements)
        return self.result(call.x.unsqueeze(1) * gradients, selection, MapKind.INPUT_CHANNELS)


class GradientShap(Explainer):
    """Expected gradients (captum's ``GradientShap``): over ``samples`` draws per image, a
    baseline ``b`` drawn from ``baselines`` (B, C, *grid), Gaussian noise of standard deviation
    ``noise`` added to the input (``x' = x + e``), and ``alpha`` uniform in [0, 1); the map is the
    mean of ``(x' - b) * grad f(b + alpha (x' - b))``. The draws come from ``gradient_shap_draws``
    with ``seed``, shared by the images, so an image's map does not depend on its batch. ``max_batch`` bounds
    the points per forward. Targets are resolved on the clean input."""

    name = "gradient_shap"

    def __init__(self, model: nn.Module, baselines: BaselineLike = 0.0, samples: int = 5, noise: float = 0.0,
                 seed: int = 0, max_batch: int = 64) -> None:
        super().__init__(model)
        self.baselines = check_reference(baselines)
        self.samples, self.noise = check_int("samples", samples), check_number("noise", noise)
        self.seed, self.max_batch = check_seed(seed), check_int("max_batch", max_batch)

    def explain(self, call: Call) -> Explanation:
        """The draws' points, ``max_batch`` at a time, each chunk one forward and one batched backward."""
        x = call.x
        if self.noise * 16 > torch.finfo(x.dtype).max:  # draws of a few standard deviations would overflow
            raise InputError(f"noise={self.noise:g} is beyond the range of the inputs' {x.dtype} "
                             f"(+-{torch.finfo(x.dtype).max:.4g}); give a smaller one")
        # what is explained, pinned on the clean input (a copy: the model may write into its input)
        clean, _ = self.forward_with_targets(call.with_(x.clone()), graph=False)
        pinned = call.target if neurons_of(call.target) or not clean.classes else clean.indices
        noisy, chosen, alphas = gradient_shap_draws(x, baseline_pools(self.baselines, call), self.samples,
                                                    self.noise, self.seed)
        total = torch.zeros((len(x), clean.indices.shape[1], *x.shape[1:]), dtype=torch.float64, device=x.device)
        per_chunk = max(1, self.max_batch // len(x))
        for first in range(0, self.samples, per_chunk):
            part = slice(first, min(first + per_chunk, self.samples))
            copies = part.stop - part.start
            step = alphas[part].view(copies, len(x), *[1] * (x.dim() - 1))
            points = (chosen[part] + step * (noisy[part] - chosen[part])).flatten(0, 1).detach().requires_grad_(True)
            target = pinned.repeat(copies, 1) if isinstance(pinned, torch.Tensor) else pinned
            selection, _ = self.forward_with_targets(call.with_(points, target))
            (gradients,) = per_target_gradients(selection.scores, [points], selection.graph_elements)
            gradients = gradients.view(copies, len(x), *gradients.shape[1:])
            total += ((noisy[part] - chosen[part]).unsqueeze(2) * gradients).sum(0).double()
        return self.result(total / self.samples, clean, MapKind.INPUT_CHANNELS)


def gradient_shap_draws(x: torch.Tensor, baselines: torch.Tensor, samples: int, noise: float, seed: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GradientShap's draws for inputs (N, C, *grid) and baselines (B, C, *grid), or (B, N, C, *grid)
    for each image's own B (``baseline_pools``): the noisy inputs and the chosen baselines
    (samples, N, C, *grid), and the alphas (samples, N). The draws come
    from a generator seeded with ``seed`` on the inputs' device, in this order: the noise
    (samples, C, *grid), the baseline indices (samples,), the alphas (samples,); every image
    shares them, so that its map does not depend on its batch."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    shape = (samples, 1, *x.shape[1:])
    noisy = x.unsqueeze(0) + noise * normal_draws(shape, generator, x)
    picks = torch.randint(len(baselines), (samples,), generator=generator, device=x.device)
    alphas = uniform_draws((samples, 1), generator, x).expand(samples, len(x))
    chosen = baselines[picks]
    return noisy, (chosen if chosen.dim() > x.dim() else chosen.unsqueeze(1)).expand_as(noisy), alphas
