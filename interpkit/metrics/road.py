"""ROAD (Rong et al., 2022): remove a fraction of the pixels by the explanation's ranking and fill
them by noisy linear imputation, so that the removal itself leaks no shape of the mask."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core import check_int, check_number, normal_draws
from ..errors import InputError
from .base import Metric, MetricResult, chunks

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# weights of the 8 neighbours in the imputation (Rong et al.): 1/6 for edges, 1/12 for corners
_NEIGHBOURS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def linear_imputation(images: torch.Tensor, removed: torch.Tensor, tolerance: float = 1e-7,
                      max_iterations: int = 5000) -> torch.Tensor:
    """``images`` (N, C, H, W) with the ``removed`` pixels (N, H, W, bool) replaced by the solution
    of Rong et al.'s linear system: each removed pixel equals the weighted mean of its neighbours
    inside the image. Solved by conjugate gradients on the (symmetric, positive definite) system,
    batched over images and channels, to ``tolerance`` relative residual; in float32 at least
    (half precision underflows the solver's sums), returned in the images' dtype."""
    if images.dtype in (torch.float16, torch.bfloat16):
        return linear_imputation(images.float(), removed, tolerance, max_iterations).to(images.dtype)
    n, c, h, w = images.shape
    kernel = _NEIGHBOURS.to(images).expand(c, 1, 3, 3)
    unknown = removed.unsqueeze(1).to(images.dtype)
    weight_sum = F.conv2d(torch.ones_like(images[:, :1]), kernel[:1], padding=1)  # neighbours inside the image

    def spread(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, padding=1, groups=c)

    def operator(x: torch.Tensor) -> torch.Tensor:  # (diag(s) - W_uu) x on the removed pixels
        return (weight_sum * x - spread(x * unknown)) * unknown

    rhs = spread(images * (1 - unknown)) * unknown
    x = torch.zeros_like(images)
    residual = rhs - operator(x)
    direction = residual.clone()
    rs = (residual * residual).sum(dim=(2, 3), keepdim=True)
    scale = (rhs * rhs).sum(dim=(2, 3), keepdim=True).clamp_min(1e-30)
    for _ in range(max_iterations):
        if bool((rs <= tolerance**2 * scale).all()):
            break
        moved = operator(direction)
        step = rs / (direction * moved).sum(dim=(2, 3), keepdim=True).clamp_min(1e-30)
        x = x + step * direction
        residual = residual - step * moved
        new_rs = (residual * residual).sum(dim=(2, 3), keepdim=True)
        direction = residual + (new_rs / rs.clamp_min(1e-30)) * direction
        rs = new_rs
    return images * (1 - unknown) + x * unknown


class ROAD(Metric):
    """At each removal fraction f (default 0.1 ... 0.9), exactly ``round(f * H * W)`` positions
    are removed: the most relevant first (``order="morf"``), the least relevant first
    (``"lerf"``), ties to the earlier position in row-major order; they are filled by noisy
    linear imputation (Gaussian noise of std ``noise`` on the filled values, drawn from
    ``seed``, the same draw for every image so that no score depends on the batch).
    ``curves`` (N, fractions) hold the target's score after removal minus before;
    ``scores`` their mean. ``order="combined"`` gives (LeRF - MoRF) / 2 (higher is better), as
    Rong et al. recommend; MoRF alone is better when lower, LeRF when higher."""

    name = "road"

    def __init__(self, *, order: str = "combined", fractions: Sequence[float] = FRACTIONS,
                 noise: float = 0.01, seed: int = 0, max_batch: int | None = None, score: str = "probability") -> None:
        super().__init__(max_batch=max_batch, score=score)
        if order not in ("morf", "lerf", "combined"):
            raise InputError(f"order must be 'morf', 'lerf' or 'combined', not {order!r}")
        if hasattr(fractions, "tolist"):  # a numpy array or a tensor reads as its values
            fractions = fractions.tolist()
        if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Iterable) or not len(
                fractions := list(fractions)):
            raise InputError(f"fractions must be a non-empty sequence of numbers, got {fractions!r}")
        if not all(isinstance(f, numbers.Real) and not isinstance(f, bool) and 0 < float(f) < 1 for f in fractions):
            raise InputError(f"fractions must lie strictly between 0 and 1, got {fractions!r}")
        check_number("noise", noise)
        check_int("seed", seed, minimum=0)
        self.order, self.fractions, self.noise, self.seed = order, tuple(float(f) for f in fractions), noise, seed

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """Combined and LeRF are better when higher, MoRF when lower."""
        return self.order != "morf"

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        if inputs.dim() != 4:
            raise InputError("ROAD's imputation is defined for images (N, C, H, W)")
        orders = ("lerf", "morf") if self.order == "combined" else (self.order,)
        curves = {order: self._curves(inputs, saliency, score, order) for order in orders}
        curve = (curves["lerf"] - curves["morf"]) / 2 if self.order == "combined" else curves[self.order]
        fractions = torch.tensor(self.fractions, device=inputs.device)
        return MetricResult(self.name, curve.mean(dim=1), curve, fractions)

    def _curves(self, inputs: torch.Tensor, saliency: torch.Tensor, score: Callable[..., Any],
                order: str) -> torch.Tensor:
        n, positions = len(inputs), saliency[0].numel()
        ranking = torch.argsort(saliency.flatten(1), dim=1, descending=order == "morf", stable=True)
        ranks = torch.argsort(ranking, dim=1).reshape(saliency.shape)
        generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        samples = torch.arange(n, device=inputs.device)
        before = score(inputs, samples)
        after = []
        for fraction in self.fractions:
            removed = ranks < round(fraction * positions)
            filled = linear_imputation(inputs, removed)
            # the same draw for every image, so an image's score does not depend on its batch
            noise = normal_draws((1, *inputs.shape[1:]), generator, inputs)
            filled = torch.where(removed.unsqueeze(1), filled + self.noise * noise, filled)
            after.append(torch.cat([score(filled[part], samples[part]) for part in chunks(n, self.max_batch or n)]))
        return torch.stack(after, dim=1) - before.unsqueeze(1)
