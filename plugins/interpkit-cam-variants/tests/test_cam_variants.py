import pytest
import torch
import torchvision

import interpkit
from interpkit import GradCAM
from interpkit.explainers import upsample
from interpkit.testing import check_explainer
from interpkit_cam_variants import (
    ISCAM,
    KPCACAM,
    SSCAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    FullGrad,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RefineCAM,
    ScoreCAM,
    SegEigenCAM,
    ShapleyCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
    rest_target,
)

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam", reason="grad-cam is in interpkit's [test] extra")


def test_registered_and_importable_from_interpkit():
    assert {"gradcam_plus_plus", "layercam", "xgradcam", "hirescam", "eigencam", "eigengradcam"} <= set(
        interpkit.list_explainers())
    from interpkit import GradCAMPlusPlus as Imported

    assert Imported is GradCAMPlusPlus


FAMILY = [GradCAMPlusPlus, LayerCAM, XGradCAM, HiResCAM, EigenCAM, EigenGradCAM, ScoreCAM, AblationCAM, GradCAMElementWise,
          SegEigenCAM, KPCACAM, SSCAM, ISCAM, SmoothGradCAMPlusPlus]


@pytest.mark.parametrize("explainer", FAMILY)
def test_conformance(explainer):
    check_explainer(explainer)


@pytest.mark.parametrize("ours, theirs", [(GradCAMPlusPlus, "GradCAMPlusPlus"), (LayerCAM, "LayerCAM")])
def test_same_maps_as_pytorch_grad_cam(ours, theirs):
    """Their formula on our activations and gradients equals our maps at the layer's resolution.

    pytorch-grad-cam adds 1e-6 to GradCAM++'s denominator, which outweighs G^2 for gradients
    of order 1e-3; the last layer is scaled up so that their epsilon is negligible."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    with torch.no_grad():
        model.fc.weight *= 1000
    images = torch.randn(2, 3, 96, 96)
    explainer = ours(model, layer="layer4", upsample=False)
    mine = explainer(images, target=[3, 7]).maps[:, 0]
    kept = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: kept.append(o))
    out = model(images)
    handle.remove()
    (gradients,) = torch.autograd.grad(out[0, 3] + out[1, 7], kept[0])
    layer = model.layer4
    peer = getattr(pytorch_grad_cam, theirs)(model=model, target_layers=[layer])
    cam = peer.get_cam_image(images, layer, [ClassifierOutputTarget(3), ClassifierOutputTarget(7)],
                             kept[0].detach().numpy(), gradients.numpy(), eigen_smooth=False)
    theirs_maps = torch.from_numpy(cam).float().clamp_min(0)
    assert ((mine - theirs_maps).abs().max() / theirs_maps.abs().max()) < 1e-4


@pytest.mark.slow
def test_k_targets_in_one_call_equal_one_at_a_time():
    """layer1 (64 channels) keeps the perturbation CAMs' one forward per channel affordable."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 32, 32)
    for cls in FAMILY:
        together = cls(model, layer="layer1")(images, target=torch.tensor([[1, 2], [3, 4]])).maps
        alone = cls(model, layer="layer1")(images, target=[2, 4]).maps[:, 0]
        torch.testing.assert_close(together[:, 1], alone)


def _layer4_case():
    """resnet18's layer4 activations and gradients for two images and targets, by hand."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 96, 96)
    kept = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: kept.append(o))
    out = model(images)
    handle.remove()
    (gradients,) = torch.autograd.grad(out[0, 3] + out[1, 7], kept[0])
    return model, images, kept[0].detach(), gradients


def _theirs(name, model, images, activations, gradients, eigen_smooth=False):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    peer = getattr(pytorch_grad_cam, name)(model=model, target_layers=[model.layer4])
    cam = peer.get_cam_image(images, model.layer4, [ClassifierOutputTarget(3), ClassifierOutputTarget(7)],
                             activations.numpy(), gradients.numpy(), eigen_smooth=eigen_smooth)
    return torch.from_numpy(cam).float()


@pytest.mark.parametrize("ours, theirs", [(XGradCAM, "XGradCAM"), (HiResCAM, "HiResCAM")])
def test_more_of_the_family_equal_pytorch_grad_cam(ours, theirs):
    model, images, activations, gradients = _layer4_case()
    mine = ours(model, layer="layer4", upsample=False, relu=False)(images, target=[3, 7]).maps[:, 0]
    peer = _theirs(theirs, model, images, activations, gradients)
    assert ((mine - peer).abs().max() / peer.abs().max()) < 1e-4


@pytest.mark.parametrize("ours, theirs, options", [(GradCAMElementWise, "GradCAMElementWise", {}),
                                                    (SegEigenCAM, "SegEigenCAM", {}),
                                                    (KPCACAM, "KPCA_CAM", {}),
                                                    (KPCACAM, "KPCA_CAM", {"kernel": "rbf", "gamma": 0.01}),
                                                    (KPCACAM, "KPCA_CAM", {"kernel": "poly"}),
                                                    (KPCACAM, "KPCA_CAM", {"kernel": "cosine"}),
                                                    (KPCACAM, "KPCA_CAM", {"kernel": "linear"})])
def test_newer_variants_equal_pytorch_grad_cam(ours, theirs, options):
    """Seg-Eigen-CAM's sign is the paper's (no ambiguity left) and KPCA-CAM's is scikit-learn's,
    so these equal pytorch-grad-cam's maps outright, not up to a sign. KPCA-CAM is compared on
    float64 activations: interpkit computes the kernel in float64 (see the next test)."""
    model, images, activations, gradients = _layer4_case()
    if ours is KPCACAM:
        activations = activations.double()
    mine = ours(model, layer="layer4", upsample=False, relu=False, **options)(images, target=[3, 7]).maps[:, 0]
    peer = getattr(pytorch_grad_cam, theirs)(model=model, target_layers=[model.layer4], **options)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    theirs_maps = torch.from_numpy(peer.get_cam_image(images, model.layer4, [ClassifierOutputTarget(3),
                                                                             ClassifierOutputTarget(7)],
                                                      activations.numpy(), gradients.numpy(), eigen_smooth=False))
    assert theirs_maps.abs().max() > 0
    assert ((mine - theirs_maps).abs().max() / theirs_maps.abs().max()) < 1e-4


def test_pytorch_grad_cams_float32_rbf_kernel_loses_digits():
    """scikit-learn computes the RBF kernel's distances in the activations' float32 through
    |x|^2 - 2 x.y + |y|^2, which cancels: pytorch-grad-cam's map is off by 7e-4 of its peak here,
    and equals interpkit's (float64) once given float64 activations."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    model, images, activations, _ = _layer4_case()
    mine = KPCACAM(model, layer="layer4", upsample=False, relu=False, kernel="rbf", gamma=0.01)(images, target=0).maps[:, 0]
    single = torch.from_numpy(get_2d_projection_kernel(activations.numpy(), "rbf", 0.01))
    double = torch.from_numpy(get_2d_projection_kernel(activations.double().numpy(), "rbf", 0.01))
    assert ((mine - double).abs().max() / double.abs().max()) < 1e-6
    assert ((mine - single).abs().max() / single.abs().max()) > 1e-4


