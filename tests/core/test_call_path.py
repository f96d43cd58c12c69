"""The call path: exact hygiene at a cost that does not grow with the model, no host-device
synchronisation beyond the documented one, and explainers that keep no call data (shared by
threads, called again from inside their own target)."""

import copy
import threading
import warnings
from functools import partial

import pytest
import torch
import torch.nn.functional as F
import torchvision
from threads import in_threads
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import interpkit
from interpkit import GradCAM, GuidedBackprop, ModelChangedError
from interpkit.core import ModelSnapshot
from interpkit.core import state as state_module
from interpkit.testing import ModelFingerprint, TwoInputs, assert_model_unchanged


class ClipsWhenBright(nn.Module):
    """Clips its weights through ``.data`` (no version counter sees it), for bright inputs only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        if x.mean() > 0.5:
            self.conv.weight.data.clamp_(-0.01, 0.01)
            self.head.bias.data.zero_()
        return self.head(F.relu(self.conv(x)).mean(dim=(2, 3)))


def test_a_data_dependent_writer_is_restored_exactly_after_calls_that_wrote_nothing():
    torch.manual_seed(0)
    model = ClipsWhenBright()
    before = ModelFingerprint.of(model)
    explainer = GradCAM(model)
    for _ in range(3):  # dark inputs: no write, whatever a path might learn from them
        explainer(torch.rand(2, 3, 8, 8) * 0.1)
    images = torch.rand(2, 3, 8, 8) + 1
    bright = explainer(images, target=0)
    assert_model_unchanged(before, model)
    clipped = ClipsWhenBright()  # the map is the clipped model's, as the forward made it
    clipped.load_state_dict(model.state_dict())
    clipped.conv.weight.data.clamp_(-0.01, 0.01)
    clipped.head.bias.data.zero_()
    torch.testing.assert_close(bright.maps, GradCAM(clipped)(images, target=0).maps)


def test_library_models_take_the_plain_path_and_the_users_code_the_guarded_one():
    assert ModelSnapshot(torchvision.models.resnet18()).guard is None
    assert ModelSnapshot(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())).guard is None
    assert ModelSnapshot(ClipsWhenBright()).guard is not None
    hooked = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    handle = hooked[1].register_forward_hook(lambda *args: None)  # a user's hook may write anything
    assert ModelSnapshot(hooked).guard is not None
    handle.remove()
    assert ModelSnapshot(hooked).guard is None


class WritesThroughNoGrad(nn.Module):
    """Bumps its bias in the forward: a write no trusted torch.nn class makes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        with torch.no_grad():
            self.head.bias.add_(1.0)
        return self.head(F.relu(self.conv(x)).mean(dim=(2, 3)))


def test_a_write_on_the_plain_path_is_reported_not_left_silently(monkeypatch):
    monkeypatch.setattr(state_module, "_trusted", lambda module: True)  # pretend the writer is a library class
    model = WritesThroughNoGrad()
    state_module._facts.pop(model, None)
    with pytest.raises(ModelChangedError, match="written during the explanation"):
        GradCAM(model)(torch.rand(2, 3, 8, 8), target=0)


def test_a_callable_option_is_user_code_and_what_it_writes_is_undone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    before = ModelFingerprint.of(model)

    def baseline(x):  # the user's function, run inside the call: a write through .data no version counter sees
        model[4].weight.data.mul_(2)
        return torch.zeros_like(x)

    interpkit.DeepLift(model, baseline=baseline)(torch.randn(2, 3, 8, 8), target=0)
    assert_model_unchanged(before, model)
    tunnel = interpkit.get_explainer("noise_tunnel")(model, method="deeplift", baseline=baseline)  # held by a delegate
    tunnel(torch.randn(2, 3, 8, 8), target=0)
    assert_model_unchanged(before, model)


def test_a_custom_lrp_rule_is_user_code_and_builtin_options_are_not():
    from dataclasses import dataclass

    from interpkit.core.explainer import _holds_user_code
    from interpkit.explainers.lrp import Composite, Epsilon

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    before = ModelFingerprint.of(model)

    @dataclass(frozen=True)
    class Writes(Epsilon):  # the user's rule: writes a weight through .data, which no version counter sees
        def relevance(self, layer, relevance):
            model[0].weight.data.mul_(2)
            return super().relevance(layer, relevance)

    interpkit.LRP(model, Composite(convolution=Writes(), linear=Epsilon()))(
        torch.rand(2, 3, 8, 8), target=0)
    assert_model_unchanged(before, model)
    for name in interpkit.list_explainers():  # options by default: the plain path
        try:
            explainer = interpkit.get_explainer(name)(model)
        except interpkit.InterpkitError:
            continue  # a transformer's method
        with explainer:  # its open block is no option
            assert not _holds_user_code(explainer), name

    class Plugins(interpkit.GradCAM):  # an explainer class of a third party's: its options decide
        pass

    assert not _holds_user_code(Plugins(model)) and _holds_user_code(interpkit.NoiseTunnel(model, method="deeplift",
                                                                                          baseline=lambda x: x * 0))


