"""Every registered explainer (built-in or plugin) passes the conformance suite; the suite catches
explainers that break the contract."""

import pytest
import torch
from hypothesis import given, settings
from tiny_split import FEWER_FORWARDS

from interpkit import GradCAM, TargetError
from interpkit.testing import check_explainer, hard_case_models
from interpkit.testing.conformance import CHECKS, supported_hard_cases
from interpkit.testing.models import input_kind
from interpkit.testing.strategies import image_batches, layer_choices, small_models, targets


def test_registered_explainer_conforms(interpkit_explainer):
    report = check_explainer(interpkit_explainer, options=FEWER_FORWARDS.get(interpkit_explainer.name))
    models = hard_case_models()
    supported = supported_hard_cases(interpkit_explainer)
    kinds = [m for m, model in models.items() if input_kind(model) in interpkit_explainer.supports]
    assert supported == kinds or (interpkit_explainer.class_targets_only and set(kinds) - set(supported) == {"DictOutput"})
    every = {f"{check.__name__.strip('_')} on {model}" for check in CHECKS for model in supported}
    every |= {f"refused on {model}" for model in models if model not in supported}
    every |= {f"options on {supported[0]}"}
    assert set(report.passed) == every and not report.failures, report.failures
    assert {"ConvStack", "Conv1dNet", "Conv3dNet", "TinyTokens", "TwoInputs"} & set(supported)


def test_fixtures(interpkit_models, interpkit_images):
    assert set(interpkit_models) == {"ConvStack", "ResidualReusedReLU", "FunctionalReLU", "BatchNormDropout",
                                     "DictOutput", "Conv1dNet", "Conv3dNet", "TinyTokens", "TwoInputs", "PlainSequential"}
    assert all(m.training for m in interpkit_models.values())
    assert interpkit_images.shape == (3, 3, 20, 16)


class LeavesEvalMode(GradCAM):
    name = "leaves_eval_mode"

    def __call__(self, inputs, target=None):
        result = super().__call__(inputs, target)
        self.model.eval()
        return result


class LeaksAHook(GradCAM):
    name = "leaks_a_hook"

    def explain(self, call):
        self.model.register_forward_hook(lambda *args: None)
        return super().explain(call)


class NoisyMaps(GradCAM):
    name = "noisy_maps"

    def explain(self, call):
        result = super().explain(call)
        result.maps = result.maps + torch.rand_like(result.maps)
        return result


class AcceptsNaN(GradCAM):
    name = "accepts_nan"

    def __call__(self, inputs, target=None):
        if isinstance(inputs, torch.Tensor):
            inputs = torch.nan_to_num(inputs)
        return super().__call__(inputs, target)


class TruthyFlag(GradCAM):
    """Reads a flag by truthiness: ``sharpen="no"`` acts as True."""

    name = "truthy_flag"

    def __init__(self, model, layer=None, sharpen: bool = False) -> None:
        super().__init__(model, layer)
        self.sharpen = sharpen


class RawSeed(GradCAM):
    name = "raw_seed"

    def __init__(self, model, layer=None, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__(model, layer)
        self.generator = torch.Generator().manual_seed(seed)
        self.scale = scale


class IgnoresTheTarget(GradCAM):
    """Explains the top class whatever was asked, and reports the class asked."""

    name = "ignores_the_target"

    def explain(self, call):
        asked = super().explain(call)
        asked.maps = super().explain(call.with_(target=None)).maps
        return asked


class ReportsClassZero(GradCAM):
    name = "reports_class_zero"

    def explain(self, call):
        result = super().explain(call)
        result.targets.zero_()
        return result


class NaNScores(GradCAM):
    name = "nan_scores"

    def explain(self, call):
        result = super().explain(call)
        result.scores = torch.full(result.scores.shape, float("nan"), dtype=torch.float64)
        return result


class TouchesTheInput(GradCAM):
    name = "touches_the_input"

    def __call__(self, inputs, target=None):
        result = super().__call__(inputs, target)
        if isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
            inputs.requires_grad_(True)
        return result


class SwapsModules(GradCAM):
    """Leaves a submodule replaced, a dropout probability changed, a tensor hook on a weight and
    grad mode off: none of which the fingerprint saw."""

    name = "swaps_modules"

    def explain(self, call):
        result = super().explain(call)
        for module in list(self.model.modules()):
            for key, child in list(module._modules.items()):
                if isinstance(child, torch.nn.ReLU):
                    module._modules[key] = torch.nn.ReLU()
        return result


class ChangesDropout(GradCAM):
    name = "changes_dropout"

    def explain(self, call):
        for module in self.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return super().explain(call)


class HooksAWeight(GradCAM):
    name = "hooks_a_weight"

    def explain(self, call):
        next(self.model.parameters()).register_hook(lambda grad: grad * 2)
        return super().explain(call)


class TurnsGradOff(GradCAM):
    name = "turns_grad_off"

    def __call__(self, inputs, target=None):
        result = super().__call__(inputs, target)
        torch.set_grad_enabled(False)
        return result


class ReversedBatch(GradCAM):
    """Gives each sample another sample's map (the middle one of three keeps its own)."""

    name = "reversed_batch"

    def explain(self, call):
        result = super().explain(call)
        result.maps = result.maps.flip(0)
        return result


class SwapsTargets(GradCAM):
    """Two targets asked at once come back in each other's columns."""

    name = "swaps_targets"

    def explain(self, call):
        result = super().explain(call)
        result.maps = result.maps.flip(1)
        return result


class ZeroScores(GradCAM):
    name = "zero_scores"

    def explain(self, call):
        result = super().explain(call)
        result.scores = torch.zeros_like(result.scores)
        return result


class TransposedGrid(GradCAM):
    name = "transposed_grid"

    def __init__(self, model, layer=None) -> None:
        super().__init__(model, layer, upsample=False)

    def explain(self, call):
        result = super().explain(call)
        result.maps = result.maps.transpose(-1, -2).contiguous()
        return result


class CountsItsCalls(GradCAM):
    """Each call of one object scales its maps otherwise: a fresh object per call hides it."""

    name = "counts_its_calls"

    def explain(self, call):
        self.calls = getattr(self, "calls", 0) + 1
        result = super().explain(call)
        result.maps = result.maps * self.calls
        return result


class Reseeds(GradCAM):
    name = "reseeds"

    def explain(self, call):
        torch.manual_seed(0)
        return super().explain(call)


class LeavesAnomalyDetection(GradCAM):
    name = "leaves_anomaly_detection"

    def explain(self, call):
        torch.autograd.set_detect_anomaly(True)
        return super().explain(call)


class LeavesSavedTensorsHooks(GradCAM):
    name = "leaves_saved_tensors_hooks"

    def explain(self, call):
        torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t).__enter__()
        return super().explain(call)