def test_kpca_cam_equals_pytorch_grad_cam_on_a_large_grid():
    """Over 200 positions scikit-learn switches to ARPACK; the component is the same."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(1, 3, 128, 128)
    kept = []
    handle = model.layer2.register_forward_hook(lambda m, i, o: kept.append(o.detach()))
    model(images)
    handle.remove()
    mine = KPCACAM(model, layer="layer2", upsample=False, relu=False)(images, target=0).maps[:, 0]
    peer = pytorch_grad_cam.KPCA_CAM(model=model, target_layers=[model.layer2])
    theirs = torch.from_numpy(peer.get_cam_image(images, model.layer2, None, kept[0].numpy(), None, False))
    assert mine.shape == (1, 16, 16)
    assert ((mine - theirs).abs().max() / theirs.abs().max()) < 1e-4


def test_newer_variants_refuse_bad_options():
    model = torchvision.models.resnet18().eval()
    for options in ({"kernel": "laplacian"}, {"gamma": -1.0}, {"gamma": float("nan")}):
        with pytest.raises(interpkit.InputError):
            KPCACAM(model, **options)
    with pytest.raises(interpkit.InputError, match="drop eigen_smooth=False"):
        SegEigenCAM(model, eigen_smooth=False)


@pytest.mark.parametrize("ours, theirs, smooth", [(EigenCAM, "EigenCAM", False), (EigenGradCAM, "EigenGradCAM", False),
                                                  (GradCAM, "GradCAM", True), (LayerCAM, "LayerCAM", True)])
def test_principal_components_equal_pytorch_grad_cams_up_to_their_sign(ours, theirs, smooth):
    """Their SVD leaves the component's sign to LAPACK; ours is oriented to agree with the plain
    channel sum. So each of their maps equals ours or its negative, and ours is the one that
    correlates positively with the unsmoothed map."""
    model, images, activations, gradients = _layer4_case()
    options = {"eigen_smooth": True} if smooth else {}
    mine = ours(model, layer="layer4", upsample=False, relu=False, **options)(images, target=[3, 7]).maps[:, 0]
    peer = _theirs(theirs, model, images, activations, gradients, eigen_smooth=smooth)
    for n in range(2):
        sign = 1.0 if (mine[n] * peer[n]).sum() >= 0 else -1.0
        assert ((mine[n] - sign * peer[n]).abs().max() / peer[n].abs().max()) < 1e-4
    if ours is EigenCAM:
        unsmoothed = activations.sum(1)  # the plain channel sum of its terms A_c
    elif ours is EigenGradCAM:
        unsmoothed = (gradients * activations).sum(1)
    else:
        unsmoothed = ours(model, layer="layer4", upsample=False, relu=False)(images, target=[3, 7]).maps[:, 0]
    for n in range(2):
        assert ((mine[n] - mine[n].mean()) * (unsmoothed[n] - unsmoothed[n].mean())).sum() > 0  # the orientation


def test_eigen_methods_refuse_to_switch_the_component_off():
    model = torchvision.models.resnet18().eval()
    with pytest.raises(interpkit.InputError, match="drop eigen_smooth=False"):
        EigenCAM(model, eigen_smooth=False)


@pytest.mark.slow
def test_scorecam_equals_pytorch_grad_cam_with_the_authors_upsampling(monkeypatch):
    """pytorch-grad-cam upsamples the masks with UpsamplingBilinear2d (align_corners=True); the
    Score-CAM authors and interpkit use align_corners=False. With that one difference removed the
    maps agree; with it, they do not."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 64, 64)
    targets = [ClassifierOutputTarget(3), ClassifierOutputTarget(7)]
    mine = ScoreCAM(model, layer="layer4", upsample=False, max_batch=100)(images, target=[3, 7]).maps[:, 0]

    def theirs():
        peer = pytorch_grad_cam.ScoreCAM(model=model, target_layers=[model.layer4])
        peer.batch_size = 64
        cams = []
        peer.activations_and_grads.__call__(images)
        activations = peer.activations_and_grads.activations[0].numpy()
        weights = peer.get_cam_weights(images, model.layer4, targets, activations, None)
        cams = torch.einsum("nc,nchw->nhw", torch.from_numpy(weights).float(), torch.from_numpy(activations))
        peer.activations_and_grads.release()
        return cams.clamp_min(0)

    default = theirs()
    assert (mine - default).abs().max() / default.abs().max() > 1e-3  # the upsampling differs
    authors = lambda size: torch.nn.Upsample(size=size, mode="bilinear", align_corners=False)  # noqa: E731
    monkeypatch.setattr(torch.nn, "UpsamplingBilinear2d", authors)
    aligned = theirs()
    assert (mine - aligned).abs().max() / aligned.abs().max() < 1e-4


@pytest.mark.slow
def test_scorecam_batches_do_not_change_the_maps_and_targets_must_be_classes():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(3, 3, 48, 48)
    small = ScoreCAM(model, layer="layer3", max_batch=7)(images, target=[1, 2, 3]).maps
    large = ScoreCAM(model, layer="layer3", max_batch=1000)(images, target=[1, 2, 3]).maps
    torch.testing.assert_close(small, large, rtol=1e-4, atol=1e-6)
    with pytest.raises(interpkit.TargetError, match="not neurons"):
        ScoreCAM(model, layer="layer3")(images, target=interpkit.Neuron("layer2", 0))
    by_callable = ScoreCAM(model, layer="layer3")(images, target=lambda out: out[:, [1, 2]]).maps
    by_class = ScoreCAM(model, layer="layer3")(images, target=1).maps
    torch.testing.assert_close(by_callable[:, 0], by_class[:, 0], rtol=1e-4, atol=1e-6)
    with pytest.raises(interpkit.InputError, match="max_batch"):
        ScoreCAM(model, max_batch=0)


