"""The baselines (references) that DeepLift, the gradient family and the perturbation methods
take: a number, a tensor of one sample or one per sample, or a callable of the inputs."""

from __future__ import annotations

from typing import Any, Callable, Union

import torch

from ..errors import InputError
from .explainer import Call
from .inputs import check_finite
from .options import check_baseline

#: a number, a tensor broadcastable to one sample (C, *grid), one per sample (N, C, *grid), or a callable of the inputs
BaselineLike = Union[float, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def check_reference(value: Any) -> Any:
    """A baseline option, checked where it is given: a finite number, a floating tensor, or a callable."""
    if callable(value) and not isinstance(value, torch.Tensor):
        return value
    return check_baseline(value)


def reference(baseline: BaselineLike, call: Call, draws: bool = False, rows: torch.Tensor | None = None
              ) -> torch.Tensor:
    """The baseline for ``call.x`` (M, C, *grid), in its dtype and device: (1, C, *grid) when
    shared by the rows, (M, C, *grid) otherwise. A tensor with one row per sample of the user's
    batch follows ``call.x``'s rows (``Call.batch``, ``Call.sample``: a sample explained alone,
    copies of the batch); a callable gets a copy of ``call.x`` and returns one row or one per row.
    With ``draws=True`` a tensor (B, C, *grid) is B baselines to draw from (GradientShap), and
    ``rows`` (default ``call.x``) are what a callable is given."""
    x = call.x if rows is None else rows
    given = baseline
    if callable(baseline) and not isinstance(baseline, torch.Tensor):
        baseline = baseline(x.detach().clone())  # a copy: the callable may write what it is given
        if not isinstance(baseline, torch.Tensor) or not baseline.is_floating_point() or baseline.is_meta or \
                baseline.layout != torch.strided:
            raise InputError(f"a baseline callable must return a dense floating tensor with values, not "
                             f"{baseline!r:.80}")
    if not isinstance(baseline, torch.Tensor):
        return torch.full((1, *x.shape[1:]), float(baseline), dtype=x.dtype, device=x.device)
    value = baseline.to(dtype=x.dtype, device=x.device)
    if callable(given):
        check_finite(baseline=value)
    elif torch.finfo(x.dtype).max < torch.finfo(baseline.dtype).max:  # checked finite, but it may overflow
        try:
            check_finite(baseline=value)
        except InputError:
            raise InputError(f"the baseline has values beyond the range of the inputs' {x.dtype} "
                             f"(+-{torch.finfo(x.dtype).max:.4g}); give one that fits it") from None
    if value.dim() == 1 and x.dim() >= 3 and len(value) == x.shape[1] > 1:  # numpy would put it on the last axis
        raise InputError(f"a baseline of shape {tuple(value.shape)} is ambiguous: give one value per channel as "
                         f"{(len(value),) + (1,) * (x.dim() - 2)}, or values along the last axis as "
                         f"{(1,) * (x.dim() - 2) + (len(value),)}")
    if value.dim() < x.dim():  # one sample, broadcast over the sample's axes as given (per-channel values)
        value = value.reshape((1,) * (x.dim() - value.dim()) + tuple(value.shape))
    if value.dim() != x.dim():
        raise InputError(f"a baseline of shape {tuple(baseline.shape)} is neither one sample {tuple(x.shape[1:])} nor a "
                         f"batch of them")
    count = len(value)
    if count == 0:
        raise InputError("got an empty batch of baselines: give at least one")
    if not draws and not callable(given):  # one per sample of the user's batch: for the call's rows
        value = call.per_sample(value)
        count = len(value)
    if not draws and count not in (1, len(x)):
        raise InputError(f"{count} baselines for {call.batch or len(x)} inputs: give one baseline for all or one per "
                         "sample")
    try:
        return value.expand(count, *x.shape[1:])
    except RuntimeError:
        raise InputError(f"a baseline of shape {tuple(baseline.shape)} does not broadcast to the inputs "
                         f"{tuple(x.shape)}") from None


def baseline_pools(baseline: BaselineLike, call: Call) -> torch.Tensor:
    """Baselines to average over or draw from (DeepLiftShap, GradientShap): (B, 1, C, *grid) shared
    by the rows of ``call.x``, or (B, M, C, *grid), row m's own B baselines, from a callable. A
    callable is called on each row alone, so that no row's baselines depend on the rest of its batch
    (it may return one baseline per row given, ``lambda x: x * 0.5``, or a set of them)."""
    if not callable(baseline) or isinstance(baseline, torch.Tensor):
        return reference(baseline, call, draws=True).unsqueeze(1)
    pools = [reference(baseline, call, draws=True, rows=row) for row in call.x.split(1)]
    sizes = sorted({len(pool) for pool in pools})
    if len(sizes) > 1:
        raise InputError(f"the baseline callable gave {' or '.join(map(str, sizes))} baselines for different "
                         "samples; give every sample the same number")
    return torch.stack(pools, 1)
