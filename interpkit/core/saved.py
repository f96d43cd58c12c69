"""What an explanation's forward saves for its backward.

With saved-tensor hooks set, autograd keeps whatever the pack hook returns and no longer checks
that a saved tensor is unchanged when the backward reads it; ``pack`` and ``unpack`` keep a
tensor's data with its version and make that check themselves (a model that writes in place
into a value its backward needs is refused, as torch refuses it, not explained from the
written values).

Non-reentrant activation checkpointing saves its region's tensors in a frame and recomputes them
in the backward by running the region again, here without the explainers' op rules, and hands
them back by position: wrong values of the right shapes for a rule's backward. ``Checkpoints``
lets an explainer's function mode save each op of such a region as if it were not checkpointed,
so nothing is recomputed, and refuse a result for which a region was recomputed all the same.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.graph import saved_tensors_hooks

from ..errors import InputError
from .hooks import Captured

#: what torch says when a saved tensor was written before the backward read it
MODIFIED = "one of the variables needed for gradient computation has been modified by an inplace operation"


def pack(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The data only (a saved output must not hold its own grad_fn) and its version."""
    with torch._C.DisableTorchFunction():  # autograd's work, not the model's: an explainer's function mode keeps out
        return tensor.detach(), tensor._version


def unpack(packed: tuple[torch.Tensor, int]) -> torch.Tensor:
    tensor, version = packed
    if tensor._version != version:
        raise RuntimeError(f"{MODIFIED}: a saved tensor of shape {tuple(tensor.shape)} is at version "
                           f"{tensor._version}, not {version}")
    return tensor


class SavedElements:
    """Pack/unpack hooks for ``saved_tensors_hooks`` that count the elements autograd saves
    after the last layer ``captured`` recorded: what one backward to that layer (or to the
    input, when no layer is captured) works through, for sizing batched backwards."""

    def __init__(self, captured: Captured) -> None:
        self.calls = captured.calls  # module call counts only: the graph must not reach the tensors
        self.layers_seen = 0
        self.total = 0

    def pack(self, tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
        if len(self.calls) != self.layers_seen:  # a layer was captured: the backward stops there
            self.layers_seen, self.total = len(self.calls), 0
        self.total += tensor.numel()
        return pack(tensor)

    unpack = staticmethod(unpack)


_top_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)  # torch >= 2.8


class Checkpoints:
    """For an explainer's function mode: ``inside()`` says whether an op runs inside
    non-reentrant activation checkpointing (on torch >= 2.8; earlier versions cannot tell), and
    records the region's frame; ``kept()`` is the context to run such an op in, saving as
    without checkpointing; after the backward, ``refuse_recomputation`` refuses a result for
    which a region was recomputed all the same (for tensors saved where the mode does not see
    them: a custom autograd Function's)."""

    def __init__(self) -> None:
        self.frames: dict[int, Any] = {}

    def inside(self) -> bool:
        hooks = _top_hooks(False) if _top_hooks is not None else None
        if hooks is None or getattr(hooks[0], "__module__", None) != "torch.utils.checkpoint":
            return False
        for cell in getattr(hooks[0], "__closure__", None) or ():
            frame = cell.cell_contents
            if hasattr(frame, "is_recomputed"):
                self.frames.setdefault(id(frame), frame)
        return True

    @staticmethod
    def kept() -> saved_tensors_hooks:
        return saved_tensors_hooks(pack, unpack)

    def refuse_recomputation(self, method: str) -> None:
        for frame in self.frames.values():
            if any(getattr(frame, "is_recomputed", {}).values()):
                raise InputError(
                    f"{method}: activation checkpointing recomputed a region of the model without the explainer's "
                    "rules, for tensors saved where the rules do not see them (by a custom autograd Function); "
                    "explain the model without checkpointing")
