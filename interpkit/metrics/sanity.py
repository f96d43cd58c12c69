"""Model-parameter randomisation (Adebayo et al., 2018): an explanation that does not change when
the model's weights are randomised does not explain the model."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..core import (
    Explainer,
    Explanation,
    MapKind,
    ModelInputs,
    TargetLike,
    check_flag,
    check_int,
    check_number,
    check_seed,
    check_tensor,
    evaluation,
)
from ..errors import InputError
from .base import MetricResult, check_model, model_copy


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
                        target: TargetLike = None, *, cascading: bool = True, seed: int | Sequence[int] = 0,
                        smooth: int = 1, noise: float = 0.1, noise_seed: int = 0) -> RandomisationResult:
    """Randomise the model's parameterised layers from the top (the last to run) down, cumulatively
    (``cascading``) or one at a time, re-initialising each with its own ``reset_parameters`` under
    seed ``seed + step`` (or ``seed[step]`` for a sequence of seeds, one per layer), and compare the
    explanation of ``inputs`` with the original's each time.
    One copy of the model is made; the model itself is left unchanged. The targets stay those of
    the original explanation.

    With ``smooth`` above 1 every explanation, the original's included, is the mean over
    ``smooth`` copies of the input, the last one clean and the others with Gaussian noise of
    standard deviation ``noise`` times the input's range (max - min): the smooth MPRT of Hedström
    et al. (2023), which denoises the explanations before comparing them. The noise is drawn
    once from a generator seeded with ``noise_seed``, shared by the images and by every model, so
    the comparisons see the models change and not the noise."""
    check_flag("cascading", cascading)
    check_model(model)
    inputs = check_tensor(inputs, model)
    explain = _smoothed(check_int("smooth", smooth), check_number("noise", noise), check_seed(noise_seed), inputs)
    original = explain(explained_by(make_explainer, model), target)
    pinned = original.targets if original.class_targets else target
    reference = _plane(original)
    trial = model_copy(model, "the randomisation check")
    layers = _top_down(trial, inputs)
    if not layers:
        raise InputError("the model has no layer with parameters to randomise")
    seeds = _layer_seeds(seed, len(layers))
    maps = []
    for step, (_, module) in enumerate(layers):
        kept = None if cascading else copy.deepcopy(module.state_dict())  # one layer at a time
        _reset(module, seeds[step])
        maps.append(_plane(explain(explained_by(make_explainer, trial), pinned)))
        if kept is not None:
            module.load_state_dict(kept)
    stacked = torch.stack(maps)  # (steps, N, *grid)
    return RandomisationResult([name for name, _ in layers], *_rank_correlations(reference, stacked),
                               _ssim(reference, stacked), stacked)


def efficient_randomisation_check(make_explainer: Callable[[nn.Module], Explainer], model: nn.Module,
                                  inputs: torch.Tensor, target: TargetLike = None, *, bins: int = 100,
                                  seed: int | Sequence[int] = 0) -> MetricResult:
    """The efficient MPRT of Hedström et al. (2023): the relative rise of each explanation's
    complexity, ``(H(e_random) - H(e)) / H(e)``, from the model to a copy with every parameterised
    layer re-initialised (seeded as ``randomisation_check``), with H the entropy of the histogram
    of the map's values in ``bins`` equal bins over its own range (Quantus' discrete entropy).
    Explanations of a model that has learnt something are simpler than those of a random one:
    higher is better. NaN where the original map is constant (its entropy is 0). Two
    explanations in all, where the layer-by-layer check needs one per layer; the targets stay
    the original explanation's; the model is left unchanged."""
    check_int("bins", bins)
    check_model(model)
    inputs = check_tensor(inputs, model)
    original = explained_by(make_explainer, model)(inputs, target)
    pinned = original.targets if original.class_targets else target
    trial = model_copy(model, "the randomisation check")
    layers = _top_down(trial, inputs)
    if not layers:
        raise InputError("the model has no layer with parameters to randomise")
    for (_, module), layer_seed in zip(layers, _layer_seeds(seed, len(layers))):
        _reset(module, layer_seed)
    before = histogram_entropy(_plane(original).flatten(1), bins)
    after = histogram_entropy(_plane(explained_by(make_explainer, trial)(inputs, pinned)).flatten(1), bins)
    rise = (after - before) / before
    return MetricResult("efficient_randomisation", torch.where(before > 0, rise, torch.nan).float())


