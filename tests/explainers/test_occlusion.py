"""Occlusion equals captum's on the same windows, strides and baselines, and is exact on models
whose answer is known by construction."""

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from interpkit import ForwardError, InputError, Occlusion, TargetError
from interpkit.core import model_cache
from interpkit.testing import Conv1dNet, Conv3dNet

captum_attr = pytest.importorskip("captum.attr", reason="captum is part of the [test] extra")


@pytest.mark.parametrize("window, stride, baseline", [((8, 8), (4, 4), 0.0), ((5, 7), (3, 2), -0.5),
                                                      ((4, 4), (4, 4), 0.25), ((30, 26), (1, 1), 0.0)])
def test_equals_captum_on_resnet18(window, stride, baseline):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(2, 3, 30, 26)
    ours = Occlusion(model, window=window, stride=stride, baseline=baseline, max_batch=16)(x, target=[1, 3]).maps
    theirs = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=(3, *window), strides=(3, *stride),
                                                    target=[1, 3], baselines=baseline, perturbations_per_eval=8)
    assert ours.shape == (2, 1, 30, 26) and ours.abs().max() > 0
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(theirs[:, 0], theirs[:, 2])  # captum's channels, occluded together, agree


@pytest.mark.parametrize("make, shape, window, stride", [(Conv1dNet, (2, 2, 40), (6,), (4,)),
                                                         (Conv3dNet, (2, 1, 6, 10, 8), (2, 4, 3), (2, 3, 3))])
def test_equals_captum_in_one_and_three_dimensions(make, shape, window, stride):
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(*shape)
    ours = Occlusion(model, window=window, stride=stride)(x, target=1).maps
    theirs = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=(shape[1], *window),
                                                    strides=(shape[1], *stride), target=1)
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-6, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 6), width=st.integers(1, 6), channels=st.integers(1, 3),
       baseline=st.floats(-2, 2), per_sample=st.booleans(), seed=st.integers(0, 2**16))
