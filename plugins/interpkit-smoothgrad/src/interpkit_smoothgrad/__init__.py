"""SmoothGrad (Smilkov et al., 2017), Integrated Gradients (Sundararajan et al., 2017), and a
noise tunnel around any registered explainer (SmoothGrad, SmoothGrad squared, VarGrad).

Both average input gradients over points derived from each image (noisy copies, or a straight
path from a baseline). The points go through the model as batches, ``chunk`` copies of the
whole batch at a time, never as a Python loop over single images; each chunk costs one forward
and one batched backward for all K targets, through interpkit's explainer machinery.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn

import interpkit
from interpkit import InputError
from interpkit.core import (
    Call,
    Explainer,
    Explanation,
    MapKind,
    TargetLike,
    check_baseline,
    check_flag,
    check_int,
    check_number,
    check_seed,
    neurons_of,
    normal_draws,
    per_target_gradients,
    reference,
)

__version__ = "0.2.0"


class PathAverage(Explainer):
    """Weighted average of input gradients over points built from each image.

    Subclasses give ``points`` of a call (chunks of shape (S, 1 or N, C, H, W) with weights
    (S,)) and may transform the average in ``finish``. ``chunk`` bounds the copies per forward.
    """

    def __init__(self, model: nn.Module, chunk: int | None = None) -> None:
        super().__init__(model)
        self.chunk = check_int("chunk", chunk, none="every point in one forward")

    def points(self, call: Call) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def gradient_term(self, gradients: torch.Tensor) -> torch.Tensor:
        """What is averaged: the gradients themselves unless a subclass says otherwise."""
        return gradients

    def finish(self, call: Call, average: torch.Tensor) -> torch.Tensor:
        return average

    def explain(self, call: Call) -> Explanation:
        inputs, target = call.x, call.target
        clean, _ = self.forward_with_targets(call)  # what is explained, pinned on the clean input
        pinned = target if _batch_free(target) else clean.indices
        n = len(inputs)
        total = None
        for points, weights in self.points(call):
            copies = points.shape[0]
            x = points.expand(copies, n, *inputs.shape[1:]).reshape(copies * n, *inputs.shape[1:])
            x = x.detach().requires_grad_(True)
            expanded = pinned.repeat(copies, 1) if isinstance(pinned, torch.Tensor) else pinned
            selection, _ = self.forward_with_targets(call.with_(x, expanded))
            (gradients,) = per_target_gradients(selection.scores, [x], selection.graph_elements)
            gradients = self.gradient_term(gradients.reshape(copies, n, *gradients.shape[1:]))
            part = torch.einsum("s,s...->...", weights.to(gradients), gradients)
            total = part if total is None else total + part
        assert total is not None
        return self.result(self.finish(call, total), clean, MapKind.INPUT_CHANNELS)


def _batch_free(target: TargetLike) -> bool:
    """Targets that mean the same for any batch: a class for all, every class, callables, neurons."""
    return (isinstance(target, (int, str)) and not isinstance(target, bool)) or bool(neurons_of(target)) or (
        callable(target) and not isinstance(target, torch.Tensor))


def _chunks(total: int, chunk: int | None) -> Iterator[slice]:
    step = chunk or total
    for start in range(0, total, step):
        yield slice(start, min(start + step, total))


class SmoothGrad(PathAverage):
    """The mean input gradient over ``samples`` noisy copies of each image.

    Noise is Gaussian with standard deviation ``noise`` times each image's value range, drawn
    from ``seed``: the same draws for every image, so an image's map does not depend on the
    batch it is in. ``squared=True`` averages squared gradients (SmoothGrad-Squared).
    """

    name = "smoothgrad"

    def __init__(self, model: nn.Module, samples: int = 25, noise: float = 0.15, seed: int = 0,
                 squared: bool = False, chunk: int | None = None) -> None:
        super().__init__(model, chunk)
        check_int("samples", samples)
        check_number("noise", noise)
        self.samples, self.noise, self.seed, self.squared = samples, noise, check_seed(seed), check_flag("squared", squared)

    def points(self, call: Call) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        inputs = call.x
        generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        draws = normal_draws((self.samples, 1, *inputs.shape[1:]), generator, inputs)
        span = (inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)).view(1, -1, *[1] * (inputs.dim() - 1))
        weights = torch.full((self.samples,), 1.0 / self.samples)
        for part in _chunks(self.samples, self.chunk):
            yield inputs.unsqueeze(0) + (draws[part] * (self.noise * span)).to(inputs.dtype), weights[part]

    def gradient_term(self, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.square() if self.squared else gradients


class IntegratedGradients(PathAverage):
    """``(x - baseline) * mean of gradients along the straight path``, with the trapezoid rule
    over ``steps`` points (end points weighted half; the weights sum to 1, so attributions add up
    to ``f(x) - f(baseline)`` as steps grow. captum's ``riemann_trapezoid`` takes the same points
    with weights summing to (steps - 1) / steps).

    ``baseline`` is a number, a tensor broadcastable to one sample, or one per sample (default:
    zeros).
    """

    name = "integrated_gradients"

    def __init__(self, model: nn.Module, steps: int = 32, baseline: float | torch.Tensor = 0.0,
                 chunk: int | None = None) -> None:
        super().__init__(model, chunk)
        check_int("steps", steps, minimum=2)
        self.steps, self.baseline = steps, check_baseline(baseline)

    def points(self, call: Call) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        inputs, baseline = call.x, reference(self.baseline, call)
        alphas = torch.linspace(0, 1, self.steps, dtype=inputs.dtype, device=inputs.device)
        weights = torch.full((self.steps,), 1.0 / (self.steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (self.steps - 1)
        for part in _chunks(self.steps, self.chunk):
            step = alphas[part].view(-1, *[1] * inputs.dim())
            yield baseline.unsqueeze(0) + step * (inputs - baseline).unsqueeze(0), weights[part]

    def finish(self, call: Call, average: torch.Tensor) -> torch.Tensor:
        return average * (call.x - reference(self.baseline, call)).unsqueeze(1)


Perturb = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # inputs, generator -> one noisy copy


class NoiseTunnel(Explainer):
    """Any registered explainer averaged over noisy copies of the inputs (captum's NoiseTunnel):
    ``"smoothgrad"`` the mean map, ``"smoothgrad_sq"`` the mean of squared maps, ``"vargrad"``
    their variance (mean of squares minus square of the mean). Noise is Gaussian with standard
    deviation ``stdev`` (in input units), drawn from ``seed``, the same draw for every image of
    a batch so that no map depends on its batch (or ``perturb(inputs, generator)``, given a copy
    of the inputs it may write). Every sample's noise is drawn before the copies are chunked, so
    ``max_batch`` (about that many noisy samples through the wrapped explainer at a time) changes
    no map; targets are pinned to those of the clean inputs. A noisy copy that is not finite
    (noise beyond the dtype's range, a ``perturb`` giving NaN) is refused after the call."""

    name = "noise_tunnel"
    KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")

    def __init__(self, model: nn.Module, method: str | type = "guided_backprop", samples: int = 25,
                 stdev: float = 0.1, kind: str = "smoothgrad", seed: int = 0, max_batch: int | None = None,
                 perturb: Perturb | None = None, **options) -> None:
        super().__init__(model)
        check_int("samples", samples)
        if kind not in self.KINDS:
            raise InputError(f"kind must be one of {', '.join(self.KINDS)}, got {kind!r}")
        check_number("stdev", stdev)
        check_seed(seed)
        check_int("max_batch", max_batch, none="every copy in one batch")
        cls = interpkit.get_explainer(method) if isinstance(method, str) else method
        if not (isinstance(cls, type) and issubclass(cls, Explainer)):
            raise InputError(f"method must be a registered explainer's name or an Explainer class, not {method!r}")
        if cls is NoiseTunnel:
            raise InputError("a noise tunnel wraps another explainer, not itself")
        if perturb is not None and not callable(perturb):
            raise InputError(f"perturb must be a function (inputs, generator) -> one noisy copy, not {perturb!r}")
        self.inner = cls(model, **options)  # an option it does not take is an InputError naming it
        self.samples, self.stdev, self.kind, self.seed, self.max_batch = samples, stdev, kind, seed, max_batch
        self.perturb = perturb

    def explain(self, call: Call) -> Explanation:
        inputs, target = call.x, call.target
        n = len(inputs)
        clean = self.inner.explain(call)
        pinned = clean.targets if clean.class_targets and not _batch_free(target) else target
        total = squares = None
        finite = torch.ones((), dtype=torch.bool, device=inputs.device)
        for noisy in self._noisy_chunks(inputs):
            finite = finite & noisy.isfinite().all()
            copies = len(noisy) // n
            repeated = pinned.repeat(copies, 1) if isinstance(pinned, torch.Tensor) else pinned
            maps = self.inner.explain(call.with_(noisy, repeated)).maps.reshape(copies, n, *clean.maps.shape[1:])
            part, part_squares = maps.sum(0), maps.square().sum(0)
            total = part if total is None else total + part
            squares = part_squares if squares is None else squares + part_squares
        assert total is not None and squares is not None
        if not bool(finite):  # one host read for every chunk
            raise InputError("a noisy copy of the inputs is not finite: give a stdev (or a perturb) whose noise stays "
                             f"within {inputs.dtype}'s range")
        mean, mean_squares = total / self.samples, squares / self.samples
        maps = {"smoothgrad": mean, "smoothgrad_sq": mean_squares, "vargrad": mean_squares - mean.square()}[self.kind]
        return Explanation(maps.detach().float(), clean.targets, clean.scores, self.name, clean.kind, clean.layer,
                           clean.class_targets)

    def _noisy_chunks(self, inputs: torch.Tensor) -> Iterator[torch.Tensor]:
        """Copy-major chunks (m * N, ...) of the noisy copies."""
        generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        per_call = max(1, (self.max_batch or self.samples * len(inputs)) // len(inputs))
        # every sample's noise (one image's worth each, shared by the batch) in one draw: the
        # values do not depend on how the copies are chunked
        draws = None if self.perturb is not None else normal_draws((self.samples, 1, *inputs.shape[1:]), generator, inputs)
        for first in range(0, self.samples, per_call):
            count = min(per_call, self.samples - first)
            if draws is None:
                yield torch.cat([self._perturbed(inputs, generator) for _ in range(count)])
            else:
                yield (inputs.unsqueeze(0) + self.stdev * draws[first:first + count]).flatten(0, 1)


    def _perturbed(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        copy = self.perturb(inputs.clone(), generator)  # type: ignore[misc]  # it may write what it is given
        if not isinstance(copy, torch.Tensor) or copy.shape != inputs.shape:
            shape = tuple(copy.shape) if isinstance(copy, torch.Tensor) else type(copy).__name__
            raise InputError(f"perturb must return one noisy copy shaped as the inputs {tuple(inputs.shape)}, not {shape}")
        return copy.to(inputs.dtype)


@interpkit.hookimpl
def interpkit_register_explainers(register):
    register(SmoothGrad)
    register(IntegratedGradients)
    register(NoiseTunnel)