def _their_ablation_maps(model, layer, images, classes):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kept = []
    handle = layer.register_forward_hook(lambda m, i, o: kept.append(o.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    peer = pytorch_grad_cam.AblationCAM(model=model, target_layers=[layer], batch_size=16)
    try:
        weights = peer.get_cam_weights(images, layer, [ClassifierOutputTarget(c) for c in classes],
                                       kept[0].numpy(), None)
    finally:
        peer.activations_and_grads.release()
    return torch.einsum("nc,nc...->n...", torch.from_numpy(weights).float(), kept[0])


@pytest.mark.slow
def test_ablationcam_equals_pytorch_grad_cam_on_a_relu_layer():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 64, 64)
    mine = AblationCAM(model, layer="layer4", upsample=False, relu=False, max_batch=50)(images, target=[3, 7]).maps
    theirs = _their_ablation_maps(model, model.layer4, images, [3, 7])
    assert ((mine[:, 0] - theirs).abs().max() / theirs.abs().max()) < 1e-4


@pytest.mark.slow
def test_ablationcam_zeroes_the_channel_where_pytorch_grad_cam_subtracts_1e7():
    """On a layer with negative values (a convolution before its ReLU) pytorch-grad-cam ablates
    with min - 1e7, not with 0 as the paper does; interpkit follows the paper, checked by hand."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 64, 64)
    layer = model.layer4[1].conv2  # before the block's ReLU: negative values
    mine = AblationCAM(model, layer="layer4.1.conv2", upsample=False, relu=False)(images, target=[3, 7]).maps[:, 0]
    theirs = _their_ablation_maps(model, layer, images, [3, 7])
    assert (mine - theirs).abs().max() / theirs.abs().max() > 1e-2
    kept = []
    handle = layer.register_forward_hook(lambda m, i, o: kept.append(o.detach()))
    with torch.no_grad():
        base = model(images)[[0, 1], [3, 7]]
    handle.remove()
    drops = []
    for channel in range(kept[0].shape[1]):
        def zero(m, i, o, channel=channel):
            o = o.clone()
            o[:, channel] = 0
            return o
        handle = layer.register_forward_hook(zero)
        with torch.no_grad():
            drops.append((base - model(images)[[0, 1], [3, 7]]) / base)
        handle.remove()
    expected = torch.einsum("cn,nc...->n...", torch.stack(drops), kept[0])
    torch.testing.assert_close(mine, expected, rtol=1e-3, atol=1e-4)


class _ChannelsLastMix(torch.nn.Module):
    """A convolution, then a Linear over its channels in (N, H, W, C) order."""

    def __init__(self):
        super().__init__()
        self.conv, self.mix, self.head = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.mix(self.conv(x).permute(0, 2, 3, 1))).mean(dim=(1, 2)))


@pytest.mark.parametrize("size", [4, 5])  # at 4 x 4 the output (N, 4, 4, 4) also reads as channels first
def test_ablationcam_zeroes_the_channels_of_a_channels_last_layer(size):
    torch.manual_seed(0)
    model = _ChannelsLastMix().eval()
    x, targets = torch.randn(2, 3, size, size), torch.tensor([0, 2])
    mine = AblationCAM(model, ("mix", interpkit.ChannelsLast()), upsample=False)(x, target=targets).maps[:, 0]
    with torch.no_grad():
        z = model.mix(model.conv(x).permute(0, 2, 3, 1))  # (N, H, W, C)

        def score(values):
            return model.head(torch.relu(values).mean(dim=(1, 2))).gather(1, targets[:, None])[:, 0]

        drops = []
        for channel in range(4):
            ablated = z.clone()
            ablated[..., channel] = 0
            drops.append((score(z) - score(ablated)) / score(z))
        expected = torch.einsum("cn,nhwc->nhw", torch.stack(drops), z).clamp_min(0)
    torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-6)
    from interpkit.testing.models import TinyTokens

    tokens = TinyTokens().eval()
    with pytest.raises(interpkit.LayerError, match="not a TokenGrid"):  # do the class token's features go too?
        AblationCAM(tokens, ("blocks.0", interpkit.TokenGrid(prefix=1)))(torch.randn(1, 3, 8, 8))


def test_kpca_cosine_gives_a_zero_vector_no_similarity():
    """A position whose centred activations are 0 (a 1 x 1 grid, or one equal to the mean) is
    similar to nothing, as in scikit-learn: the map stays finite and equals pytorch-grad-cam's."""
    from interpkit import ChannelsFirst

    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.feat, self.head = torch.nn.Identity(), torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.feat(x).mean(-1))

    x = torch.tensor([[[1.0, 2, 3, 5, 9], [0, 1, 2, 4, 3], [1, 3, 1, 0, 5]]])
    x[0, :, 1] = x[0][:, [0, 2, 3, 4]].mean(1)  # this position is the mean: centred, it is 0
    model = Identity().eval()
    mine = KPCACAM(model, layer=("feat", ChannelsFirst()), upsample=False, relu=False, kernel="cosine")(x, target=0).maps
    peer = pytorch_grad_cam.KPCA_CAM(model=model, target_layers=[model.feat], kernel="cosine")
    theirs = torch.from_numpy(peer.get_cam_image(x, model.feat, None, x.double().numpy(), None, False))
    assert torch.isfinite(mine).all()
    torch.testing.assert_close(mine[:, 0].double(), theirs.double(), rtol=1e-4, atol=1e-5)
    one = KPCACAM(torchvision.models.resnet18(num_classes=5).eval(), layer="layer4", upsample=False, relu=False,
                  kernel="cosine")(torch.randn(2, 3, 32, 32), target=1).maps
    assert torch.equal(one, torch.zeros_like(one))
    with pytest.raises(interpkit.InputError, match="eigen_smooth"):
        KPCACAM(model, eigen_smooth=True)


def _torchcam(method, model, image, target, **options):
    """torchcam's CAM (N, h, w) at layer4's resolution, before its normalisation."""
    from torchcam import methods

    with getattr(methods, method)(model, target_layer="layer4", input_shape=tuple(image.shape[1:]), **options) as cam:
        with torch.no_grad():
            out = model(image)
        return cam(class_idx=target, scores=out, normalized=False)[0]


def test_iscam_equals_torchcam_given_its_accumulated_scales():
    """torchcam's ISCAM scales the masks by 0.25, 0.75, 1.5, 2.5 for four samples (it adds to its
    coefficient instead of setting it): ours equals it given those scales, and with the paper's
    0.25, 0.5, 0.75, 1 it does not."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    image = torch.randn(1, 3, 64, 64)
    theirs = _torchcam("ISCAM", model, image, 3, num_samples=4, batch_size=16)
    cumulative = ISCAM(model, layer="layer4", upsample=False, scales=[0.25, 0.75, 1.5, 2.5])(image, target=3).maps[:, 0]
    assert theirs.abs().max() > 0
    assert ((cumulative - theirs).abs().max() / theirs.abs().max()) < 1e-4
    paper = ISCAM(model, layer="layer4", upsample=False, samples=4)(image, target=3).maps[:, 0]
    assert ((paper - theirs).abs().max() / theirs.abs().max()) > 1e-3


def test_sscam_equals_torchcam_given_the_same_noise(monkeypatch):
    """Given our noise draws (the s-th (C, h, w) draw of the seeded generator, times std),
    torchcam's SSCAM gives our map."""
    from torchcam.methods import SSCAM as TorchcamSSCAM

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    image = torch.randn(1, 3, 64, 64)
    generator = torch.Generator().manual_seed(7)
    draws = iter([0.5 * torch.randn(512, 64, 64, generator=generator) for _ in range(3)])
    monkeypatch.setattr(TorchcamSSCAM, "__init__", _wrap_sscam_init(TorchcamSSCAM.__init__, draws))
    theirs = _torchcam("SSCAM", model, image, 2, num_samples=3, std=0.5, batch_size=16)
    mine = SSCAM(model, layer="layer4", upsample=False, samples=3, std=0.5, seed=7)(image, target=2).maps[:, 0]
    assert theirs.abs().max() > 0
    assert ((mine - theirs).abs().max() / theirs.abs().max()) < 1e-4


def _wrap_sscam_init(init, draws):
    class GivenNoise:
        def sample(self, shape):
            return next(draws).expand(shape)

    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._distrib = GivenNoise()

    return wrapped