class ScalesWeightsData(GradCAM):
    """Writes a weight through ``.data``, which no version counter sees: on the unguarded path of a
    torch.nn model nothing puts it back (the kit's own classes run guarded and would hide it)."""

    name = "scales_weights_data"

    def explain(self, call):
        next(self.model.parameters()).data.mul_(1.5)
        return super().explain(call)


@pytest.mark.parametrize("broken, words", [
    (ReversedBatch, "sample 0 alone differs from sample 0 in a batch"), (SwapsTargets, "asked with another differs"),
    (ZeroScores, "scores are not the model's outputs"), (TransposedGrid, "not the input's .* divided by one stride"),
    (CountsItsCalls, "two identical calls of one explainer object"), (Reseeds, "the global random generator"),
    (LeavesAnomalyDetection, "anomaly detection"), (LeavesSavedTensorsHooks, "saved tensors hooks"),
    (ScalesWeightsData, "restored on PlainSequential: AssertionError: 0.weight changed"),
    (IgnoresTheTarget, "classes 1 and 0 gave the same maps"), (ReportsClassZero, "class 1 was asked"),
    (NaNScores, "scores hold NaN"), (TouchesTheInput, "requires_grad changed"), (SwapsModules, "modules changed"),
    (ChangesDropout, "attributes changed"), (HooksAWeight, "tensor hooks changed"),
    (TurnsGradOff, "global state was left changed: grad mode"),
    (LeavesEvalMode, "training changed"), (LeaksAHook, "hooks changed"),
    (NoisyMaps, "different results"), (AcceptsNaN, "NaN values"),
    (TruthyFlag, "sharpen='no' was accepted"), (RawSeed, r"seed=1.5 raised RuntimeError"),
    (RawSeed, "scale=nan was accepted"),
])
def test_the_suite_catches_broken_explainers(broken, words):
    import re

    from interpkit.testing import BatchNormDropout, ConvStack
    from interpkit.testing.models import plain_sequential

    torch.manual_seed(0)  # three of the kit's models: each fault shows on them, and the suite stays quick
    models = {"ConvStack": ConvStack().train(), "BatchNormDropout": BatchNormDropout().train(),
              "PlainSequential": plain_sequential().train()}
    try:
        report = check_explainer(broken, models=models, raise_on_failure=False)
    finally:
        torch.set_grad_enabled(True)
    assert any(re.search(words, failure) for failure in report.failures), report.failures
    assert report.passed


def test_the_suite_raises_listing_every_failure():
    from interpkit.testing import ConvStack

    with pytest.raises(AssertionError, match="(?s)fails [0-9]+ conformance check.*training changed"):
        check_explainer(LeavesEvalMode, models={"ConvStack": ConvStack().train()})


def test_a_batch_mixing_model_is_checked_as_explainers_run_it():
    """Its scores were compared with one forward of the whole batch, which the explainers, running
    each sample alone, rightly do not give."""
    from interpkit import Saliency

    torch.manual_seed(0)
    mixing = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4, track_running_stats=False),
                                 torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    report = check_explainer(Saliency, models={"mixing": mixing}, raise_on_failure=False)
    assert not report.failures and report.passed


def test_a_float64_model_and_a_model_without_parameters_are_checked_not_crashed():
    """The example inputs stayed float32 for a float64 model (a RuntimeError ended the check), and
    a model without parameters was a StopIteration."""
    from interpkit import Saliency
    from interpkit.testing import ConvStack

    report = check_explainer(Saliency, models={"float64": ConvStack().double()}, raise_on_failure=False)
    assert not report.failures and report.passed
    stateless = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    report = check_explainer(Saliency, models={"stateless": stateless}, raise_on_failure=False)
    assert report.passed or report.failures  # ran to the end, whatever the explainer makes of it


@settings(max_examples=20, deadline=None)
@given(model=small_models(), images=image_batches(max_side=24), data=__import__("hypothesis").strategies.data())
def test_strategies_drive_gradcam(model, images, data):
    target = data.draw(targets(len(images), 4))
    layer = data.draw(layer_choices(model))
    explanation = GradCAM(model, layer=layer)(images, target)
    if layer is not None:
        assert explanation.layer == layer
    assert explanation.maps.shape[:2] == explanation.targets.shape
    assert explanation.maps.shape[-2:] == images.shape[-2:]
    with pytest.raises(TargetError):
        GradCAM(model)(images, target=99)


@settings(max_examples=30, deadline=None)
@given(square=image_batches(square=True, max_side=12), oblong=image_batches(square=False, max_side=12))
def test_image_batches_keep_their_shape_promise(square, oblong):
    assert square.shape[2] == square.shape[3] and oblong.shape[2] != oblong.shape[3]
