"""Everything about a model an explainer promises not to change, captured for comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class ModelFingerprint:
    training: list[bool]
    requires_grad: list[bool]
    grads: list[torch.Tensor | None]
    state: dict[str, torch.Tensor]
    kinds: dict[str, tuple[torch.dtype, torch.device]]
    modules: list[tuple[str, int, type]]
    attributes: list[dict[str, Any]]
    hooks: list[dict[str, int]]
    tensor_hooks: list[int]
    global_hooks: list[int]
    global_state: tuple[bool, torch.dtype]

    @classmethod
    def of(cls, model: nn.Module) -> "ModelFingerprint":
        params = list(model.parameters())
        state = {**{k: v.detach() for k, v in model.state_dict(keep_vars=True).items()},
                 **{f"buffer {k}": v.detach() for k, v in model.named_buffers()}}
        return cls(
            training=[m.training for m in model.modules()],
            requires_grad=[p.requires_grad for p in params],
            grads=[None if p.grad is None else p.grad.detach().clone() for p in params],
            state={k: v.clone() for k, v in state.items()},
            kinds={k: (v.dtype, v.device) for k, v in state.items()},
            modules=[(name, id(m), type(m)) for name, m in model.named_modules(remove_duplicate=False)],
            attributes=[_attributes(m) for m in model.modules()],
            hooks=[{k: len(v) for k, v in vars(m).items() if "hook" in k and isinstance(v, dict)}
                   for m in model.modules()],
            tensor_hooks=[len(getattr(p, slot) or {}) for p in params
                          for slot in ("_backward_hooks", "_post_accumulate_grad_hooks")],
            global_hooks=_global_hook_counts(),
            global_state=(torch.is_grad_enabled(), torch.get_default_dtype()),
        )

    def differences(self, other: "ModelFingerprint") -> list[str]:
        """What changed from ``self`` to ``other``, in words; empty when nothing did."""
        found = []
        for label in ("training", "requires_grad", "modules", "attributes", "hooks", "tensor_hooks", "global_hooks"):
            if getattr(self, label) != getattr(other, label):
                found.append(f"{label.replace('_', ' ')} changed")
        if self.global_state != other.global_state:
            found.append(f"grad mode or default dtype changed ({self.global_state} -> {other.global_state})")
        if len(self.grads) != len(other.grads) or any(
            (a is None) != (b is None) or (a is not None and b is not None and not torch.equal(a, b))
            for a, b in zip(self.grads, other.grads)
        ):
            found.append("parameter .grad changed")
        if self.state.keys() != other.state.keys():
            found.append("state_dict keys changed")
        found += [f"{k} changed" for k in self.state.keys() & other.state.keys()
                  if self.kinds[k] != other.kinds[k] or not torch.equal(self.state[k], other.state[k])]
        return found


def _attributes(module: nn.Module) -> dict[str, Any]:
    """A module's own attributes (hyper-parameters, a patched ``forward``): values of plain
    types compared by value, anything else by identity."""
    plain = (bool, int, float, str, tuple, type(None), torch.dtype, torch.device)
    return {name: value if isinstance(value, plain) else id(value) for name, value in vars(module).items()
            if not name.startswith("_") and name != "training" and not isinstance(value, torch.Tensor)}


def _global_hook_counts() -> list[int]:
    from torch.nn.modules import module as module_mod

    names = [n for n in dir(module_mod) if n.startswith("_global_") and n.endswith("hooks")]
    return [len(getattr(module_mod, n)) for n in sorted(names)]


def assert_model_unchanged(before: ModelFingerprint, model: nn.Module) -> None:
    """Raise AssertionError listing what differs between ``before`` and the model now."""
    changes = before.differences(ModelFingerprint.of(model))
    assert not changes, "the explainer changed the model: " + "; ".join(changes)
