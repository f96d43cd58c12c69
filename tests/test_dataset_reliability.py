"""explain_dataset and its store under hostile input: labels by the model's class names, resumes
that would mix methods or data, maps that cannot be stored exactly, damaged shards, and inputs
the store cannot take (each a defect an adversarial probe reproduced)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from models import SmallCNN
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, TensorDataset

import interpkit
from interpkit import GradCAM, InputError, explain_dataset, read_store
from interpkit.cli.main import main
from interpkit.data import bundled_root


def _data(n=6, seed=7):
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 5, (n,), generator=generator))


def _model():
    torch.manual_seed(0)
    return SmallCNN().eval()


def _explain(out, explainer=None, data=None, **options):
    options = {"batch_size": 2, "shard_size": 4, "progress": False, **options}
    return explain_dataset(explainer or GradCAM(_model()), _data() if data is None else data, out, **options)


@pytest.fixture
def two_classes(tmp_path):
    """Folders named after two of caltech5_arch2's classes that are not its first two."""
    for name in ("scorpion", "sunflower"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for image in sorted((bundled_root() / name).glob("*.jpg"))[:2]:
            shutil.copy(image, tmp_path / "data" / name / image.name)
    return tmp_path


def test_cli_labels_are_the_models_classes_by_folder_name(two_classes, capsys):
    out = two_classes / "store"
    assert main(["explain", "--data", str(two_classes / "data"), "--model", "caltech5_arch2", "--target", "labels",
                 "--out", str(out), "--no-progress", "--batch-size", "2", "--workers", "0"]) == 0
    store = read_store(out)
    categories = interpkit.get_weights("caltech5_arch2").meta["categories"]
    assert store.classes == categories
    expected = [categories.index("scorpion")] * 2 + [categories.index("sunflower")] * 2
    assert store.array("labels").tolist() == expected
    assert store.array("targets")[:, 0].tolist() == expected  # each image explained for its own class
    assert [Path(f).parent.name for f in store.files] == ["scorpion"] * 2 + ["sunflower"] * 2


def test_cli_refuses_folders_the_model_has_no_class_for_and_folders_without_labels(two_classes, capsys):
    (two_classes / "data" / "scorpion").rename(two_classes / "data" / "lobster")
    args = ["explain", "--model", "caltech5_arch2", "--target", "labels", "--no-progress", "--workers", "0"]
    assert main([*args, "--data", str(two_classes / "data"), "--out", str(two_classes / "a")]) == 2
    assert "lobster" in capsys.readouterr().err and not (two_classes / "a").exists()
    flat = two_classes / "flat"
    flat.mkdir()
    for image in (two_classes / "data" / "sunflower").glob("*.jpg"):
        shutil.copy(image, flat / image.name)
    assert main([*args, "--data", str(flat), "--out", str(two_classes / "b")]) == 2
    err = capsys.readouterr().err
    assert "has none" in err and "index -1" not in err and not (two_classes / "b").exists()
    assert main([*args, "--data", str(flat), "--out", str(two_classes / "c"), "--target", "0", "--overwrite"]) == 2
    assert "--overwrite" in capsys.readouterr().err and not (two_classes / "c").exists()


def test_cli_refuses_a_metric_the_target_cannot_have_before_writing(two_classes, capsys):
    out = two_classes / "store"
    args = ["explain", "--data", str(two_classes / "data"), "--model", "caltech5_arch2", "--target", "all",
            "--metrics", "deletion", "--out", str(out), "--no-progress", "--workers", "0"]
    assert main(args) == 2 and not out.exists()
    assert main([*args, "--resume"]) == 2 and not out.exists()


def test_resuming_with_another_layer_module_or_a_wrapped_method_is_refused(tmp_path):
    model = _model()
    _explain(tmp_path / "a", GradCAM(model, layer=model.features[3]))
    with pytest.raises(InputError, match="layer"):
        _explain(tmp_path / "a", GradCAM(model, layer=model.features[1]), resume=True)
    tunnel = interpkit.get_explainer("noise_tunnel")
    _explain(tmp_path / "b", tunnel(model, method="gradcam", samples=2))
    with pytest.raises(InputError, match="inner"):
        _explain(tmp_path / "b", tunnel(model, method="layercam", samples=2), resume=True)


def test_resuming_with_the_same_explainer_object_and_another_spelling_of_the_path_is_accepted(two_classes,
                                                                                               monkeypatch):
    explainer = GradCAM(_model())
    data = [tmp for tmp in (two_classes / "data",)][0]
    first = explain_dataset(explainer, data, two_classes / "s", transform=interpkit.data.ImageTransform((32, 32)),
                            batch_size=2, shard_size=2, progress=False)
    shutil.rmtree(first.path / "shards" / "00000002-00000004")
    monkeypatch.chdir(two_classes)
    again = explain_dataset(explainer, Path("data"), Path("s"), transform=interpkit.data.ImageTransform((32, 32)),
                            batch_size=2, shard_size=2, progress=False, resume=True)
    assert np.isfinite(again.maps).all()


def test_other_data_of_the_same_length_is_refused_in_words(two_classes):
    transform = interpkit.data.ImageTransform((32, 32))
    explain_dataset(GradCAM(_model()), two_classes / "data", two_classes / "s", transform=transform, progress=False)
    image = next((two_classes / "data" / "sunflower").glob("*.jpg"))
    image.rename(image.with_name("renamed.jpg"))
    with pytest.raises(InputError, match=r"other files: sample \d was 'sunflower/image_\d+.jpg', now 'sunflower/renamed.jpg'"):
        explain_dataset(GradCAM(_model()), two_classes / "data", two_classes / "s", transform=transform,
                        progress=False, resume=True)
    _explain(two_classes / "t")
    with pytest.raises(InputError, match="other data: the first, middle or last sample differs"):
        _explain(two_classes / "t", data=_data(seed=8), resume=True)
    with pytest.raises(InputError, match="transform"):
        explain_dataset(GradCAM(_model()), two_classes / "data", two_classes / "s", progress=False, resume=True,
                        transform=interpkit.data.ImageTransform((40, 40)))


class _Sizes(Dataset):
    """Inputs of two sizes."""

    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, index):
        return torch.randn(3, self.sizes[index], self.sizes[index], generator=torch.Generator().manual_seed(index)), 1


