"""What a model is called with: one tensor, a tuple of arguments, or a mapping of keyword
arguments, with one tensor (``attribute_to``) that input-space maps align with."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Union

import torch
from torch import nn

from ..errors import ForwardError, InputError, InterpkitError
from .state import model_device, model_dtype

InputsLike = Union[torch.Tensor, tuple, list, Mapping[str, Any]]


@dataclass(frozen=True)
class ModelInputs:
    """The model's arguments; ``primary`` (the attributed tensor) is ``args[key]`` for positional
    inputs or ``kwargs[key]`` for keyword inputs. Other tensors with the primary's batch size are
    sliced and tiled with it; everything else is passed through unchanged."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    key: int | str = 0

    @property
    def primary(self) -> torch.Tensor:
        """The attributed tensor."""
        return self.args[self.key] if isinstance(self.key, int) else self.kwargs[self.key]

    @property
    def batch_size(self) -> int:
        """The attributed tensor's batch size."""
        return len(self.primary)

    def with_primary(self, tensor: torch.Tensor) -> "ModelInputs":
        """The same call with ``tensor`` as the primary input. A batch ``m`` times the original
        (noisy or interpolated copies, copy-major) tiles the other batched tensors ``m`` times."""
        copies, rest = divmod(len(tensor), self.batch_size)
        if rest:
            raise InputError(f"a batch of {len(tensor)} is not a whole number of copies of {self.batch_size} samples")

        def fit(value: Any) -> Any:
            if copies != 1 and _batched(value, self.batch_size):
                return value.repeat(copies, *([1] * (value.dim() - 1)))
            return value

        args = tuple(tensor if i == self.key else fit(a) for i, a in enumerate(self.args))
        kwargs = {k: tensor if k == self.key else fit(v) for k, v in self.kwargs.items()}
        return replace(self, args=args, kwargs=kwargs)

    @property
    def others_batched(self) -> bool:
        """Whether another argument than the primary is a tensor with the batch's rows."""
        n = self.batch_size
        others = [a for i, a in enumerate(self.args) if i != self.key] + [v for k, v in self.kwargs.items() if k != self.key]
        return any(_batched(value, n) for value in others)

    def sample(self, index: int) -> "ModelInputs":
        """Sample ``index`` alone (batch 1): every batched tensor sliced."""
        n = self.batch_size

        def cut(value: Any) -> Any:
            return value[index:index + 1] if _batched(value, n) else value

        return replace(self, args=tuple(cut(a) for a in self.args), kwargs={k: cut(v) for k, v in self.kwargs.items()})

    def run(self, model: nn.Module, fresh: bool = False) -> Any:
        """``model(*args, **kwargs)`` on copies of its tensor arguments (a model may write its inputs
        in place: what the caller holds stays as it was; ``fresh``: the primary is the caller's own
        copy for this forward already), with a failure of the model's own forward reported as bad
        input."""
        args = tuple(_copy(a, fresh and i == self.key) for i, a in enumerate(self.args))
        kwargs = {k: _copy(v, fresh and k == self.key) for k, v in self.kwargs.items()}
        try:
            return model(*args, **kwargs)
        except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as error:  # asserts on shapes too
            if isinstance(error, InterpkitError):
                raise
            shared = (" (another input whose first axis has the batch's length is taken for one row per sample and "
                      "tiled or sliced with it: keep an input shared by every sample in the model)"
                      if self.others_batched and not isinstance(error, TypeError) else "")
            raise ForwardError(f"the model's forward failed on inputs of shape {tuple(self.primary.shape)} "
                               f"({' '.join(str(error).split())}); give the shapes, channels and dtype it expects"
                               f"{shared}") from error


def _copy(value: Any, fresh: bool) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) and not fresh else value


