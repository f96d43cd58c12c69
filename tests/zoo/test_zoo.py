"""The zoo: the study's layer tables, bundled weights that beat the study, checksums, VGG19."""

import shutil
import urllib.error

import pytest
import torch
from PIL import Image

import interpkit
from interpkit import PluginError, WeightsError, zoo
from interpkit.data import caltech5
from interpkit.zoo import Weights, WeightsFile

LAYER_TABLES = {  # (output shape after each Conv2d / MaxPool2d of `features`), flatten size, params
    "caltech5_arch1": ([(8, 56, 56), (8, 27, 27), (16, 27, 27), (16, 13, 13)], 2704, 353_013),
    "caltech5_arch2": ([(8, 56, 56), (8, 27, 27), (16, 27, 27), (16, 13, 13), (32, 13, 13), (32, 6, 6)], 1152, 158_997),
    "caltech5_arch3": ([(8, 56, 56), (8, 27, 27), (16, 27, 27), (16, 13, 13), (32, 13, 13), (64, 13, 13), (64, 6, 6)],
                       2304, 324_949),
}
STUDY_PARAMS = {"caltech5_arch1": [2912, 3216, 346240, 645], "caltech5_arch2": [2912, 3216, 4640, 147584, 645],
                "caltech5_arch3": [2912, 3216, 4640, 18496, 295040, 645]}


@pytest.mark.parametrize("name", sorted(LAYER_TABLES))
def test_layer_tables_and_parameter_counts(name):
    shapes, flat, total = LAYER_TABLES[name]
    model = interpkit.get_model(name).eval()
    x = torch.zeros(1, 3, 224, 224)
    seen = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            seen.append(tuple(x.shape[1:]))
    assert seen == shapes
    assert x.flatten(1).shape[1] == flat
    assert sum(p.numel() for p in model.parameters()) == total
    per_layer = [sum(p.numel() for p in m.parameters()) for m in model.modules()
                 if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert per_layer == STUDY_PARAMS[name]
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 5)


def test_registry_and_errors():
    assert interpkit.list_models() == ["caltech5_arch1", "caltech5_arch2", "caltech5_arch3", "vgg19_caltech5",
                                      "vgg19_slim_caltech5"]
    with pytest.raises(PluginError, match="caltech5_arch2"):
        interpkit.get_model("caltech5_arch9")
    with pytest.raises(WeightsError, match="DEFAULT"):
        interpkit.get_model("caltech5_arch1", weights="NOPE")


BARS = {"caltech5_arch1": (0.74, None), "caltech5_arch2": (0.74, 0.85), "caltech5_arch3": (0.70, None)}


@pytest.mark.parametrize("name", sorted(BARS))
def test_bundled_weights_beat_the_study(name):
    weights = interpkit.get_weights(name)
    model = interpkit.get_model(name, weights="DEFAULT").eval()
    transform = weights.transforms()
    accuracy = {}
    for split in ("val", "test"):
        data = caltech5(split, transform=transform)
        images = torch.stack([data[i][0] for i in range(len(data))])
        labels = torch.tensor(data.labels)
        with torch.no_grad():
            accuracy[split] = (model(images).argmax(1) == labels).float().mean().item()
        assert accuracy[split] == pytest.approx(weights.meta["metrics"][f"{split}_accuracy"], abs=1e-6)
    val_bar, test_bar = BARS[name]
    assert accuracy["val"] > val_bar
    if test_bar is not None:
        assert accuracy["test"] >= test_bar
    assert weights.meta["categories"] == ["bonsai", "hawksbill", "menorah", "scorpion", "sunflower"]
    assert weights.meta["recipe"]["seed"] == 1 and "interpkit train" in weights.meta["command"]


def test_transforms_accept_tensors_pil_and_grayscale():
    transform = interpkit.get_weights("caltech5_arch2").transforms()
    rgb = torch.randint(0, 256, (3, 300, 200), dtype=torch.uint8)
    from_tensor = transform(rgb)
    from_pil = transform(Image.fromarray(rgb.permute(1, 2, 0).numpy()))
    assert from_tensor.shape == (3, 224, 224) and from_tensor.dtype == torch.float32
    torch.testing.assert_close(from_tensor, from_pil)
    gray = transform(rgb[:1])
    assert gray.shape == (3, 224, 224)
    torch.testing.assert_close(transform.denormalize(transform(torch.full((3, 224, 224), 255, dtype=torch.uint8))),
                               torch.ones(3, 224, 224))


