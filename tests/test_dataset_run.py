"""explain_dataset: the same store on any number of processes, resumable after SIGKILL, corrupt
samples recorded, other arguments refused, mixed precision close to float32."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed import run_ranks
from models import SmallCNN
from torch.utils.data import DataLoader, TensorDataset

import interpkit
from interpkit import GradCAM, InputError, explain_dataset, read_store
from interpkit.data import caltech5


def _data(n=13):
    generator = torch.Generator().manual_seed(7)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 5, (n,), generator=generator))


def _model():
    torch.manual_seed(0)
    return SmallCNN().eval()


def _store_bytes(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted(Path(out).rglob("*")) if p.is_file()}


def _explain_on_this_rank(out):
    explain_dataset(GradCAM(_model()), _data(), out, target="labels", metrics=["average_drop"], batch_size=3,
                    shard_size=4, progress=False)
    return str(out)


@pytest.mark.slow
def test_two_processes_and_one_write_the_same_store(tmp_path):
    torch.set_num_threads(1)  # as each rank; thread count can change float reductions
    single = tmp_path / "one"
    store = explain_dataset(GradCAM(_model()), _data(), single, target="labels", metrics=["average_drop"],
                            batch_size=3, shard_size=4, progress=False)
    assert len(store) == 13 and store.maps.shape == (13, 1, 32, 32) and not store.failures
    run_ranks(_explain_on_this_rank, (tmp_path / "two",))
    one, two = _store_bytes(single), _store_bytes(tmp_path / "two")
    assert one.keys() == two.keys() and all(one[k] == two[k] for k in one)  # bit-identical, 13 = 4 + 4 + 4 + 1
    labels = _data().tensors[1].numpy()
    assert np.array_equal(store.array("targets")[:, 0], labels)  # per-sample targets from the labels
    expected = GradCAM(_model())(_data().tensors[0][:5], _data().tensors[1][:5]).maps
    np.testing.assert_allclose(store.maps[:5], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.isfinite(store.metric("average_drop")).all()
    from interpkit.files import default_mode

    files = [p for p in single.rglob("*") if p.is_file()]
    folders = [p for p in single.rglob("*") if p.is_dir()]
    assert {p.stat().st_mode & 0o777 for p in files} == {default_mode()}  # readable as a plain write makes it
    assert {p.stat().st_mode & 0o777 for p in folders} == {default_mode(directory=True)}  # not mkdtemp's 0700


def test_other_arguments_into_the_same_store_are_refused_by_name(tmp_path):
    model = _model()
    explain_dataset(GradCAM(model), _data(5), tmp_path / "s", batch_size=2, shard_size=2, progress=False)
    with pytest.raises(InputError, match="already holds a store; pass resume=True"):
        explain_dataset(GradCAM(model), _data(5), tmp_path / "s", batch_size=2, shard_size=2, progress=False)
    with pytest.raises(InputError, match=r"batch_size: 2 -> 4"):
        explain_dataset(GradCAM(model), _data(5), tmp_path / "s", batch_size=4, shard_size=2, resume=True,
                        progress=False)
    with pytest.raises(InputError, match=r"explainer\.options\.upsample"):
        explain_dataset(GradCAM(model, upsample=False), _data(5), tmp_path / "s", batch_size=2, shard_size=2,
                        resume=True, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        explain_dataset(GradCAM(model), _data(5), tmp_path / "busy", progress=False)
    for bad in ({"dtype": "int8"}, {"precision": "float8"}, {"shard_size": 0}, {"batch_size": True}):
        with pytest.raises(InputError):
            explain_dataset(GradCAM(model), _data(5), tmp_path / "bad", progress=False, **bad)
    for bad_metrics in (["delition"], "deletion", ["continuity"]):  # a check re-runs the explainer: not stored
        with pytest.raises(interpkit.InterpkitError):
            explain_dataset(GradCAM(model), _data(5), tmp_path / "unwritten", metrics=bad_metrics, progress=False)
        assert not (tmp_path / "unwritten").exists()
    with pytest.raises(InputError, match="float16 autocast needs a CUDA model"):
        explain_dataset(GradCAM(model), _data(5), tmp_path / "bad", precision="float16", progress=False)


def test_a_corrupt_image_is_recorded_and_the_rest_explained(tmp_path):
    folder = tmp_path / "images"
    data = caltech5("test")
    for i in (0, 30, 60):
        target = folder / data.classes[data.labels[i]] / data.paths[i].name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data.paths[i], target)
    (folder / "bonsai" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    model = interpkit.get_model("caltech5_arch2", weights="DEFAULT").eval()
    store = explain_dataset(GradCAM(model), folder, tmp_path / "s", metrics=["deletion"], batch_size=2, shard_size=3,
                            progress=False)
    assert [f["index"] for f in store.failures] == [0] and "cannot read image" in store.failures[0]["reason"]
    valid = store.array("valid")
    assert valid.tolist() == [False, True, True, True]
    assert np.isnan(store.maps[0]).all() and np.isfinite(store.maps[1:]).all()
    assert store.array("labels").tolist() == [0, 0, 1, 2]  # class subfolders: bonsai, menorah, sunflower
    assert store.array("predictions")[0] == -1
    assert np.isnan(store.metric("deletion")[0]) and np.isfinite(store.metric("deletion")[1:]).all()
    reread = read_store(tmp_path / "s")
    assert reread.manifest["dataset"]["length"] == 4 and np.array_equal(reread.maps[1:], store.maps[1:])


def test_bfloat16_maps_are_float32_and_close_to_the_float32_ones(tmp_path):
    model = _model()
    exact = explain_dataset(GradCAM(model), DataLoader(_data(6), batch_size=3), tmp_path / "f32", progress=False)
    mixed = explain_dataset(GradCAM(model), DataLoader(_data(6), batch_size=3), tmp_path / "bf16",
                            precision="bfloat16", dtype="float16", progress=False)
    assert mixed.maps.dtype == np.float16 and np.isfinite(mixed.maps).all()
    a, b = exact.maps.reshape(6, -1).astype(np.float64), mixed.maps.reshape(6, -1).astype(np.float64)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert (cosine >= 0.99).all(), cosine


@pytest.mark.slow
def test_a_killed_run_resumes_to_identical_files(tmp_path):
    folder = tmp_path / "images"
    data = caltech5("val")
    for i in range(40):
        target = folder / data.classes[data.labels[i]] / data.paths[i].name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data.paths[i], target)
    command = [sys.executable, "-m", "interpkit", "explain", "--model", "caltech5_arch2", "--method",
               "guided_backprop", "--data", str(folder), "--batch-size", "2", "--shard-size", "8", "--workers", "0", "--no-progress"]
    whole = subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    assert "40 of 40 samples explained" in whole.stdout
    process = subprocess.Popen([*command, "--out", str(tmp_path / "killed")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "killed").glob("shards/0*")):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    shards = list((tmp_path / "killed").glob("shards/0*"))
    assert 0 < len(shards) < 5  # killed part way: some of the 5 shards written, whole
    with pytest.raises(InputError, match="incomplete"):
        read_store(tmp_path / "killed").array("maps")
    refused = subprocess.run([*command, "--out", str(tmp_path / "killed")], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run([*command, "--out", str(tmp_path / "killed"), "--resume"], capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    one, two = _store_bytes(tmp_path / "whole"), _store_bytes(tmp_path / "killed")
    assert one.keys() == two.keys() and all(one[k] == two[k] for k in one)


def test_a_class_folder_without_images_is_refused_not_skipped(tmp_path):
    """The classes were the folders that held images: with 'banana' empty, cherry's images were
    labelled 1, banana's number under torchvision's ImageFolder."""
    from PIL import Image

    from interpkit import InputError
    from interpkit.dataset import image_folder_dataset

    for name in ("apple", "banana", "cherry"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "apple" / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "cherry" / "c.png")
    (tmp_path / "banana" / "readme.txt").write_text("no images yet")
    with pytest.raises(InputError, match="banana"):
        image_folder_dataset(tmp_path, None)
    named = image_folder_dataset(tmp_path, None, classes=["apple", "banana", "cherry"])
    assert named.labels == [0, 2]
    (tmp_path / "banana" / "b.png").write_bytes((tmp_path / "apple" / "a.png").read_bytes())
    assert image_folder_dataset(tmp_path, None).labels == [0, 1, 2]


def test_interpkit_outputs_and_second_names_in_a_data_folder_are_not_empty_classes(tmp_path):
    """The empty-class refusal took an explain output folder (its overlays skipped on purpose), a
    store written into the data folder and a symlink to a class folder for classes without images."""
    import os

    from PIL import Image

    from interpkit.dataset import image_folder_dataset

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "a.png")
    for own in ("explained", "maps"):
        (tmp_path / own).mkdir()
        (tmp_path / own / "manifest.json").write_text("{}")
    os.symlink("cat", tmp_path / "kitty")
    dataset = image_folder_dataset(tmp_path, None)
    assert dataset.classes == ["cat", "dog"] and dataset.labels == [0, 1]
