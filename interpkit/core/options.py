"""Checks of the options every public function takes: ints, numbers and flags, each refused
with an InputError that names the option, says what it must be and shows what it got."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
from typing import Any, Callable

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
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < math.inf or (  # NaN too
            below is not None and not float(value) < below):
        wanted = f"lie in [0, {below:g})" if below is not None else f"be a finite non-negative number{unit}"
        raise InputError(f"{name} must {wanted}, got {value!r}")
    return float(value)


def check_sizes(name: str, value: Any) -> tuple[int, ...]:
    """A grid's sizes: a non-empty sequence of positive ints (a ``torch.Size`` too), as a tuple."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) == 0:
        raise InputError(f"{name} must be a non-empty sequence of positive ints, got {value!r}")
    return tuple(check_int(f"each of {name}", size) for size in value)


def check_generator(value: Any) -> Any:
    """A ``torch.Generator`` (what seeded draws come from)."""
    import torch

    if not isinstance(value, torch.Generator):
        raise InputError(f"generator must be a torch.Generator, not {type(value).__name__}")
    return value


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
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        named = "".join(f"{n!r}, " for n in names)
        raise InputError(f"baseline must be {named}a finite number or a tensor, not {value!r}")
    return float(value)  # numpy floats as plain floats


def options_checked(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` (a class's ``__init__``) refusing arguments it does not take with an InputError
    naming the class the user made, the option, and the closest one it takes (Python's TypeError
    names the function, a base class's for a subclass that passes its options on)."""
    signature = inspect.signature(init, follow_wrapped=False)  # a decorator's own options count
    named = [p.name for p in list(signature.parameters.values())[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            signature.bind(self, *args, **kwargs)
        except TypeError as error:
            unknown = [k for k in kwargs if k not in named]
            close = difflib.get_close_matches(unknown[0], named, n=1) if unknown else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{type(self).__name__} {error}{hint}; its options: {', '.join(named) or 'none'}") from None
        init(self, *args, **kwargs)

    return checked


class CheckedOptions:
    """A base class whose subclasses' constructors go through ``options_checked``: a misspelt
    option is an InputError naming the class and the closest option."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = vars(cls).get("__init__")
        if inspect.isfunction(init):  # not a partialmethod or another descriptor: those are the class's own affair
            setattr(cls, "__init__", options_checked(init))
