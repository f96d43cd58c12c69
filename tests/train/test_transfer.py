"""The Task 2 stand-in: its layout, its training pieces, and the bundled weights' accuracy."""

import pytest
import torch
import torchvision
from PIL import Image

import interpkit
from interpkit import InputError
from interpkit.data import caltech5, caltech101_categories
from interpkit.train import Split, evaluate
from interpkit.train.loop import TrainConfig
from interpkit.train.transfer import fine_tune, fold_batch_norm, with_batch_norm
from interpkit.zoo import slim_vgg19


def test_the_stand_in_has_vgg19s_module_names():
    ours = {name: type(m) for name, m in slim_vgg19(5).named_modules()}
    theirs = {name: type(m) for name, m in torchvision.models.vgg19(num_classes=5).named_modules()}
    assert ours == theirs  # features.34 is the last convolution in both, classifier.6 the last layer


def test_batch_norm_folds_into_the_convolutions_exactly():
    torch.manual_seed(0)
    model = with_batch_norm(slim_vgg19(3))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    model.eval()
    images = torch.randn(2, 3, 64, 64)
    before = model(images)
    folded = fold_batch_norm(model)
    torch.testing.assert_close(folded(images), before, rtol=1e-4, atol=1e-5)
    assert set(folded.state_dict()) == set(slim_vgg19(3).state_dict())


def test_pretraining_categories_leave_out_the_excluded_ones_and_the_clutter(tmp_path):
    for name, count in (("ant", 12), ("bonsai", 3), ("BACKGROUND_Google", 2), ("crab", 10)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"image_{i:04d}.jpg")
    data = caltech101_categories(tmp_path, exclude=["bonsai"])
    assert data["train"].classes == ["ant", "crab"]
    assert len(data["val"]) == 2 and len(data["train"]) == 20  # every 10th image of a class held out
    assert not any("bonsai" in str(p) or "BACKGROUND" in str(p) for p in data["train"].paths + data["val"].paths)
    with pytest.raises(InputError, match="not found"):
        caltech101_categories(tmp_path / "nowhere", exclude=[])


def test_fine_tuning_replaces_the_head_and_trains_every_layer():
    torch.manual_seed(0)
    model = slim_vgg19(7)
    images = torch.randint(0, 255, (6, 3, 64, 64), dtype=torch.uint8)
    splits = {"train": Split(images, torch.tensor([0, 1, 2, 0, 1, 2])), "val": Split(images[:3], torch.tensor([0, 1, 2]))}
    first_conv = model.features[0].weight.detach().clone()
    probe = TrainConfig(epochs=1, batch_size=3, patience=None, augment=False)
    entering = []  # the first convolution's weights as each stage starts

    def spy(model, *args, **kwargs):
        entering.append(model.features[0].weight.detach().clone())
        return real_fit(model, *args, **kwargs)

    import interpkit.train.transfer as transfer

    real_fit = transfer.fit
    transfer.fit = spy
    try:
        tuned, probed, result = fine_tune(model, splits, 3, interpkit.data.ImageTransform(size=(64, 64)), probe,
                                          TrainConfig(epochs=2, batch_size=3, patience=None, augment=False),
                                          progress=False)
    finally:
        transfer.fit = real_fit
    assert tuned.classifier[6].out_features == 3 and probed.epochs_run == 1 and result.epochs_run == 2
    assert len(entering) == 2 and torch.equal(entering[1], first_conv)  # the probe trained the head alone
    assert not torch.equal(tuned.features[0].weight, first_conv)  # then every layer trains


def test_the_bundled_stand_in_beats_every_task1_cnn_on_the_test_split():
    """Read from the canonical split bundled in the package: at least 90%, above every CNN."""
    weights = interpkit.get_weights("vgg19_slim_caltech5")
    transform = weights.transforms()
    data = caltech5("test")
    images, labels = data.tensors(transform.size)
    accuracy = {}
    for name in ("caltech5_arch1", "caltech5_arch2", "caltech5_arch3", "vgg19_slim_caltech5"):
        model = interpkit.get_model(name, weights="DEFAULT").eval()
        size = interpkit.get_weights(name).transforms().size
        split = Split(images if size == transform.size else data.tensors(size)[0], labels)
        accuracy[name] = evaluate(model, split, interpkit.get_weights(name).transforms().normalize, 5).accuracy
    assert accuracy["vgg19_slim_caltech5"] >= 0.90
    assert all(accuracy["vgg19_slim_caltech5"] > accuracy[n] for n in accuracy if n != "vgg19_slim_caltech5")
    assert accuracy["vgg19_slim_caltech5"] == pytest.approx(weights.meta["metrics"]["test_accuracy"], abs=1e-3)
    meta = weights.meta
    assert meta["pretraining"]["categories"] == 96 and meta["training_seconds"] > 0 and "interpkit train" in meta["command"]
    assert weights.value.path.stat().st_size <= 20 * 2**20


@pytest.mark.parametrize("options", [{"padding": 2, "dilation": 2}, {"padding": 1, "padding_mode": "reflect"},
                                     {"padding": 1, "groups": 2}, {"padding": 1, "bias": False}])
def test_folding_keeps_every_option_of_the_convolution(options):
    """The folded convolution was rebuilt from its channels, kernel, stride and padding only: a
    dilated one changed size, a reflect-padded one computed another function (off by 1.3)."""
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.features = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, **options), torch.nn.ReLU())
    with_batch_norm(model)
    norm = model.features[0][1]
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 2), norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 16, 16)
    before = model.eval().features(x)
    seen = []
    handle = model.features[0][0].register_forward_hook(lambda *args: seen.append(1))
    torch.testing.assert_close(fold_batch_norm(model).features(x), before, rtol=1e-5, atol=1e-5)
    handle.remove()
    assert not model.features[0]._forward_hooks and not seen  # a hook of the old convolution does not follow
    assert not any(module.training for module in model.modules())  # the new convolution is in eval mode too


def test_folding_refuses_what_it_cannot_fold_before_changing_anything():
    model = torch.nn.Module()
    model.features = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)),
                                         torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU()))
    first = model.features[0]
    with pytest.raises(InputError, match="features.1"):
        fold_batch_norm(model)
    assert model.features[0] is first