def test_sscam_and_iscam_options_and_batches():
    model = torchvision.models.resnet18(num_classes=5).eval()
    images = torch.randn(2, 3, 32, 32)
    for cls in (SSCAM, ISCAM):
        explainer = cls(model, layer="layer4", samples=2)
        together = explainer(images, target=[1, 4]).maps
        alone = torch.cat([explainer(images[i:i + 1], target=[[1, 4][i]]).maps for i in range(2)])
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-6)  # shared noise: no batch dependence
    for make in (lambda: SSCAM(model, samples=0), lambda: SSCAM(model, std=-1.0), lambda: SSCAM(model, seed=-1),
                 lambda: ISCAM(model, scales=[]), lambda: ISCAM(model, scales="1"), lambda: ISCAM(model, scales=[-0.5])):
        with pytest.raises(interpkit.InputError):
            make()


def test_torchcam_gradcampp_never_divides_alpha():
    """torchcam 0.5's GradCAM++ divides its alpha in place on a copy (``alpha[idx][mask].div_``:
    boolean indexing copies), so its weights are sum(relu(G) G^2) where the paper's are
    sum(relu(G) G^2 / (2 G^2 + sum(A G^3))). Its map equals the undivided formula on the same
    activations and gradients; ours is the paper's (and pytorch-grad-cam's, above), another map."""
    from torchcam.methods import GradCAMpp as TorchcamGradCAMpp

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    image = torch.randn(1, 3, 64, 64)
    with TorchcamGradCAMpp(model, target_layer="layer4", input_shape=(3, 64, 64)) as extractor:
        theirs = extractor(class_idx=2, scores=model(image), normalized=False)[0]
    kept = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: kept.append(o))
    score = model(image)[0, 2]
    handle.remove()
    activation = kept[0].detach()
    gradient = torch.autograd.grad(score, kept[0])[0]
    undivided = (torch.relu(gradient) * gradient.pow(2)).sum((2, 3), keepdim=True)
    torch.testing.assert_close(theirs, torch.relu((undivided * activation).sum(1)), rtol=1e-4, atol=1e-6)
    alpha = gradient.pow(2) / (2 * gradient.pow(2) + (activation * gradient.pow(3)).sum((2, 3), keepdim=True))
    paper = torch.relu(((alpha * torch.relu(gradient)).sum((2, 3), keepdim=True) * activation).sum(1))
    mine = GradCAMPlusPlus(model, layer="layer4", upsample=False)(image, target=2).maps[:, 0]
    torch.testing.assert_close(mine, paper, rtol=1e-4, atol=1e-6)

    def scaled(m):
        return m / m.max()

    assert (scaled(mine) - scaled(theirs)).abs().max() > 1e-2  # not the same map up to scale


def _noisy_layer4(model, image, noise, target):
    """layer4's activation and the target's gradient for each noisy copy: (S, C, h, w) each."""
    activations, gradients = [], []
    for copy in noise:
        kept = []
        handle = model.layer4.register_forward_hook(lambda m, i, o: kept.append(o))
        score = model(image + copy)[0, target]
        handle.remove()
        activations.append(kept[0][0].detach())
        gradients.append(torch.autograd.grad(score, kept[0])[0][0])
    return torch.stack(activations), torch.stack(gradients)


def test_smoothgradcampp_is_the_papers_and_torchcam_differs_in_three_ways():
    """Given the same noise, interpkit's SmoothGrad-CAM++ equals the paper's formula (mean powers
    of the noisy gradients, alpha's denominator sum(A) * D3, ReLU of the mean gradient, the clean
    activation). torchcam 0.5's equals another formula: sum(A * D3) in alpha's denominator, the
    last copy's gradient in the ReLU, and the last copy's activation in the map."""
    from torchcam.methods import SmoothGradCAMpp

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    image = torch.randn(1, 3, 64, 64)
    generator = torch.Generator().manual_seed(3)
    noise = torch.stack([0.3 * torch.randn(3, 64, 64, generator=generator) for _ in range(3)])
    mine = SmoothGradCAMPlusPlus(model, layer="layer4", upsample=False, samples=3, std=0.3, seed=3)(
        image, target=2).maps[0, 0]
    kept = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: kept.append(o.detach()))
    with torch.no_grad():
        model(image)
    handle.remove()
    clean = kept[0][0]
    activations, gradients = _noisy_layer4(model, image, noise, 2)
    d1, d2, d3 = (gradients.pow(k).mean(0) for k in (1, 2, 3))
    alpha = d2 / (2 * d2 + clean.sum((1, 2), keepdim=True) * d3)
    paper = torch.relu(((alpha * torch.relu(d1)).sum((1, 2), keepdim=True) * clean).sum(0))
    torch.testing.assert_close(mine, paper, rtol=1e-4, atol=1e-6)

    class Given:
        draws = iter(noise)

        def sample(self, size):
            return next(self.draws).expand(size)

    with SmoothGradCAMpp(model, target_layer="layer4", num_samples=3, std=0.3, input_shape=(3, 64, 64)) as extractor:
        extractor._distrib = Given()
        theirs = extractor(class_idx=2, scores=model(image), normalized=False)[0][0]
    their_alpha = d2 / (2 * d2 + (d3 * clean).sum((1, 2), keepdim=True) + 1e-8)
    their_weights = (their_alpha * torch.relu(gradients[-1])).sum((1, 2), keepdim=True)
    torch.testing.assert_close(theirs, torch.relu((their_weights * activations[-1]).sum(0)), rtol=1e-4, atol=1e-6)
    assert (mine / mine.max() - theirs / theirs.max()).abs().max() > 1e-2


def test_smoothgradcampp_takes_eigen_smooth_as_every_cam_does():
    """Its maps were a sum written out in ``layer_map``, so ``eigen_smooth=True`` could not reach
    its channel terms (and was refused with a TypeError); they now go through ``combine``."""
    from interpkit.explainers.gradcam import principal_projection

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    images = torch.randn(2, 3, 64, 64)
    plain = SmoothGradCAMPlusPlus(model, layer="layer3", upsample=False, relu=False, samples=2)
    seen = []
    plain.combine = lambda weights, activation: seen.append((weights, activation)) or GradCAM.combine(
        plain, weights, activation)
    plain(images, target=[1, 3])
    weights, activation = seen[0]
    terms = weights.view(*weights.shape, 1, 1) * activation.unsqueeze(1)
    smooth = SmoothGradCAMPlusPlus(model, layer="layer3", upsample=False, relu=False, samples=2, eigen_smooth=True)
    torch.testing.assert_close(smooth(images, target=[1, 3]).maps, principal_projection(terms))


