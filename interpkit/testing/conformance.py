"""``check_explainer``: the core contract, checked for any explainer class.

Like scikit-learn's ``check_estimator``: every built-in explainer passes it in a test
parametrised over the registry, and a plugin author calls it in their own tests.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..core import Explanation, MapKind, class_scores, evaluation, mixes_samples
from ..core.layouts import aligned
from ..errors import InputError, InterpkitError, TargetError
from .fingerprint import ModelFingerprint
from .models import example_inputs, hard_case_models, input_kind


@dataclass
class ConformanceReport:
    explainer: str
    passed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def check_explainer(explainer_cls: type, models: Mapping[str, nn.Module] | None = None,
                    options: Mapping[str, Any] | None = None, batch: int = 3, size: tuple[int, int] = (20, 16),
                    seed: int = 0, raise_on_failure: bool = True) -> ConformanceReport:
    """Check ``explainer_cls(model, **options)`` on every model (default: the hard-case models,
    2-D images, 1-D signals, 3-D volumes, a token model, a two-input model and a model of
    ``torch.nn`` classes alone, run on interpkit's unguarded path).

    Checks: output shapes, dtype, device and grid (a layer's: the input's over one stride), finite
    scores that are the model's outputs for the targets (unless ``scores_are_outputs`` is False),
    the targets asked for; maps that change with the target (unless the class is
    ``target_free``); two targets at once as each alone; the caller's inputs untouched; the
    model exactly restored (flags, ``requires_grad``, ``.grad``, parameters and buffers with
    their dtypes, hooks on modules and tensors, submodules, module attributes) after a call and
    after a raising target; torch's global state (grad mode, default dtype, anomaly detection,
    deterministic algorithms, the global generator, function and dispatch modes, saved-tensors
    hooks); each sample alone as in its batch; determinism of one object and of two; ``InputError``/
    ``TargetError`` for bad input; an ``InterpkitError`` for an option of the wrong kind (each
    option annotated bool, int or float given ``"no"``, ``1.5``, ``"0.1"`` or NaN, at construction
    or at the first call). A model of a kind the explainer does not support (its ``supports``)
    must be refused with an ``InterpkitError``, the model restored. Raises AssertionError listing
    every failure unless ``raise_on_failure=False``.
    """
    report = ConformanceReport(getattr(explainer_cls, "name", "") or explainer_cls.__name__)
    options_checked = False
    for model_name, model in (models or hard_case_models(seed)).items():
        try:
            inputs = _like_model(example_inputs(model, batch, seed, size), model)
            target = _target(model, inputs)
        except Exception as error:  # the model cannot run its example inputs: a failure, not a crash
            report.failures.append(f"example inputs on {model_name}: {type(error).__name__}: {error}")
            continue
        checks = CHECKS if _supported(explainer_cls, model, target) else (_refused,)
        for check in checks:
            label = f"{check.__name__.strip('_')} on {model_name}"
            # a check that breaks the model, its inputs or torch's global state must not hide from the next one
            fresh, given, state = copy.deepcopy(model), _copied(inputs), _global_state()
            try:
                check(lambda: explainer_cls(fresh, **dict(options or {})), fresh, given, target)
                report.passed.append(label)
            except Exception as error:  # every failure is collected, not just the first
                report.failures.append(f"{label}: {type(error).__name__}: {error}")
            changed = [name for name, value in _global_state().items() if not _same(value, state[name])]
            if changed:
                report.failures.append(f"{label}: torch's global state was left changed: {', '.join(changed)}")
                _restore_global_state(state)
        if not options_checked and checks is CHECKS:  # once, on the first model the explainer supports
            options_checked = True
            found = _bad_options(explainer_cls, dict(options or {}), model, inputs, target)
            report.failures += [f"options on {model_name}: {failure}" for failure in found]
            report.passed += [] if found else [f"options on {model_name}"]
    if report.failures and raise_on_failure:
        raise AssertionError(f"{report.explainer} fails {len(report.failures)} conformance check(s):\n  "
                             + "\n  ".join(report.failures))
    return report


def _global_state() -> dict[str, Any]:
    """What of torch's process-wide state an explainer must leave as it found it."""
    return {"grad mode": torch.is_grad_enabled(), "default dtype": torch.get_default_dtype(),
            "anomaly detection": torch.is_anomaly_enabled(),
            "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
            "the global random generator": torch.get_rng_state(),
            "torch function modes": torch._C._len_torch_function_stack(),
            "torch dispatch modes": torch._C._len_torch_dispatch_stack(),
            "saved tensors hooks": torch._C._autograd._top_saved_tensors_default_hooks(False)}


