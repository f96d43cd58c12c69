"""Model-parameter randomisation (Adebayo et al., 2018): an explanation that does not change when
the model's weights are randomised does not explain the model."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..core import Explainer, TargetLike, check_tensor, evaluation
from ..errors import InputError


@dataclass
class RandomisationResult:
    """Per randomisation step (``layers``, top first): Spearman rank correlations of the absolute
    and the signed maps with the original ones, and SSIM of the maps scaled to [0, 1], each
    (N, steps); ``maps`` (steps, N, *grid) the randomised models' maps. ``mean_*`` average over
    the randomised models only (never the original, whose correlation is 1)."""

    layers: list[str]
    spearman_abs: torch.Tensor
    spearman: torch.Tensor
    ssim: torch.Tensor
    maps: torch.Tensor

    @property
    def mean_spearman_abs(self) -> torch.Tensor:
        """Per sample, the mean absolute-map rank correlation over the randomisation steps."""
        return self.spearman_abs.mean(dim=1)


def randomisation_check(make_explainer: Callable[[nn.Module], Explainer], model: nn.Module, inputs: torch.Tensor,
                        target: TargetLike = None, *, cascading: bool = True, seed: int = 0) -> RandomisationResult:
    """Randomise the model's parameterised layers from the top (the last to run) down, cumulatively
    (``cascading``) or one at a time, re-initialising each with its own ``reset_parameters`` under
    seed ``seed + step``, and compare the explanation of ``inputs`` with the original's each time.
    One copy of the model is made; the model itself is left unchanged. The targets stay those of
    the original explanation."""
    inputs = check_tensor(inputs, model)
    original = make_explainer(model)(inputs, target)
    pinned = original.targets if original.class_targets else target
    reference = _plane(original.maps)
    trial = copy.deepcopy(model)
    layers = _top_down(trial, inputs)
    if not layers:
        raise InputError("the model has no layer with parameters to randomise")
    maps = []
    for step, (_, module) in enumerate(layers):
        kept = None if cascading else copy.deepcopy(module.state_dict())  # one layer at a time
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + step)
            module.reset_parameters()  # type: ignore[operator]
        maps.append(_plane(make_explainer(trial)(inputs, pinned).maps))
        if kept is not None:
            module.load_state_dict(kept)
    stacked = torch.stack(maps)  # (steps, N, *grid)
    reference_ranks = (_centred_ranks(reference.abs()), _centred_ranks(reference))
    spearman_abs = torch.stack([_spearman(reference_ranks[0], m.abs()) for m in stacked], dim=1)
    spearman = torch.stack([_spearman(reference_ranks[1], m) for m in stacked], dim=1)
    ssim = torch.stack([_ssim(reference, m) for m in stacked], dim=1)
    return RandomisationResult([name for name, _ in layers], spearman_abs, spearman, ssim, stacked)


def _plane(maps: torch.Tensor) -> torch.Tensor:
    """One map per sample: the first target's, channels summed when there are any."""
    first = maps[:, 0]
    return first.sum(dim=1) if first.dim() == 4 else first


def _top_down(model: nn.Module, inputs: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Modules with their own parameters and a ``reset_parameters``, in reverse order of running."""
    names = {m: n for n, m in model.named_modules()
             if any(True for _ in m.parameters(recurse=False)) and hasattr(m, "reset_parameters")}
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, i, o: order.append(m) if m not in order else None) for m in names]
    try:
        with evaluation(model), torch.no_grad():
            model(inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    return [(names[m], m) for m in reversed(order)]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions) along the last dimension."""
    order = values.argsort(dim=-1, stable=True)
    sorted_values = values.gather(-1, order)
    ranks = torch.empty_like(values, dtype=torch.float64)
    for row in range(values.shape[0]):
        _, inverse, counts = torch.unique_consecutive(sorted_values[row], return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        mean_rank = ends - (counts.double() - 1) / 2
        ranks[row, order[row]] = mean_rank[inverse]
    return ranks


def _centred_ranks(maps: torch.Tensor) -> torch.Tensor:
    ranks = _ranks(maps.flatten(1))
    return ranks - ranks.mean(1, keepdim=True)


def _spearman(ra: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation per sample between maps whose centred ranks are ``ra`` and
    maps ``b`` (N, *grid); 0 where a map is constant."""
    rb = _centred_ranks(b)
    denominator = ra.norm(dim=1) * rb.norm(dim=1)
    return torch.where(denominator > 0, (ra * rb).sum(1) / denominator.clamp_min(1e-300), 0.0).float()


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per sample of 2-D maps (N, H, W) scaled to [0, 1] each (Gaussian window 11,
    sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, as Wang et al. 2004)."""
    if a.dim() != 3:
        raise InputError("SSIM is computed for 2-D maps")

    def scaled(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).float()
        low, span = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True)
        return ((flat - low) / torch.where(span > 0, span, 1.0)).reshape(x.shape).unsqueeze(1)

    x, y = scaled(a), scaled(b)
    size = min(11, x.shape[-1], x.shape[-2])
    coords = torch.arange(size, dtype=torch.float32, device=a.device) - (size - 1) / 2
    gauss = torch.exp(-coords**2 / (2 * 1.5**2))
    gauss = gauss / gauss.sum()

    def window(t: torch.Tensor) -> torch.Tensor:
        """The separable Gaussian window ('valid'): weighted sums of shifted slices, along the
        columns then the rows (several times faster than a one-channel conv2d on a CPU)."""
        width, height = t.shape[-1] - size + 1, t.shape[-2] - size + 1
        rows = torch.zeros_like(t[..., :, :width])
        for i in range(size):
            rows += gauss[i] * t[..., :, i:i + width]
        out = torch.zeros_like(rows[..., :height, :])
        for i in range(size):
            out += gauss[i] * rows[..., i:i + height, :]
        return out

    stacked = window(torch.cat([x, y, x * x, y * y, x * y], dim=1))
    mean_x, mean_y, xx, yy, xy = stacked.unbind(dim=1)
    var_x, var_y, cov = xx - mean_x**2, yy - mean_y**2, xy - mean_x * mean_y
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    return ssim.flatten(1).mean(1).float()