def test_inputs_of_different_sizes_are_stored_exactly_or_marked(tmp_path):
    store = _explain(tmp_path / "s", data=_Sizes([32, 32, 32, 40, 40, 40]), batch_size=2, shard_size=2)
    valid = store.array("valid")
    assert valid.tolist() == [True, True, True, False, True, True]  # index 3 shares a batch with a 32 x 32 image
    assert "shape" in store.failures[0]["reason"] and store.failures[0]["index"] == 3
    with pytest.raises(InputError, match="different shapes in different shards"):
        store.maps
    assert store.shard_array("maps", 2).shape == (2, 1, 40, 40) and np.isfinite(store.shard_array("maps", 2)).all()
    assert store.array("targets").shape == (6, 1)


def test_float16_maps_beyond_its_range_are_marked_not_stored_as_inf(tmp_path):
    class Huge(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _model()

        def forward(self, x):
            return self.inner(x) * torch.tensor([1e12, 1, 1, 1, 1])

    store = _explain(tmp_path / "s", GradCAM(Huge().eval(), relu=False), target=0, dtype="float16")
    maps = store.maps
    assert not np.isinf(maps).any()
    assert not store.array("valid").any() and all("float16" in f["reason"] for f in store.failures)
    assert np.isfinite(store.array("scores")).all()  # what could be stored was


class _FailsFrom(Dataset):
    def __init__(self, start):
        self.data, self.start = _data(), start

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if index >= self.start:
            raise OSError("unreadable")
        return self.data[index]


def test_a_shard_where_every_sample_failed_reads_back(tmp_path):
    store = _explain(tmp_path / "s", data=_FailsFrom(4), target="all")
    assert store.array("targets").shape == (6, 5) and (store.array("targets")[4:] == -1).all()
    assert np.isnan(store.array("scores")[4:]).all() and np.isnan(store.maps[4:]).all()
    assert store.maps.shape == (6, 5, 32, 32) and np.isfinite(store.maps[:4]).all()


def test_damaged_shards_are_named_and_repaired_by_resuming(tmp_path):
    out = tmp_path / "s"
    good = _explain(out).maps.copy()
    maps = out / "shards" / "00000000-00000004" / "maps.npy"
    maps.write_bytes(maps.read_bytes()[:200])
    (out / "shards" / "00000004-00000006" / "valid.npy").unlink()
    with pytest.raises(InputError, match="incomplete|maps.npy"):
        read_store(out).maps
    np.testing.assert_array_equal(_explain(out, resume=True).maps, good)


def test_a_damaged_metric_file_makes_its_shard_pending_and_resuming_repairs_it(tmp_path):
    """Resuming checked the seven core arrays only: after a metric's file was truncated it said
    every sample was explained and left the file damaged, while reading it said to resume."""
    out = tmp_path / "s"
    good = _explain(out, metrics=["deletion"]).metric("deletion").copy()
    scores = out / "shards" / "00000000-00000004" / "metric-deletion.npy"
    scores.write_bytes(scores.read_bytes()[:70])
    with pytest.raises(InputError, match="incomplete|metric-deletion"):
        read_store(out).metric("deletion")
    np.testing.assert_array_equal(_explain(out, metrics=["deletion"], resume=True).metric("deletion"), good)


@pytest.mark.parametrize("call", [
    lambda out: explain_dataset(GradCAM(_model()), _data(), None),
    lambda out: explain_dataset(GradCAM(_model()), _data(), out, dtype=["x"]),
    lambda out: explain_dataset(GradCAM(_model()), _data(), out, precision=["x"]),
    lambda out: read_store(None), lambda out: read_store(123),
    lambda out: interpkit.view([None], out), lambda out: interpkit.view([out], None),
])
def test_arguments_of_the_wrong_kind_are_input_errors(tmp_path, call):
    """Each raised a TypeError (unhashable list, a path expected)."""
    with pytest.raises(InputError):
        call(tmp_path / "s")


@pytest.mark.parametrize("options, words", [({"metrics": None}, "metrics takes a list"),
                                            ({"metrics": [["deletion"]]}, "metrics takes a list"),
                                            ({"transform": "x"}, "transform must be a function"),
                                            ({"classes": [1, 2]}, "list of str")])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, options, words):
    """``metrics=None`` raised a TypeError, and ``transform="x"`` wrote a store whose every sample
    had failed ("'str' object is not callable")."""
    folder = tmp_path / "images" / "bonsai"
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 30), (10, 20, 30)).save(folder / "a.png")
    with pytest.raises(InputError, match=words):
        explain_dataset(GradCAM(_model()), tmp_path / "images", tmp_path / "s", progress=False, **options)
    assert not (tmp_path / "s").exists()