def _same(value: Any, before: Any) -> bool:
    return torch.equal(value, before) if isinstance(value, torch.Tensor) else value == before


def _restore_global_state(state: dict[str, Any]) -> None:
    """What can be put back by public means, so that one broken check does not fail the next."""
    torch.set_grad_enabled(state["grad mode"])
    torch.set_default_dtype(state["default dtype"])
    torch.set_anomaly_enabled(state["anomaly detection"])
    torch.use_deterministic_algorithms(state["deterministic algorithms"])
    torch.set_rng_state(state["the global random generator"])


def supported_hard_cases(explainer_cls: type, seed: int = 0) -> list[str]:
    """The hard-case models ``check_explainer`` expects ``explainer_cls`` to explain (the others
    it expects refused): those of a kind in its ``supports``, and, for an explainer of class
    targets only, not those whose classes need a callable target."""
    found = []
    for name, model in hard_case_models(seed).items():
        if _supported(explainer_cls, model, _target(model, example_inputs(model, 1, seed, (20, 16)))):
            found.append(name)
    return found


def _target(model: nn.Module, inputs: Any) -> Any:
    """Class 1: by index, or through a callable for a model returning a mapping."""
    return (lambda out: out["logits"][:, 1]) if _returns_mapping(model, inputs) else 1


def _supported(explainer_cls: type, model: nn.Module, target: Any) -> bool:
    supported = getattr(explainer_cls, "supports", None)
    if supported is not None and input_kind(model) not in supported:
        return False
    return not (getattr(explainer_cls, "class_targets_only", False) and callable(target))


def _like_model(inputs: Any, model: nn.Module) -> Any:
    """The example inputs on the model's device, floating ones in its floating dtype."""
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)

    def like(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device, dtype) if tensor.is_floating_point() else tensor.to(device)

    return tuple(like(t) for t in inputs) if isinstance(inputs, tuple) else like(inputs)


def _copied(inputs: Any) -> Any:
    return tuple(t.clone() for t in inputs) if isinstance(inputs, tuple) else inputs.clone()


def _primary(inputs: Any) -> torch.Tensor:
    return inputs[0] if isinstance(inputs, tuple) else inputs


def _take(inputs: Any, rows: slice) -> Any:
    return tuple(t[rows] for t in inputs) if isinstance(inputs, tuple) else inputs[rows]


def _replace_primary(inputs: Any, value: Any) -> Any:
    return (value, *inputs[1:]) if isinstance(inputs, tuple) else value


Factory = Callable[[], Any]


def _returns_mapping(model: nn.Module, inputs: Any) -> bool:
    first = _take(inputs, slice(0, 1))
    with evaluation(model), torch.no_grad():
        return isinstance(model(*first) if isinstance(first, tuple) else model(first), Mapping)


def _call(factory: Factory, images: torch.Tensor, target: Any) -> Explanation:
    result = factory()(images, target)
    if not isinstance(result, Explanation):
        raise AssertionError(f"returns {type(result).__name__}, not an Explanation")
    return result


