import pytest
import torch
import torchvision
from torch import nn

import interpkit
from interpkit import InputError, Neuron
from interpkit.testing import check_explainer
from interpkit_smoothgrad import IntegratedGradients, NoiseTunnel, SmoothGrad

captum_attr = pytest.importorskip("captum.attr", reason="captum is in interpkit's [test] extra")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 48, 40, generator=torch.Generator().manual_seed(1))


def test_registered():
    assert {"smoothgrad", "integrated_gradients", "noise_tunnel"} <= set(interpkit.list_explainers())


@pytest.mark.parametrize("explainer, options", [(SmoothGrad, {"samples": 4}), (IntegratedGradients, {"steps": 4}),
                                                (NoiseTunnel, {"samples": 3, "max_batch": 4}),
                                                (NoiseTunnel, {"method": "gradcam", "samples": 3, "kind": "vargrad"})])
def test_conformance(explainer, options):
    check_explainer(explainer, options=options)


@pytest.mark.parametrize("steps", [2, 7, 20])
def test_integrated_gradients_equal_captum_trapezoid(model, images, steps):
    """captum's riemann_trapezoid weighs its n points 1/n (ends 1/2n), summing to (n-1)/n; the
    trapezoid rule weighs them 1/(n-1) (ends 1/2(n-1)), summing to 1. Same points, so the maps
    differ by exactly that factor."""
    baseline = torch.full_like(images, -0.3)
    ours = IntegratedGradients(model, steps=steps, baseline=-0.3)(images, target=[1, 4, 9]).maps[:, 0]
    theirs = captum_attr.IntegratedGradients(model).attribute(
        images, baselines=baseline, target=[1, 4, 9], n_steps=steps, method="riemann_trapezoid")
    rescaled = ours * (steps - 1) / steps
    assert ((rescaled - theirs).abs().max() / theirs.abs().max()) < 1e-4


def test_integrated_gradients_completeness(model, images):
    """Attributions add up to f(x) - f(baseline) as the path is refined."""
    maps = IntegratedGradients(model, steps=200, chunk=50)(images, target=2).maps
    with torch.no_grad():
        gap = model(images)[:, 2] - model(torch.zeros_like(images))[:, 2]
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3, 4)), gap, rtol=0.02, atol=0.02)


def test_smoothgrad_without_noise_is_the_plain_gradient(model, images):
    maps = SmoothGrad(model, samples=3, noise=0.0)(images, target=5).maps[:, 0]
    x = images.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(x)[:, 5].sum(), x)
    torch.testing.assert_close(maps, plain, rtol=1e-5, atol=1e-7)