def _zero_d_maps(out):
    np.save(out / "shards" / "00000000-00000004" / "maps.npy", np.float32(1.0))


def _float_labels(out):
    np.save(out / "shards" / "00000000-00000004" / "labels.npy", np.full(4, np.nan))


def _failures_without_index(out):
    (out / "shards" / "00000000-00000004" / "failures.json").write_text(json.dumps(["broken"]))


def _manifest(change):
    def damage(out):
        manifest = json.loads((out / "manifest.json").read_text())
        change(manifest)
        (out / "manifest.json").write_text(json.dumps(manifest))
    return damage


@pytest.mark.parametrize("damage", [
    _zero_d_maps, _float_labels, _failures_without_index,
    _manifest(lambda m: m.update(metrics=5)), _manifest(lambda m: m["dataset"].update(length=10**18)),
])
def test_a_store_damaged_by_hand_is_bad_input_everywhere(tmp_path, damage):
    """A 0-d array raised "len() of unsized object", failures without an index a KeyError, a
    length of 10**18 a MemoryError (or the OOM killer), NaN labels a ValueError in view."""
    out = tmp_path / "s"
    _explain(out)
    damage(out)
    with pytest.raises(InputError):
        store = read_store(out)
        store.maps, store.array("labels"), store.failures
    with pytest.raises(InputError):
        interpkit.view([out], tmp_path / "viewer", progress=False)
    assert not (tmp_path / "viewer").exists()


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps([1, 2]))
    with pytest.raises(InputError, match="not an interpkit manifest"):
        read_store(out)
    with pytest.raises(InputError, match="not an interpkit manifest"):
        _explain(out, resume=True)