def _set_a_saved_statistic(model):  # the batch norm's backward reads it
    model[1].running_mean.set_(torch.zeros(7))


@pytest.mark.parametrize("write", [
    lambda m: m[0].weight.data.zero_(),  # through .data: no version counter sees it
    lambda m: (m.train(), m(torch.rand(2, 3, 8, 8)), m.eval()),  # batch norm statistics updated in training mode
    lambda m: torch._foreach_add_([m[5].bias.detach()], 1.0),
    lambda m: m[1].num_batches_tracked.set_(torch.tensor(7)),
    _set_a_saved_statistic,
], ids=["data", "batch_norm_training", "foreach", "set_", "set_saved"])
def test_a_target_callable_that_writes_a_library_model_is_undone(write):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).eval()
    before = ModelFingerprint.of(model)

    def target(output):
        write(model)
        return output[:, 0]

    for _ in range(2):  # the first call per input shape counts saved elements with hooks of its own
        if write is _set_a_saved_statistic:  # torch refuses the gradient too
            with pytest.raises(interpkit.InputError, match="in place"):
                GradCAM(model, layer="0")(torch.rand(2, 3, 8, 8), target=target)
        else:
            GradCAM(model, layer="0")(torch.rand(2, 3, 8, 8), target=target)
        assert_model_unchanged(before, model)


class Wrapped(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def _writes_in_composites():
    """User modules whose writes happen inside a composite torch function (the dispatcher sees them)."""
    class Composite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)
            self.embedding = nn.Embedding(3, 4, max_norm=0.5)
            self.register_buffer("mean", torch.zeros(4))
            self.register_buffer("var", torch.ones(4))
            base = torch.arange(8.0)
            self.register_buffer("first", base[:4])
            self.register_buffer("second", base[4:])

        def forward(self, x):
            features = F.batch_norm(self.conv(x), self.mean, self.var, training=True)
            self.embedding(torch.tensor([0, 1]))
            F.relu(self.first.sub_(10), inplace=True)
            return self.head(F.relu(features).mean(dim=(2, 3)))

    return Composite()


def test_writes_inside_composite_functions_views_and_backward_hooks_are_undone():
    torch.manual_seed(0)
    model = _writes_in_composites()
    with torch.no_grad():
        model.embedding.weight.mul_(10)  # rows above max_norm: the forward renormalises them in place
    before = ModelFingerprint.of(model)
    GradCAM(model, layer="conv")(torch.rand(2, 3, 8, 8), target=0)
    assert_model_unchanged(before, model)
    hooked = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()

    def doubles(module, *_):
        module.weight.data.mul_(2)

    hooked[4].register_full_backward_hook(doubles)
    before = ModelFingerprint.of(hooked)
    GradCAM(hooked, layer="0")(torch.rand(2, 3, 8, 8), target=0)
    assert_model_unchanged(before, hooked)


@pytest.mark.parametrize("name", ["gradcam", "saliency", "lrp", "occlusion", "deeplift"])
@pytest.mark.parametrize("training", [False, True])
def test_an_explanation_between_the_users_forward_and_backward_leaves_the_graph_valid(name, training):
    """The guard took an eval batch norm's running statistics for written (the op's schema marks
    them written in eval mode too) and copied them back after the call: the same values, but their
    version counters moved, so the user's pending backward failed ("modified by an inplace
    operation"). They are written, and copied, only in training mode."""

    class Net(nn.Module):  # the user's class: the guarded path
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 4)

        def forward(self, x):
            return self.head(F.relu(self.norm(self.conv(x))).mean((2, 3)))

    torch.manual_seed(0)
    model, x = Net().train(training), torch.randn(2, 3, 16, 16)
    loss = model(x).logsumexp(1).mean()  # the user's forward, its backward still to come
    versions = [t._version for t in model.norm.buffers()]
    interpkit.get_explainer(name)(model)(x, target=1)
    assert [t._version for t in model.norm.buffers()] == versions
    loss.backward()


