"""Gradients of K scores per sample in one batched vector-Jacobian product."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch.utils.checkpoint import CheckpointError

from ..errors import InputError, VectorizationWarning
from .saved import MODIFIED

# The memory budget of one vectorised backward, in tensor elements (2**28 float32: 1 GiB). Each
# target's backward works through gradients as large as the tensors the forward saved, so K
# targets go in chunks of k' with k' * (saved elements + output elements) under the budget.
MAX_BATCHED_ELEMENTS = 2**28


@torch.enable_grad()
def per_target_gradients(
    scores: torch.Tensor, wrt: Sequence[torch.Tensor], graph_elements: int = 0, keep_graph: bool = False,
    unreached: str | None = None,
) -> list[torch.Tensor]:
    """For scores (N, K), return for each tensor in ``wrt`` (N, ...) its gradients (N, K, ...).

    ``graph_elements`` (``TargetSelection.graph_elements``) is what the forward saved for the
    backward; with it the targets are chunked so that a chunk's backward stays within
    ``MAX_BATCHED_ELEMENTS`` whatever K is. ``keep_graph`` keeps the graph for a later backward
    (one target's graph is otherwise freed at once). A tensor the scores' graph does not reach
    gets zeros, or with ``unreached`` (what the caller says then) an ``InputError``.

    The gradient of column k summed over the batch is every sample's own gradient when samples
    are independent; explainers call this one sample at a time for models whose eval forward
    mixes samples (``mixes_samples``). The K columns go through
    ``torch.autograd.grad(..., is_grads_batched=True)``: one backward pass, vectorised.
    """
    n, k = scores.shape
    if not scores.requires_grad:  # no graph at all: zeros would be silently wrong
        raise InputError(unreached or "the target's score carries no gradient: the model's forward ran under "
                         "torch.no_grad or detached its output; gradient explanations need the graph from the input "
                         "to the output")
    if k == 1:
        with backward_errors_refused():
            # ones as the output gradient: no column select and sum in the graph
            single = torch.autograd.grad(scores, list(wrt), torch.ones_like(scores), retain_graph=keep_graph,
                                         allow_unused=True)
        return [_reached(g, t, unreached).unsqueeze(1) for g, t in zip(single, wrt)]
    per_column = sum(t.numel() for t in wrt) + graph_elements
    chunk = max(1, MAX_BATCHED_ELEMENTS // max(per_column, 1))
    eye = torch.eye(k, dtype=scores.dtype, device=scores.device)
    pieces: list[list[torch.Tensor]] = []
    for start in range(0, k, chunk):
        rows = eye[start : start + chunk]  # (k', K): one-hot column selectors
        grad_outputs = rows.unsqueeze(1).expand(-1, n, -1)  # (k', N, K)
        found = _batched_grad(scores, wrt, grad_outputs)
        # a score that does not depend on a tensor (a neuron before the layer) has zero gradient
        grads = [_reached(g, t, unreached, len(rows)) for g, t in zip(found, wrt)]
        pieces.append([g.movedim(0, 1) for g in grads])
    return [torch.cat(parts, dim=1) for parts in zip(*pieces)]


def _reached(gradient: torch.Tensor | None, tensor: torch.Tensor, unreached: str | None,
             rows: int | None = None) -> torch.Tensor:
    """``gradient``, or for a tensor the graph did not reach zeros (``rows`` of them when batched)
    or the caller's ``unreached`` error."""
    if gradient is not None:
        return gradient
    if unreached is not None:
        raise InputError(unreached)
    return torch.zeros((() if rows is None else (rows,)) + tuple(tensor.shape), dtype=tensor.dtype,
                       device=tensor.device)


def _batched_grad(scores: torch.Tensor, wrt: Sequence[torch.Tensor], grad_outputs: torch.Tensor
                  ) -> list[torch.Tensor | None]:
    """One vectorised backward for every row of ``grad_outputs``; one backward per row when the
    graph cannot be vectorised (a user's backward hook that calls ``.item()``, an op without a
    batching rule), with one warning saying so. The graph is kept for that second try; it is
    freed with the scores when the explanation returns."""
    try:
        with backward_errors_refused():
            return list(torch.autograd.grad(scores, list(wrt), grad_outputs, retain_graph=True, is_grads_batched=True,
                                            allow_unused=True))
    except RuntimeError as error:
        warnings.warn(f"the backward pass cannot be vectorised ({' '.join(str(error).split())[:200]}); "
                      "taking one backward per target instead, which is slower", VectorizationWarning, stacklevel=4)
    rows = [torch.autograd.grad(scores, list(wrt), row, retain_graph=True, allow_unused=True) for row in grad_outputs]
    return [None if parts[0] is None else torch.stack(parts) for parts in zip(*rows)]


@contextmanager
def backward_errors_refused() -> Iterator[None]:
    """Report as bad input torch's backward errors that the model causes: reentrant activation
    checkpointing, a saved tensor written in place, a checkpointed recomputation that differs."""
    try:
        yield
    except RuntimeError as error:
        if "use_reentrant" in str(error):
            raise _reentrant() from error
        if MODIFIED in str(error):
            raise InputError("the model writes in place (x += y, relu_) into a tensor that the backward needs as it "
                             "was (a layer's input, a value an op or the explainer's rule for it saved, such as "
                             "softmax's input under LRP); write out of place there (x = x + y)") from error
        if isinstance(error, CheckpointError):  # the recomputation ran without the explainer's op rules
            raise InputError("the model's activation checkpointing (torch.utils.checkpoint) recomputed a forward that "
                             "differs from the explained one, whose ops ran under this explainer's rules; explain "
                             "the model without checkpointing") from error
        raise


def _reentrant() -> InputError:
    return InputError("the model uses reentrant activation checkpointing (torch.utils.checkpoint with "
                      "use_reentrant=True), which gives no gradients to torch.autograd.grad; use "
                      "checkpoint(..., use_reentrant=False)")