class _Dicts(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return {"image": torch.randn(3, 32, 32), "label": 1}


class _Strings(_Dicts):
    def __getitem__(self, index):
        return torch.randn(3, 32, 32), "bonsai"


class _Stream(IterableDataset):
    def __iter__(self):
        yield torch.randn(3, 32, 32), 1


@pytest.mark.parametrize("data, message", [(_Dicts(), "dicts"), (_Strings(), "class indices"),
                                           (_Stream(), "IterableDataset")])
def test_datasets_the_store_cannot_take_are_refused_before_writing(tmp_path, data, message):
    with pytest.raises(InputError, match=message):
        _explain(tmp_path / "s", data=data)
    assert not (tmp_path / "s").exists()


# ---- a second adversarial pass --------------------------------------------------------------

def _linked_folder(root, layout):
    """Class folders of symlinks into one pool of images: {class: [pool indices]}."""
    pool = sorted((bundled_root() / "bonsai").glob("*.jpg"))
    for name, picks in layout.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in picks:
            (root / name / f"img{k}.jpg").symlink_to(pool[k])


def test_relabelling_through_symlinks_is_other_data(tmp_path):
    transform = interpkit.data.ImageTransform((32, 32))
    _linked_folder(tmp_path / "d", {"bonsai": [0, 1], "sunflower": [2, 3]})
    options = dict(transform=transform, batch_size=2, shard_size=2, progress=False, target="labels")
    explain_dataset(GradCAM(_model()), tmp_path / "d", tmp_path / "s", **options)
    shutil.rmtree(tmp_path / "d")
    _linked_folder(tmp_path / "d", {"bonsai": [0], "sunflower": [1, 2, 3]})  # the same images in the same order
    with pytest.raises(InputError, match="other files"):
        explain_dataset(GradCAM(_model()), tmp_path / "d", tmp_path / "s", resume=True, **options)


def test_symlinked_class_folders_are_followed(tmp_path):
    _linked_folder(tmp_path / "real", {"bonsai": [0, 1, 2]})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "bonsai").symlink_to(tmp_path / "real" / "bonsai", target_is_directory=True)
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d", target_is_directory=True)  # followed once, not for ever
    assert len(interpkit.data.images.image_files(tmp_path / "d")) == 3


def test_a_data_folder_with_manifests_of_its_own_is_not_taken_for_explains_output(tmp_path):
    _linked_folder(tmp_path / "d", {"bonsai": [0, 1]})
    (tmp_path / "d" / "bonsai" / "manifest.csv").write_text("a,b\n")
    (tmp_path / "d" / "bonsai" / "manifest.json").write_text('{"not": "interpkit"}')
    assert len(interpkit.data.images.image_files(tmp_path / "d")) == 2


class _Labelled(Dataset):
    def __init__(self, labels, inputs=None):
        self.labels_, self.inputs = labels, inputs or {}

    def __len__(self):
        return len(self.labels_)

    def __getitem__(self, index):
        x = self.inputs.get(index, torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(index)))
        return x, self.labels_[index]


def test_numpy_labels_are_part_of_the_data(tmp_path):
    _explain(tmp_path / "s", data=_Labelled([np.int64(0)] * 6), target="labels")
    with pytest.raises(InputError, match="other data"):
        _explain(tmp_path / "s", data=_Labelled([np.int64(1)] * 6), target="labels", resume=True)


def test_one_bad_sample_is_recorded_and_the_run_goes_on(tmp_path):
    labels = [0, 1, 2, 2.7, 1, 99, True, 0]
    inputs = {1: torch.full((3, 32, 32), float("nan")), 2: np.zeros((3, 32, 32), np.float32), 7: None}
    store = _explain(tmp_path / "s", data=_Labelled(labels, inputs), target="labels", batch_size=4, shard_size=4)
    failed = {f["index"]: f["reason"] for f in store.failures}
    assert set(failed) == {1, 2, 3, 5, 6, 7}, failed
    assert "NaN" in failed[1] and "ndarray" in failed[2] and "2.7" in failed[3] and "99" in failed[5]
    assert store.array("valid").tolist() == [True, False, False, False, True, False, False, False]
    assert store.array("targets")[[0, 4], 0].tolist() == [0, 1]