def test_submodules_and_parameters_a_forward_creates_are_removed():
    class Grows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

        def forward(self, x):
            if not hasattr(self, "extra"):
                self.extra = nn.Linear(4, 4)
                self.scale = nn.Parameter(torch.ones(()))
            return self.head(F.relu(self.conv(x)).mean(dim=(2, 3)))

    model = Grows()
    before = ModelFingerprint.of(model)
    GradCAM(model, layer="conv")(torch.rand(2, 3, 8, 8), target=0)
    assert_model_unchanged(before, model)
    assert not hasattr(model, "extra") and not hasattr(model, "scale")


def test_a_model_made_under_inference_mode_is_explained_not_refused():
    from interpkit.metrics import Deletion

    with torch.inference_mode():
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    result = Deletion(steps=4)(model, torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16), targets=0)
    assert result.scores.shape == (2,)


def test_facts_follow_submodules_replaced_by_any_means():
    conv = nn.Conv2d(3, 4, 3)
    block = nn.Sequential(conv, nn.BatchNorm2d(4))  # in training mode: must be put in eval for the call
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    images = torch.randn(4, 3, 16, 16)
    GradCAM(model, layer="0")(images)
    model._modules["0"] = block  # no registration hook fires
    before = ModelFingerprint.of(model)
    got = GradCAM(model, layer="0")(images, target=0).maps
    assert_model_unchanged(before, model)
    reference = nn.Sequential(block, *list(model)[1:])
    torch.testing.assert_close(got, GradCAM(reference, layer="0")(images, target=0).maps)
    model[0][1]._buffers["running_mean"] = None  # now it mixes samples: each map must be its sample's own
    model[0][1]._buffers["running_var"] = None
    alone = GradCAM(model, layer="0")(images[:1], target=0).maps
    torch.testing.assert_close(GradCAM(model, layer="0")(images, target=0).maps[:1], alone)


def test_facts_follow_a_model_whose_modules_change():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    GradCAM(model, layer="0")(torch.randn(1, 3, 8, 8))
    model[1] = ClipsWhenBright().head  # replaced through setattr: the structure changed
    model[1] = nn.ReLU()
    model.append(nn.Dropout())
    model.train()
    before = ModelFingerprint.of(model)
    GradCAM(model, layer="0")(torch.randn(1, 3, 8, 8))
    assert_model_unchanged(before, model)  # the new Dropout's training flag is back too
    assert model[5].training


def test_one_call_walks_the_module_tree_once(monkeypatch):
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    explainer = GradCAM(model, layer="layer3")
    explainer(x)
    walks = []
    children = state_module._children
    monkeypatch.setattr(state_module, "_children", lambda modules: walks.append(1) or children(modules))
    explainer(x, target=0)
    assert len(walks) == 1  # the snapshot's check; every later read in the call uses the facts it checked


def test_a_call_inside_a_with_block_sees_modules_changed_in_the_block():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.randn(4, 3, 8, 8)
    explainer = GradCAM(model, layer="0")
    with explainer:  # the user's code runs between the calls of a block
        explainer(x)
        model.add_module("extra", nn.Identity())
        assert GradCAM(model, layer="extra").layer == "extra"
        model._modules["1"] = nn.BatchNorm2d(4, track_running_stats=False).eval()  # now it mixes samples
        inside = explainer(x, target=0).maps
    del model._modules["extra"]
    torch.testing.assert_close(inside[:1], explainer(x[:1], target=0).maps)  # each sample explained alone