def test_smoothgradcampp_batches_and_options():
    model = torchvision.models.resnet18(num_classes=5).eval()
    images = torch.randn(2, 3, 64, 64)
    explainer = SmoothGradCAMPlusPlus(model, layer="layer4", samples=3)
    together = explainer(images, target=[1, 3]).maps
    alone = torch.cat([explainer(images[i:i + 1], target=[[1, 3][i]]).maps for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-6)  # shared noise: no batch dependence
    chunked = SmoothGradCAMPlusPlus(model, layer="layer4", samples=3, max_batch=2)(images, target="all").maps
    torch.testing.assert_close(chunked, explainer(images, target="all").maps, rtol=1e-4, atol=1e-6)
    for make in (lambda: SmoothGradCAMPlusPlus(model, samples=0), lambda: SmoothGradCAMPlusPlus(model, std=-1.0),
                 lambda: SmoothGradCAMPlusPlus(model, seed=-1), lambda: SmoothGradCAMPlusPlus(model, max_batch=0)):
        with pytest.raises(interpkit.InputError):
            make()


def _their_layer_cam(peer, images, targets, holder=None):
    """pytorch-grad-cam's raw CAM at the layer's resolution (before its scaling and resizing)."""
    base = holder or peer
    kept = {}
    original = base.get_cam_image

    def grab(*args, **kwargs):
        kept["cam"] = original(*args, **kwargs)
        return kept["cam"]

    base.get_cam_image = grab
    peer(images, targets=targets) if targets is not None else peer(images)
    return torch.from_numpy(kept["cam"]).float().clamp_min(0)


def test_shapleycam_equals_pytorch_grad_cam_on_the_rest_target_and_is_gradcam_on_a_logit():
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 64, 64)
    mine = ShapleyCAM(model, layer="layer3", upsample=False)(images, target=rest_target([3])).maps[:, 0]
    peer = pytorch_grad_cam.ShapleyCAM(model=model, target_layers=[model.layer3])
    theirs = _their_layer_cam(peer, images, [ClassifierOutputReST(3)] * 2)
    assert ((mine - theirs).abs().max() / theirs.abs().max()) < 1e-4
    plain = GradCAM(model, layer="layer3", upsample=False)(images, target=rest_target([3])).maps[:, 0]
    assert (mine - plain).abs().max() > 0.1 * plain.abs().max()  # the Hessian term is live on ReST
    on_logit = ShapleyCAM(model, layer="layer3", upsample=False)(images, target=[3, 5]).maps
    assert torch.allclose(on_logit, GradCAM(model, layer="layer3", upsample=False)(images, target=[3, 5]).maps,
                          rtol=1e-5, atol=1e-7)  # ReLUs and linear layers after the layer: H A = 0


class _Quadratic(torch.nn.Module):
    """A 1-D model whose score is ``sum_c w_c sum_p A_cp^2`` over a convolution's output A: the
    gradient is 2 w A, the Hessian times A also 2 w A, so ShapleyCAM's weights are GradCAM's halved."""

    input_kind = "1d"

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(2, 3, 3)
        self.weights = torch.nn.Parameter(torch.randn(4, 3))

    def forward(self, x):
        return (self.conv(x).square().sum(-1)) @ self.weights.T


def test_shapleycam_halves_gradcam_on_a_quadratic_score_and_handles_k_targets():
    torch.manual_seed(0)
    model = _Quadratic().eval()
    x = torch.randn(3, 2, 12)
    shapley = ShapleyCAM(model, layer="conv", relu=False)(x, target="all").maps
    gradcam = GradCAM(model, layer="conv", relu=False)(x, target="all").maps
    assert shapley.shape == (3, 4, 12)
    assert torch.allclose(2 * shapley, gradcam, rtol=1e-5, atol=1e-6)


def test_shapleycam_on_a_3d_model_equals_pytorch_grad_cam():
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 6, 3), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(6, 5)).eval()
    x = torch.randn(2, 1, 6, 7, 8)
    mine = ShapleyCAM(model, layer="2", upsample=False)(x, target=rest_target(torch.tensor([1, 4]))).maps[:, 0]
    peer = pytorch_grad_cam.ShapleyCAM(model=model, target_layers=[model[2]])
    theirs = _their_layer_cam(peer, x, [ClassifierOutputReST(1), ClassifierOutputReST(4)])
    assert ((mine - theirs).abs().max() / theirs.abs().max()) < 1e-4


def test_rest_target_refuses_what_is_not_classes():
    scores = torch.randn(2, 4)
    assert rest_target(2)(scores).shape == (2, 1)
    assert rest_target([0, 3])(scores).shape == (2, 2)
    assert torch.allclose(rest_target(torch.tensor([1, 2]))(scores)[:, 0],
                          scores[[0, 1], [1, 2]] - torch.nn.functional.cross_entropy(scores, torch.tensor([1, 2]),
                                                                                     reduction="none"))
    for bad in ("cat", 1.5, [], [[[1]]]):
        with pytest.raises(interpkit.TargetError):
            rest_target(bad)
    with pytest.raises(interpkit.TargetError, match="do not fit"):
        rest_target([9])(scores)


def test_finercam_equals_pytorch_grad_cam_with_its_reference_classes():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    with torch.no_grad():
        model.fc.weight *= 30  # logits spread enough that the nearest classes are well defined
    images = torch.randn(2, 3, 64, 64)
    for base, their_base, options in [(GradCAM, pytorch_grad_cam.GradCAM, {}),
                                      (LayerCAM, pytorch_grad_cam.LayerCAM, {"alpha": 0.6}),
                                      (GradCAM, pytorch_grad_cam.GradCAM, {"comparisons": (1, 4), "alpha": 0.8})]:
        explanation = FinerCAM(model, layer="layer3", upsample=False, base=base, **options)(images)
        peer = pytorch_grad_cam.FinerCAM(model, [model.layer3], base_method=their_base)
        kept = {}
        original = peer.base_cam.get_cam_image
        peer.base_cam.get_cam_image = lambda *a, **k: kept.setdefault("cam", original(*a, **k))
        theirs_options = {"alpha": options.get("alpha", 1)}
        if "comparisons" in options:
            theirs_options["comparison_categories"] = list(options["comparisons"])
        peer(images, **theirs_options)
        theirs = torch.from_numpy(kept["cam"]).float().clamp_min(0)
        mine = explanation.maps[:, 0]
        assert ((mine - theirs).abs().max() / theirs.abs().max()) < 1e-4
        assert explanation.class_targets and explanation.method == "finercam"
        assert torch.equal(explanation.targets[:, 0], model(images).argmax(1))


def test_finercam_on_few_classes_and_bad_input():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    x = torch.randn(2, 3, 8, 8)
    binary = FinerCAM(model, layer="0")(x, target=1)  # three comparisons asked, one exists: it is used
    logits = model(x)
    expected = (logits[:, 1] - logits[:, 0]) * logits.softmax(1)[:, 0] / (logits.softmax(1)[:, 0] + 1e-9)
    assert torch.allclose(binary.scores[:, 0], expected, atol=1e-5)
    with pytest.raises(interpkit.TargetError, match="ranks"):
        FinerCAM(model, layer="0", comparisons=(1, 2))(x)
    with pytest.raises(interpkit.TargetError, match="compares classes"):
        FinerCAM(model, layer="0")(x, target=lambda out: out[:, 0])
    for bad in ({"base": torch.nn.Linear}, {"base": "gradcam"}, {"comparisons": (0,)}, {"comparisons": 0},
                {"alpha": float("nan")}):
        with pytest.raises(interpkit.InterpkitError):
            FinerCAM(model, layer="0", **bad)