def test_smoothgrad_is_seeded_and_chunking_changes_nothing(model, images):
    one = SmoothGrad(model, samples=6, seed=3)(images, target="all").maps
    chunked = SmoothGrad(model, samples=6, seed=3, chunk=4)(images, target="all").maps
    other = SmoothGrad(model, samples=6, seed=4)(images, target="all").maps
    assert one.shape == (3, 10, 3, 48, 40)
    torch.testing.assert_close(one, chunked, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(one, other)


def test_smoothgrad_matches_a_loop_of_single_noisy_images(model, images):
    """The batched computation equals the definition evaluated one noisy image at a time."""
    explainer = SmoothGrad(model, samples=4, noise=0.2, seed=7)
    maps = explainer(images, target=[1, 2, 3]).maps[:, 0]
    draws = torch.randn((4, 1, 3, 48, 40), generator=torch.Generator().manual_seed(7))
    for n in range(3):
        span = images[n].max() - images[n].min()
        total = torch.zeros_like(images[n])
        for s in range(4):
            x = (images[n] + draws[s, 0] * 0.2 * span).unsqueeze(0).requires_grad_(True)
            total += torch.autograd.grad(model(x)[0, n + 1], x)[0][0]
        torch.testing.assert_close(maps[n], total / 4, rtol=1e-4, atol=1e-6)


def test_squared_and_neuron_targets(model, images):
    squared = SmoothGrad(model, samples=3, squared=True)(images, target=1).maps
    assert bool((squared >= 0).all())
    neurons = SmoothGrad(model, samples=2)(images, target=[Neuron("layer3", 0), Neuron("layer3", 5)])
    assert neurons.maps.shape == (3, 2, 3, 48, 40)


def test_one_forward_per_chunk(model, images):
    calls = []
    handle = model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    SmoothGrad(model, samples=8, chunk=4)(images, target=1)
    IntegratedGradients(model, steps=6)(images, target="all")
    handle.remove()
    assert calls == [3, 12, 12, 3, 18]  # clean pass, then chunks of copies x batch


def test_bad_options(model):
    with pytest.raises(InputError):
        SmoothGrad(model, samples=0)
    with pytest.raises(InputError):
        IntegratedGradients(model, steps=1)
    with pytest.raises(InputError, match="broadcast"):
        IntegratedGradients(model, baseline=torch.zeros(5, 5))(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("kind, theirs", [("smoothgrad", "smoothgrad"), ("smoothgrad_sq", "smoothgrad_sq"),
                                          ("vargrad", "vargrad")])
def test_noise_tunnel_equals_captums_given_the_same_noise(model, images, kind, theirs, monkeypatch):
    """captum draws its noise with torch.normal, image-major (each image's copies together); the
    same draws are given to both, arranged as each expects."""
    samples = 4
    noise = torch.randn(samples, *images.shape, generator=torch.Generator().manual_seed(5)) * 0.1  # (S, N, ...)
    draws = iter(noise)
    ours = NoiseTunnel(model, "guided_backprop", samples=samples, kind=kind, max_batch=6,
                       perturb=lambda x, g: x + next(draws))(images, target=2).maps[:, 0]
    image_major = noise.transpose(0, 1).reshape(-1, *images.shape[1:])
    monkeypatch.setattr(torch, "normal", lambda mean, std: image_major.clone())
    tunnel = captum_attr.NoiseTunnel(captum_attr.GuidedBackprop(model))
    captum_maps = tunnel.attribute(images, nt_type=theirs, nt_samples=samples, stdevs=0.1, target=2)
    torch.testing.assert_close(ours, captum_maps.detach(), rtol=1e-4, atol=1e-6)


def test_noise_tunnel_batches_seeds_and_options(model, images):
    whole = NoiseTunnel(model, "gradcam", samples=5)(images, target=[1, 2, 3]).maps
    torch.testing.assert_close(NoiseTunnel(model, "gradcam", samples=5, max_batch=4)(images, target=[1, 2, 3]).maps,
                               whole, rtol=1e-5, atol=1e-6)
    alone = NoiseTunnel(model, "gradcam", samples=5)(images[1:2], target=[2]).maps
    torch.testing.assert_close(alone, whole[1:2], rtol=1e-5, atol=1e-6)  # the same noise whatever the batch
    assert not torch.equal(NoiseTunnel(model, "gradcam", samples=5, seed=1)(images, target=[1, 2, 3]).maps, whole)
    plain = interpkit.GradCAM(model)(images, target=[1, 2, 3]).maps
    torch.testing.assert_close(NoiseTunnel(model, "gradcam", samples=2, stdev=0.0)(images, target=[1, 2, 3]).maps,
                               plain)
    for bad in ({"samples": 0}, {"kind": "mean"}, {"stdev": -1}, {"max_batch": 0}, {"method": NoiseTunnel},
                {"method": "nope"}):
        with pytest.raises(interpkit.InterpkitError):
            NoiseTunnel(model, **bad)


@pytest.mark.parametrize("options, words", [
    ({"method": 1.5}, "method must be"), ({"method": None}, "method must be"), ({"method": int}, "method must be"),
    ({"method": "gradcam", "bogus": 1}, "GradCAM got an unexpected keyword argument 'bogus'"),
    ({"perturb": "no"}, "perturb must be a function"),
])
def test_noise_tunnel_refuses_what_it_cannot_wrap(options, words):
    from interpkit.testing import ConvStack

    with pytest.raises(interpkit.InputError, match=words):
        interpkit.get_explainer("noise_tunnel")(ConvStack().eval(), **options)


def test_noise_tunnel_refuses_a_perturbation_that_returns_no_copy():
    from interpkit.testing import ConvStack

    tunnel = interpkit.get_explainer("noise_tunnel")(ConvStack().eval(), perturb=lambda x, g: "noisy")
    with pytest.raises(interpkit.InputError, match="perturb must return one noisy copy"):
        tunnel(torch.randn(2, 3, 20, 16))


def _batch_norm_net(mixes: bool) -> nn.Module:
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(4, track_running_stats=False) if mixes else nn.BatchNorm2d(4)
    return nn.Sequential(nn.Conv2d(3, 4, 3), norm, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


@pytest.mark.parametrize("mixes", [False, True])
def test_baselines_per_sample_and_callable_follow_each_sample_through_noisy_copies(mixes):
    """Noisy copies of the batch (or of one sample, for a model that mixes samples) take each
    sample's own baseline row; a callable's rows are the copies' own. With as many copies as
    samples, a callable's rows were taken for per-sample rows (silently wrong), and one row per
    sample was refused for a batch of copies."""
    model, x = _batch_norm_net(mixes), torch.randn(3, 3, 8, 8)
    rows = torch.randn(3, 3, 8, 8)
    for method, options in (("occlusion", {"window": 4}), ("deeplift", {"strict": False})):
        for baseline, own in ((rows, list(rows)), (lambda inputs: 0.5 * inputs, [lambda inputs: 0.5 * inputs] * 3)):
            def make(given):
                return NoiseTunnel(model, method=method, samples=3, stdev=0.5, baseline=given, **options)

            together = make(baseline)(x, target=[0, 1, 2]).maps
            alone = torch.cat([make(own[i])(x[i:i + 1], target=i).maps for i in range(3)])
            torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    together = IntegratedGradients(model, steps=4, baseline=rows)(x, target=[0, 1, 2]).maps
    alone = torch.cat([IntegratedGradients(model, steps=4, baseline=rows[i])(x[i:i + 1], target=i).maps for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_a_feature_mask_per_image_follows_each_image_through_noisy_copies():
    """A mask with one row per image was refused for a batch of noisy copies (it did not
    broadcast to 3 x 4 rows); each copy now takes its image's mask."""
    model, x = _batch_norm_net(False), torch.randn(3, 3, 8, 8)
    masks = torch.stack([torch.arange(64).view(8, 8) // 16, torch.arange(64).view(8, 8) % 4,
                         (torch.arange(64).view(8, 8) // 8) % 3])
    def make(mask):
        return NoiseTunnel(model, method="feature_ablation", samples=4, stdev=0.5, features=mask)

    together = make(masks)(x, target=[0, 1, 2]).maps
    alone = torch.cat([make(masks[i])(x[i:i + 1], target=i).maps for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_noise_tunnel_chunks_change_no_noise():
    """An image of 3 x 7 x 7 values (not a multiple of torch's 16-value normal blocks): drawing
    each chunk's noise on its own would give other values for every max_batch and batch size."""
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(100, 5)).eval()
    x = torch.randn(4, 3, 7, 7)
    whole = NoiseTunnel(small, "saliency", samples=6)(x, target=1).maps
    for max_batch in (4, 8):
        tunnel = NoiseTunnel(small, "saliency", samples=6, max_batch=max_batch)
        torch.testing.assert_close(tunnel(x, target=1).maps, whole, rtol=1e-5, atol=1e-7)
        for n in range(4):
            torch.testing.assert_close(tunnel(x[n:n + 1], target=1).maps[0], whole[n], rtol=1e-5, atol=1e-7)


def test_noise_tunnel_refuses_non_finite_copies_and_gives_perturb_a_copy(model, images):
    before = images.clone()

    def in_place(x, generator):
        return x.add_(torch.randn(x.shape, generator=generator))

    NoiseTunnel(model, "saliency", samples=2, perturb=in_place)(images, target=1)
    assert torch.equal(images, before)
    for options in ({"stdev": 1e39}, {"perturb": lambda x, g: x * float("nan")}):
        with pytest.raises(InputError, match="not finite"):
            NoiseTunnel(model, "saliency", samples=2, **options)(images, target=1)
    for cls in (NoiseTunnel, SmoothGrad):
        with pytest.raises(InputError, match="2\\*\\*63"):
            cls(model, seed=2**64)