def test_the_users_code_in_a_with_block_keeps_what_it_did_and_each_call_is_exact():
    """Between the calls of a block the user may train: a write of theirs is not reported as the
    explanation's, a model put in training mode or a module swapped in is explained in eval mode
    (batch statistics untouched, the same maps as outside) and left as the user set it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.randn(4, 3, 8, 8)
    explainer = GradCAM(model, layer="0")
    with explainer:
        explainer(x)
        with torch.no_grad():
            model[0].weight.add_(0.5)  # the user's step
        expected = GradCAM(copy.deepcopy(model), layer="0")(x, target=0).maps
        model.train()
        fingerprint = ModelFingerprint.of(model)
        torch.testing.assert_close(explainer(x, target=0).maps, expected)
        assert_model_unchanged(fingerprint, model)
        assert model.training and model[1].training
        model._modules["1"] = nn.BatchNorm2d(4)  # new, in training mode
        fingerprint = ModelFingerprint.of(model)
        explainer(x, target=0)
        assert_model_unchanged(fingerprint, model)
    assert model.training and int(model[1].num_batches_tracked) == 0


def test_a_with_block_leaves_what_a_models_train_override_does_put_back():
    """A model whose ``train(False)`` also freezes its parameters and registers a buffer: after a
    block of calls it is as before, as after a plain call."""

    class Freezing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.conv(x).relu().mean(dim=(2, 3)))

        def train(self, mode=True):
            super().train(mode)
            for parameter in self.parameters():
                parameter.requires_grad_(mode)
            if not mode and "calibration" not in self._buffers:
                self.register_buffer("calibration", torch.zeros(1))
            return self

    model, x = Freezing().train(), torch.randn(2, 3, 8, 8)
    fingerprint = ModelFingerprint.of(model)
    explainer = GradCAM(model, layer="conv")
    with explainer:
        explainer(x)
        explainer(x, target=1)
    assert_model_unchanged(fingerprint, model)
    assert model.training and "calibration" not in model._buffers


def test_a_with_block_holds_the_model_against_other_threads():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x, order = torch.randn(2, 3, 8, 8), []
    explainer = GradCAM(model, layer="0")

    def other():
        GradCAM(model, layer="0")(x)
        order.append("other")

    with explainer:
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(0.5)
        order.append("block")
    thread.join(10)
    assert order == ["block", "other"]


def test_the_facts_a_call_checked_are_its_own_thread_s():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    held, replaced = threading.Event(), threading.Event()

    def hold():
        with state_module.evaluation(model):
            held.set()
            replaced.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        model._modules["1"] = nn.Tanh()  # changed by another thread while the model is held
        assert isinstance(state_module.model_facts(model).by_name["1"], nn.Tanh)
    finally:
        replaced.set()
        thread.join()


def test_gradients_a_target_accumulates_are_dropped_and_existing_ones_kept():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model[0].weight.grad = torch.ones_like(model[0].weight)
    kept = model[0].weight.grad

    def backward_inside(output):
        output[:, 0].sum().backward(retain_graph=True)
        return output[:, 0]

    GradCAM(model, layer="0")(torch.randn(2, 3, 8, 8), target=backward_inside)
    assert model[0].weight.grad is kept and torch.equal(kept, torch.ones_like(kept))
    assert model[4].weight.grad is None


def test_one_explainer_object_shared_by_threads_gives_sequential_results():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).train()
    inputs = [torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(24)]
    for explainer in (GradCAM(model, layer="3"), GuidedBackprop(model)):
        expected = [explainer(x, target="all").maps for x in inputs]
        before = ModelFingerprint.of(model)
        results = {}

        def work(index):
            for j in range(index, len(inputs), 4):
                results[j] = explainer(inputs[j], target="all").maps

        assert not in_threads(work, 4)
        assert all(torch.equal(results[j], expected[j]) for j in range(len(inputs))), type(explainer).__name__
        assert_model_unchanged(before, model)


def test_a_target_that_explains_with_the_same_explainer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    explainer, images = GradCAM(model, layer="2"), torch.randn(2, 3, 8, 8)
    inner = []

    def nested(output):
        inner.append(explainer(images, target=2).maps)
        return output[:, 1]

    outer = explainer(images, target=nested)
    torch.testing.assert_close(outer.maps, explainer(images, target=1).maps)
    torch.testing.assert_close(inner[0], explainer(images, target=2).maps)
    assert outer.layer == "2"


def test_a_target_that_calls_the_same_scorecam_on_a_two_input_model():
    from interpkit_cam_variants import ScoreCAM

    torch.manual_seed(0)
    model = TwoInputs()
    generator = torch.Generator().manual_seed(0)
    inputs = model.example_inputs(2, generator)
    explainer = ScoreCAM(model)
    plain = explainer(inputs, target=0)

    def nested(output):
        explainer(inputs, target=1)
        return output[:, 0]

    torch.testing.assert_close(explainer(inputs, target=nested).maps, plain.maps)


# --- what interpkit itself costs per call ---------------------------------------------------------


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _dispatched(work) -> int:
    with OpCounter() as counter:
        work()
    return counter.ops


def _overhead(depth: str) -> int:
    """The ops an explanation dispatches beyond a bare forward and backward to the same layer."""
    model = getattr(torchvision.models, depth)().eval()
    x = torch.randn(1, 3, 32, 32)
    explainer = GradCAM(model, layer="layer3")
    explainer(x)  # the first call per shape counts what the forward saves, once

    def bare():
        kept = {}
        handle = model.layer3.register_forward_hook(lambda _m, _i, out: kept.setdefault("a", out))
        y = model(x)
        handle.remove()
        torch.autograd.grad(y[:, 0].sum(), kept["a"])

    return _dispatched(lambda: explainer(x, target=0)) - _dispatched(bare)


def test_the_torch_ops_interpkit_adds_per_call_do_not_grow_with_depth():
    shallow, deep = _overhead("resnet18"), _overhead("resnet152")
    assert shallow == deep, (shallow, deep)
    assert shallow <= 21  # a handful per call: validation, the input's copy, the capture's clone, the map, its upsampling


SYNCING = {  # tensor methods and functions that wait for a GPU's results
    torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy,
    torch.Tensor.nonzero, torch.nonzero, torch.equal, torch.Tensor.__int__, torch.Tensor.__float__,
    torch.Tensor.__index__, torch.Tensor.any, torch.Tensor.all,
}
# the documented syncs (docs/architecture.md): finiteness of the inputs (and maps, for metrics), one per
# call; a metric given target classes checks their range once, on its first forward
ALLOWED = {"check_finite"}


class SyncSpy(TorchFunctionMode):
    """Records the interpkit function that made each sync-making call, and the value was read."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCING and func not in (torch.Tensor.any, torch.Tensor.all):
            import inspect

            frame = inspect.currentframe().f_back
            while frame is not None and "/interpkit/" not in frame.f_code.co_filename:
                frame = frame.f_back
            self.sites.append(frame.f_code.co_name if frame is not None else "<model>")
        return func(*args, **(kwargs or {}))


