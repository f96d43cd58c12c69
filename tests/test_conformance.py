"""Every registered explainer (built-in or plugin) passes the conformance suite; the suite catches
explainers that break the contract."""

import pytest
import torch
from hypothesis import given, settings

from interpkit import GradCAM, TargetError
from interpkit.testing import check_explainer, hard_case_models
from interpkit.testing.conformance import CHECKS, supported_hard_cases
from interpkit.testing.models import input_kind
from interpkit.testing.strategies import image_batches, layer_choices, small_models, targets


def test_registered_explainer_conforms(interpkit_explainer):
    report = check_explainer(interpkit_explainer)
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
                                     "DictOutput", "Conv1dNet", "Conv3dNet", "TinyTokens", "TwoInputs"}
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


@pytest.mark.parametrize("broken, words", [
    (LeavesEvalMode, "training changed"), (LeaksAHook, "hooks changed"),
    (NoisyMaps, "different results"), (AcceptsNaN, "NaN values"),
    (TruthyFlag, "sharpen='no' was accepted"), (RawSeed, r"seed=1.5 raised RuntimeError"),
    (RawSeed, "scale=nan was accepted"),
])
def test_the_suite_catches_broken_explainers(broken, words):
    with pytest.raises(AssertionError, match=words):
        check_explainer(broken)
    report = check_explainer(broken, raise_on_failure=False)
    assert report.failures and report.passed


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
