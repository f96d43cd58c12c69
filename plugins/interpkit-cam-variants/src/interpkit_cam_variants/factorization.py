"""Deep Feature Factorization (Collins et al., 2018): a layer's activations factorised by
non-negative matrix factorisation into a few concepts, each an embedding over the channels and
a map over the grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

import interpkit
from interpkit.core import (
    Call,
    LayerExplainer,
    capture_outputs,
    check_finite,
    check_flag,
    check_int,
    check_number,
    check_seed,
    evaluation,
    model_inputs,
    normalize_maps,
)
from interpkit.explainers import upsample


@dataclass
class Factorization:
    """A layer's activations as ``components`` concepts.

    ``maps`` (N, R, *input grid): each concept's weight at each position, min-max scaled to
    [0, 1] per image and concept, resized to the input. ``concepts`` (N, C, R): each concept's
    embedding over the layer's C channels, per image (the same for every image when the batch was
    factorised jointly). ``scores`` (N, R, classes): ``head`` applied to each concept, or None.
    ``iterations`` (N,): the solver's iterations per factorisation.
    """

    maps: torch.Tensor
    concepts: torch.Tensor
    scores: torch.Tensor | None
    layer: str
    iterations: torch.Tensor


def deep_feature_factorization(model: torch.nn.Module, inputs: Any, layer: Any = None, components: int = 5,
                               head: Callable[[torch.Tensor], torch.Tensor] | None = None, joint: bool = False,
                               seed: int = 0, max_iter: int = 200, tol: float = 1e-4,
                               init: tuple[torch.Tensor, torch.Tensor] | None = None) -> Factorization:
    """Factorise ``layer``'s activations A (C channels by P positions) as ``W H`` with W
    (C, R) and H (R, P) non-negative, after subtracting each channel's minimum (added back to
    the concepts W, as pytorch-grad-cam does). ``joint=False`` factorises each image alone, so
    an image's concepts do not depend on its batch; ``joint=True`` factorises the batch at once
    (the paper's co-segmentation and pytorch-grad-cam's ``dff``), one set of concepts shared by
    the images. The solver is scikit-learn's ``NMF(init="random", solver="cd")``: coordinate
    descent on the Frobenius loss, stopped when the projected-gradient violation falls below
    ``tol`` times the first iteration's, in float64 on the model's device. Its start is
    ``sqrt(mean(A) / R) |z|`` for standard normal draws z from ``seed`` (one draw shared by every
    image), or ``init``, a pair (W, H) of non-negative starts scaled by that factor, for
    reproducing another library's draws. ``head`` maps concept embeddings (R, C) to class scores
    (pytorch-grad-cam's ``computation_on_concepts``, e.g. a ResNet's ``fc``)."""
    components, max_iter = check_int("components", components), check_int("max_iter", max_iter)
    tol, seed, joint = check_number("tol", tol), check_seed(seed), check_flag("joint", joint)
    if head is not None and not callable(head):
        raise interpkit.InputError(f"head must be a callable from concepts (R, C) to scores, not {head!r}")
    activation, name, input_grid = _activation(model, inputs, layer)  # (N, C, *grid)
    n, channels, grid = activation.shape[0], activation.shape[1], tuple(activation.shape[2:])
    points = activation.flatten(2).double()  # (N, C, P)
    if joint:
        points = points.transpose(0, 1).reshape(1, channels, -1)  # (1, C, N * P): image-major positions
    offset = points.amin(dim=2, keepdim=True)
    shifted = points - offset
    start_w, start_h = _starts(init, seed, channels, shifted.shape[2], components, activation.device)
    scale = (shifted.mean(dim=(1, 2)) / components).sqrt().view(-1, 1, 1)
    w, h, iterations = nmf(shifted, scale * start_w, scale * start_h, max_iter, tol)
    concepts = (w + offset).to(activation.dtype)  # (B, C, R)
    if joint:
        h = h.view(components, n, -1).transpose(0, 1)  # (N, R, P)
        concepts, iterations = concepts.expand(n, -1, -1), iterations.expand(n)
    maps = upsample(normalize_maps(h.view(n, components, *grid), start_dim=2).float(), input_grid)
    scores = None
    if head is not None:
        scores = _head_scores(head, concepts, name)
    return Factorization(maps, concepts.contiguous(), scores, name, iterations)


def _head_scores(head: Callable[[torch.Tensor], torch.Tensor], concepts: torch.Tensor, layer: str) -> torch.Tensor:
    """``head`` of every concept (N, C, R) as scores (N, R, classes)."""
    n, channels, components = concepts.shape
    problem = None
    try:
        with torch.no_grad():
            scores = head(concepts.transpose(1, 2).reshape(n * components, channels))
        if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or len(scores) != n * components:
            problem = f"it returned {type(scores).__name__} {tuple(getattr(scores, 'shape', ()))}, not scores (R, classes)"
    except Exception as error:  # the user's callable: whatever it raises is reported as bad input
        problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        raise interpkit.InputError(f"head could not score the concepts, embeddings of shape ({components}, {channels}) "
                                   f"over layer '{layer}''s channels ({problem})")
    return scores.reshape(n, components, -1)


def nmf(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor, max_iter: int = 200, tol: float = 1e-4
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-negative factorisations ``x ~ w h`` of a batch (B, M, F) from starts w (B, M, R) and
    h (B, R, F), by scikit-learn's coordinate descent (Cichocki and Phan, 2009): each iteration
    updates every column of w, then every row of h, each element to ``max(v - g / hess, 0)``;
    a factorisation stops when its violation (the sum of the projected gradients' magnitudes)
    is at most ``tol`` times its first. Returns w, h and each factorisation's iterations."""
    w, ht = w.clone(), h.transpose(1, 2).clone()
    first = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    running = torch.ones(len(x), dtype=torch.bool, device=x.device)
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for step in range(max_iter):
        violation = _coordinate_step(x, w, ht, running) + _coordinate_step(x.transpose(1, 2), ht, w, running)
        iterations += running
        if step == 0:
            first = violation
        running = running & (first > 0) & (violation > tol * first)
        if step % 10 == 9 and not bool(running.any()):  # one host sync per ten iterations
            break
    return w, ht.transpose(1, 2), iterations