def test_finercam_conformance_refuses_the_model_whose_classes_need_a_callable():
    report = check_explainer(FinerCAM)
    assert "refused on DictOutput" in report.passed  # class_targets_only: a callable's score is no class


def _authors_fullgrad(model, images, target):
    """FullGrad as the authors' code computes it (idiap/fullgrad-saliency), written from its
    formulas: each layer's |bias gradient| (and |input gradient * input|) min-max scaled over the
    whole tensor per image (+1e-6), summed over channels, resized (here align_corners=False, as
    interpkit; the authors use True)."""
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.BatchNorm3d, torch.nn.Conv2d,
                                                          torch.nn.BatchNorm2d)) and m.bias is not None]
    kept = []
    handles = [m.register_forward_hook(lambda m, i, o: kept.append((m, o))) for m in layers]
    x = images.clone().requires_grad_(True)
    out = model(x)
    for handle in handles:
        handle.remove()
    grads = torch.autograd.grad(out[:, target].sum(), [x] + [o for _, o in kept])

    def post(t):
        t = t.abs()
        flat = t.flatten(1)
        t = t - flat.min(1).values.view(-1, *[1] * (t.dim() - 1))
        return t / (t.flatten(1).max(1).values.view(-1, *[1] * (t.dim() - 1)) + 1e-6)

    cam = post(grads[0] * images).sum(1)
    for (module, _), grad in zip(kept, grads[1:]):
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            bias = module.bias - module.running_mean * module.weight / torch.sqrt(module.running_var + module.eps)
        else:
            bias = module.bias
        term = post(grad * bias.view(1, -1, *[1] * (grad.dim() - 2)))
        mode = "trilinear" if grad.dim() == 5 else "bilinear"
        cam = cam + torch.nn.functional.interpolate(term, size=images.shape[2:], mode=mode, align_corners=False).sum(1)
    return cam.detach()


def test_fullgrad_equals_pytorch_grad_cam_per_channel_and_the_authors_per_layer():
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 64, 64)
    channel = FullGrad(model, scale="channel")(images, target=3).maps[:, 0]
    layer = FullGrad(model)(images, target=torch.tensor([[3, 5], [3, 5]])).maps
    peer = pytorch_grad_cam.FullGrad(model, [])  # its constructor leaves hooks on the model: ours ran first
    theirs = torch.from_numpy(peer(images, targets=[ClassifierOutputTarget(3)] * 2)).float()
    assert (interpkit.core.normalize_maps(channel, 1) - theirs).abs().max() < 1e-4
    authors = _authors_fullgrad(model, images, 5)
    assert ((layer[:, 1] - authors).abs().max() / authors.abs().max()) < 1e-5
    assert (layer[:, 0] - channel).abs().max() > 1e-2 * channel.abs().max()  # the two scalings differ


def test_fullgrad_on_a_3d_model_with_batch_norm_and_a_reused_convolution():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 4, 3, padding=1)

    class Reused(torch.nn.Module):
        input_kind = "3d"

        def __init__(self):
            super().__init__()
            self.stem, self.norm, self.conv = torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.BatchNorm3d(4), conv
            self.head = torch.nn.Linear(4, 3)

        def forward(self, x):
            h = torch.relu(self.norm(self.stem(x)))
            h = torch.relu(self.conv(torch.relu(self.conv(h))))  # one module, two bias terms
            return self.head(h.mean(dim=(2, 3, 4)))

    model = Reused().eval()
    model.norm.running_mean.uniform_(-1, 1)
    model.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 1, 5, 6, 7)
    mine = FullGrad(model)(x, target=2).maps[:, 0]
    authors = _authors_fullgrad(model, x, 2)  # its hooks see the reused convolution twice too
    assert ((mine - authors).abs().max() / authors.abs().max()) < 1e-5
    model.norm.track_running_stats, model.norm.running_mean, model.norm.running_var = False, None, None
    with pytest.raises(interpkit.LayerError, match="running statistics"):  # named as the cause, batch or not
        FullGrad(model)(x)
    with pytest.raises(interpkit.InputError, match="scale"):
        FullGrad(model, scale="pixel")


def test_fullgrad_of_one_input_takes_the_bias_terms_of_its_own_branch_only():
    """A two-tower model: the other tower's convolution biases are no terms of this input's map
    (they were added, so its map changed with the other input)."""
    torch.manual_seed(0)

    class TwoTowers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
            self.b = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
            self.head = torch.nn.Linear(8, 3)

        def forward(self, xa, xb):
            return self.head(torch.cat([self.a(xa).mean(dim=(2, 3)), self.b(xb).mean(dim=(2, 3))], dim=1))

    class TowerB(torch.nn.Module):  # the same function of xb, tower a's features a constant
        def __init__(self, model, xa):
            super().__init__()
            self.b, self.head = model.b, model.head
            self.register_buffer("fixed", model.a(xa).mean(dim=(2, 3)).detach())

        def forward(self, xb):
            return self.head(torch.cat([self.fixed, self.b(xb).mean(dim=(2, 3))], dim=1))

    class Nested(torch.nn.Module):  # the other input inside a list
        def __init__(self, towers):
            super().__init__()
            self.towers = towers

        def forward(self, xb, others):
            return self.towers(others[0], xb)

    model = TwoTowers().eval()
    xa, xb = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    mine = FullGrad(model)((xa, xb), target=0, attribute_to=1).maps[:, 0]
    authors = _authors_fullgrad(TowerB(model, xa).eval(), xb, 0)
    torch.testing.assert_close(mine, authors, rtol=1e-5, atol=1e-6)
    nested = FullGrad(Nested(model).eval())((xb, [xa]), target=0).maps[:, 0]
    torch.testing.assert_close(nested, authors, rtol=1e-5, atol=1e-6)


def test_fullgrad_refuses_token_models():
    from interpkit.testing.models import TinyTokens

    with pytest.raises(interpkit.LayerError, match="tokens"):
        FullGrad(TinyTokens().eval())(torch.randn(1, 3, 8, 8))


def test_refinecam_equals_pytorch_grad_cam():
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    with torch.no_grad():
        model.fc.weight *= 1000  # pytorch-grad-cam's GradCAM++ epsilon negligible (see above)
    images = torch.randn(2, 3, 64, 64)
    layers = ["layer2", "layer3", "layer4"]
    for base, theirs_base in [(GradCAMPlusPlus, pytorch_grad_cam.GradCAMPlusPlus), (LayerCAM, pytorch_grad_cam.LayerCAM)]:
        mine = RefineCAM(model, layers, base=base)(images, target=3)
        peer = pytorch_grad_cam.RefineCAM(model, [model.layer2, model.layer3, model.layer4], base_method=theirs_base)
        theirs = torch.from_numpy(peer(images, targets=[ClassifierOutputTarget(3)] * 2)).float()
        assert (mine.maps[:, 0] - theirs).abs().max() < 1e-4
        assert mine.layer == "layer4" and mine.method == "refinecam"


def test_refinecam_bad_options():
    model = torchvision.models.resnet18().eval()
    for bad in ({"relu": False}, {"upsample": False}, {"base": torch.nn.Linear}):
        with pytest.raises(interpkit.InputError):
            RefineCAM(model, ["layer3", "layer4"], **bad)