def _sync_sites(work) -> list[str]:
    work()  # the first call per shape may probe; the steady state is what is checked
    with SyncSpy() as spy:
        work()
    return spy.sites


class Norms(nn.Module):
    """A convolution, a group norm, an RMS norm written out as Llama's, ``F.normalize``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3, stride=4), nn.Linear(8, 5)

    def forward(self, x):
        h = F.relu(F.group_norm(self.conv(x), 2)).flatten(2).transpose(1, 2)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.head(F.normalize(h, dim=-1).mean(1))


@pytest.mark.parametrize("case", ["gradcam", "gradcam_all", "guided_backprop", "deletion", "explain_dataset_batch", "lrp",
                                  "attn_lrp", "lrp_norms", "deeplift"])
def test_no_undocumented_host_device_synchronisation(case, tmp_path):
    from interpkit.dataset.run import _explain_batch
    from interpkit.metrics import Deletion

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    explanation = GradCAM(model)(x)
    work = {
        "gradcam": lambda: GradCAM(model)(x),
        "gradcam_all": lambda: GradCAM(model, layer="layer3")(x, target="all"),
        "guided_backprop": lambda: GuidedBackprop(model)(x, target=1),
        "deletion": lambda: Deletion(steps=4)(model, x, explanation),
    }
    if case == "attn_lrp":  # fused attention written out: one read of the check that the parts reproduce it
        timm = pytest.importorskip("timm")
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=5,
                                depth=2).eval()
        assert sorted(_sync_sites(lambda: interpkit.LRP(vit, "epsilon")(x, target=1))) == [
            "check_decompositions", "check_finite"]
        return
    if case == "deeplift":  # on the CPU only, a read per nonlinearity spares the small-difference mask
        sites = _sync_sites(lambda: interpkit.DeepLift(model)(x, target=1))
        assert sites.count("check_finite") == 1 and set(sites) == {"check_finite", "_apart"}, sites
        return
    work["lrp"] = lambda: interpkit.LRP(model)(x, target=1)
    norms = Norms().eval()  # one model: its second call is the steady state (a first call reads the random state)
    work["lrp_norms"] = lambda: interpkit.LRP(norms, "epsilon")(x, target=1)
    if case == "explain_dataset_batch":
        with warnings.catch_warnings():
            sites = _sync_sites(lambda: _explain_batch(GradCAM(model), x, torch.zeros(2, dtype=torch.long), ["", ""],
                                                       None, [], torch.device("cpu"), None))
        # the store needs the batch's results on the host: those copies are the result's, not overhead
        assert set(sites) <= ALLOWED | {"_explain_batch", "_explain_readable"}, sites
        assert sites.count("check_finite") == 1
        return
    sites = _sync_sites(work[case])
    assert sorted(sites) == (["check_classes", "check_finite"] if case == "deletion" else ["check_finite"]), sites


def test_deeplift_reads_no_value_off_the_cpu():
    """DeepLift's shortcut past the small-difference mask reads a value only on the CPU: on
    another device (here ``meta``, whose values cannot be read at all) it always takes the mask."""
    from interpkit.explainers.deeplift import _apart

    assert not _apart(torch.ones(3, device="meta"), 1e-10)
    assert _apart(torch.tensor([2.0, 1.0]), 1e-10) and not _apart(torch.tensor([1.0, 0.0]), 1e-10)
    assert not _apart(torch.tensor([1.0, float("nan")]), 1e-10) and not _apart(torch.ones(0), 1e-10)


@pytest.mark.parametrize("make", [lambda m: torch.jit.script(m), lambda m: torch.jit.trace(m, torch.rand(1, 3, 8, 8)),
                                  lambda m: nn.Sequential(torch.jit.script(m), nn.Identity())],
                         ids=["scripted", "traced", "scripted_part"])
def test_torchscript_modules_are_refused_by_name(make):
    from interpkit.metrics import Deletion

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation
        scripted = make(model)
    x = torch.rand(2, 3, 8, 8)
    for run in (lambda: interpkit.Saliency(scripted)(x), lambda: GradCAM(scripted, layer=None)(x),
                lambda: interpkit.Occlusion(scripted, window=4)(x),
                lambda: Deletion(steps=2)(scripted, x, torch.rand(2, 8, 8), targets=0)):
        with pytest.raises(interpkit.InputError, match="TorchScript module"):
            run()


def test_a_model_whose_eval_raises_is_restored_and_refused_clearly():
    class RefusesEval(nn.Sequential):
        def train(self, mode=True):
            self[0].training = mode  # changes a flag, then raises
            if not mode:
                raise RuntimeError("eval refused")
            return super().train(mode)

    model = RefusesEval(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).train()
    before = ModelFingerprint.of(model)
    with pytest.raises(interpkit.InputError, match=r"eval\(\) raised RuntimeError"):
        GradCAM(model, layer="0")(torch.randn(1, 3, 8, 8))
    assert_model_unchanged(before, model)


def test_the_users_hooks_see_one_forward_when_the_layer_is_chosen():
    """layer=None chooses from a probe forward the model's own hooks do not see: a user counting
    forwards (and backwards) of the model and of a block counts the explaining ones only; the
    hooks are the same objects after."""
    from interpkit import receptive_field

    model = torchvision.models.resnet18().eval()
    counts = {"model": 0, "block": 0, "pre": 0, "backward": 0}
    handles = [model.register_forward_hook(lambda *_: counts.__setitem__("model", counts["model"] + 1)),
               model.layer3.register_forward_hook(lambda *_: counts.__setitem__("block", counts["block"] + 1)),
               model.conv1.register_forward_pre_hook(lambda *_: counts.__setitem__("pre", counts["pre"] + 1)),
               model.fc.register_full_backward_hook(lambda *_: counts.__setitem__("backward", counts["backward"] + 1))]
    hooks_before = {name: dict(getattr(model.layer3, name)) for name in ("_forward_hooks", "_forward_pre_hooks")}
    explanation = GradCAM(model)(torch.randn(2, 3, 64, 64), target=[1, 2])
    assert explanation.layer == "layer4"
    assert counts == {"model": 1, "block": 1, "pre": 1, "backward": 1}
    assert {name: dict(getattr(model.layer3, name)) for name in hooks_before} == hooks_before
    counts.update(model=0, pre=0)
    receptive_field(model, "layer2", (64, 64))  # the input channels are found first, unseen
    assert counts["model"] == 1 and counts["pre"] == 1
    for handle in handles:
        handle.remove()


def test_a_call_for_one_target_leaves_no_reference_cycle():
    """What a call held (the propagation mode's kept activations, a rule's tables) is freed when
    it returns, not at the next garbage collection: no built-in explainer leaves a cycle."""
    import gc

    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=4).eval()  # resnet18's parts, one block per stage
    x = torch.randn(2, 3, 32, 32)
    left = {}
    options = {"deeplift, reveal-cancel": lambda m: interpkit.DeepLift(m, rule="reveal_cancel")}  # resnet's bn2
    fewer = {"sscam": {"samples": 2}, "iscam": {"samples": 2}, "rise": {"masks": 100},  # the same code, fewer forwards
             "shapley_value_sampling": {"samples": 2}, "lime": {"samples": 40}, "kernel_shap": {"samples": 40}}
    factories = {**{name: partial(interpkit.get_explainer(name), **fewer.get(name, {}))
                    for name in interpkit.list_explainers()}, **options}
    for name, factory in factories.items():
        try:
            explainer = factory(model)
            explainer(x, target=1)  # caches filled once
        except interpkit.InterpkitError:
            continue  # a transformer's method
        gc.collect()
        gc.disable()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                explainer(x, target=1)
            left[name] = gc.collect()
        finally:
            gc.enable()
    assert len(left) > 30 and not any(left.values()), {k: v for k, v in left.items() if v}


@pytest.mark.parametrize("name", ["gradcam", "guided_backprop", "lrp", "deeplift", "occlusion", "scorecam"])
def test_an_explained_model_is_freed_when_the_user_drops_it(name):
    """interpkit's per-model facts sit in a dict keyed weakly by the model; they held the model
    itself (its module tuple, names, parents), so no explained model was ever freed."""
    import gc
    import weakref

    model = torchvision.models.resnet18(num_classes=5).eval()
    alive = weakref.ref(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpkit.get_explainer(name)(model)(torch.randn(2, 3, 32, 32), target=1)
    del model
    gc.collect()
    assert alive() is None


class _WritesBothInputs(nn.Module):
    """Normalises both its inputs in place; ``in_place=False``: the same function out of place."""

    def __init__(self, in_place=True):
        super().__init__()
        self.conv, self.fc, self.in_place = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 + 2, 3), in_place

    def forward(self, x, y):
        if self.in_place:
            x.sub_(0.5).mul_(2)
            y.mul_(2)
        else:
            x, y = (x - 0.5) * 2, y * 2
        return self.fc(torch.cat([torch.relu(self.conv(x)).mean((2, 3)), y], 1))


@pytest.mark.parametrize("name", ["gradcam", "saliency", "deeplift", "lrp", "occlusion", "feature_ablation",
                                  "integrated_gradients"])
def test_a_model_writing_its_inputs_in_place_explains_the_users_values_and_leaves_them(name):
    """Every forward runs on copies of the model's tensor arguments: the user's inputs were
    written, and later forwards (perturbed copies, the layer probe) read the written values."""
    torch.manual_seed(0)
    writes, plain = _WritesBothInputs().eval(), _WritesBothInputs(in_place=False).eval()
    plain.load_state_dict(writes.state_dict())
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 2)
    kept = x.clone(), y.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = interpkit.get_explainer(name)(writes)((x, y), target=1).maps  # GradCAM: the layer probe too
        assert torch.equal(x, kept[0]) and torch.equal(y, kept[1])
        torch.testing.assert_close(got, interpkit.get_explainer(name)(plain)((x, y), target=1).maps)


class _Doubling(nn.Module):
    """The user's model whose forward doubles a buffer its output is scaled by."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x):
        self.scale.mul_(2)
        return self.head(F.relu(self.conv(x)).mean((2, 3))) * self.scale