def _coordinate_step(x: torch.Tensor, w: torch.Tensor, ht: torch.Tensor, running: torch.Tensor) -> torch.Tensor:
    """One pass over w's columns in place (only where ``running``): its violation per batch."""
    gram = ht.transpose(1, 2) @ ht  # (B, R, R)
    target = x @ ht  # (B, M, R)
    violation = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    keep = running.view(-1, 1)
    for t in range(w.shape[2]):
        gradient = w @ gram[:, :, t:t + 1] - target[:, :, t:t + 1]  # (B, M, 1), with the columns updated so far
        gradient = gradient.squeeze(2)
        column = w[:, :, t]
        projected = torch.where(column == 0, gradient.clamp_max(0), gradient)
        violation += projected.abs().sum(dim=1)
        hessian = gram[:, t, t].unsqueeze(1)
        updated = torch.where(hessian != 0, (column - gradient / torch.where(hessian != 0, hessian, 1.0)).clamp_min(0),
                              column)
        w[:, :, t] = torch.where(keep, updated, column)
    return violation


def _starts(init, seed: int, channels: int, positions: int, components: int, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The unscaled starts W (C, R) and H (R, P), drawn as scikit-learn draws them (H first)."""
    if init is None:
        generator = torch.Generator(device=device).manual_seed(seed)
        start_h = torch.randn(components, positions, generator=generator, device=device, dtype=torch.float64).abs()
        start_w = torch.randn(channels, components, generator=generator, device=device, dtype=torch.float64).abs()
        return start_w, start_h
    if (not isinstance(init, tuple) or len(init) != 2 or not all(isinstance(t, torch.Tensor) for t in init)
            or tuple(init[0].shape) != (channels, components) or tuple(init[1].shape) != (components, positions)):
        raise interpkit.InputError(f"init must be a pair of tensors W {(channels, components)} and H "
                                   f"{(components, positions)}")
    if not all(bool(torch.isfinite(t).all()) and bool((t >= 0).all()) for t in init):
        raise interpkit.InputError("init must be finite and non-negative")
    return init[0].to(device, torch.float64), init[1].to(device, torch.float64)


def _activation(model: torch.nn.Module, inputs: Any, layer: Any) -> tuple[torch.Tensor, str, tuple[int, ...]]:
    """The layer's activation (N, C, *grid) for the batch, in one forward without gradients, its
    name and the input's grid."""
    reader = LayerExplainer(model, layer)
    prepared = model_inputs(inputs, reader.model)
    with evaluation(reader.model):  # choosing a layer runs the model too
        choices = reader.resolve(Call(prepared))
        if len(choices) != 1:
            raise interpkit.LayerError(f"deep feature factorization reads one layer; got {len(choices)}")
        choice = choices[0]
        with torch.no_grad(), capture_outputs([choice.module], for_gradients=False) as captured:
            prepared.run(reader.model)
    activation = choice.grid(captured.output(choice.module, choice.name), tuple(prepared.primary.shape[2:]))
    check_finite(activation=activation)
    return activation, choice.name, tuple(prepared.primary.shape[2:])