@pytest.mark.parametrize("explainer", [ShapleyCAM, FullGrad, RefineCAM])
def test_new_variants_conformance(explainer):
    check_explainer(explainer)


def test_pytorch_grad_cams_epsilons_change_gradcam_plus_plus_and_xgradcam():
    """GradCAM++: with resnet18's own small gradients pytorch-grad-cam's 1e-6 in the denominator
    moves its map away from the paper's closed form, which interpkit computes. XGradCAM: a channel
    whose activations sum to 0 (values of both signs) gets pytorch-grad-cam's weight
    sum(G A) / 1e-7, which swamps every other channel; interpkit's weight there is 0."""
    model, images, activations, gradients = _layer4_case()
    mine = GradCAMPlusPlus(model, layer="layer4", upsample=False, relu=False)(images, target=[3, 7]).maps[:, 0]
    squared, total = gradients.pow(2), activations.flatten(2).sum(-1)[..., None, None]
    denominator = 2 * squared + total * gradients.pow(3)
    alpha = torch.where(denominator != 0, squared / torch.where(denominator != 0, denominator, 1.0), 0.0)
    paper = ((alpha * gradients.clamp_min(0)).flatten(2).sum(-1)[..., None, None] * activations).sum(1)
    torch.testing.assert_close(mine, paper, rtol=1e-4, atol=1e-7)
    theirs = _theirs("GradCAMPlusPlus", model, images, activations, gradients)
    assert (theirs - paper).abs().max() > 1e-2 * paper.abs().max()

    activation = torch.tensor([[[[1.0, -1.0], [2.0, -2.0]], [[1.0, 2.0], [3.0, 4.0]]]])  # channel 0 sums to 0
    gradient = torch.tensor([[[[0.5, 0.1], [0.2, 0.3]], [[0.1, 0.2], [0.3, 0.4]]]])
    weights = XGradCAM(torch.nn.Conv2d(1, 2, 1)).channel_weights(activation, gradient.unsqueeze(1))
    assert weights[0, 0, 0] == 0 and torch.isclose(weights[0, 0, 1], torch.tensor(3.0 / 10))
    peer = pytorch_grad_cam.XGradCAM(model=model, target_layers=[model.layer4])
    their_weights = peer.get_cam_weights(None, None, None, activation.numpy(), gradient.numpy())
    assert their_weights[0, 0] > 1e6


def test_shapleycam_of_several_layers_is_each_layers_own():
    """Each layer's Hessian product is its own (no cross-layer terms), whatever the layers' order,
    and RefineCAM over ShapleyCAM multiplies the single-layer maps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 5, 3, padding=1),
                                torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(5, 3)).eval()
    for parameter in model[0].parameters():
        parameter.requires_grad_(False)
    x = torch.randn(2, 3, 8, 8)
    target = rest_target([1])
    alone = [ShapleyCAM(model, layer=name, upsample=False, relu=False)(x, target=target).maps for name in ("0", "2")]
    for order in (["0", "2"], ["2", "0"]):
        both = ShapleyCAM(model, layer=order)(x, target=target)
        for name, maps in zip(("0", "2"), alone):
            position = both.layers.index(name)
            expected = upsample(maps.clamp_min(0), (8, 8))
            torch.testing.assert_close(both.layer_maps[:, :, position], expected, rtol=1e-5, atol=1e-7)


def test_shapleycam_refuses_a_once_differentiable_function_after_the_layer():
    class Softplus(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.nn.functional.softplus(x)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * torch.sigmoid(x)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.head(Softplus.apply(self.conv(x)).mean(dim=(2, 3)))

    with pytest.raises(interpkit.InputError, match="once_differentiable"):
        ShapleyCAM(Model().eval(), layer="conv")(torch.randn(1, 3, 6, 6), target=rest_target([1]))


def test_rest_target_per_sample_classes_refuse_another_batch():
    scores = torch.randn(3, 4)
    with pytest.raises(interpkit.TargetError, match="shared by"):
        rest_target(torch.tensor([1, 2]))(scores)
    for bad in ([True, 2], [[1], [2, 3]], torch.tensor([0.5])):
        with pytest.raises(interpkit.TargetError):
            rest_target(bad)


def test_finercam_refuses_bases_that_score_copies_and_smoothgradcampp_keeps_a_callable_target():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 6)).eval()
    for base in (ScoreCAM, AblationCAM, SSCAM, SmoothGradCAMPlusPlus):
        with pytest.raises(interpkit.InputError, match="copies"):
            FinerCAM(model, layer="0", base=base)
    x = torch.randn(2, 3, 8, 8)
    smooth = SmoothGradCAMPlusPlus(model, layer="0", samples=3)
    torch.testing.assert_close(smooth(x, target=lambda out: out[:, 5]).maps, smooth(x, target=5).maps)


def test_refinecam_equals_pytorch_grad_cam_on_layers_of_very_different_sizes():
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 64, 64)
    mine = RefineCAM(model, ["layer1.0", "layer4"], base=GradCAM)(images, target=3).maps[:, 0]
    peer = pytorch_grad_cam.RefineCAM(model, [model.layer1[0], model.layer4], base_method=pytorch_grad_cam.GradCAM)
    theirs = torch.from_numpy(peer(images, targets=[ClassifierOutputTarget(3)] * 2)).float()
    assert (mine - theirs).abs().max() < 1e-4


def _volume_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 6, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(),
                               torch.nn.Linear(6, 5)).eval()


def test_finercam_and_refinecam_on_a_3d_model_equal_pytorch_grad_cam():
    """Layers at the volume's own size, so that pytorch-grad-cam's resizing (scipy's spline zoom
    for 3-D maps, where interpkit interpolates trilinearly) is the identity on both sides."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _volume_model()
    with torch.no_grad():
        model[6].weight *= 20  # logits spread enough for well-defined nearest classes
    x = torch.randn(2, 1, 5, 6, 7)
    mine = FinerCAM(model, layer="2", upsample=False)(x).maps[:, 0]
    peer = pytorch_grad_cam.FinerCAM(model, [model[2]])
    kept = {}
    original = peer.base_cam.get_cam_image
    peer.base_cam.get_cam_image = lambda *a, **k: kept.setdefault("cam", original(*a, **k))
    peer(x)
    theirs = torch.from_numpy(kept["cam"]).float().clamp_min(0)
    assert ((mine - theirs).abs().max() / theirs.abs().max()) < 1e-4
    refined = RefineCAM(model, ["0", "2"], base=GradCAM)(x, target=3).maps[:, 0]
    peer = pytorch_grad_cam.RefineCAM(model, [model[0], model[2]], base_method=pytorch_grad_cam.GradCAM)
    theirs = torch.from_numpy(peer(x, targets=[ClassifierOutputTarget(3)] * 2)).float()
    assert theirs.shape == refined.shape and (refined - theirs).abs().max() < 1e-4