def test_a_linear_model_gets_its_weights_times_the_change(height, width, channels, baseline, per_sample, seed):
    """For f(x) = w . x + b, one-position windows give sum_c w_c (x_c - x0) at each position,
    x0 a number or one baseline per sample."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, height, width, generator=generator, dtype=torch.float64)
    if per_sample:
        baseline = baseline * torch.rand(2, channels, height, width, generator=generator, dtype=torch.float64)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, 3)).double()
    maps = Occlusion(linear, window=1, stride=1, baseline=baseline)(x, target=2).maps
    weights = linear[1].weight[2].detach().view(channels, height, width)
    expected = (weights * (x - baseline)).sum(1)
    torch.testing.assert_close(maps[:, 0].double(), expected, rtol=1e-4, atol=1e-5)


def test_bad_options_and_targets():
    model = Conv1dNet().eval()
    for options in ({"window": 0}, {"window": (2, 0)}, {"stride": 1.5}, {"baseline": float("nan")},
                    {"baseline": "zero"}, {"max_batch": 0}):
        with pytest.raises(InputError):
            Occlusion(model, **options)
    with pytest.raises(InputError, match="1 axes"):
        Occlusion(model, window=(2, 2))(torch.randn(1, 2, 40))
    from interpkit import Neuron

    with pytest.raises(TargetError, match="neurons"):
        Occlusion(model, window=4)(torch.randn(1, 2, 40), target=Neuron("features.0", 0))


def test_live_peak_counts_storages_until_they_are_freed_not_views_or_in_place_results():
    from interpkit.explainers.perturbation import LivePeak

    batch, weight = torch.ones(1000), torch.ones(50, 40)
    with LivePeak() as peak:
        a = batch * 1  # 4,000 bytes
        b = a * 2  # 8,000 held
        del a
        c = b + 1  # b and c: 8,000 again
        b.add_(1)  # in place: nothing new
        views = c.view(10, 100), weight.t()  # views, of a tensor made here and of one that was not
        kept = b.detach()  # another tensor on b's storage: b's 4,000 bytes stay held after b is gone
        del b, c, views
        cast = weight.to(torch.float64)  # 4,000 (kept) + 16,000
        del cast
        d = torch.ones(1500)  # 4,000 + 6,000
    assert peak.bytes == 20000 and len(d) == 1500 and len(kept) == 1000


def test_copies_per_forward_stay_within_the_memory_budget(monkeypatch):
    import interpkit.explainers.perturbation as engine

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 3)).eval()
    x = torch.randn(2, 3, 12, 12)
    batches = []
    model.register_forward_pre_hook(lambda _m, args: batches.append(len(args[0])))
    explainer = Occlusion(model, window=2, stride=2, max_batch=64)  # 36 windows
    first = explainer(x, target=1).maps
    # the clean forward, then the measure (the first sample alone, twice, then doubled), then the copies
    assert batches == [2, 1, 1, 2, 64, 8]
    (memory,) = [v for k, v in model_cache(model).items() if k[0] == "forward memory"]
    fixed, per_sample, *_ = memory
    assert 16 * 12 * 12 * 4 <= per_sample < 10 * 16 * 12 * 12 * 4  # the conv's output and a few more
    monkeypatch.setattr(engine, "MEMORY_BUDGET", fixed + 5 * 2 * per_sample)  # room for five copies of the batch
    batches.clear()
    torch.testing.assert_close(explainer(x, target=1).maps, first)
    assert batches[0] == 2 and set(batches[1:-1]) == {10} and len(batches) == 1 + 36 // 5 + 1
    monkeypatch.setattr(engine, "MEMORY_BUDGET", 1)  # below one copy: one copy per forward, never none
    batches.clear()
    torch.testing.assert_close(explainer(x, target=1).maps, first)
    assert set(batches) == {2} and len(batches) == 37


def test_on_the_cpu_a_forward_holds_no_more_per_sample_bytes_than_the_cpu_chunk(monkeypatch):
    """Larger batches ran slower per image on the CPU once their activations outgrew its caches
    (resnet18 at 224 px, mobilenet_v2 3x); the chunk is capped there, the maps unchanged."""
    import interpkit.explainers.perturbation as engine

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 3)).eval()
    x, batches = torch.randn(2, 3, 12, 12), []
    model.register_forward_pre_hook(lambda _m, args: batches.append(len(args[0])))
    explainer = Occlusion(model, window=2, stride=2, max_batch=64)  # 36 windows
    first = explainer(x, target=1).maps
    assert batches[-2:] == [64, 8]  # the default leaves these small inputs at max_batch
    (memory,) = [v for k, v in model_cache(model).items() if k[0] == "forward memory"]
    monkeypatch.setattr(engine, "CPU_CHUNK_BYTES", 3 * 2 * memory[1])  # three copies of the batch
    batches.clear()
    torch.testing.assert_close(explainer(x, target=1).maps, first)
    assert batches[0] == 2 and set(batches[1:]) == {6} and len(batches) == 1 + 36 // 3
    monkeypatch.setattr(engine, "CPU_CHUNK_BYTES", 1)  # below one copy: one per forward, never none
    batches.clear()
    torch.testing.assert_close(explainer(x, target=1).maps, first)
    assert set(batches) == {2} and len(batches) == 37


def test_the_cpu_cap_leaves_room_for_the_weights_and_trusts_only_a_measure_that_told_fixed_apart(monkeypatch):
    """Found by a review: a model whose peak is its weights' copies (two samples measured no more
    than one) counted all of it per sample and went to two copies a forward; a weight-heavy model
    read its weights once per few images."""
    import interpkit.explainers.perturbation as engine

    class FixedPeak(nn.Module):  # the peak: two copies of the weight, made whatever the batch
        def __init__(self):
            super().__init__()
            self.w, self.out = nn.Parameter(torch.randn(64, 3 * 8 * 8) * 0.01), nn.Linear(64, 3)

        def forward(self, x):
            return self.out(torch.relu(x.flatten(1) @ (self.w * 2 + 1).T))

    torch.manual_seed(0)
    model, x, batches = FixedPeak().eval(), torch.randn(2, 3, 8, 8), []
    model.register_forward_pre_hook(lambda _m, args: batches.append(len(args[0])))
    explainer = Occlusion(model, window=2, stride=2, max_batch=64)  # 16 windows
    monkeypatch.setattr(engine, "CPU_CHUNK_BYTES", 1)
    explainer(x, target=1)
    (memory,) = [v for k, v in model_cache(model).items() if k[0] == "forward memory"]
    assert not memory.told_apart and batches[-1] == 32  # the CPU cap left out: 16 copies of the batch
    heavy = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 256), nn.ReLU(), nn.Linear(256, 3)).eval()
    heavy_batches, x = [], torch.randn(2, 3, 16, 16)
    heavy.register_forward_pre_hook(lambda _m, args: heavy_batches.append(len(args[0])))
    Occlusion(heavy, window=1, stride=1, max_batch=1024)(x, target=1)  # 256 windows
    (memory,) = [v for k, v in model_cache(heavy).items() if k[0] == "forward memory"]
    assert memory.told_apart and memory.weights == sum(p.numel() * 4 for p in heavy.parameters())
    copies = memory.weights // (memory.per_sample * 2)
    assert 1 < copies < 256 and heavy_batches[4] == 2 * copies  # as many copies as the weights' bytes hold


def test_the_measure_draws_no_random_numbers_and_leaves_the_input_alone():
    import interpkit.explainers.perturbation as engine
    from interpkit.core import Call, ModelInputs

    class Noisy(nn.Module):  # draws random numbers in eval and writes its input
        def forward(self, x):
            x.add_(0.0)
            return x.flatten(1)[:, :3] + torch.rand(len(x), 3)

    model, x = Noisy(), torch.rand(2, 3, 4, 4)
    call = Call(ModelInputs(args=(x,)), 0)

    def scores():
        torch.manual_seed(0)
        return engine.perturbed_scores(model, call, torch.zeros(2, 1, dtype=torch.long), 3,
                                       lambda a, b: x.expand(b - a, *x.shape).clone(), max_batch=4)

    version = x._version
    first = scores()
    assert len([k for k in model_cache(model) if k[0] == "forward memory"]) == 1 and x._version == version
    torch.testing.assert_close(scores(), first, rtol=0, atol=0)


def test_the_measure_tells_weight_copies_from_what_grows_with_the_batch():
    from interpkit.core import Call, ModelInputs
    from interpkit.explainers.perturbation import forward_memory

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4096), nn.ReLU(), nn.Linear(4096, 3)).eval()
    call = Call(ModelInputs(args=(torch.randn(1, 3, 4, 4),)), 1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # its first forward casts the weights: 0.4 MB
        fixed, per_sample, *_ = forward_memory(model, call)
    assert per_sample < 4096 * 4 * 4  # a few activations of one sample, not the weights' copies
    model[1], model[3] = nn.Linear(48, 16384), nn.Linear(16384, 3)  # four times wider: measured again
    Occlusion(model, window=2, stride=2)(call.x, target=1)
    ((fixed, per_sample, *_),) = [v for k, v in model_cache(model).items() if k[0] == "forward memory"]
    assert per_sample >= 16384 * 4


def test_a_tensor_tiled_to_the_batch_from_a_weight_counts_per_sample():
    from interpkit.core import Call, ModelInputs
    from interpkit.explainers.perturbation import forward_memory

    class Tiled(nn.Module):  # a learned state repeated for every sample: made from a weight, sized by the batch
        def __init__(self) -> None:
            super().__init__()
            self.state = nn.Parameter(torch.ones(1, 65536))

        def forward(self, x):
            return (self.state.repeat(len(x), 1) * 2)[:, :3] + x.flatten(1)[:, :3]

    fixed, per_sample, *_ = forward_memory(Tiled(), Call(ModelInputs(args=(torch.rand(4, 3, 2, 2),)), 0))
    assert per_sample >= 2 * 65536 * 4  # the repeat and its double


class _WritesItsInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 2).double()

    def forward(self, x):
        x.sub_(0.5).mul_(2.0)  # an in-place normalisation: f(x) = w (2x - 1) + b
        return self.lin(x.flatten(1))


def test_a_model_writing_its_input_is_explained_from_the_users_values_which_stay_unchanged():
    """The clean forward ran on the user's own tensor: it was overwritten, and every copy was made
    from the overwritten values (Occlusion 208% off)."""
    from interpkit import FeatureAblation, GradCAM

    torch.manual_seed(0)
    model, x = _WritesItsInput().eval(), torch.rand(2, 1, 4, 4, dtype=torch.float64)
    kept = x.clone()
    expected = model.lin.weight.detach()[0].view(4, 4) * 2 * kept[:, 0]  # dropping a pixel to 0
    for explainer in (Occlusion(model, window=1, baseline=0.0), FeatureAblation(model, features=torch.arange(16).view(4, 4))):
        torch.testing.assert_close(explainer(x, target=0).maps[:, 0], expected.float())
        assert torch.equal(x, kept)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).double().eval()
    conv.register_forward_pre_hook(lambda _m, args: args[0].mul_(2))
    GradCAM(conv, layer="0")(x, target=0)
    assert torch.equal(x, kept)


class _NeedsTwoRows(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc(self.conv(x).mean((2, 3)).squeeze())  # (3,) for one sample
        return torch.stack([h[:, 0], h[:, 1]], 1)


def test_a_model_that_needs_two_rows_is_measured_on_the_batch_not_refused():
    """The memory measure ran the first sample alone and refused the model for a shape the user
    never passed."""
    from interpkit import RISE, FeatureAblation

    torch.manual_seed(0)
    model, x = _NeedsTwoRows().eval(), torch.randn(4, 3, 8, 8)
    plain = Occlusion(model, window=4, max_batch=4)(x, target=1).maps  # one copy per forward: nothing measured
    torch.testing.assert_close(Occlusion(model, window=4)(x, target=1).maps, plain)
    assert FeatureAblation(model, features="grid", segments=4)(x, target=1).maps.shape == (4, 1, 8, 8)
    assert RISE(model, masks=8, cells=2)(x, target=1).maps.shape == (4, 1, 8, 8)


def test_bad_targets_and_options_of_perturbation_methods_are_named():
    from interpkit import RISE, FeatureAblation, KernelSHAP

    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(144, 3)).eval(), torch.randn(2, 3, 6, 6)

    def wide(output):  # two targets on the clean batch, three on the copies
        return output[:, :2] if len(output) == 2 else output

    for explainer in (Occlusion(model, window=3), KernelSHAP(model, samples=8), RISE(model, masks=4, cells=2)):
        with pytest.raises(TargetError, match="same targets"):
            explainer(x, target=wide)
    one_logit = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.Flatten(), nn.Linear(36, 1)).eval()
    with pytest.raises(TargetError, match="softmax is always 1"):  # every copy would score 1: a map of the masks
        RISE(one_logit, masks=4, cells=2)(x, target=0)
    assert RISE(one_logit, masks=4, cells=2, score="logit")(x, target=0).maps.shape == (2, 1, 6, 6)
    with pytest.raises(InputError, match="meta"):
        Occlusion(model, baseline=torch.zeros(3, 1, 1, device="meta"))
    mixing = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False),
                           nn.Flatten(), nn.Linear(144, 3)).eval()
    for make, says in ((lambda: Occlusion(mixing, window=(2, 2, 2))(x), "window"),  # not blamed on the model
                       (lambda: FeatureAblation(mixing, features=torch.zeros(3, 6, 6, dtype=torch.long))(x), "mask")):
        with pytest.raises(InputError, match=says) as raised:
            make()
        assert "mixes the samples" not in str(raised.value)


def test_a_shared_input_taken_for_one_row_per_sample_is_named_when_the_forward_fails():
    """A (1,) scale shared by every sample, with a batch of one, is tiled with the copies: the
    forward fails, and the error says why, where it only blamed the shapes."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = nn.Linear(2 * 6 * 6, 3)

        def forward(self, x, scale):
            return self.f((x * scale).flatten(1))

    model, scale = Scaled().eval(), torch.tensor([2.0])
    assert Occlusion(model, window=2)((torch.randn(2, 2, 6, 6), scale), target=0).maps.shape == (2, 1, 6, 6)
    with pytest.raises(ForwardError, match="keep an input shared by every sample in the model"):
        Occlusion(model, window=2)((torch.randn(1, 2, 6, 6), scale), target=0)
