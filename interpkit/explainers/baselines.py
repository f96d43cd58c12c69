"""The baselines (references) that DeepLift, the gradient family and the perturbation methods
take: a number, a tensor of one sample or one per sample, or a callable of the inputs."""

from __future__ import annotations

from typing import Any, Callable, Union

import torch

from ..core import check_baseline, check_finite
from ..errors import InputError

#: a number, a tensor broadcastable to one sample (C, *grid), one per sample (N, C, *grid), or a callable of the inputs
BaselineLike = Union[float, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def check_reference(value: Any) -> Any:
    """A baseline option, checked where it is given: a finite number, a floating tensor, or a callable."""
    if callable(value) and not isinstance(value, torch.Tensor):
        return value
    if isinstance(value, torch.Tensor) and value.device.type == "meta":
        raise InputError("a baseline tensor must hold values (it is on the meta device)")
    return check_baseline(value)


def reference(baseline: BaselineLike, x: torch.Tensor, batch: bool = False,
              sample: tuple[int, int] | None = None) -> torch.Tensor:
    """The baseline for inputs ``x`` (N, C, *grid), in their dtype and device: (1, C, *grid) when
    it is shared by the samples, (N, C, *grid) when given per sample. With ``batch=True`` a
    tensor (B, C, *grid) is B baselines to draw from (GradientShap, DeepLiftShap). ``sample``
    is ``Call.sample``: ``x`` is sample i of the user's batch of n, so a baseline per sample
    gives its row i."""
    if callable(baseline) and not isinstance(baseline, torch.Tensor):
        value = baseline(x)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.device.type == "meta":
            raise InputError(f"a baseline callable must return a floating tensor with values, not {value!r:.80}")
        check_finite(baseline=value.to(x.device))
        baseline = value
    if not isinstance(baseline, torch.Tensor):
        return torch.full((1, *x.shape[1:]), float(baseline), dtype=x.dtype, device=x.device)
    value = baseline.to(dtype=x.dtype, device=x.device)
    if value.dim() < x.dim():  # one sample, broadcast over the sample's axes as given (per-channel values)
        value = value.reshape((1,) * (x.dim() - value.dim()) + tuple(value.shape))
    if value.dim() != x.dim():
        raise InputError(f"a baseline of shape {tuple(baseline.shape)} is neither one sample {tuple(x.shape[1:])} nor a "
                         f"batch of them")
    rows = len(value)
    if rows == 0:
        raise InputError("got an empty batch of baselines: give at least one")
    if sample is not None and not batch and rows == sample[1] > 1:
        value, rows = value[sample[0]:sample[0] + 1], 1
    if not batch and rows not in (1, len(x)):
        raise InputError(f"{rows} baselines for {len(x)} inputs: give one baseline for all or one per sample")
    try:
        return value.expand(rows, *x.shape[1:])
    except RuntimeError:
        raise InputError(f"a baseline of shape {tuple(baseline.shape)} does not broadcast to the inputs "
                         f"{tuple(x.shape)}") from None