def histogram_entropy(values: torch.Tensor, bins: int) -> torch.Tensor:
    """The entropy (nats) of each row's histogram over ``bins`` equal bins from its smallest to its
    largest value, the last bin closed; a constant row gets one bin around its value (entropy 0).
    The edges are computed as ``numpy.histogram`` computes them, in the values' dtype."""
    check_int("bins", bins)
    if not isinstance(values, torch.Tensor) or values.dim() != 2 or not values.dtype.is_floating_point \
            or not values.shape[1]:
        raise InputError(f"values must be a floating tensor (rows, values), not {getattr(values, 'shape', values)!r}")
    if not bool(torch.isfinite(values).all()):
        raise InputError("values must be finite: a histogram has no bin for NaN or an infinite value")
    low, high = values.amin(dim=1, keepdim=True), values.amax(dim=1, keepdim=True)
    flat = low == high
    low, high = torch.where(flat, low - 0.5, low), torch.where(flat, high + 0.5, high)
    width = (high - low) / bins
    if not bool((torch.isfinite(width) & (width > 0)).all()) and values.dtype != torch.float64:
        return histogram_entropy(values.double(), bins)  # a range beyond the dtype's (as NumPy widens it)
    steps = torch.arange(bins + 1, dtype=values.dtype, device=values.device)
    edges = steps * width + low
    index = (torch.searchsorted(edges, values, right=True) - 1).clamp(0, bins - 1)  # the largest: last bin
    counts = torch.zeros(len(values), bins, dtype=torch.float64, device=values.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    share = counts / values.shape[1]
    return -(share * torch.where(share > 0, share.log(), 0.0)).sum(dim=1)


def _smoothed(smooth: int, noise: float, seed: int, inputs: torch.Tensor) -> Callable[[Explainer, TargetLike], Explanation]:
    """Explain ``inputs`` as the mean over ``smooth`` copies, the input itself and ``smooth - 1``
    with Gaussian noise (``noise`` times each input's range), all for the clean input's targets,
    the same draws for every explainer."""
    if smooth == 1:
        return lambda explainer, target: explainer(inputs, target)
    flat = inputs.flatten(1)
    spread = (flat.amax(dim=1) - flat.amin(dim=1)).view(-1, *[1] * (inputs.dim() - 1)) * noise
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device
    draws = torch.randn((smooth - 1, 1, *inputs.shape[1:]), generator=generator, dtype=torch.float32).to(inputs)

    def explain(explainer: Explainer, target: TargetLike) -> Explanation:
        clean = explainer(inputs, target)
        pinned = clean.targets if clean.class_targets else target  # every noisy copy explains the clean top class
        total = clean.maps.clone()
        for draw in draws:
            total += explainer(inputs + spread * draw, pinned).maps
        return dataclasses.replace(clean, maps=total / smooth)

    return explain


_SEEDING = threading.Lock()


def _reset(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s parameters with its own ``reset_parameters`` under ``seed``:
    the CPU generator and that of the module's device are seeded, and given back after
    (``torch.manual_seed`` would reseed every CUDA device's generator for good). Those generators
    are the process's: one thread's seeded draws at a time, or threads would draw from each
    other's seeds and give back each other's states."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    device = torch.device("cpu") if tensor is None else tensor.device
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    forked = [device] if backend is not None else []
    with _SEEDING, torch.random.fork_rng(devices=forked, device_type=device.type if forked else "cuda"):
        torch.default_generator.manual_seed(seed)
        if backend is not None:
            with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
                backend.manual_seed(seed)  # the current device's
        module.reset_parameters()  # type: ignore[operator]


def _layer_seeds(seed: int | Sequence[int], count: int) -> list[int]:
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [seed + step for step in range(count)]
    if isinstance(seed, Sequence) and len(seed) == count and all(
            isinstance(s, int) and not isinstance(s, bool) for s in seed):
        return list(seed)
    raise InputError(f"seed must be an int or a sequence of {count} ints (one per randomised layer), got {seed!r}")


def _plane(explanation: Explanation) -> torch.Tensor:
    """One map per sample (N, *grid): the first target's, its channels summed when it has the
    input's channels (a 3-D CAM keeps its depth; a 1-D gradient loses its channels)."""
    first = explanation.maps[:, 0]
    return first.sum(dim=1) if explanation.kind is MapKind.INPUT_CHANNELS else first


def explained_by(make_explainer: Callable[[nn.Module], Explainer], model: nn.Module) -> Explainer:
    """``make_explainer(model)``, or an InputError saying what the factory should be."""
    if isinstance(make_explainer, Explainer) or not callable(make_explainer):
        raise InputError("make_explainer must be the explainer's factory (its class, or lambda model: ...), not "
                         f"{type(make_explainer).__name__}: the check explains other models or inputs with it")
    explainer = make_explainer(model)
    if not isinstance(explainer, Explainer):
        raise InputError(f"make_explainer(model) must return an interpkit Explainer, not {type(explainer).__name__}")
    return explainer


def _top_down(model: nn.Module, inputs: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Modules with their own parameters and a ``reset_parameters``, in reverse order of running."""
    names = {m: n for n, m in model.named_modules()
             if any(True for _ in m.parameters(recurse=False)) and hasattr(m, "reset_parameters")}
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, i, o: order.append(m) if m not in order else None) for m in names]
    try:
        with evaluation(model), torch.no_grad():
            ModelInputs(args=(inputs[:1],)).run(model)  # its own failure reported as bad input
    finally:
        for handle in handles:
            handle.remove()
    return [(names[m], m) for m in reversed(order)]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their 1-based positions) along the last dimension:
    in sorted order a tie group spans from its first to its last position, found by running
    maximum and minimum over the group boundaries (linear, unlike a search per value)."""
    sorted_values, order = values.sort(dim=-1)
    n = values.shape[-1]
    positions = torch.arange(n, device=values.device).expand_as(sorted_values)
    differs = sorted_values[..., 1:] != sorted_values[..., :-1]
    edge = torch.ones((*values.shape[:-1], 1), dtype=torch.bool, device=values.device)
    first = torch.where(torch.cat([edge, differs], -1), positions, 0).cummax(-1).values
    last = torch.where(torch.cat([differs, edge], -1), positions, n).flip(-1).cummin(-1).values.flip(-1)
    mean_rank = (first + last).double() / 2 + 1
    return torch.empty_like(mean_rank).scatter_(-1, order, mean_rank)


def _centred_ranks(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred ranks of the absolute and of the signed maps (N, *grid), flattened; one ranking
    serves both where no value is negative (a ReLU'd CAM)."""
    signed = _ranks(maps.flatten(1))
    signed -= signed.mean(1, keepdim=True)
    if (maps >= 0).all():
        return signed, signed
    absolute = _ranks(maps.abs().flatten(1))
    return absolute - absolute.mean(1, keepdim=True), signed


def _rank_correlations(reference: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spearman's rank correlations (N, steps) of the absolute and of the signed maps (steps, N,
    *grid) with the reference's (N, *grid); 0 where a map is constant."""
    def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        denominator = a.norm(dim=1) * b.norm(dim=1)
        return torch.where(denominator > 0, (a * b).sum(1) / denominator.clamp_min(1e-300), 0.0).float()

    reference_abs, reference_signed = _centred_ranks(reference)
    pairs = [_centred_ranks(m) for m in maps]
    return (torch.stack([pearson(reference_abs, absolute) for absolute, _ in pairs], dim=1),
            torch.stack([pearson(reference_signed, signed) for _, signed in pairs], dim=1))


def _ssim(reference: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (N, steps) of each 2-D map (steps, N, H, W) with the reference (N, H, W), both
    scaled to [0, 1] per map (Gaussian window 11, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, as Wang et
    al. 2004). The reference's windowed moments are computed once."""
    if reference.dim() != 3:  # SSIM is defined for images; other maps have none
        return torch.full((len(reference), len(maps)), torch.nan, device=reference.device)

    def scaled(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).float()
        low, span = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True)
        return ((flat - low) / torch.where(span > 0, span, 1.0)).reshape(x.shape)

    size = min(11, reference.shape[-1], reference.shape[-2])
    coords = torch.arange(size, dtype=torch.float32, device=reference.device) - (size - 1) / 2
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

    c1, c2 = 0.01**2, 0.03**2
    x = scaled(reference)
    mean_x, xx = window(torch.stack([x, x * x]))
    var_x = xx - mean_x**2
    scores = []
    for step in maps:
        y = scaled(step)
        mean_y, yy, xy = window(torch.stack([y, y * y, x * y]))
        var_y, cov = yy - mean_y**2, xy - mean_x * mean_y
        ssim = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
        scores.append(ssim.flatten(1).mean(1).float())
    return torch.stack(scores, dim=1)
