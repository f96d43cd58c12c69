"""KernelSHAP and LIME: a weighted linear model fitted, per image and target, to the target's
scores on copies of the input with random coalitions of features kept (the rest at the
baseline); the model's coefficients are the features' attributions.

Both fit ``y = b + z . beta`` over the binary coalitions ``z`` (with an intercept, minimising
the weighted squared error plus the regulariser), solved in torch on the input's device in float64
(``fit_linear``). KernelSHAP (Lundberg and Lee, 2017) draws the coalition size ``k`` with
probability proportional to ``(F - 1) / (k (F - k))`` and then ``k`` features uniformly, after
one all-kept and one none-kept row weighted 10^6 (captum's ``KernelShap``: the large weight
stands in for the infinite weight that pins ``b`` and ``b + sum(beta)`` to the baseline's and the
input's scores). LIME (Ribeiro et al., 2016) keeps each feature with probability 1/2 and weighs
a copy by ``exp(-d^2 / (2 width^2))`` of its distance ``d`` to the input (captum's ``Lime``:
cosine distance, width 1, lasso with alpha 0.01). Coalitions come from ``seed`` on the input's
device, shared by the batch's images.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import nn

from ..core import BaselineLike, Call, TargetSelection, check_generator, check_int, check_number, check_seed
from ..errors import InputError, SamplingWarning
from .features import FeatureExplainer, per_image
from .perturbation import perturbed_scores

_REGULARISERS = ("lasso", "ridge", None)


def kernel_shap_coalitions(samples: int, features: int, generator: torch.Generator,
                           device: torch.device | str = "cpu") -> torch.Tensor:
    """KernelSHAP's coalitions (samples, F), bool: all kept, none kept, then sizes drawn from the
    Shapley kernel's distribution and uniform subsets of those sizes."""
    check_int("samples", samples), check_int("features", features), check_generator(generator)
    if features < 2 or samples <= 2:
        return (torch.arange(samples, device=device) % 2 == 0).unsqueeze(1).expand(samples, features)
    sizes = torch.arange(1, features, device=device, dtype=torch.float64)
    size = 1 + torch.multinomial((features - 1) / (sizes * (features - sizes)), samples - 2, replacement=True,
                                 generator=generator)
    ranks = torch.rand(samples - 2, features, generator=generator, device=device).argsort(dim=1).argsort(dim=1)
    drawn = ranks < size.unsqueeze(1)
    ends = torch.tensor([[True], [False]], device=device).expand(2, features)
    return torch.cat([ends, drawn])


