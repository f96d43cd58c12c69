import numpy as np
import pytest
import torch
import torchvision

import interpkit
from interpkit_cam_variants import deep_feature_factorization

sklearn_nmf = pytest.importorskip("sklearn.decomposition", reason="scikit-learn comes with interpkit's [test] extra")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam", reason="grad-cam is in interpkit's [test] extra")


def _layer4(model, images):
    kept = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: kept.append(o.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    return kept[0]


def _sklearn_starts(shifted, components, seed=0):
    """scikit-learn's random start for ``NMF(init="random", random_state=seed)``, unscaled."""
    rng = np.random.RandomState(seed)
    h = np.abs(rng.standard_normal((components, shifted.shape[1])))
    w = np.abs(rng.standard_normal((shifted.shape[0], components)))
    return torch.from_numpy(w), torch.from_numpy(h)


def _resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval(), torch.randn(2, 3, 64, 64)


def test_joint_factorization_equals_scikit_learn_and_pytorch_grad_cam():
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import DeepFeatureFactorization

    model, images = _resnet()
    activation = _layer4(model, images).double().numpy()
    points = activation.transpose(1, 0, 2, 3).reshape(activation.shape[1], -1)
    shifted = points - points.min(axis=1, keepdims=True)
    solver = sklearn_nmf.NMF(n_components=4, init="random", random_state=0)
    concepts = solver.fit_transform(shifted) + points.min(axis=1, keepdims=True)
    ours = deep_feature_factorization(model, images, layer="layer4", components=4, joint=True, head=model.fc,
                                      init=_sklearn_starts(shifted, 4))
    assert int(ours.iterations[0]) == solver.n_iter_
    np.testing.assert_allclose(ours.concepts[0].double().numpy(), concepts, rtol=1e-5, atol=1e-5 * np.abs(concepts).max())
    assert torch.equal(ours.concepts[0], ours.concepts[1])  # shared by the batch
    their_concepts, their_maps, their_scores = DeepFeatureFactorization(model, model.layer4, computation_on_concepts=model.fc)(
        images, n_components=4)  # float32, scikit-learn's own draws: the same start
    assert np.abs(ours.concepts[0].numpy() - their_concepts).max() < 1e-4 * np.abs(their_concepts).max()
    for image in range(2):
        assert np.abs(ours.maps[image].numpy() - their_maps[image]).max() < 1e-4
        assert np.abs(ours.scores[image].numpy() - their_scores).max() < 1e-4 * np.abs(their_scores).max()


def test_each_image_alone_equals_scikit_learn_and_does_not_depend_on_its_batch():
    model, images = _resnet()
    activation = _layer4(model, images).double()
    solver_start = None
    for image in range(2):
        points = activation[image].flatten(1).numpy()
        shifted = points - points.min(axis=1, keepdims=True)
        solver_start = _sklearn_starts(shifted, 3)
        solver = sklearn_nmf.NMF(n_components=3, init="random", random_state=0)
        expected = solver.fit_transform(shifted) + points.min(axis=1, keepdims=True)
        ours = deep_feature_factorization(model, images, layer="layer4", components=3, init=solver_start)
        np.testing.assert_allclose(ours.concepts[image].double().numpy(), expected, rtol=1e-5,
                                   atol=1e-5 * np.abs(expected).max())
        assert int(ours.iterations[image]) == solver.n_iter_
    together = deep_feature_factorization(model, images, layer="layer4", components=3, seed=5)
    alone = deep_feature_factorization(model, images[1:], layer="layer4", components=3, seed=5)
    torch.testing.assert_close(together.maps[1:], alone.maps, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(together.concepts[0], together.concepts[1])


def test_factorization_reconstructs_a_planted_non_negative_product():
    """A 1-D model whose layer is exactly W H (non-negative, rank 2, separable) plus a constant:
    the concepts' maps recover H's rows and their embeddings W's columns (up to order and scale)."""
    torch.manual_seed(0)
    rows = torch.zeros(2, 16)  # H: two bumps on separate supports, both 0 at the ends (each channel's minimum)
    rows[0, 1:8] = torch.tensor([1.0, 2, 3, 4, 3, 2, 1])
    rows[1, 9:15] = torch.tensor([2.0, 1, 4, 4, 1, 2])
    mixing = torch.tensor([[1.0, 0], [0.5, 0], [0, 1], [0, 2], [1, 1]])  # W: zeros make the factors unique

    class Planted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Identity()

        def forward(self, x):
            return self.layer(x * 0 + (mixing @ rows).unsqueeze(0) + 3.0).mean(dim=2)

    found = deep_feature_factorization(Planted().eval(), torch.randn(1, 5, 16),
                                       layer=("layer", interpkit.ChannelsFirst()), components=2,
                                       max_iter=2000, tol=1e-10)
    maps = found.maps[0]  # (2, 16) scaled to [0, 1]
    match = [max(float(torch.corrcoef(torch.stack([m, r]))[0, 1]) for r in rows) for m in maps]
    assert min(match) > 0.999
    embeddings = torch.nn.functional.normalize(found.concepts[0] - 3.0, dim=0)  # the offset 3 added back
    similarity = embeddings.T @ torch.nn.functional.normalize(mixing, dim=0)  # (concepts, planted columns)
    assert similarity.amax(dim=1).min() > 0.999


def test_bad_input():
    model, images = _resnet()
    for bad in ({"components": 0}, {"tol": float("nan")}, {"head": 3}, {"init": (torch.ones(3), torch.ones(3))},
                {"init": (-torch.ones(512, 5), torch.ones(5, 4))}, {"seed": -1}, {"joint": "yes"},
                {"init": (torch.full((512, 5), float("nan")), torch.ones(5, 4))}, {"head": lambda c: [c]},
                {"head": lambda c: {}["missing"]}):
        with pytest.raises(interpkit.InterpkitError):
            deep_feature_factorization(model, images, layer="layer4", **bad)
    with pytest.raises(interpkit.InputError, match="head could not score"):
        deep_feature_factorization(model, images, layer="layer3", head=model.fc)  # 256 channels, fc takes 512
    with pytest.raises(interpkit.InputError):
        deep_feature_factorization(model, images * float("nan"), layer="layer4")
    with pytest.raises(interpkit.LayerError):
        deep_feature_factorization(model, images, layer="nope")


def test_choosing_the_layer_leaves_a_training_model_as_it_was():
    model, images = _resnet()
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    deep_feature_factorization(model, images, components=2)
    assert model.training and all(torch.equal(before[name], value) for name, value in model.state_dict().items())