def _strided_model(dims):
    """A 1-D or 3-D CNN whose layer "2" halves the grid, so that the maps are upsampled."""
    conv = {1: torch.nn.Conv1d, 3: torch.nn.Conv3d}[dims]
    pool = {1: torch.nn.AdaptiveAvgPool1d, 3: torch.nn.AdaptiveAvgPool3d}[dims]
    torch.manual_seed(0)
    model = torch.nn.Sequential(conv(2, 4, 3, padding=1), torch.nn.ReLU(), conv(4, 6, 3, stride=2, padding=1),
                                torch.nn.ReLU(), pool(1), torch.nn.Flatten(), torch.nn.Linear(6, 5)).eval()
    with torch.no_grad():
        model[6].weight *= 10  # scores spread enough that the channels' softmax is not flat
    return model


def _layer_case(model, x, targets, layer="2"):
    """A layer's activations and the targets' gradients, by hand."""
    kept = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.append(o))
    out = model(x)
    handle.remove()
    (gradients,) = torch.autograd.grad(sum(out[i, t] for i, t in enumerate(targets)), kept[0])
    return kept[0].detach(), gradients


@pytest.mark.parametrize("ours, theirs, options", [(GradCAMElementWise, "GradCAMElementWise", {}),
                                                    (SegEigenCAM, "SegEigenCAM", {}),
                                                    (KPCACAM, "KPCA_CAM", {}),
                                                    (KPCACAM, "KPCA_CAM", {"kernel": "rbf", "gamma": 0.05})])
def test_newer_variants_on_a_3d_model_equal_pytorch_grad_cam(ours, theirs, options):
    """pytorch-grad-cam's 3-D path (it has no 1-D one), compared at the layer's resolution."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _strided_model(3)
    x = torch.randn(2, 2, 6, 8, 10)
    activations, gradients = _layer_case(model, x, [3, 1])
    mine = ours(model, layer="2", upsample=False, relu=False, **options)(x, target=[3, 1]).maps[:, 0]
    peer = getattr(pytorch_grad_cam, theirs)(model=model, target_layers=[model[2]], **options)
    theirs_maps = torch.from_numpy(peer.get_cam_image(x, model[2], [ClassifierOutputTarget(3), ClassifierOutputTarget(1)],
                                                      activations.double().numpy(), gradients.double().numpy(),
                                                      eigen_smooth=False)).float()
    assert mine.shape == theirs_maps.shape == (2, 3, 4, 5) and theirs_maps.abs().max() > 0
    assert ((mine - theirs_maps).abs().max() / theirs_maps.abs().max()) < 1e-4


def _torchcam_nd(method, model, x, target, **options):
    """torchcam's CAM at layer "2"'s resolution, before its normalisation."""
    from torchcam import methods

    with getattr(methods, method)(model, target_layer="2", input_shape=tuple(x.shape[1:]), **options) as cam:
        with torch.no_grad():
            out = model(x)
        return cam(class_idx=target, scores=out, normalized=False)[0]


@pytest.mark.parametrize("dims", [1, 3])
def test_sscam_and_iscam_on_1d_and_3d_models_equal_torchcam(dims, monkeypatch):
    """3-D: equal (both interpolate the masks trilinearly). 1-D: torchcam 0.5 cannot run at all:
    it always resizes the masks, asking ``F.interpolate`` for nearest with ``align_corners``, a
    ValueError; given linear interpolation in its place, it equals ours."""
    from torchcam.methods import SSCAM as TorchcamSSCAM
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    model = _strided_model(dims)
    x = torch.randn(1, 2, *((6, 8, 10) if dims == 3 else (16,)))
    if dims == 1:
        for method in ("SSCAM", "ISCAM"):
            with pytest.raises(ValueError, match="align_corners"):
                _torchcam_nd(method, model, x, 2, num_samples=3, batch_size=4)
        monkeypatch.setattr(TorchcamScoreCAM, "_upsample", lambda self, maps: torch.nn.functional.interpolate(
            maps, self._input.shape[2:], mode="linear", align_corners=False))
    generator = torch.Generator().manual_seed(7)
    draws = iter([0.5 * torch.randn(6, *x.shape[2:], generator=generator) for _ in range(3)])
    monkeypatch.setattr(TorchcamSSCAM, "__init__", _wrap_sscam_init(TorchcamSSCAM.__init__, draws))
    smoothed = _torchcam_nd("SSCAM", model, x, 2, num_samples=3, std=0.5, batch_size=4)
    integrated = _torchcam_nd("ISCAM", model, x, 2, num_samples=3, batch_size=4)
    mine = (SSCAM(model, layer="2", upsample=False, samples=3, std=0.5, seed=7)(x, target=2).maps[:, 0],
            ISCAM(model, layer="2", upsample=False, scales=[1 / 3, 1, 2])(x, target=2).maps[:, 0])
    for ours, theirs in zip(mine, (smoothed, integrated)):
        assert theirs.abs().max() > 0
        assert ((ours - theirs).abs().max() / theirs.abs().max()) < 1e-4


@pytest.mark.parametrize("dims", [1, 3])
def test_smoothgradcampp_on_1d_and_3d_models_is_the_papers_and_torchcams_is_its_own(dims):
    """The three differences shown on resnet18 above, on 1-D and 3-D models: ours is the paper's
    formula and torchcam's its own, given the same noise (at the ReLU's output, as layer4's is)."""
    from torchcam.methods import SmoothGradCAMpp

    model = _strided_model(dims)
    x = torch.randn(1, 2, *((6, 8, 10) if dims == 3 else (16,)))
    generator = torch.Generator().manual_seed(3)
    noise = torch.stack([0.3 * torch.randn(x.shape[1:], generator=generator) for _ in range(3)])
    mine = SmoothGradCAMPlusPlus(model, layer="3", upsample=False, samples=3, std=0.3, seed=3)(x, target=2).maps[0, 0]
    clean, _ = _layer_case(model, x, [2], "3")
    noisy = [_layer_case(model, x + copy, [2], "3") for copy in noise]
    activations, gradients = torch.cat([a for a, _ in noisy]), torch.cat([g for _, g in noisy])
    grid = tuple(range(1, clean.dim() - 1))
    d1, d2, d3 = (gradients.pow(k).mean(0) for k in (1, 2, 3))
    alpha = d2 / (2 * d2 + clean[0].sum(grid, keepdim=True) * d3)
    paper = torch.relu(((alpha * torch.relu(d1)).sum(grid, keepdim=True) * clean[0]).sum(0))
    torch.testing.assert_close(mine, paper, rtol=1e-4, atol=1e-6)

    class Given:
        draws = iter(noise)

        def sample(self, size):
            return next(self.draws).expand(size)

    with SmoothGradCAMpp(model, target_layer="3", num_samples=3, std=0.3, input_shape=tuple(x.shape[1:])) as extractor:
        extractor._distrib = Given()
        theirs = extractor(class_idx=2, scores=model(x), normalized=False)[0][0]
    their_alpha = d2 / (2 * d2 + (d3 * clean[0]).sum(grid, keepdim=True) + 1e-8)
    their_weights = (their_alpha * torch.relu(gradients[-1])).sum(grid, keepdim=True)
    torch.testing.assert_close(theirs, torch.relu((their_weights * activations[-1]).sum(0)), rtol=1e-4, atol=1e-6)
    assert (mine / mine.max() - theirs / theirs.max()).abs().max() > 1e-2