def _output_contract(factory: Factory, model: nn.Module, inputs: Any, target: Any) -> None:
    """Shapes, dtypes, devices and values of one call's result; the caller's inputs untouched; and
    on the kit's own models a second class explained otherwise (``_follows_the_target``)."""
    given = inputs if isinstance(inputs, tuple) else (inputs,)
    before = [(t.detach().clone(), t.requires_grad, t.grad) for t in given]
    result = _call(factory, inputs, target)
    for i, (tensor, (values, requires_grad, grad)) in enumerate(zip(given, before)):
        assert torch.equal(tensor.detach(), values), f"input {i} was written"
        assert tensor.requires_grad == requires_grad, f"input {i}'s requires_grad changed"
        assert tensor.grad is grad, f"input {i}'s .grad changed"
    images = _primary(inputs)
    n, k = result.targets.shape
    assert n == len(images), f"targets {tuple(result.targets.shape)} do not have one row per sample"
    assert result.maps.shape[:2] == (n, k), f"maps {tuple(result.maps.shape)} are not (N, K, ...)"
    assert result.scores.shape == (n, k), f"scores {tuple(result.scores.shape)} are not (N, K)"
    assert result.targets.dtype == torch.long, f"targets are {result.targets.dtype}, not long"
    assert result.maps.dtype == torch.float32, f"maps are {result.maps.dtype}, not float32"
    assert not result.maps.requires_grad, "maps still carry an autograd graph"
    assert result.method, "method is empty"
    assert isinstance(result.kind, MapKind), f"kind is {result.kind!r}, not a MapKind"
    grid = tuple(result.maps.shape[3:] if result.kind.has_channels else result.maps.shape[2:])
    if result.kind is not MapKind.LAYER_GRID:
        assert grid == tuple(images.shape[2:]), f"{result.kind.value} maps have grid {grid}, the input {tuple(images.shape[2:])}"
    else:  # a layer's grid: the input's, divided by one common stride
        assert aligned(grid, tuple(images.shape[2:])), (f"layer_grid maps have grid {grid}, which is not the input's "
                                                        f"{tuple(images.shape[2:])} divided by one stride")
    if result.kind.has_channels:
        assert result.maps.shape[2] == images.shape[1], "input_channels maps do not keep the input's channels"
    assert result.maps.device == images.device, f"maps are on {result.maps.device}, the model on {images.device}"
    assert bool(torch.isfinite(result.maps).all()), "maps hold NaN or Inf"
    assert result.scores.is_floating_point(), f"scores are {result.scores.dtype}, not floating"
    assert result.scores.device == images.device, f"scores are on {result.scores.device}, the model on {images.device}"
    assert bool(torch.isfinite(result.scores).all()), "scores hold NaN or Inf"
    if isinstance(target, int):
        assert bool((result.targets == target).all()), f"class {target} was asked, targets say {result.targets.tolist()}"
        if getattr(factory(), "scores_are_outputs", True):
            _scores_are_outputs(model, inputs, target, result.scores)
        _follows_the_target(factory, model, inputs, target, result.maps)


def _scores_are_outputs(model: nn.Module, inputs: Any, target: int, scores: torch.Tensor) -> None:
    n = len(_primary(inputs))
    step = 1 if mixes_samples(model) else n  # a batch-mixing model's outputs are each sample's alone, as explained
    outputs = []
    with evaluation(model), torch.no_grad():
        for start in range(0, n, step):
            part = _take(inputs, slice(start, start + step))
            outputs.append(class_scores(model(*part) if isinstance(part, tuple) else model(part)))
    expected = torch.cat(outputs)[:, target].double()
    torch.testing.assert_close(scores[:, 0].double(), expected, rtol=1e-4, atol=1e-5, msg=lambda m: (
        f"scores are not the model's outputs for the targets (or set scores_are_outputs = False): {m}"))


def _follows_the_target(factory: Factory, model: nn.Module, inputs: Any, target: int, maps: torch.Tensor) -> None:
    """Another class gets another explanation (unless the class declares ``target_free``: maps
    made without the target, as EigenCAM's or attention rollout's). Checked on the kit's own
    models, whose classes have unrelated weights: on another model two classes may share a map
    (``[z, -z]`` under an absolute gradient)."""
    kits = type(model).__module__ == __name__.rpartition(".")[0] + ".models"
    if not kits or getattr(factory(), "target_free", False):
        return
    other = _call(factory, inputs, 1 - target if target in (0, 1) else 0).maps
    if torch.equal(other, maps) and bool(maps.any()):
        raise AssertionError(f"classes {target} and {1 - target if target in (0, 1) else 0} gave the same maps: "
                             "the target is ignored (or mark the class target_free = True)")


def _restored(factory: Factory, model: nn.Module, images: Any, target: Any) -> None:
    before = ModelFingerprint.of(model)
    _call(factory, images, target)
    changes = before.differences(ModelFingerprint.of(model))
    assert not changes, "; ".join(changes)


def _restored_after_raising(factory: Factory, model: nn.Module, images: Any, target: Any) -> None:
    before = ModelFingerprint.of(model)

    def failing(_output: Any) -> torch.Tensor:
        raise RuntimeError("target failed on purpose")

    try:
        factory()(images, failing)
    except (RuntimeError, TargetError):
        pass
    else:
        raise AssertionError("a raising target callable did not raise")
    changes = before.differences(ModelFingerprint.of(model))
    assert not changes, "; ".join(changes)
    assert torch._C._len_torch_function_stack() == 0, "a torch function mode was left active"


