"""Training: determinism, resume equality, atomic checkpoints, feature cache, DDP, the command."""

import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from distributed import run_ranks

import interpkit
from interpkit.data import ImageTransform, caltech5
from interpkit.train import Split, TrainConfig, evaluate, fit, train_models
from interpkit.train.checkpoint import load_checkpoint, save_atomic
from interpkit.train.features import cached_features

CONFIG = TrainConfig(epochs=4, batch_size=8, patience=None, seed=3)
TRANSFORM = ImageTransform()


@pytest.fixture(scope="module")
def small_splits():
    data = {s: caltech5(s).tensors(TRANSFORM.size) for s in ("train", "val")}
    pick = lambda images, labels, n: Split(images[::len(labels) // n][:n], labels[::len(labels) // n][:n])  # noqa: E731
    return pick(*data["train"], 24), pick(*data["val"], 10)


def _run(small_splits, config=CONFIG, **kwargs):
    torch.manual_seed(config.seed)
    model = interpkit.get_model("caltech5_arch2")
    result = fit(model, *small_splits, TRANSFORM.normalize, config, 5, progress=False, **kwargs)
    return model, result


def test_training_is_deterministic_and_learns(small_splits):
    first, result = _run(small_splits)
    second, _ = _run(small_splits)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    best = max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert best["epoch"] == result.best_epoch  # the model holds the best validation epoch
    assert evaluate(first, small_splits[1], TRANSFORM.normalize, 5).accuracy == pytest.approx(best["val_accuracy"])


def test_resume_after_a_crash_ends_like_an_uninterrupted_run(small_splits, tmp_path, monkeypatch):
    reference, reference_result = _run(small_splits)
    checkpoint = tmp_path / "arch2.ckpt"
    import interpkit.train.loop as loop

    calls = {"n": 0}
    real_evaluate = loop.evaluate

    def crash_in_third_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        _run(small_splits, checkpoint=checkpoint)
    monkeypatch.setattr(loop, "evaluate", real_evaluate)
    saved = load_checkpoint(checkpoint)
    assert saved["epoch"] == 1  # two whole epochs were saved, the third was lost
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]  # no temporary file left
    resumed, resumed_result = _run(small_splits, checkpoint=checkpoint, resume=True)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed_result.history == reference_result.history
    with pytest.raises(Exception, match=r"another recipe \(lr 0\.[0-9e-]+ there, 0\.01 now\)"):
        _run(small_splits, config=replace(CONFIG, lr=1e-2), checkpoint=checkpoint, resume=True)


def test_atomic_save_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    save_atomic({"v": torch.ones(2)}, path)

    def failing_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"v": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_feature_cache_is_keyed_by_weights_and_images(tmp_path):
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    calls = {"n": 0}

    def counted(x):
        calls["n"] += x.shape[0]
        return backbone(x)

    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    prepare = lambda x: x.float() / 255  # noqa: E731
    first = cached_features(counted, backbone, images, prepare, tmp_path, batch_size=4)
    again = cached_features(counted, backbone, images, prepare, tmp_path, batch_size=4)
    assert calls["n"] == 6 and torch.equal(first, again)
    cached_features(counted, backbone, images[:5], prepare, tmp_path)
    assert calls["n"] == 11  # other images: computed
    with torch.no_grad():
        backbone[0].bias += 1
    cached_features(counted, backbone, images, prepare, tmp_path)
    assert calls["n"] == 17  # other weights: computed


def test_vgg_head_training_uses_cached_features(tmp_path, monkeypatch):
    import torchvision

    import interpkit.train as train_module

    torch.manual_seed(0)
    state = torchvision.models.vgg19().state_dict()
    splits = {s: Split(torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8), torch.arange(10) % 5)
              for s in ("train", "val", "test")}
    monkeypatch.setattr(train_module, "load_splits", lambda data_dir, size: (splits, list("abcde")))
    config = TrainConfig(epochs=3, batch_size=4, patience=None)
    rows = train_models(["vgg19_caltech5"], tmp_path / "out", config, backbone=state, progress=False)
    assert rows[0]["model"] == "vgg19_caltech5"
    head = torch.load(tmp_path / "out" / "vgg19_caltech5_head.pt", weights_only=True)
    assert head["weight"].shape == (5, 4096)
    assert len(list((tmp_path / "out" / "feature-cache").glob("features-*.pt"))) == 3
    # a backbone with the same convolutions and other dense layers has other features
    state["classifier.0.weight"] = -state["classifier.0.weight"]
    train_models(["vgg19_caltech5"], tmp_path / "out", config, backbone=state, progress=False)
    assert len(list((tmp_path / "out" / "feature-cache").glob("features-*.pt"))) == 6