def test_arguments_that_cannot_work_are_refused_before_writing(tmp_path):
    for options, words in [({"num_workers": -1}, "num_workers"), ({"num_workers": "2"}, "num_workers"),
                           ({"transform": interpkit.data.ImageTransform()}, "transform")]:
        with pytest.raises(InputError, match=words):
            _explain(tmp_path / "s", **options)
        assert not (tmp_path / "s").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        _explain(tmp_path / "file")
    assert len(_explain(tmp_path / "t", batch_size=np.int64(2))) == 6


def test_hand_edited_manifests_are_refused_in_words(tmp_path):
    out = tmp_path / "s"
    _explain(out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "dataset": "x"}))
    with pytest.raises(InputError, match="dataset"):
        _explain(out, resume=True)
    (out / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "shard_size"}))
    with pytest.raises(InputError, match="damaged"):
        read_store(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "shards" / "00000000-00000004" / "failures.json").write_text("{}")
    assert not interpkit.dataset.store.shard_done(out, 0, 4)


class Halve:
    """A transform with Python's default repr (its address differs in every process)."""

    def __init__(self, factor=0.5):
        self.factor = factor

    def __call__(self, image):
        return interpkit.data.ImageTransform((32, 32))(image) * self.factor


def test_resuming_in_a_new_process_and_with_the_layer_spelled_otherwise_is_accepted(two_classes):
    model = _model()
    options = dict(batch_size=2, shard_size=2, progress=False)
    first = explain_dataset(GradCAM(model, layer="features.3"), two_classes / "data", two_classes / "s",
                            transform=Halve(), **options)
    shutil.rmtree(first.path / "shards" / "00000002-00000004")
    again = explain_dataset(GradCAM(model, layer=model.features[3]), two_classes / "data", two_classes / "s",
                            transform=Halve(), resume=True, **options)
    assert again.array("valid").all()
    with pytest.raises(InputError, match="factor"):
        explain_dataset(GradCAM(model, layer="features.3"), two_classes / "data", two_classes / "s",
                        transform=Halve(0.25), resume=True, **options)


def test_resuming_removes_what_a_killed_writer_left_half_written(tmp_path):
    out = tmp_path / "s"
    _explain(out)
    leftover = out / "shards" / ".00000004-00000006.k1ll3d"
    leftover.mkdir()
    (leftover / "maps.npy").write_bytes(b"half")
    _explain(out, resume=True)
    assert not leftover.exists()


# ---- a third adversarial pass ---------------------------------------------------------------

def test_a_model_in_training_mode_is_left_as_it_was_and_explained_in_eval(tmp_path):
    """Occlusion's forwards are copies, so the predictions come from a plain forward: it ran in
    the user's training mode, updating the batch norm's statistics the maps were then made with."""
    model = _model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    store = _explain(tmp_path / "s", interpkit.Occlusion(model, window=8), batch_size=1)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    reference = _model().eval()
    inputs = _data().tensors[0]
    with torch.no_grad():
        probabilities = reference(inputs).softmax(dim=1).max(dim=1).values
    np.testing.assert_allclose(store.array("probabilities"), probabilities.numpy(), rtol=1e-5)
    np.testing.assert_allclose(store.maps, interpkit.Occlusion(reference, window=8)(inputs).maps.numpy(), rtol=1e-5,
                               atol=1e-6)


class _PathStrings(Dataset):
    """A dataset whose ``samples`` are paths alone (not torchvision's (path, label) pairs)."""

    def __init__(self, seed):
        self.samples = [f"/nowhere/{i}.jpg" for i in range(6)]
        self.inputs = _data(seed=seed).tensors[0]

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return self.inputs[index], 0


def test_a_dataset_with_samples_that_are_not_path_label_pairs_is_identified_by_its_samples(tmp_path):
    _explain(tmp_path / "s", data=_PathStrings(seed=1))
    with pytest.raises(InputError, match="other data"):
        _explain(tmp_path / "s", data=_PathStrings(seed=2), resume=True)


