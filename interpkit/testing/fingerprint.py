"""Everything about a model an explainer promises not to change, captured for comparison."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_state_dict_hooks", "_load_state_dict_pre_hooks",
)


@dataclass
class ModelFingerprint:
    training: list[bool]
    requires_grad: list[bool]
    grads: list[torch.Tensor | None]
    state: dict[str, torch.Tensor]
    hooks: list[int]
    global_hooks: list[int]

    @classmethod
    def of(cls, model: nn.Module) -> "ModelFingerprint":
        params = list(model.parameters())
        return cls(
            training=[m.training for m in model.modules()],
            requires_grad=[p.requires_grad for p in params],
            grads=[None if p.grad is None else p.grad.detach().clone() for p in params],
            state={**{k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
                   **{f"buffer {k}": v.detach().clone() for k, v in model.named_buffers()}},
            hooks=[len(getattr(m, d, {})) for m in model.modules() for d in _HOOK_DICTS],
            global_hooks=_global_hook_counts(),
        )

    def differences(self, other: "ModelFingerprint") -> list[str]:
        """What changed from ``self`` to ``other``, in words; empty when nothing did."""
        found = []
        for label in ("training", "requires_grad", "hooks", "global_hooks"):
            if getattr(self, label) != getattr(other, label):
                found.append(f"{label} changed")
        if len(self.grads) != len(other.grads) or any(
            (a is None) != (b is None) or (a is not None and b is not None and not torch.equal(a, b))
            for a, b in zip(self.grads, other.grads)
        ):
            found.append("parameter .grad changed")
        if self.state.keys() != other.state.keys():
            found.append("state_dict keys changed")
        found += [f"{k} changed" for k in self.state.keys() & other.state.keys()
                  if not torch.equal(self.state[k], other.state[k])]
        return found


def _global_hook_counts() -> list[int]:
    from torch.nn.modules import module as module_mod

    names = [n for n in dir(module_mod) if n.startswith("_global_") and n.endswith("hooks")]
    return [len(getattr(module_mod, n)) for n in sorted(names)]


def assert_model_unchanged(before: ModelFingerprint, model: nn.Module) -> None:
    """Raise AssertionError listing what differs between ``before`` and the model now."""
    changes = before.differences(ModelFingerprint.of(model))
    assert not changes, "the explainer changed the model: " + "; ".join(changes)