def _train_on_this_rank(splits):
    torch.manual_seed(CONFIG.seed)
    model = interpkit.get_model("caltech5_arch2", dropout=0.0)
    fit(model, *splits, TRANSFORM.normalize, replace(CONFIG, epochs=2), 5, progress=False)
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(small_splits):
    torch.manual_seed(CONFIG.seed)
    single = interpkit.get_model("caltech5_arch2", dropout=0.0)
    fit(single, *small_splits, TRANSFORM.normalize, replace(CONFIG, epochs=2), 5, progress=False)
    first, second = run_ranks(_train_on_this_rank, (small_splits,))
    for key, value in single.state_dict().items():
        assert (first[key] == second[key]).all()  # ranks stay in lockstep
        torch.testing.assert_close(torch.from_numpy(first[key]), value, rtol=1e-3, atol=1e-4)  # = full batch


@pytest.mark.slow
def test_train_command_writes_weights_tables_and_figures(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "interpkit", "train", "--models", "caltech5_arch1", "--epochs", "1",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "caltech5_arch1" in (out / "results.md").read_text()
    assert {p.name for p in out.iterdir()} >= {"caltech5_arch1.pt", "caltech5_arch1.json", "results.json",
                                               "confusion_caltech5_arch1_test.png"}
    bad = subprocess.run([sys.executable, "-m", "interpkit", "train", "--models", "resnet9000", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown model" in bad.stderr


def test_bad_training_input_is_refused_and_leaves_no_folder(tmp_path):
    """``--lr nan`` passed the ``lr <= 0`` check into AdamW's traceback, ``--models ,`` trained
    nothing and exited 0, and a refused run left its ``--out`` folder behind."""
    from interpkit.train import TrainConfig, train_models

    with pytest.raises(interpkit.InputError, match=r"lr must be a number in \(0, inf\)"):
        TrainConfig(lr=float("nan"))
    out = tmp_path / "run"
    with pytest.raises(interpkit.InputError, match="none given"):
        train_models([], out)
    with pytest.raises(interpkit.InputError, match="checkpoint-dir"):
        train_models(["caltech5_arch1"], out, resume=True)
    with pytest.raises(interpkit.InputError, match="holds no checkpoint"):
        train_models(["caltech5_arch1"], out, TrainConfig(epochs=1), resume=True, checkpoint_dir=tmp_path / "none",
                     progress=False)
    assert not out.exists()
    for args in (["--models", ","], ["--lr", "nan"]):
        done = subprocess.run([sys.executable, "-m", "interpkit", "train", *args, "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and not out.exists(), done.stderr


@pytest.mark.parametrize("options, words", [
    ({"patience": 0}, "patience"), ({"patience": -1}, "patience"), ({"patience": True}, "patience"),
    ({"epochs": 2.5}, "epochs"), ({"lr": "0.1"}, "lr"), ({"weight_decay": -1}, "weight_decay"),
    ({"label_smoothing": 1.5}, "label_smoothing"), ({"dropout": 2.0}, "dropout"), ({"seed": 10 ** 20}, "seed"),
    ({"warmup_epochs": -1}, "warmup_epochs"), ({"augment": "yes"}, "augment"),
])
def test_a_recipe_that_cannot_train_is_refused(options, words):
    """``patience=0`` trained no epoch and wrote the untouched weights as trained; a huge seed, a string
    lr and others failed later with torch's errors."""
    with pytest.raises(interpkit.InputError, match=words):
        TrainConfig(**options)


@pytest.fixture
def tiny_splits(monkeypatch):
    import interpkit.train as train_module

    torch.manual_seed(0)
    splits = {s: Split(torch.randint(0, 256, (6, 3, 224, 224), dtype=torch.uint8), torch.arange(6) % 5)
              for s in ("train", "val", "test")}
    monkeypatch.setattr(train_module, "load_splits", lambda data_dir, size: (splits, list("abcde")))
    return splits


def test_train_checks_every_model_and_checkpoint_before_training_any(tmp_path, tiny_splits):
    """A run refused at its second model had already replaced the first one's checkpoint and weights."""
    config, ck, out = TrainConfig(epochs=1, batch_size=3, patience=None), tmp_path / "ck", tmp_path / "out"
    train_models(["caltech5_arch1"], out, config, checkpoint_dir=ck, progress=False)
    saved = {p.name: p.read_bytes() for p in [*ck.iterdir(), *out.iterdir()] if p.is_file()}
    with pytest.raises(interpkit.InputError, match="exists: pass --resume"):
        train_models(["caltech5_arch2", "caltech5_arch1"], out, config, checkpoint_dir=ck, progress=False)
    with pytest.raises(interpkit.InputError, match="backbone weights file not found"):
        train_models(["caltech5_arch1", "vgg19_caltech5"], out, replace(config, seed=5), backbone=tmp_path / "none.pth",
                     progress=False)
    assert {p.name: p.read_bytes() for p in [*ck.iterdir(), *out.iterdir()] if p.is_file()} == saved
    # resuming continues the model that has a checkpoint and starts the one that has none
    rows = train_models(["caltech5_arch1", "caltech5_arch2"], out, config, checkpoint_dir=ck, resume=True,
                        progress=False)
    assert [row["model"] for row in rows] == ["caltech5_arch1", "caltech5_arch2"]
    assert (ck / "caltech5_arch2.ckpt").exists() and (out / "caltech5_arch1.pt").read_bytes() == saved["caltech5_arch1.pt"]
    with pytest.raises(interpkit.InputError, match="holds no checkpoint"):
        train_models(["caltech5_arch3"], out, config, checkpoint_dir=ck, resume=True, progress=False)


def test_resuming_from_another_models_checkpoint_is_refused_and_leaves_the_model(tmp_path, small_splits):
    config = replace(CONFIG, epochs=1)
    torch.manual_seed(0)
    fit(interpkit.get_model("caltech5_arch1"), *small_splits, TRANSFORM.normalize, config, 5,
        checkpoint=tmp_path / "a.ckpt", progress=False)
    other = interpkit.get_model("caltech5_arch2")
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(interpkit.WeightsError, match="another model"):
        fit(other, *small_splits, TRANSFORM.normalize, config, 5, checkpoint=tmp_path / "a.ckpt", resume=True,
            progress=False)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    torch.save({"a": torch.zeros(1)}, tmp_path / "b.ckpt")
    with pytest.raises(interpkit.InputError, match="not a training checkpoint"):
        fit(other, *small_splits, TRANSFORM.normalize, config, 5, checkpoint=tmp_path / "b.ckpt", resume=True,
            progress=False)


def test_a_resume_with_an_unreadable_or_other_recipe_checkpoint_is_refused_before_any_model_trains(tmp_path,
                                                                                                  tiny_splits):
    """The second model's bad checkpoint was found after the first had trained and replaced its
    weights; torch's message advised loading it with weights_only=False."""
    config, ck, out = TrainConfig(epochs=1, batch_size=3, patience=None), tmp_path / "ck", tmp_path / "out"
    train_models(["caltech5_arch1"], out, config, checkpoint_dir=ck, progress=False)
    saved = {p.name: p.read_bytes() for p in [*ck.iterdir(), *out.iterdir()] if p.is_file()}
    with pytest.raises(interpkit.InputError, match="written with another recipe"):
        train_models(["caltech5_arch2", "caltech5_arch1"], out, replace(config, seed=9), checkpoint_dir=ck, resume=True,
                     progress=False)
    (ck / "caltech5_arch1.ckpt").write_bytes(b"garbage")
    with pytest.raises(interpkit.InputError, match="cannot read checkpoint") as refused:
        train_models(["caltech5_arch2", "caltech5_arch1"], out, config, checkpoint_dir=ck, resume=True, progress=False)
    assert "weights_only" not in str(refused.value)
    assert not (ck / "caltech5_arch2.ckpt").exists()
    saved.pop("caltech5_arch1.ckpt")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == {
        k: v for k, v in saved.items() if not k.endswith(".ckpt")}
    with pytest.raises(interpkit.InputError, match="is a file"):
        train_models(["caltech5_arch1"], out, config, checkpoint_dir=ck / "caltech5_arch1.ckpt", progress=False)
    with pytest.raises(interpkit.InputError, match="is a file"):
        train_models(["caltech5_arch1"], ck / "caltech5_arch1.ckpt", config, progress=False)


@pytest.mark.parametrize("text, words", [("{not json", "not a readable split file"),
                                         ('{"train": [], "val": [], "test": []}', "needs 'classes'"),
                                         ('{"classes": ["a"], "train": ["b/x.jpg"], "val": [], "test": []}',
                                          "not one of its classes")])
def test_a_damaged_split_file_is_refused_in_words(tmp_path, text, words):
    (tmp_path / "split.json").write_text(text)
    with pytest.raises(interpkit.InputError, match=words):
        caltech5("train", root=tmp_path)


def test_bad_backbones_are_weights_errors(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"garbage")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for backbone, words in ((tmp_path / "garbage.pt", "cannot read the backbone"), (tmp_path / "tensor.pt", "Tensor"),
                            (5, "backbone must be")):
        with pytest.raises(interpkit.WeightsError, match=words):
            interpkit.get_model("vgg19_caltech5", backbone=backbone)


def test_a_trained_vgg_head_loads_from_the_command_line(tmp_path, monkeypatch):
    """`interpkit train --models vgg19_caltech5` writes the head alone; --checkpoint loaded it into
    the whole VGG19 and refused it, whatever was trained."""
    import json

    import torchvision

    from interpkit.cli.commands import load_model
    from interpkit.zoo import sha256_file, vgg

    torch.manual_seed(0)
    backbone = torchvision.models.vgg19().state_dict()  # stands for the ImageNet weights, offline
    monkeypatch.setattr(torchvision.models.VGG19_Weights.IMAGENET1K_V1, "get_state_dict", lambda *a, **k: backbone)
    trained = vgg.head(interpkit.get_model("vgg19_caltech5", num_classes=5))
    path = tmp_path / "vgg19_caltech5_head.pt"
    save_atomic(trained.state_dict(), path)
    description = {"sha256": sha256_file(path), "meta": {"model": "vgg19_caltech5", "categories": list("abcde")},
                   "transforms": {"size": [224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    path.with_suffix(".json").write_text(json.dumps(description))
    network, _, categories = load_model(None, str(path), "cpu")
    assert categories == list("abcde") and torch.equal(vgg.head(network).weight, trained.weight)
    assert torch.equal(network.features[0].weight, backbone["features.0.weight"])