@pytest.mark.parametrize("name", ["gradcam", "scorecam", "occlusion", "rise", "kernel_shap"])
def test_the_first_call_equals_the_next_though_it_probed_the_model(name):
    """A first call per input shape probes the model (choosing the layer, measuring the memory a
    forward takes): its writes were undone only at the call's end, so the explanation's own
    forwards saw a model the probes had changed, and the first call's maps differed."""
    model, x = _Doubling(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    explainer = interpkit.get_explainer(name)(model)
    first, second = explainer(x, target=1), explainer(x, target=1)
    torch.testing.assert_close(first.maps, second.maps, rtol=0, atol=0)
    torch.testing.assert_close(first.scores, second.scores, rtol=0, atol=0)
    assert model.scale.item() == 1.0


def test_attributes_a_forward_rebinds_or_adds_are_put_back():
    """``self.last = h`` kept the explanation's tensor (and its graph) in the model, a lazily set
    attribute stayed, and the old hook-based weight norm left ``weight`` bound to the call's."""

    class Caching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.utils.weight_norm(nn.Conv2d(3, 4, 3, padding=1))
            self.head, self.last = nn.Linear(4, 3), None

        def forward(self, x):
            h = F.relu(self.conv(x))
            self.last = h
            if not hasattr(self, "first_shape"):
                self.first_shape = tuple(x.shape)
            return self.head(h.mean((2, 3)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old weight norm
        model = Caching().eval()
    x = torch.randn(2, 3, 8, 8)
    model(x[:1])
    before = dict(vars(model)), dict(vars(model.conv))
    for name in ("gradcam", "saliency", "occlusion"):
        interpkit.get_explainer(name)(model)(x, target=1)
        for attributes, module in zip(before, (model, model.conv)):
            assert vars(module).keys() == attributes.keys()
            assert all(vars(module)[key] is value for key, value in attributes.items()), name


def test_a_lazy_head_the_eval_forward_never_reaches_is_no_reason_to_refuse():
    """A lazy module only the training forward runs stays uninitialised after the user's eval
    forwards; the explanation reads the rest of the model."""

    class Aux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head, self.aux = nn.Conv2d(3, 4, 3), nn.Linear(4, 3), nn.LazyLinear(2)

        def forward(self, x):
            h = F.relu(self.conv(x)).mean((2, 3))
            return (self.head(h), self.aux(h)) if self.training else self.head(h)

    model, x = Aux().eval(), torch.randn(2, 3, 8, 8)
    model(x)
    for name in ("gradcam", "saliency"):
        assert interpkit.get_explainer(name)(model)(x, target=1).maps.isfinite().all()
    assert type(model.aux).__name__ == "LazyLinear"


def test_an_attribute_a_forward_deletes_comes_back_even_when_it_was_none():
    class Deleting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head, self.cache, self.flag = nn.Conv2d(3, 4, 3), nn.Linear(4, 3), None, 1

        def forward(self, x):
            del self.cache, self.flag
            return self.head(F.relu(self.conv(x)).mean((2, 3)))

    model = Deleting().eval()
    GradCAM(model)(torch.randn(2, 3, 8, 8), target=1)
    assert model.cache is None and model.flag == 1

class _EnergyGradient(nn.Module):
    """A forward that takes a gradient of its own with ``torch.func.grad`` (an energy model's
    force, a physics-informed net's derivative)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        force = torch.func.grad(lambda t: (t ** 3).sum())(h)
        return self.fc((h + force).flatten(1))


def test_a_forward_that_runs_torch_func_grad_is_explained_one_target_at_a_time():
    """torch.func's grad refuses the saved-tensor hooks that count what a first call's forward
    saves: a call of one target per sample needs no count and takes none, so gradient methods
    explain such a model (the double-backward gradients, as autograd gives them); a first call
    of several targets is refused naming torch.func, before any second forward could run."""
    torch.manual_seed(0)
    model, x = _EnergyGradient().eval(), torch.randn(2, 3, 8, 8)
    fingerprint = ModelFingerprint.of(model)
    leaf = x.clone().requires_grad_(True)
    scores = model(leaf)
    expected = torch.stack([torch.autograd.grad(scores[:, k].sum(), leaf, retain_graph=True)[0] for k in range(3)], 1)
    saliency = interpkit.Saliency(model, absolute=False)
    for _ in range(2):
        torch.testing.assert_close(saliency(x, target=1).maps, expected[:, 1:2])
        torch.testing.assert_close(saliency(x, target=[0, 2]).maps[:, 0], torch.stack([expected[0, 0], expected[1, 2]]))
        with pytest.raises(interpkit.InputError, match="torch.func's grad.*one target per call"):
            saliency(x, target="all")
    assert GradCAM(model, layer="conv")(x, target=2).maps.shape == (2, 1, 8, 8)
    points = interpkit.GradientShap(model, baselines=torch.zeros(1, 3, 8, 8))(x, target=1).maps  # (N, 1) targets
    assert points.shape == (2, 1, 3, 8, 8) and bool(points.isfinite().all())
    with pytest.raises(interpkit.InputError, match="torch.func's grad"):
        GradCAM(model, layer="conv")(x, target=torch.tensor([[0, 1], [1, 2]]))
    assert_model_unchanged(fingerprint, model)


def test_one_target_is_told_from_the_target_alone():
    from interpkit.core.targets import one_target

    for target in (None, 3, [1, 2], (0, torch.tensor(1)), torch.tensor(2), torch.tensor([1, 2]), range(2),
                   torch.tensor([[1], [2]]), interpkit.Neuron("conv", 0)):
        assert one_target(target), target
    for target in ("all", torch.tensor([[0, 1]]), [[0, 1]], [interpkit.Neuron("conv", 0)] * 2, True, lambda out: out,
                   [1.5]):
        assert not one_target(target), target