def test_a_loader_whose_collate_or_sampler_would_be_ignored_is_refused(tmp_path):
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, SubsetRandomSampler

    with pytest.raises(InputError, match="collate_fn"):
        _explain(tmp_path / "s", data=DataLoader(_data(), batch_size=2, collate_fn=lambda items: items))
    with pytest.raises(InputError, match="SubsetRandomSampler"):
        _explain(tmp_path / "s", data=DataLoader(_data(), batch_size=2, sampler=SubsetRandomSampler([0, 1])))
    half = BatchSampler(RandomSampler(_data(), num_samples=3), 2, False)  # 3 of the 6 samples
    with pytest.raises(InputError, match="RandomSampler would be ignored"):
        _explain(tmp_path / "s", data=DataLoader(_data(), batch_sampler=half))
    assert not (tmp_path / "s").exists()
    for k, loader in enumerate((DataLoader(_data(), batch_size=2, shuffle=True), DataLoader(_data(), batch_size=None),
                                DataLoader(_data(), sampler=DistributedSampler(_data(), num_replicas=1, rank=0)))):
        assert len(_explain(tmp_path / f"s{k}", data=loader)) == 6  # every sample, by index


def test_the_split_is_labelled_by_the_models_class_order(tmp_path):
    model = _model()
    classes = list(reversed(interpkit.data.caltech5("test").classes))
    store = explain_dataset(GradCAM(model), "caltech5:test", tmp_path / "s", target="labels", classes=classes,
                            batch_size=50, progress=False)
    names = [Path(file).parent.name for file in store.files]
    assert [classes[label] for label in store.array("labels")] == names
    assert (store.array("targets")[:, 0] == store.array("labels")).all()
    with pytest.raises(InputError, match="not classes of the model"):
        explain_dataset(GradCAM(model), "caltech5:test", tmp_path / "t", classes=classes[:4], progress=False)


def _scaled(image):
    return torch.nn.functional.interpolate(image.float()[None] / 255, size=(32, 32))[0]


def _brighter(image):
    return torch.nn.functional.interpolate(image.float()[None] / 128, size=(32, 32))[0]


def test_a_function_is_described_alike_in_every_process_and_by_what_it_computes():
    """A comprehension's code object is a constant whose repr holds its address, which differs in
    every process; closures and defaults change what a function computes."""
    from interpkit.dataset.run import _plain_repr

    source = "def make(scale, shift=0.0):\n    def tf(x):\n        return torch.stack([c * scale + shift for c in x])\n" \
             "    return tf\n"
    first, second = {"torch": torch}, {"torch": torch}
    exec(compile(source, "transforms.py", "exec"), first)  # two compilations: code objects at other addresses
    exec(compile(source, "transforms.py", "exec"), second)
    assert _plain_repr(first["make"](2.0)) == _plain_repr(second["make"](2.0))
    assert _plain_repr(first["make"](2.0)) != _plain_repr(first["make"](3.0))
    other = {"torch": torch}
    exec(compile(source.replace("shift=0.0", "shift=1.0"), "transforms.py", "exec"), other)
    assert _plain_repr(first["make"]) == _plain_repr(second["make"]) != _plain_repr(other["make"])


def test_a_function_transform_is_identified_by_its_code_not_its_address(two_classes):
    out = two_classes / "s"
    explain_dataset(GradCAM(_model()), two_classes / "data", out, transform=_scaled, progress=False)
    assert "0x" not in json.loads((out / "manifest.json").read_text())["dataset"]["transform"]
    with pytest.raises(InputError, match="transform"):
        explain_dataset(GradCAM(_model()), two_classes / "data", out, transform=_brighter, resume=True, progress=False)


class _NamedLabels(Dataset):
    """Class names in ``labels``, indices from ``__getitem__``."""

    labels = ["a", "b"]

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.randn(3, 32, 32), np.array(index)  # a 0-d numpy label


def test_named_labels_and_zero_dimensional_numpy_labels_are_read(tmp_path):
    store = _explain(tmp_path / "s", data=_NamedLabels(), target="labels")
    assert store.array("labels").tolist() == [0, 1]


def test_a_manifest_with_fewer_files_than_samples_and_shards_that_are_a_file_are_refused(two_classes):
    out = two_classes / "s"
    explain_dataset(GradCAM(_model()), two_classes / "data", out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["dataset"]["files"] = manifest["dataset"]["files"][:2]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="one file per sample"):
        read_store(out)
    other = two_classes / "t"
    explain_dataset(GradCAM(_model()), two_classes / "data", other, progress=False)
    shutil.rmtree(other / "shards")
    (other / "shards").write_text("")
    with pytest.raises(InputError, match="is a file"):
        explain_dataset(GradCAM(_model()), two_classes / "data", other, resume=True, progress=False)