def lime_coalitions(samples: int, features: int, generator: torch.Generator,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """LIME's coalitions (samples, F), bool: each feature kept with probability 1/2."""
    check_int("samples", samples), check_int("features", features), check_generator(generator)
    return torch.rand(samples, features, generator=generator, device=device) < 0.5


def fit_linear(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, regulariser: str | None = None,
               alpha: float = 0.0) -> torch.Tensor:
    """The coefficients (N, K, F) of ``y ~ b + z . beta`` for coalitions ``z``, (S, F) shared or
    (S, N, F) per image, targets ``y`` (S, N, K) and sample weights (S, N), in float64 (float32
    where the device has none). ``regulariser``: None minimises ``sum_s w_s r_s^2`` (the
    minimum-norm solution where that is not unique); "ridge" adds ``alpha |beta|^2``; "lasso"
    minimises ``sum_s w_s r_s^2 / (2 sum_s w_s) + alpha |beta|_1``: scikit-learn's objectives.
    ``y`` and ``weights`` must be finite, the weights non-negative with a positive sum per image
    (one host read checks them)."""
    _check_fit(z, y, weights, regulariser, alpha)
    if not bool(torch.isfinite(y).all() & torch.isfinite(weights).all() & (weights >= 0).all()
                & (weights.sum(dim=0) > 0).all()):
        raise InputError("fit_linear takes finite targets y and finite non-negative weights, some positive for each "
                         "image")
    return _fit(z, y, weights, regulariser, alpha)


def _check_fit(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, regulariser: str | None, alpha: float) -> None:
    if not all(isinstance(t, torch.Tensor) for t in (z, y, weights)):
        raise InputError("fit_linear takes tensors z, y and weights")
    if regulariser not in _REGULARISERS:
        raise InputError(f"regulariser must be 'lasso', 'ridge' or None, not {regulariser!r}")
    check_number("alpha", alpha)
    if y.dim() != 3 or z.dim() not in (2, 3) or weights.shape != y.shape[:2] or len(z) != len(y) or \
            (z.dim() == 3 and z.shape[1] != y.shape[1]):
        raise InputError(f"fit_linear takes z (S, F) or (S, N, F), y (S, N, K) and weights (S, N); got z "
                         f"{tuple(z.shape)}, y {tuple(y.shape)}, weights {tuple(weights.shape)}")


def _fit(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, regulariser: str | None = None,
         alpha: float = 0.0) -> torch.Tensor:
    """``fit_linear`` for the explainers' own draws and scores, without its host read."""
    dtype = torch.float32 if z.device.type == "mps" else torch.float64
    w = weights.to(dtype).T.unsqueeze(-1)  # (N, S, 1)
    z = z.to(dtype).transpose(0, 1) if z.dim() == 3 else z.to(dtype).unsqueeze(0)  # (N or 1, S, F)
    y = y.to(dtype).transpose(0, 1)  # (N, S, K)
    total = w.sum(dim=1, keepdim=True)
    zc = z - (w * z).sum(dim=1, keepdim=True) / total
    yc = y - (w * y).sum(dim=1, keepdim=True) / total
    gram, moment = zc.transpose(1, 2) @ (w * zc), zc.transpose(1, 2) @ (w * yc)  # (N, F, F), (N, F, K)
    if regulariser == "lasso":
        return _lasso(gram / total, moment / total, alpha).transpose(1, 2).float()
    if regulariser == "ridge":
        gram = gram + alpha * torch.eye(gram.shape[-1], dtype=dtype, device=gram.device)
    return (torch.linalg.pinv(gram, hermitian=True) @ moment).transpose(1, 2).float()


def _warn_if_underdetermined(samples: int, counts: list[int], method: str) -> None:
    if samples <= max(counts):
        warnings.warn(f"{method} fits {max(counts)} features and an intercept to {samples} samples: the fit is "
                      f"underdetermined (the minimum-norm solution); give samples well above the feature count",
                      SamplingWarning, stacklevel=5)


def _warn_if_weights_underdetermine(z: torch.Tensor, weights: torch.Tensor, counts: list[int]) -> None:
    """Warn where the copies that carry weight leave the fit underdetermined: a small kernel width
    can leave only copies that keep every feature, identical rows whose fit is all zeros."""
    rows = z if z.dim() == 3 else z.unsqueeze(1).expand(-1, weights.shape[1], -1)  # (S, N, F)
    design = torch.cat([rows, torch.ones_like(rows[..., :1])], dim=-1).double()
    ranks = torch.linalg.matrix_rank((design * weights.double().sqrt().unsqueeze(-1)).transpose(0, 1)).tolist()
    short = [(rank, count + 1) for rank, count in zip(ranks, counts) if rank < count + 1]
    if short:
        rank, needed = short[0]
        warnings.warn(f"LIME's weighted copies determine {rank} of the {needed} coefficients of an image's fit (its "
                      "features and intercept): the kernel width leaves weight only on too few distinct copies, so "
                      "the map is not the model's; raise kernel_width or samples", SamplingWarning, stacklevel=5)


def _lasso(gram: torch.Tensor, moment: torch.Tensor, alpha: float, tolerance: float = 1e-12,
           most: int = 20_000) -> torch.Tensor:
    """argmin ``beta' G beta / 2 - m' beta + alpha |beta|_1`` (N, F, K) by accelerated proximal
    gradient (FISTA), checking convergence every 100 steps (one host read each)."""
    step = 1 / torch.linalg.eigvalsh(gram)[:, -1].clamp_min(1e-30).view(-1, 1, 1)
    beta = momentum = torch.zeros_like(moment)
    t = 1.0
    for iteration in range(most):
        moved = momentum - step * (gram @ momentum - moment)
        new = moved.sign() * (moved.abs() - step * alpha).clamp_min(0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        momentum = new + (t - 1) / t_next * (new - beta)
        change, beta, t = new - beta, new, t_next
        if iteration % 100 == 99 and float(change.abs().max()) <= tolerance * (1 + float(beta.abs().max())):
            break
    return beta


class KernelSHAP(FeatureExplainer):
    """KernelSHAP attributions (N, K, *grid) from ``samples`` coalitions (captum's default 25 is
    too few for 50 features; 200 here). Features as ``FeatureAblation``'s."""

    name = "kernel_shap"

    def __init__(self, model: nn.Module, features: str | torch.Tensor | None = None, segments: int = 50,
                 baseline: BaselineLike = 0.0, samples: int = 200, seed: int = 0, max_batch: int = 64) -> None:
        super().__init__(model, features, segments, baseline, max_batch)
        self.samples, self.seed = check_int("samples", samples), check_seed(seed)

    def attribute(self, call: Call, wanted: Any, selection: TargetSelection,
                  copies: Callable[[torch.Tensor], torch.Tensor], counts: list[int]) -> torch.Tensor:
        """The scores of KernelSHAP's coalitions, fitted by weighted least squares."""
        device = call.x.device
        z = per_image(lambda c, g: kernel_shap_coalitions(self.samples, c, g, device), counts, self.seed, device)
        scores = self.scores(call, wanted, len(z), lambda a, b: z[a:b], copies)
        valid = torch.arange(z.shape[-1], device=device) < torch.tensor(counts, device=device).unsqueeze(1)  # (N, F)
        ends = (z | ~valid).all(dim=-1) | ~(z & valid).any(dim=-1)  # all or none of the image's features kept
        weights = torch.where(ends, 1e6, 1.0).double()
        _warn_if_underdetermined(self.samples, counts, self.name)
        return _fit(z, scores, weights)


class LIME(FeatureExplainer):
    """LIME attributions (N, K, *grid): a linear model fitted to ``samples`` random coalitions
    weighted by their closeness to the input. ``distance`` "cosine" or "euclidean" between the
    flattened input and copy; ``kernel_width`` None weighs every copy alike (the limit of an
    infinite width); ``regulariser`` "lasso" (default, ``alpha`` 0.01), "ridge" or None."""

    name = "lime"

    def __init__(self, model: nn.Module, features: str | torch.Tensor | None = None, segments: int = 50,
                 baseline: BaselineLike = 0.0, samples: int = 200, seed: int = 0, kernel_width: float | None = 1.0,
                 distance: str = "cosine", regulariser: str | None = "lasso", alpha: float = 0.01,
                 max_batch: int = 64) -> None:
        super().__init__(model, features, segments, baseline, max_batch)
        self.samples, self.seed = check_int("samples", samples), check_seed(seed)
        self.kernel_width = None if kernel_width is None else check_number("kernel_width", kernel_width)
        if self.kernel_width == 0:
            raise InputError("kernel_width must be above 0 (or None for equal weights)")
        if distance not in ("cosine", "euclidean"):
            raise InputError(f"distance must be 'cosine' or 'euclidean', not {distance!r}")
        if regulariser not in _REGULARISERS:
            raise InputError(f"regulariser must be 'lasso', 'ridge' or None, not {regulariser!r}")
        self.distance, self.regulariser, self.alpha = distance, regulariser, check_number("alpha", alpha)

    def attribute(self, call: Call, wanted: Any, selection: TargetSelection,
                  copies: Callable[[torch.Tensor], torch.Tensor], counts: list[int]) -> torch.Tensor:
        """The scores of random coalitions, fitted with the copies' closeness as weights."""
        x, device = call.x, call.x.device
        z = per_image(lambda c, g: lime_coalitions(self.samples, c, g, device), counts, self.seed, device)
        distances = []

        def weighed(first: int, stop: int) -> torch.Tensor:
            made = copies(z[first:stop])  # measured here, while the copies exist
            distances.append(self._distance(made.flatten(2).double(), x.flatten(1).double()))
            return made

        scores = perturbed_scores(self.model, call, wanted, len(z), weighed, self.max_batch)
        if self.kernel_width is None:
            weights = torch.ones(len(z), len(x), dtype=torch.float64, device=device)
        else:
            d = torch.cat(distances) / self.kernel_width
            weights = torch.exp(-d * d / 2)
            dead = weights.amax(dim=0) <= 0
            if bool(dead.any()):  # one host read per call
                image = int(dead.nonzero()[0])  # the first such image, on the way to the error only
                raise InputError(f"every LIME weight of image {image} underflows to 0: its copies lie "
                                 f"{float(d[:, image].min()):.3g} kernel widths or more from it; raise kernel_width "
                                 "(or use the cosine distance)")
            _warn_if_weights_underdetermine(z, weights, counts)
        _warn_if_underdetermined(self.samples, counts, self.name)
        return _fit(z, scores, weights, self.regulariser, self.alpha)

    def _distance(self, copies: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The distance (m, N) of copies (m, N, P) to their images (N, P)."""
        if self.distance == "cosine":  # captum's: 1 - x.y / (max(|x|, eps) max(|y|, eps))
            return 1 - torch.nn.functional.cosine_similarity(copies, x.unsqueeze(0), dim=2)
        return (copies - x).norm(dim=2)