def _batch_invariant(factory: Factory, model: nn.Module, inputs: Any, target: Any) -> None:
    """Each sample alone gets the map and score it gets in the batch (its own, in its place)."""
    whole = _call(factory, inputs, target)
    for i in range(len(_primary(inputs))):
        alone = _call(factory, _take(inputs, slice(i, i + 1)), target)
        for name in ("maps", "scores"):
            torch.testing.assert_close(getattr(alone, name)[0], getattr(whole, name)[i], rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"sample {i} alone differs from sample {i} in a batch ({name}): {m}")


def _several_targets(factory: Factory, model: nn.Module, inputs: Any, target: Any) -> None:
    """Two classes asked at once, (N, 2): each column as that class asked alone, in its place."""
    if not isinstance(target, int):
        return
    other = 1 - target if target in (0, 1) else 0
    n = len(_primary(inputs))
    pair = torch.tensor([[target, other]] * n, device=_primary(inputs).device)
    both = _call(factory, inputs, pair)
    assert torch.equal(both.targets.cpu(), pair.cpu()), f"targets {pair.tolist()} were asked, got {both.targets.tolist()}"
    for column, asked in enumerate((target, other)):
        alone = _call(factory, inputs, asked)
        for name in ("maps", "scores"):
            torch.testing.assert_close(getattr(both, name)[:, column], getattr(alone, name)[:, 0], rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"target {asked} asked with another differs from it alone ({name}): {m}")


def _deterministic(factory: Factory, model: nn.Module, images: Any, target: Any) -> None:
    """Two calls of one explainer object, and a call of another, give the same maps."""
    explainer = factory()
    first, second = explainer(images, target).maps, explainer(images, target).maps
    assert torch.equal(first, second), "two identical calls of one explainer object gave different results"
    assert torch.equal(first, _call(factory, images, target).maps), "two explainer objects gave different results"


def _bad_inputs(factory: Factory, model: nn.Module, inputs: Any, target: Any) -> None:
    images = _primary(inputs)
    bad = {"a nested list": images.tolist(), "one sample without its batch dimension": images[0],
           "NaN values": images * float("nan"), "an integer tensor": images.long()}
    for label, value in bad.items():
        try:
            factory()(_replace_primary(inputs, value))
        except InputError:
            continue
        raise AssertionError(f"{label} as input did not raise InputError")
    try:
        factory()(inputs, 10_000)
    except TargetError:
        return
    raise AssertionError("class index 10000 did not raise TargetError")


def _bad_options(explainer_cls: type, options: dict[str, Any], model: nn.Module, inputs: Any,
                 target: Any) -> list[str]:
    """Each option annotated bool, int or float, given a value of another kind, must raise an
    InterpkitError when the explainer is made or first called; what did not, said in words."""
    return wrong_options(explainer_cls, lambda **given: explainer_cls(copy.deepcopy(model), **{**options, **given})(
        inputs, target))


def wrong_options(cls: type, make_and_call: Callable[..., Any]) -> list[str]:
    """For each option of ``cls`` annotated bool, int or float, ``make_and_call(option=value)``
    with values of the wrong kind must raise an InterpkitError; what did not, said in words."""
    failures = []
    for name, parameter in inspect.signature(cls).parameters.items():
        for bad in _wrong_values(parameter.annotation):
            try:
                make_and_call(**{name: bad})
            except InterpkitError:
                continue
            except Exception as error:
                failures.append(f"{name}={bad!r} raised {type(error).__name__} ({error}), not an InterpkitError")
            else:
                failures.append(f"{name}={bad!r} was accepted")
    return failures


def _wrong_values(annotation: Any) -> list[Any]:
    """Values of the wrong kind for an option's annotation (a string under postponed evaluation)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    kinds = {part.strip() for part in text.split("|")} - {"None"}
    if kinds == {"bool"}:
        return ["no"]
    if kinds == {"int"}:
        return [1.5, "3"]
    if "float" in kinds:
        return ["0.1", float("nan")]
    return []


#: every check, run on every model
CHECKS = (_output_contract, _restored, _restored_after_raising, _batch_invariant, _several_targets, _deterministic,
          _bad_inputs)


def _refused(factory: Factory, model: nn.Module, inputs: Any, target: Any) -> None:
    """A model of a kind the explainer does not support is refused with an InterpkitError."""
    before = ModelFingerprint.of(model)
    try:
        factory()(inputs, target)
    except InterpkitError:
        pass
    else:
        raise AssertionError(f"a {input_kind(model)} model, which the explainer does not support, was not refused")
    changes = before.differences(ModelFingerprint.of(model))
    assert not changes, "; ".join(changes)