def test_corrupt_weights_are_refused(tmp_path):
    source = interpkit.get_weights("caltech5_arch1").value.path
    for suffix in (".pt", ".json"):
        shutil.copy(source.with_suffix(suffix), tmp_path / f"copy{suffix}")
    data = bytearray((tmp_path / "copy.pt").read_bytes())
    data[-20] ^= 0xFF
    (tmp_path / "copy.pt").write_bytes(bytes(data))

    class Corrupt(Weights):
        COPY = WeightsFile(tmp_path / "copy.pt")

    with pytest.raises(WeightsError, match="corrupt"):
        Corrupt.COPY.state_dict()


def test_a_damaged_description_or_a_file_that_is_not_a_state_dict_is_a_weights_error(tmp_path):
    """A description without sha256, categories or transforms, or with a size of 3, was a KeyError or
    TypeError; a .pt of pickled code with a matching checksum was an UnpicklingError."""
    import json

    source = interpkit.get_weights("caltech5_arch1").value.path
    good = json.loads(source.with_suffix(".json").read_text())
    shutil.copy(source, tmp_path / "w.pt")
    damaged = [(lambda d: d.pop("sha256"), "sha256"), (lambda d: d["meta"].pop("categories"), "categories"),
               (lambda d: d.pop("transforms"), "preprocessing"), (lambda d: d["transforms"].update(size=3), "preprocess"),
               (lambda d: d["transforms"].update(size=[0, 2]), "size"), (lambda d: d["transforms"].update(std=[0, 1, 1]),
                                                                         "std")]
    for damage, words in damaged:
        sidecar = json.loads(json.dumps(good))
        damage(sidecar)
        (tmp_path / "w.json").write_text(json.dumps(sidecar))
        with pytest.raises(WeightsError, match=words):
            WeightsFile(tmp_path / "w.pt").transforms()
    (tmp_path / "w.json").write_text("[1, 2]")
    with pytest.raises(WeightsError, match="not a JSON object"):
        WeightsFile(tmp_path / "w.pt").meta
    torch.save({"code": print}, tmp_path / "w.pt")  # pickled, not a state dict: weights_only refuses it
    sidecar = dict(good, sha256=zoo.sha256_file(tmp_path / "w.pt"))
    (tmp_path / "w.json").write_text(json.dumps(sidecar))
    with pytest.raises(WeightsError, match="not a state dict"):
        WeightsFile(tmp_path / "w.pt").state_dict()


@pytest.fixture(scope="module")
def vgg_state(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-local.pth"
    torch.save(torchvision.models.vgg19().state_dict(), path)
    return path


def test_vgg19_from_a_local_state_dict_is_frozen_but_its_head(vgg_state):
    model = interpkit.get_model("vgg19_caltech5", backbone=str(vgg_state))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.6.weight", "classifier.6.bias"]
    state = torch.load(vgg_state, weights_only=True)
    assert torch.equal(model.features[0].weight, state["features.0.weight"])
    assert torch.equal(model.classifier[3].weight, state["classifier.3.weight"])
    assert model.classifier[6].out_features == 5


def test_vgg19_offline_says_how_to_get_the_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="internet access"):
        interpkit.get_model("vgg19_caltech5")
    with pytest.raises(WeightsError, match="missing"):
        interpkit.get_weights("vgg19_caltech5").state_dict()


def test_builders_and_weights_torchvision_style(tmp_path):
    enum = zoo.caltech5_arch1.weights
    assert enum is zoo.Caltech5Arch1Weights
    assert enum.verify(None) is None
    assert enum.verify("DEFAULT") is enum.verify(enum.CALTECH5_V1) is enum.CALTECH5_V1
    for bad in ("NOPE", 3, zoo.Caltech5Arch2Weights.DEFAULT):
        with pytest.raises(WeightsError):
            enum.verify(bad)
    direct = zoo.caltech5_arch1(weights="DEFAULT")
    looked_up = interpkit.get_model("caltech5_arch1", weights=enum.DEFAULT)
    for a, b in zip(direct.state_dict().values(), looked_up.state_dict().values()):
        assert torch.equal(a, b)
    # a user's file (written by 'interpkit train') reads through the same class
    for suffix in (".pt", ".json"):
        shutil.copy(enum.DEFAULT.value.path.with_suffix(suffix), tmp_path / f"mine{suffix}")
    mine = WeightsFile(tmp_path / "mine.pt")
    assert mine.meta == enum.DEFAULT.meta and mine.transforms() == enum.DEFAULT.transforms()
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), direct.state_dict().values()))
    (tmp_path / "mine.json").unlink()
    with pytest.raises(WeightsError, match="description"):
        WeightsFile(tmp_path / "mine.pt").state_dict()
