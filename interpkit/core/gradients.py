"""Gradients of K scores per sample in one batched vector-Jacobian product."""

from __future__ import annotations

from typing import Sequence

import torch

# Upper bound on the elements of one batched gradient; larger K is split into chunks that
# share the graph, so explaining every class of an ImageNet model does not exhaust memory.
MAX_BATCHED_ELEMENTS = 2**28


@torch.enable_grad()
def per_target_gradients(
    scores: torch.Tensor, wrt: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """For scores (N, K), return for each tensor in ``wrt`` (N, ...) its gradients (N, K, ...).

    Samples of a batch are independent in eval mode, so the gradient of column k summed over
    the batch gives every sample's own gradient. The K columns go through
    ``torch.autograd.grad(..., is_grads_batched=True)``: one backward pass, vectorised.
    """
    n, k = scores.shape
    if k == 1:
        single = torch.autograd.grad(scores[:, 0].sum(), list(wrt), materialize_grads=True)
        return [g.unsqueeze(1) for g in single]
    per_column = sum(t.numel() for t in wrt)
    chunk = max(1, MAX_BATCHED_ELEMENTS // max(per_column, 1))
    eye = torch.eye(k, dtype=scores.dtype, device=scores.device)
    pieces: list[list[torch.Tensor]] = []
    for start in range(0, k, chunk):
        rows = eye[start : start + chunk]  # (k', K): one-hot column selectors
        grad_outputs = rows.unsqueeze(1).expand(-1, n, -1)  # (k', N, K)
        last = start + chunk >= k
        found = torch.autograd.grad(
            scores, list(wrt), grad_outputs, retain_graph=not last, is_grads_batched=True,
            allow_unused=True,
        )
        # a score that does not depend on a tensor (a neuron before the layer) has zero gradient
        grads = [torch.zeros((len(rows), *t.shape), dtype=t.dtype, device=t.device) if g is None else g
                 for g, t in zip(found, wrt)]
        pieces.append([g.movedim(0, 1) for g in grads])
    return [torch.cat(parts, dim=1) for parts in zip(*pieces)]
