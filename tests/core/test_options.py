"""The one set of option checks every public function uses."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from interpkit import InputError
from interpkit.core import check_baseline, check_finite, check_flag, check_int, check_number


@given(value=st.integers(-5, 5), minimum=st.sampled_from([None, 0, 1, 2]))
def test_ints_are_accepted_exactly_from_their_minimum(value, minimum):
    if minimum is None or value >= minimum:
        assert check_int("k", value, minimum=minimum) == value
    else:
        with pytest.raises(InputError, match=r"^k must be .*, got -?\d+$"):
            check_int("k", value, minimum=minimum)


@pytest.mark.parametrize("value", [True, False, 2.0, "3", [1]])
def test_what_only_looks_like_an_int_is_refused(value):
    with pytest.raises(InputError, match="samples must be a positive int"):
        check_int("samples", value)


def test_none_is_accepted_only_where_it_means_something():
    assert check_int("max_batch", None, none="the inputs' batch size") is None
    with pytest.raises(InputError, match=r"positive int or None \(the inputs' batch size\), got 0"):
        check_int("max_batch", 0, none="the inputs' batch size")
    with pytest.raises(InputError, match="positive int, got None"):
        check_int("steps", None)


@given(value=st.floats(-2, 2, allow_nan=False))
def test_numbers_are_non_negative_and_below_their_bound(value):
    if 0 <= value < 1:
        assert check_number("ratio", value, below=1) == value
    else:
        with pytest.raises(InputError, match=r"ratio must lie in \[0, 1\)"):
            check_number("ratio", value, below=1)


def test_flags_and_numbers_refuse_their_look_alikes():
    for bad in (1, "yes", None):
        with pytest.raises(InputError, match="must be True or False"):
            check_flag("relu", bad)
    for bad in (True, "0.5", float("nan")):
        with pytest.raises(InputError, match="noise must be a finite non-negative number"):
            check_number("noise", bad)


@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=40),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
def test_the_finite_check_refuses_exactly_nan_and_inf_and_never_overflows(values, dtype):
    tensor = torch.tensor(values, dtype=torch.float64).to(dtype)  # large floats may become inf in small dtypes
    if bool(torch.isfinite(tensor).all()):
        check_finite(inputs=tensor, maps=tensor.abs())  # 3e38 + 3e38 must not read as Inf
    else:
        with pytest.raises(InputError, match="inputs contain NaN or Inf"):
            check_finite(inputs=tensor, maps=torch.zeros(1))


def test_the_finite_check_passes_empty_integer_and_finite_complex_tensors():
    check_finite(empty=torch.zeros(0, 3), counts=torch.arange(4), flags=torch.ones(2, dtype=torch.bool),
                 waves=torch.full((3,), 3e38 + 3e38j, dtype=torch.complex64))  # |z| overflows; its parts do not
    for bad in (complex(float("nan"), 0.0), complex(0.0, float("inf"))):
        with pytest.raises(InputError, match="waves contain NaN or Inf"):
            check_finite(empty=torch.zeros(0), waves=torch.tensor([1j, bad]))


def test_infinite_numbers_are_refused_and_plugins_use_the_checks():
    import math

    import interpkit
    from interpkit.core import check_number
    from interpkit.testing import ConvStack

    with pytest.raises(interpkit.InputError, match="finite"):
        check_number("stdev", math.inf)
    model = ConvStack().eval()
    for name, options in [("noise_tunnel", {"stdev": math.inf}), ("smoothgrad", {"noise": math.inf}),
                          ("integrated_gradients", {"baseline": "zero"}),
                          ("integrated_gradients", {"baseline": torch.full((1, 3, 1, 1), math.nan)})]:
        with pytest.raises(interpkit.InputError):
            interpkit.get_explainer(name)(model, **options)


@pytest.mark.parametrize("value", [np.float32(0.5), np.float16(0.5), np.float64(0.5), np.int8(1), 0.5, 1])
def test_numpy_numbers_are_numbers(value):
    """``np.float32(0.5)`` was refused as "not a finite non-negative number" while np.float64,
    a float subclass, was accepted; every real number is taken, as a plain float."""
    for checked in (check_number("p", value), check_baseline(value)):
        assert type(checked) is float and checked == float(value)
    with pytest.raises(InputError):
        check_number("p", np.bool_(True))


def test_a_misspelt_option_is_named_with_the_closest_one():
    """Python's TypeError named the function (a base class's ``__init__`` for a subclass passing
    its options on) and suggested nothing."""
    import interpkit
    from interpkit.metrics import Deletion
    from interpkit.testing.models import ConvStack

    with pytest.raises(InputError, match=r"^GradCAM got an unexpected keyword argument 'upsampel' \(did you mean "
                                         r"'upsample'\?\); its options: model, layer, upsample, relu, eigen_smooth$"):
        interpkit.GradCAM(ConvStack(), upsampel=False)
    with pytest.raises(InputError, match=r"^Deletion got an unexpected keyword argument 'stepz' \(did you mean 'steps'"):
        Deletion(stepz=3)
    with pytest.raises(InputError, match="missing a required argument: 'model'"):
        interpkit.GradCAM()


def test_every_registered_explainer_refuses_an_option_it_does_not_take():
    from interpkit.registry import get_explainer, list_explainers
    from interpkit.testing.models import ConvStack

    for name in list_explainers():
        with pytest.raises(InputError, match="unexpected keyword argument 'no_such_option'"):
            get_explainer(name)(ConvStack(), no_such_option=1)


def test_constructors_decorated_or_made_otherwise_keep_their_own_options():
    """The options were read through ``__wrapped__`` (a decorator adding ``verbose`` refused it),
    and a ``partialmethod`` constructor made the class definition itself fail."""
    import functools

    import interpkit
    from interpkit.testing.models import ConvStack

    def verbose_option(init):
        @functools.wraps(init)
        def wrapper(self, *args, verbose=False, **kwargs):
            init(self, *args, **kwargs)
            self.verbose = verbose
        return wrapper

    class Decorated(interpkit.GradCAM):
        @verbose_option
        def __init__(self, model, layer=None):
            super().__init__(model, layer)

    assert Decorated(ConvStack(), verbose=True).verbose

    def init(self, model, scale=1.0):
        interpkit.Saliency.__init__(self, model)
        self.scale = scale

    class Partial(interpkit.Saliency):
        __init__ = functools.partialmethod(init, scale=3.0)

    assert Partial(ConvStack()).scale == 3.0