def _batched(value: Any, n: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == n


def model_inputs(inputs: InputsLike, model: nn.Module, attribute_to: int | str | None = None) -> ModelInputs:
    """Validate and normalise ``inputs``; the attributed tensor must be a finite floating batch
    (N, D) or (N, C, *spatial) with 1 to 3 spatial dimensions, on the model's device and dtype."""
    if isinstance(inputs, torch.Tensor):
        if attribute_to not in (None, 0, -1):
            raise InputError(f"attribute_to={attribute_to!r} names no input: the model takes one tensor")
        prepared = ModelInputs(args=(inputs,))
    elif isinstance(inputs, (tuple, list)):
        key = 0 if attribute_to is None else attribute_to
        if not isinstance(key, int) or isinstance(key, bool) or not -len(inputs) <= key < len(inputs):
            raise InputError(f"attribute_to must be a position in the {len(inputs)} inputs, not {attribute_to!r}")
        key %= len(inputs)  # -1: the last
        prepared = ModelInputs(args=tuple(inputs), key=key)
    elif isinstance(inputs, Mapping):
        names = list(inputs)
        name = names[0] if attribute_to is None and names else attribute_to
        if not isinstance(name, str) or name not in inputs:
            raise InputError(f"attribute_to must be one of the input names {names}, not {attribute_to!r}")
        prepared = ModelInputs(kwargs=dict(inputs), key=name)
    else:
        raise InputError(
            f"inputs must be a torch.Tensor (N, C, ...), a tuple of a model's arguments or a dict of its keyword "
            f"arguments, not {type(inputs).__name__}; convert images with the model's transforms first"
        )
    primary = check_tensor(prepared.primary, model)
    for value in (*prepared.args, *prepared.kwargs.values()):
        if _batched(value, len(primary)) and value.device != primary.device:
            raise InputError(f"the inputs are on {value.device} and {primary.device}; move them all to the model's device")
    return prepared.with_primary(primary)


def check_finite(**tensors: torch.Tensor) -> None:
    """Raise an InputError naming the first of ``tensors`` that holds NaN or Inf. All of them
    are checked with one host-device synchronisation: the one an explanation call makes."""
    # the largest magnitude is finite exactly when every value is (the maximum propagates NaN): one op
    # per tensor, no temporary, where isfinite().all() dispatches five. Integers and empty tensors are
    # finite; a complex value is finite when both its parts are
    inexact = {name: torch.view_as_real(t) if t.is_complex() else t for name, t in tensors.items()
               if t.numel() and (t.is_floating_point() or t.is_complex())}
    if not inexact:
        return
    checks = [torch.linalg.vector_norm(t, math.inf) for t in inexact.values()]
    flags = [math.isfinite(checks[0].item())] if len(checks) == 1 else list(map(math.isfinite, torch.stack(checks).tolist()))
    for name, finite in zip(inexact, flags):
        if not finite:
            raise InputError(f"{name} contain NaN or Inf values; clean or re-normalise them")


def check_tensor(inputs: Any, model: nn.Module, finite: bool = True) -> torch.Tensor:
    """The attributed input: a finite, floating, non-empty batch on the model's device and dtype
    (``finite=False``: the caller checks finiteness itself, with others, in one ``check_finite``)."""
    if not isinstance(inputs, torch.Tensor):
        raise InputError(f"the attributed input must be a torch.Tensor, not {type(inputs).__name__}")
    if not 2 <= inputs.dim() <= 5:
        raise InputError(
            f"inputs must be a batch (N, D) or (N, C, *spatial) with 1 to 3 spatial dimensions, got shape "
            f"{tuple(inputs.shape)}; add a batch dimension with inputs.unsqueeze(0) for one sample"
        )
    if not inputs.dtype.is_floating_point:
        raise InputError(
            f"inputs must be a floating tensor, got {inputs.dtype}; convert uint8 images with "
            "the model's transforms or inputs.float() / 255"
        )
    if 0 in inputs.shape:
        raise InputError(f"inputs of shape {tuple(inputs.shape)} have a dimension of size 0; give at least one sample")
    if inputs.is_meta:
        raise InputError("inputs on the meta device hold no values to explain; load the model's weights and move it "
                         "and the inputs to a real device")
    if torch.is_inference_mode_enabled() or inputs.is_inference():
        raise InputError("explanations need gradients, which torch.inference_mode() turns off: call the explainer "
                         "outside inference mode, on inputs made outside it (or inputs.clone() there)")
    device = model_device(model)
    if inputs.device != device:
        raise InputError(f"inputs are on {inputs.device} but the model is on {device}; move them with .to()")
    dtype = model_dtype(model)
    if dtype is not None and inputs.dtype != dtype:
        raise InputError(f"inputs are {inputs.dtype} but the model's parameters are {dtype}; convert one to the "
                         f"other, e.g. inputs.to({dtype})")
    if finite:
        check_finite(inputs=inputs)
    return inputs.detach()


def parse_device(text: str) -> torch.device:
    """A torch device that exists here and holds data, or an InputError saying which to use."""
    try:
        device = torch.device(text)
    except RuntimeError:
        hint = " (did you mean 'cuda'?)" if text.lower().startswith("gpu") else ""
        raise InputError(f"unknown device {text!r}{hint}; use --device cpu, or cuda where a GPU is installed") from None
    if device.type == "meta":
        raise InputError("the meta device holds no data, so nothing can be explained there; use --device cpu "
                         "or --device cuda")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise InputError(f"cannot use device {text!r} here ({' '.join(str(error).split())[:160]}); "
                         "use --device cpu") from None
    return device
