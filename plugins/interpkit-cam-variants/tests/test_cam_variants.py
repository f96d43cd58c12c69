import pytest
import torch
import torchvision

import interpkit
from interpkit.testing import check_explainer
from interpkit_cam_variants import GradCAMPlusPlus, LayerCAM

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam", reason="grad-cam is in interpkit's [test] extra")


def test_registered_and_importable_from_interpkit():
    assert {"gradcam_plus_plus", "layercam"} <= set(interpkit.list_explainers())
    from interpkit import GradCAMPlusPlus as Imported

    assert Imported is GradCAMPlusPlus


@pytest.mark.parametrize("explainer", [GradCAMPlusPlus, LayerCAM])
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


def test_k_targets_in_one_call_equal_one_at_a_time():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 64, 64)
    for cls in (GradCAMPlusPlus, LayerCAM):
        together = cls(model)(images, target=torch.tensor([[1, 2], [3, 4]])).maps
        alone = cls(model)(images, target=[2, 4]).maps[:, 0]
        torch.testing.assert_close(together[:, 1], alone)
