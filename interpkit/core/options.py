"""Checks of the options every public function takes: ints, numbers and flags, each refused
with an InputError that names the option, says what it must be and shows what it got."""

from __future__ import annotations

import math
import numbers
from typing import Any

from ..errors import InputError


def check_int(name: str, value: Any, minimum: int | None = 1, none: str | None = None) -> Any:
    """``value`` when it is an int (never a bool) of at least ``minimum`` (None: any int); with
    ``none`` (what None means, for the message) None is accepted too."""
    if value is None and none is not None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        wanted = {None: "an int", 0: "a non-negative int", 1: "a positive int"}.get(minimum,
                                                                                   f"an int of at least {minimum}")
        either = f" or None ({none})" if none else ""
        raise InputError(f"{name} must be {wanted}{either}, got {value!r}")
    return int(value)  # numpy integers as plain ints


def check_seed(value: Any) -> int:
    """A seed for ``torch.Generator.manual_seed``: an int in [0, 2**63)."""
    seed = check_int("seed", value, minimum=0)
    if seed >= 2**63:
        raise InputError(f"seed must be below 2**63, got {value!r}")
    return seed


def check_number(name: str, value: Any, below: float | None = None, unit: str = "") -> float:
    """``value`` as a float when it is a finite non-negative number (never a bool), below
    ``below`` if given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf or (  # NaN too
            below is not None and not value < below):
        wanted = f"lie in [0, {below:g})" if below is not None else f"be a finite non-negative number{unit}"
        raise InputError(f"{name} must {wanted}, got {value!r}")
    return float(value)


def check_flag(name: str, value: Any) -> bool:
    """A boolean option, refused when it is anything but a bool (``upsample="no"`` is truthy)."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, not {value!r}")
    return value


def check_baseline(value: Any, names: tuple[str, ...] = ()) -> Any:
    """A baseline option: one of ``names``, a finite number (never a bool) or a floating tensor
    of finite values (checked once, where it is given)."""
    import torch

    if isinstance(value, str):
        if value not in names:
            raise InputError(f"unknown baseline {value!r}; use {''.join(f'{n!r}, ' for n in names)}a number or a tensor")
        return value
    if isinstance(value, torch.Tensor):
        if value.is_meta:
            raise InputError("a baseline tensor on the meta device holds no values; give it on the model's device")
        if value.layout != torch.strided:
            raise InputError(f"a baseline tensor must be dense, not {value.layout}; give it with .to_dense()")
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise InputError("a baseline tensor must hold finite floating values")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        named = "".join(f"{n!r}, " for n in names)
        raise InputError(f"baseline must be {named}a finite number or a tensor, not {value!r}")
    return value
